package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/quiesce"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// runRestore is `adeagent restore --owed`: the boot unit's one-shot. It restores what a
// prepare left quiesced when the journal in the state dir says a restore is owed: exit 0
// when nothing is owed or the restore succeeded, 1 when it failed (findings printed; the
// restore stays owed), 2 for usage or configuration errors. Without --owed it refuses:
// a restore on request goes through the daemon ('adeagentctl restore'), which also
// follows ADE and keeps its phase right.
func runRestore(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("restore", stderr, &c)
	owed := fs.Bool("owed", false, "restore only if the journal says a restore is owed (the boot unit's mode)")
	asJSON := fs.Bool("json", false, "print the result as JSON (schema_version 1)")
	// Under adeagent-restore.service's TimeoutStartSec=5min, so the restore ends by itself
	// (journal written, findings printed) before systemd would kill it.
	timeout := fs.Duration("timeout", 4*time.Minute+30*time.Second, "deadline for the whole restore")
	mountWait := fs.Duration("mount-wait", 2*time.Minute, "how long to wait for a data disk's mount before starting a service whose data is there")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: adeagent restore --owed [--json] [--timeout D] [--mount-wait D] [common flags]")
		fmt.Fprintln(stderr, "\nUndo what 'adeagentctl prepare' did when the quiesce journal says a restore is owed")
		fmt.Fprintln(stderr, "(run at boot by adeagent-restore.service). Exit 0: nothing owed or restored;")
		fmt.Fprintln(stderr, "1: the restore failed (still owed); 2: usage or configuration error.")
		fmt.Fprintln(stderr, "To restore on request, use 'adeagentctl restore' (through the daemon).")
		fmt.Fprintln(stderr)
		fs.PrintDefaults()
	}
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	if !*owed {
		return ExitUsage, usagef("restore without --owed is not a one-shot: use 'adeagentctl restore' (the daemon restores), or 'adeagent restore --owed' when the daemon is not running")
	}
	if *timeout <= 0 || *mountWait <= 0 {
		return ExitUsage, usagef("--timeout and --mount-wait must be positive")
	}
	cfg, err := loadConfig(fs, &c)
	if err != nil {
		return ExitUsage, err
	}
	root, err := c.Root()
	if err != nil {
		return ExitUsage, usagef("--root: %v", err)
	}
	stateDir := cfg.StateDir
	if !filepath.IsAbs(stateDir) {
		return ExitUsage, usagef("state dir %q: want an absolute path", stateDir)
	}
	isOwed, oerr := quiesce.JournalOwed(stateDir)
	if oerr != nil && !errors.Is(oerr, quiesce.ErrCorrupt) {
		return ExitNotReady, oerr
	}
	if !isOwed {
		if !*asJSON {
			fmt.Fprintln(stdout, "nothing to restore: no quiesce journal owes a restore")
			return ExitOK, nil
		}
		return ExitOK, writeJSON(stdout, &api.QuiesceResult{SchemaVersion: api.SchemaVersion, GeneratedAt: time.Now().UTC().Truncate(time.Second),
			Action: "restore", Outcome: api.OutcomeNothing, Steps: []api.QuiesceStep{}, Findings: []api.Finding{}, Quiesced: []api.QuiescedUnit{},
			Journal: filepath.Join(stateDir, quiesce.JournalFile)})
	}
	log, err := restoreLogger(stderr, cfg.LogLevel)
	if err != nil {
		return ExitUsage, err
	}
	defer func() { _ = log.Sync() }()

	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	eng, closeFn, err := newRestoreEngine(ctx, root, stateDir, cfg.ADE.Path, cfg.Quiesce.Allow, *mountWait, log)
	if err != nil {
		return ExitUsage, err
	}
	defer closeFn()
	who := quiesce.Who{Origin: quiesce.OriginBoot, UID: os.Getuid(), PID: os.Getpid(), Comm: "adeagent"}
	res, err := eng.Restore(ctx, who)
	if err != nil {
		return ExitNotReady, fmt.Errorf("restore: %w", err)
	}
	if *asJSON {
		if err := writeJSON(stdout, res); err != nil {
			return ExitNotReady, err
		}
	} else {
		printRestore(stdout, res)
	}
	if res.Outcome == api.OutcomeFailed {
		return ExitNotReady, nil
	}
	return ExitOK, nil
}

// newRestoreEngine builds the engine for a one-shot restore: systemd over D-Bus when this
// root is the running host with systemd, else a stand-in that fails every call (a
// restore then reports each step it could not undo).
func newRestoreEngine(ctx context.Context, root hostroot.Root, stateDir, adePath string, allow []string, mountWait time.Duration, log *zap.Logger) (*quiesce.Engine, func(), error) {
	opts, err := quiesce.HostOptions(root, adePath)
	if err != nil {
		return nil, nil, err
	}
	var sd quiesce.Systemd = noSystemd{}
	closeFn := func() {}
	if c := sysd.ForRoot(ctx, root); c != nil {
		sd, closeFn = c, c.Close
	}
	opts.StateDir, opts.Allow, opts.Systemd, opts.Log, opts.MountWait = stateDir, allow, sd, log, mountWait
	if root.IsHost() {
		opts.Docker = quiesce.NewDockerAPI(root)
	}
	eng, err := quiesce.New(opts)
	if err != nil {
		closeFn()
		return nil, nil, err
	}
	return eng, closeFn, nil
}

// errNoSystemd is what noSystemd answers.
var errNoSystemd = errors.New("systemd is not reachable on this root (not the running host, or systemd is not PID 1)")

// noSystemd stands in for systemd where there is none.
type noSystemd struct{}

func (noSystemd) ListUnits(context.Context, []string) ([]probes.UnitState, error) {
	return nil, errNoSystemd
}
func (noSystemd) Unit(context.Context, string) (sysd.UnitInfo, error) {
	return sysd.UnitInfo{}, errNoSystemd
}
func (noSystemd) StopUnit(context.Context, string) (string, error)  { return "", errNoSystemd }
func (noSystemd) StartUnit(context.Context, string) (string, error) { return "", errNoSystemd }
func (noSystemd) MaskRuntime(context.Context, []string) error       { return errNoSystemd }
func (noSystemd) UnmaskRuntime(context.Context, []string) error     { return errNoSystemd }

func restoreLogger(w io.Writer, level string) (*zap.Logger, error) {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		return nil, usagef("log level %q: %v", level, err)
	}
	ec := zap.NewProductionEncoderConfig()
	ec.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(ec), zapcore.AddSync(w), lvl)
	return zap.New(core), nil
}

func printRestore(w io.Writer, res *api.QuiesceResult) {
	fmt.Fprintf(w, "restore: %s\n", res.Outcome)
	for _, s := range res.Steps {
		fmt.Fprintf(w, "  %-17s %-40s %s\n", s.Kind, s.Target, s.Result)
	}
	if res.SELinux != nil {
		fmt.Fprintf(w, "SELinux: %s\n", res.SELinux.Mode)
	}
	for _, f := range res.Findings {
		mark := "note"
		if f.Blocker {
			mark = "FAILED"
		}
		fmt.Fprintf(w, "%s %s: %s\n  %s\n  fix: %s\n", mark, f.Key, f.Title, strings.TrimSpace(f.Summary), f.Remediation.Hint)
	}
	fmt.Fprintf(w, "journal: %s\n", res.Journal)
}
