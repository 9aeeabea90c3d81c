package cli

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/adeagent/adeagent/agent"
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
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

// buildEnv is everything the probes may look at, from the host root and the configuration
// (agent.NewEnv, with systemd over D-Bus for the running host).
func buildEnv(root hostroot.Root, cfg *config.Config) (*probes.Env, error) {
	// systemd over D-Bus only for the running host with systemd as PID 1 (bounded by
	// sysd.DefaultTimeout); any failure leaves Units nil and the probes fall back to /proc.
	var units probes.Units
	if u := sysd.ForRoot(context.Background(), root); u != nil {
		units = u
	}
	env, err := agent.NewEnv(root, cfg, units)
	if err != nil {
		return nil, usageError{err.Error()}
	}
	return env, nil
}

// check runs the probes and assembles the report of a one-shot check (agent.Check).
func check(ctx context.Context, env *probes.Env, list []probes.Probe, opts probes.RunOptions, host string) *api.Report {
	return agent.Check(ctx, env, list, opts, host)
}

// hostname is the name of the machine under root (agent.Hostname).
func hostname(root hostroot.Root) string { return agent.Hostname(root) }

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(v); err != nil {
		return fmt.Errorf("write JSON: %w", err)
	}
	return nil
}
