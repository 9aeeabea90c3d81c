// Package agent is the adeagent daemon: its lifecycle (config, logging, the socket API,
// sd_notify and the watchdog, signals), the periodic readiness evaluation, phases and
// metrics. The one-shot `adeagent check` uses the same evaluation (Evaluate, Check).
package agent

import (
	"context"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// ConfigError is a configuration value the evaluation cannot use (e.g. an invalid
// ade.path for this distribution). Callers treat it as a usage/configuration error.
type ConfigError struct{ Err error }

func (e *ConfigError) Error() string { return e.Err.Error() }
func (e *ConfigError) Unwrap() error { return e.Err }

// NewEnv is everything the probes may look at, from the host root and the configuration.
// units answers systemd questions; nil makes the probes fall back to /proc. Every call
// makes a new OS-drive scan and process list (each runs once, on first use), so use one
// Env per evaluation.
func NewEnv(root hostroot.Root, cfg *config.Config, units probes.Units) (*probes.Env, error) {
	// A missing or unreadable os-release leaves the distribution unknown; the distro probe
	// reports that, so it is not an error here.
	d, _ := probes.LoadDistro(root)
	d, err := d.WithPathOverride(cfg.ADE.Path)
	if err != nil {
		return nil, &ConfigError{err}
	}
	scan := probes.NewOSDriveScan(root, scanOptions(cfg))
	env := &probes.Env{
		Root:           root,
		Distro:         d,
		ConnectTimeout: time.Duration(cfg.Network.ConnectTimeout),
		OSDrive:        scan,
	}
	// The process list comes from the holder scan's walk of /proc when the os-drive probe
	// runs that scan anyway; otherwise the list walks /proc itself (cheaper than a scan).
	if cfg.ProbeEnabled("os-drive") {
		env.Procs = probes.NewProcessList(root, scan)
	} else {
		env.Procs = probes.NewProcessList(root, nil)
	}
	for _, ep := range cfg.AllEndpoints() {
		env.Endpoints = append(env.Endpoints, probes.Endpoint{Name: ep.Name, Addr: ep.Addr})
	}
	if units != nil {
		env.Units = units
	}
	return env, nil
}

// Check runs the probes on env and assembles the report (phase observing, no quiesced
// units). host is the report's hostname.
func Check(ctx context.Context, env *probes.Env, list []probes.Probe, opts probes.RunOptions, host string) *api.Report {
	rep, _ := check(ctx, env, list, opts, host)
	return rep
}

// check is Check that also returns the OS-drive holder scan the os-drive probe ran (nil
// when it did not run to completion).
func check(ctx context.Context, env *probes.Env, list []probes.Probe, opts probes.RunOptions, host string) (*api.Report, *api.HoldersReport) {
	res := probes.Run(ctx, env, list, opts)
	rep := &api.Report{
		SchemaVersion: api.SchemaVersion,
		GeneratedAt:   res.Started.UTC().Truncate(time.Second),
		Hostname:      host,
		Ready:         res.Ready(),
		Phase:         api.PhaseObserving,
		Findings:      res.Findings,
		Holders:       []api.Holder{},
		Quiesced:      []api.QuiescedUnit{},
		ADE: &api.ADEState{
			Distro:  env.Distro.Name(),
			Support: string(env.Distro.Support),
			Path:    string(env.Distro.Path),
		},
		Probes:     res.Probes,
		DurationMS: float64(res.Duration.Microseconds()) / 1000,
	}
	if rep.Findings == nil {
		rep.Findings = []api.Finding{}
	}
	// The holders list comes from the OS-drive scan the os-drive probe already ran; it is
	// never started here just for the list.
	var holders *api.HoldersReport
	for _, p := range res.Probes {
		if p.Name == "os-drive" && p.Status == api.ProbeOK && env.OSDrive != nil {
			if hr, err := env.OSDrive.Get(ctx); err == nil && hr != nil && hr.Holders != nil {
				rep.Holders = hr.Holders
				holders = hr
			}
		}
	}
	return rep, holders
}

// Evaluate runs every enabled registered probe once against root, as `adeagent check`
// does, and returns the report and the OS-drive holder scan it made (nil when the os-drive
// probe is disabled or did not complete). systemd is asked over D-Bus only when root is the
// running host with systemd as PID 1; the connection is closed before returning.
func Evaluate(ctx context.Context, root hostroot.Root, cfg *config.Config) (*api.Report, *api.HoldersReport, error) {
	units := sysd.ForRoot(ctx, root)
	defer units.Close()
	var u probes.Units
	if units != nil {
		u = units
	}
	env, err := NewEnv(root, cfg, u)
	if err != nil {
		return nil, nil, fmt.Errorf("evaluation environment: %w", err)
	}
	rep, holders := check(ctx, env, probes.All(), probes.RunOptions{Enabled: cfg.ProbeEnabled}, Hostname(root))
	return rep, holders, nil
}

// Hostname is the name of the machine under root: the kernel's for the host, else what
// the root's procfs or /etc/hostname say.
func Hostname(root hostroot.Root) string {
	if root.IsHost() {
		if h, err := os.Hostname(); err == nil {
			return h
		}
	}
	if b, err := os.ReadFile(root.Proc("sys", "kernel", "hostname")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	if b, err := root.ReadFile("/etc/hostname"); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b))
	}
	return "unknown"
}

// scanOptions are the holder scan's options from the configuration.
func scanOptions(cfg *config.Config) unmount.Options {
	src := cfg.HolderScan.FDSource
	if src == "auto" {
		src = ""
	}
	return unmount.Options{ProcessScanOptions: unmount.ProcessScanOptions{FDSource: src}}
}
