// Package ctl implements adeagentctl, the client of the adeagent daemon's socket API
// (DESIGN.md §3). cmd/adeagentctl only calls Main.
package ctl

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/version"
)

// Exit codes: the ones in agent/api, shared by both binaries.
const (
	ExitOK          = api.ExitOK
	ExitNotReady    = api.ExitNotReady
	ExitUsage       = api.ExitUsage
	ExitUnreachable = api.ExitUnreachable
)

// SocketEnv names the socket when --socket is not given.
const SocketEnv = "ADEAGENT_SOCKET"

// requestTimeout bounds every request except wait and events.
const requestTimeout = 60 * time.Second

// Env is what a run of adeagentctl sees of the world; Main fills it from the process.
type Env struct {
	Stdout, Stderr io.Writer
	Getenv         func(string) string
	// ServiceState says whether adeagent.service is active, for the unreachable hint.
	ServiceState func(ctx context.Context) string
	// Colour: the report may use ANSI colours.
	Colour bool
}

// Main runs adeagentctl with args (without the program name) and returns the exit code.
// SIGINT and SIGTERM end waits and event streams.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	return Run(ctx, args, Env{
		Stdout:       os.Stdout,
		Stderr:       os.Stderr,
		Getenv:       os.Getenv,
		ServiceState: SystemctlIsActive,
		Colour:       isTerminal(os.Stdout) && os.Getenv("NO_COLOR") == "",
	})
}

// command is one subcommand.
type command struct {
	name  string
	short string
	run   func(r *runner, ctx context.Context, args []string) int
}

func commands() []command {
	return []command{
		{"status", "phase, ready or not, blockers with one-line fixes, quiesced units, SELinux, ADE progress", (*runner).status},
		{"report", "the full findings report", (*runner).report},
		{"holders", "current holders of the OS drive", (*runner).holders},
		{"wait", "block until ready (exit 0) or timeout (exit 1)", (*runner).wait},
		{"events", "stream phase changes and findings as JSON lines", (*runner).events},
		{"prepare", "quiesce heavy services, switch SELinux to permissive; --dry-run shows the plan", (*runner).prepare},
		{"restore", "undo what prepare did", (*runner).restore},
		{"version", "client and daemon versions", (*runner).version},
	}
}

// runner carries one invocation's settings.
type runner struct {
	env    Env
	socket string
	client *api.Client
	name   string
}

// Run is Main with the environment given.
func Run(ctx context.Context, args []string, env Env) int {
	if env.Getenv == nil {
		env.Getenv = func(string) string { return "" }
	}
	if env.ServiceState == nil {
		env.ServiceState = SystemctlIsActive
	}
	r := &runner{env: env, socket: api.DefaultSocket}
	if s := env.Getenv(SocketEnv); s != "" {
		r.socket = s
	}
	global := flag.NewFlagSet("adeagentctl", flag.ContinueOnError)
	global.SetOutput(env.Stderr)
	global.StringVar(&r.socket, "socket", r.socket, "daemon socket `path` (env "+SocketEnv+")")
	global.Usage = func() { r.usage(env.Stderr) }
	if err := global.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK
		}
		return ExitUsage
	}
	args = global.Args()
	if len(args) == 0 {
		r.usage(env.Stderr)
		return ExitUsage
	}
	name, args := args[0], args[1:]
	if name == "help" {
		r.usage(env.Stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name == name {
			r.name = name
			return c.run(r, ctx, args)
		}
	}
	fmt.Fprintf(env.Stderr, "adeagentctl: unknown command %q\n", name)
	r.usage(env.Stderr)
	return ExitUsage
}

func (r *runner) usage(w io.Writer) {
	fmt.Fprintln(w, "usage: adeagentctl [--socket PATH] command [flags]")
	fmt.Fprintln(w, "\ncommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.short)
	}
	fmt.Fprintf(w, "\nThe socket defaults to $%s or %s.\n", SocketEnv, api.DefaultSocket)
	fmt.Fprintln(w, "Exit codes: 0 ready/success, 1 not ready or failed, 2 usage, 3 daemon unreachable.")
}

