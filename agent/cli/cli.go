// Package cli implements the adeagent command line: the daemon entry and the one-shot
// subcommands. cmd/adeagent only calls Main.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/adeagent/adeagent/agent"
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/version"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Exit codes: the ones in agent/api, shared by both binaries.
const (
	ExitOK          = api.ExitOK
	ExitNotReady    = api.ExitNotReady
	ExitUsage       = api.ExitUsage
	ExitUnreachable = api.ExitUnreachable
)

// Defaults of the common flags.
const (
	DefaultConfig   = "/etc/adeagent/adeagent.yaml"
	DefaultSocket   = "/run/adeagent/adeagent.sock"
	DefaultStateDir = "/var/lib/adeagent"
)

// Common holds the flags every subcommand accepts.
type Common struct {
	Config   string
	Socket   string
	StateDir string
	RootDir  string
	LogLevel string
}

func (c *Common) register(fs *flag.FlagSet) {
	fs.StringVar(&c.Config, "config", DefaultConfig, "configuration `file` (missing file = defaults)")
	fs.StringVar(&c.Socket, "socket", DefaultSocket, "API socket `path`")
	fs.StringVar(&c.StateDir, "state-dir", DefaultStateDir, "state `directory`")
	fs.StringVar(&c.RootDir, "root", "/", "host root `directory` everything is read from")
	fs.StringVar(&c.LogLevel, "log-level", "info", "log `level`: debug, info, warn, error")
}

// Root opens the host root named by --root.
func (c *Common) Root() (hostroot.Root, error) { return hostroot.New(c.RootDir) }

// usageError is a command-line mistake: exit 2 with one clear line.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return usageError{fmt.Sprintf(format, a...)} }

// command is one subcommand.
type command struct {
	name  string
	short string
	run   func(args []string, stdout, stderr io.Writer) (int, error)
}

// commands is the subcommand table, in the order help lists them.
func commands() []command {
	return []command{
		{"run", "run the daemon in the foreground", runDaemon},
		{"check", "one-shot readiness report of this machine", runCheck},
		{"holders", "everything that keeps a filesystem (default: the OS drive) busy", runHolders},
		{"restore", "restore what prepare quiesced when the journal says it is owed (--owed; boot unit)", runRestore},
		{"config", "print the effective configuration", runConfig},
		{"version", "print version, commit and Go version", runVersion},
	}
}

// Main runs adeagent with args (without the program name) and returns the exit code.
func Main(args []string, stdout, stderr io.Writer) int {
	name := "run"
	if len(args) > 0 {
		name, args = args[0], args[1:]
	}
	if name == "help" || name == "-h" || name == "--help" {
		usage(stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != name {
			continue
		}
		code, err := c.run(args, stdout, stderr)
		if err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return ExitOK
			}
			fmt.Fprintf(stderr, "adeagent %s: %v\n", name, err)
			var ue usageError
			if errors.As(err, &ue) && code == ExitOK {
				return ExitUsage
			}
			if code == ExitOK {
				code = ExitNotReady
			}
		}
		return code
	}
	fmt.Fprintf(stderr, "adeagent: unknown command %q\n", name)
	usage(stderr)
	return ExitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: adeagent [command] [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintln(w, "\nRun 'adeagent COMMAND -h' for a command's flags.")
}

// newFlagSet makes a subcommand's flag set with the common flags registered.
func newFlagSet(name string, stderr io.Writer, c *Common) *flag.FlagSet {
	fs := flag.NewFlagSet("adeagent "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	return fs
}

// parse parses flags and turns flag errors into usage errors.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	return nil
}

func runVersion(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("version", stderr, &c)
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	fmt.Fprintf(stdout, "adeagent %s\n", version.String())
	return ExitOK, nil
}

// runDaemon is `adeagent run` (and `adeagent` with no arguments): the daemon in the
// foreground, for systemd Type=notify. Exit 0 after SIGTERM/SIGINT, agent.ExitStripdown
// when ADE's stripdown is under way, 2 for a configuration error, 1 for other failures.
func runDaemon(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("run", stderr, &c)
	interval := fs.Duration("interval", agent.DefaultInterval, "re-evaluate readiness this often")
	logFormat := fs.String("log-format", "json", "log `format`: json or console")
	live := fs.Bool("live-holders", false, "follow the OS drive's holders live between evaluations (fanotify + proc connector; costs CPU on busy machines)")
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	if *interval < 100*time.Millisecond {
		return ExitUsage, usagef("--interval %s: want at least 100ms", *interval)
	}
	cfg, err := loadConfig(fs, &c)
	if err != nil {
		return ExitUsage, err
	}
	root, err := c.Root()
	if err != nil {
		return ExitUsage, usagef("--root: %v", err)
	}
	d, err := agent.New(cfg, agent.Options{
		Root:        root,
		LoadConfig:  func() (*config.Config, error) { return loadConfig(fs, &c) },
		Interval:    *interval,
		LogFormat:   *logFormat,
		Stderr:      stderr,
		LiveHolders: *live,
	})
	if err != nil {
		return ExitUsage, usageError{err.Error()}
	}
	return d.Run(context.Background())
}

// isTerminal reports whether w is a terminal, for colour decisions.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
