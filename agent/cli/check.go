package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// runCheck is `adeagent check [--json] [--root DIR] [--config FILE]`: run every enabled
// probe once and print the readiness report. Exit 0 ready, 1 blockers, 2 usage/config.
func runCheck(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("check", stderr, &c)
	asJSON := fs.Bool("json", false, "print the report as JSON (schema_version 1)")
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	cfg, err := loadConfig(fs, &c)
	if err != nil {
		return ExitUsage, err
	}
	root, err := c.Root()
	if err != nil {
		return ExitUsage, usagef("--root: %v", err)
	}
	env, err := buildEnv(root, cfg)
	if err != nil {
		return ExitUsage, err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep := check(ctx, env, probes.All(), probes.RunOptions{Enabled: cfg.ProbeEnabled}, hostname(root))

	if *asJSON {
		if err := writeJSON(stdout, rep); err != nil {
			return ExitNotReady, err
		}
	} else {
		writeReport(stdout, rep, isTerminal(stdout) && os.Getenv("NO_COLOR") == "")
	}
	if !rep.Ready {
		return ExitNotReady, nil
	}
	return ExitOK, nil
}

// runConfig is `adeagent config [--config FILE]`: print the effective configuration.
func runConfig(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("config", stderr, &c)
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	cfg, err := loadConfig(fs, &c)
	if err != nil {
		return ExitUsage, err
	}
	out, err := cfg.YAML()
	if err != nil {
		return ExitNotReady, err
	}
	if _, err := stdout.Write(out); err != nil {
		return ExitNotReady, err
	}
	return ExitOK, nil
}

// probeNames are the registered probes' names, for validating the configuration.
func probeNames() []string {
	var names []string
	for _, p := range probes.All() {
		names = append(names, p.Name())
	}
	return names
}

// loadConfig loads --config and lets explicitly given flags win over the file.
func loadConfig(fs *flag.FlagSet, c *Common) (*config.Config, error) {
	cfg, err := config.Load(c.Config, probeNames())
	if err != nil {
		return nil, usageError{err.Error()}
	}
	var flagErr error
	fs.Visit(func(f *flag.Flag) {
		switch f.Name {
		case "socket":
			cfg.Socket = c.Socket
		case "state-dir":
			cfg.StateDir = c.StateDir
		case "log-level":
			switch c.LogLevel {
			case "debug", "info", "warn", "error":
				cfg.LogLevel = c.LogLevel
			default:
				flagErr = usagef("--log-level %q: want debug, info, warn or error", c.LogLevel)
			}
		}
	})
	return cfg, flagErr
}

// buildEnv is everything the probes may look at, from the host root and the configuration.
func buildEnv(root hostroot.Root, cfg *config.Config) (*probes.Env, error) {
	// A missing or unreadable os-release leaves the distribution unknown; the distro probe
	// reports that, so it is not an error here.
	d, _ := probes.LoadDistro(root)
	d, err := d.WithPathOverride(cfg.ADE.Path)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	env := &probes.Env{
		Root:           root,
		Distro:         d,
		ConnectTimeout: time.Duration(cfg.Network.ConnectTimeout),
		OSDrive:        probes.NewOSDriveScan(root, unmount.Options{}),
	}
	for _, ep := range cfg.AllEndpoints() {
		env.Endpoints = append(env.Endpoints, probes.Endpoint{Name: ep.Name, Addr: ep.Addr})
	}
	// systemd over D-Bus only for the running host with systemd as PID 1 (bounded by
	// sysd.DefaultTimeout); any failure leaves Units nil and the probes fall back to /proc.
	if u := sysd.ForRoot(context.Background(), root); u != nil {
		env.Units = u
	}
	return env, nil
}

// check runs the probes and assembles the report of a one-shot check.
func check(ctx context.Context, env *probes.Env, list []probes.Probe, opts probes.RunOptions, host string) *api.Report {
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
	for _, p := range res.Probes {
		if p.Name == "os-drive" && p.Status == api.ProbeOK && env.OSDrive != nil {
			if hr, err := env.OSDrive.Get(ctx); err == nil && hr != nil && hr.Holders != nil {
				rep.Holders = hr.Holders
			}
		}
	}
	return rep
}

// hostname is the name of the machine under root: the kernel's for the host, else what
// the root's procfs or /etc/hostname say.
func hostname(root hostroot.Root) string {
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

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