// flags makes a subcommand's flag set; --socket is accepted after the command too.
func (r *runner) flags() *flag.FlagSet {
	fs := flag.NewFlagSet("adeagentctl "+r.name, flag.ContinueOnError)
	fs.SetOutput(r.env.Stderr)
	fs.StringVar(&r.socket, "socket", r.socket, "daemon socket `path` (env "+SocketEnv+")")
	return fs
}

// parse parses a subcommand's flags; ok false means: return code.
func (r *runner) parse(fs *flag.FlagSet, args []string) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return ExitOK, false
		}
		return ExitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(r.env.Stderr, "adeagentctl %s: unexpected argument %q\n", r.name, fs.Arg(0))
		return ExitUsage, false
	}
	r.client = &api.Client{
		Socket: r.socket,
		OnVersionMismatch: func(client, daemon string) {
			fmt.Fprintf(r.env.Stderr, "Warning: adeagentctl version %s != adeagent daemon version %s\n", client, daemon)
		},
	}
	return 0, true
}

// fail reports err and returns its exit code: 3 with a hint when the daemon is
// unreachable, else 1.
func (r *runner) fail(ctx context.Context, err error) int {
	fmt.Fprintf(r.env.Stderr, "adeagentctl %s: %v\n", r.name, err)
	var ue *api.UnreachableError
	if errors.As(err, &ue) {
		r.unreachableHint(ctx, err)
		return ExitUnreachable
	}
	var ae *api.APIError
	if errors.As(err, &ae) && ae.Status == 503 {
		fmt.Fprintln(r.env.Stderr, "The daemon is running but has not finished its first evaluation; try again shortly or use 'adeagentctl wait'.")
	}
	return ExitNotReady
}

// unreachableHint says whether adeagent.service runs and how to start it.
func (r *runner) unreachableHint(ctx context.Context, err error) {
	w := r.env.Stderr
	if errors.Is(err, syscall.EACCES) {
		// The daemon probably runs; this user may not talk to it.
		fmt.Fprintf(w, "Permission denied on %s: run as root or as a member of group adeagent.\n", r.socket)
		fmt.Fprintln(w, r.env.ServiceState(ctx))
		return
	}
	if errors.Is(err, syscall.ENOENT) {
		fmt.Fprintf(w, "The socket %s does not exist.\n", r.socket)
	}
	fmt.Fprintln(w, r.env.ServiceState(ctx))
	fmt.Fprintln(w, "Start the daemon with 'systemctl start adeagent', or run it in the foreground with 'adeagent run'.")
	if r.socket != api.DefaultSocket {
		fmt.Fprintf(w, "(A daemon started with defaults listens on %s; this command used %s.)\n", api.DefaultSocket, r.socket)
	}
}

// SystemctlIsActive asks `systemctl is-active adeagent.service` (2 s timeout) and says
// what it answered, in a sentence.
func SystemctlIsActive(ctx context.Context) string {
	path, err := exec.LookPath("systemctl")
	if err != nil {
		return "systemctl is not installed: cannot tell whether adeagent.service is running."
	}
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, "is-active", "adeagent.service")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	runErr := cmd.Run()
	state := strings.TrimSpace(stdout.String())
	switch {
	case ctx.Err() != nil:
		return "systemctl is-active adeagent.service did not answer within 2s."
	case state == "active":
		return "adeagent.service is active, but its socket does not answer (is it configured with another --socket?)."
	case state != "":
		return fmt.Sprintf("adeagent.service is not running (systemctl is-active: %s).", state)
	}
	msg := firstLine(stderr.String())
	if msg == "" && runErr != nil {
		msg = runErr.Error()
	}
	return fmt.Sprintf("Cannot tell whether adeagent.service is running (systemctl: %s).", msg)
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i]
	}
	return s
}

func (r *runner) version(ctx context.Context, args []string) int {
	fs := r.flags()
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	r.client.OnVersionMismatch = nil // both versions are printed anyway
	fmt.Fprintf(r.env.Stdout, "adeagentctl %s\n", version.String())
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	v, err := r.client.DaemonVersion(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	fmt.Fprintf(r.env.Stdout, "adeagent daemon %s\n", v)
	return ExitOK
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
