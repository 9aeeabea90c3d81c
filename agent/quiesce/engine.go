// Package quiesce makes the VM ready for ADE and puts it back: it stops heavy services
// through systemd (catalog families and the config allowlist only, never the never-stop
// list, never killing a process), records and restarts Docker containers, switches
// SELinux to permissive, and restores all of it in reverse — from a journal written
// before and after every change, so that a kill -9 or a reboot at any instant loses
// nothing and repeats nothing (DESIGN.md §5, docs/quiesce.md).
package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/selinux"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// ADE paths (probes.PathUnmount / probes.PathOnline).
const (
	PathUnmount = string(probes.PathUnmount)
	PathOnline  = string(probes.PathOnline)
)

// Systemd is what the engine asks systemd; *sysd.Client implements it.
type Systemd interface {
	ListUnits(ctx context.Context, patterns []string) ([]probes.UnitState, error)
	Unit(ctx context.Context, name string) (sysd.UnitInfo, error)
	StopUnit(ctx context.Context, name string) (string, error)
	StartUnit(ctx context.Context, name string) (string, error)
	MaskRuntime(ctx context.Context, units []string) error
	UnmaskRuntime(ctx context.Context, units []string) error
}

var _ Systemd = (*sysd.Client)(nil)

// Docker is the Docker Engine API; *DockerAPI implements it.
type Docker interface {
	Present() bool
	Running(ctx context.Context) ([]Container, error)
	LiveRestore(ctx context.Context) (bool, error)
	Stop(ctx context.Context, id string, grace time.Duration) error
	Start(ctx context.Context, id string) error
	IsRunning(ctx context.Context, id string) (bool, error)
}

var _ Docker = (*DockerAPI)(nil)

// Exec runs a pre-stop argv (never through a shell) within ctx.
type Exec interface {
	Run(ctx context.Context, argv []string) ([]byte, error)
}

// SELinux is the SELinux switch; *selinux.FS implements it.
type SELinux interface {
	State() (selinux.State, error)
	SetEnforce(mode int) error
	SetConfigMode(value string) (bool, error)
}

var _ SELinux = (*selinux.FS)(nil)

// HostExec runs argv on the running host with exec.CommandContext (PATH lookup, no shell).
type HostExec struct{}

// Run runs argv and returns its combined output.
func (HostExec) Run(ctx context.Context, argv []string) ([]byte, error) {
	if len(argv) == 0 {
		return nil, errors.New("empty argv")
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.WaitDelay = 5 * time.Second
	return cmd.CombinedOutput()
}

// Rescan returns the OS drive's holders now (the daemon's holder scan).
type Rescan func(ctx context.Context) (*api.HoldersReport, error)

// Options configures an Engine.
type Options struct {
	Root     hostroot.Root
	StateDir string
	Catalog  *catalog.Catalog
	// DistroFamily picks the catalog's per-distro unit names (catalog.DistroFamily).
	DistroFamily string
	// Path is ADE's path: PathUnmount or PathOnline (ResolvePath); PathReason says why.
	Path       string
	PathReason string
	// Allow is config quiesce.allow: unit globs prepare may stop beyond the catalog (on
	// the online path, the only units it stops).
	Allow []string
	// SELinuxOnline makes prepare switch SELinux to permissive on the online path too
	// (runtime and /etc/selinux/config, since a reboot comes in between).
	SELinuxOnline bool
	Systemd       Systemd
	Docker        Docker  // nil: no Docker steps
	Exec          Exec    // nil: argv pre-stop steps are skipped (reported)
	SELinux       SELinux // nil: selinux.New(Root)
	Rescan        Rescan  // nil: no holder rescan
	Log           *zap.Logger
	// MountWait bounds restore's wait for a data mount before it starts a service whose
	// data lives there. Default 3m.
	MountWait time.Duration
	// JobTimeout bounds start jobs and unit-file calls. Default 2m.
	JobTimeout time.Duration
	// AfterJournalWrite, when set, is called after every journal write (the daemon's
	// test-only crash switch kills the process there, like kill -9 at that instant).
	AfterJournalWrite func()
}

// Engine runs prepare and restore. It is safe for concurrent use: Prepare and Restore are
// serialised (in-process mutex, and an flock against other processes); Plan, Owed and
// State only read and never wait for them.
type Engine struct {
	o     Options
	store store
	log   *zap.Logger
	mu    sync.Mutex
	now   func() time.Time
	// crash, when set (tests), is called after every journal write; an error aborts the
	// call on the spot, like a kill -9 would.
	crash func() error
	poll  time.Duration
	// gaveUp holds the mount points one restore call waited for in vain.
	gaveUp map[string]bool
}

// New checks the options and returns an Engine.
func New(o Options) (*Engine, error) {
	if o.StateDir == "" {
		return nil, errors.New("quiesce: no state directory")
	}
	if o.Catalog == nil {
		return nil, errors.New("quiesce: no catalog")
	}
	if o.Systemd == nil {
		return nil, errors.New("quiesce: no systemd connection")
	}
	switch o.Path {
	case PathUnmount, PathOnline:
	default:
		return nil, fmt.Errorf("quiesce: ADE path %q: want unmount or online", o.Path)
	}
	for _, g := range o.Allow {
		if _, err := filepath.Match(g, ""); err != nil {
			return nil, fmt.Errorf("quiesce: allow pattern %q: %w", g, err)
		}
	}
	if o.SELinux == nil {
		o.SELinux = selinux.New(o.Root)
	}
	if o.Log == nil {
		o.Log = zap.NewNop()
	}
	if o.MountWait <= 0 {
		o.MountWait = 3 * time.Minute
	}
	if o.JobTimeout <= 0 {
		o.JobTimeout = 2 * time.Minute
	}
	return &Engine{o: o, store: store{dir: o.StateDir}, log: o.Log, now: time.Now, poll: time.Second}, nil
}

// ResolvePath turns the distribution (after config ade.path's WithPathOverride) into the
// path prepare follows and why. A distribution ADE has no OS path for gets the unmount
// path: the full quiesce is the safe side.
func ResolvePath(d probes.Distro) (path, reason string) {
	switch {
	case d.PathFromConfig:
		return string(d.Path), "config ade.path: " + string(d.Path)
	case d.Path == probes.PathUnmount:
		return PathUnmount, d.Name() + ": ADE unmounts the OS drive (stripdown + pivot_root)"
	case d.Path == probes.PathOnline:
		return PathOnline, d.Name() + ": ADE re-encrypts the OS drive online after a reboot; nothing is unmounted"
	}
	return PathUnmount, d.Name() + ": not in ADE's OS table; the full (unmount-path) quiesce is the safe choice"
}

// JournalPath is the journal file's path.
func (e *Engine) JournalPath() string { return e.store.path() }

// Owed reports whether the journal says a restore is owed. A corrupt journal reports
// true with an error wrapping ErrCorrupt.
func (e *Engine) Owed() (bool, error) {
	j, err := e.store.load()
	if err != nil {
		return true, err
	}
	return j.Owed(), nil
}

// OtherBoot reports whether the journal was written on an earlier boot, i.e. the machine
// rebooted between prepare and now. False without a readable journal or boot id.
func (e *Engine) OtherBoot() bool {
	j, err := e.store.load()
	if err != nil || j == nil {
		return false
	}
	now := e.bootID()
	return j.BootID != "" && now != "" && j.BootID != now
}

// Status is what status shows about quiesce.
type Status struct {
	Owed bool `json:"owed"`
	// Phase: none|preparing|prepared|restoring|restored.
	Phase    string             `json:"phase"`
	Outcome  string             `json:"outcome,omitempty"`
	Who      *Who               `json:"who,omitempty"`
	Quiesced []api.QuiescedUnit `json:"quiesced"`
	SELinux  *api.SELinuxState  `json:"selinux,omitempty"`
}

// State reads the journal and SELinux for status (api.Report's quiesced and selinux).
// It never waits for a running prepare or restore (the journal file is replaced
// atomically, so it reads a consistent state). SELinux is nil when unreadable; the error
// is for the journal only (ErrCorrupt: Owed is true).
func (e *Engine) State() (Status, error) {
	st := Status{Phase: "none", Quiesced: []api.QuiescedUnit{}}
	if se, err := e.o.SELinux.State(); err == nil {
		st.SELinux = &api.SELinuxState{Mode: selinux.ModeName(se.Enforce)}
	}
	j, err := e.store.load()
	if err != nil {
		st.Owed = true
		return st, err
	}
	if j == nil {
		return st, nil
	}
	st.Owed = j.Owed()
	st.Who = &j.Who
	switch {
	case j.Restore != nil && j.Restore.Done != nil:
		st.Phase = "restored"
	case j.Restore != nil:
		st.Phase = "restoring"
	case j.Prepared != nil:
		st.Phase, st.Outcome = "prepared", j.Prepared.Outcome
	default:
		st.Phase = "preparing"
	}
	st.Quiesced = quiesced(j)
	for _, s := range j.Steps {
		if s.Kind == KindSELinuxRuntime && s.Intent != nil && !undone(s) && st.SELinux != nil && s.Before.Enforce != nil {
			st.SELinux.Previous = selinux.ModeName(*s.Before.Enforce)
		}
	}
	return st, nil
}

func quiesced(j *Journal) []api.QuiescedUnit {
	out := []api.QuiescedUnit{}
	for _, s := range j.Steps {
		if (s.Kind != KindStopUnit && s.Kind != KindStopReactivator) || s.Intent == nil || undone(s) {
			continue
		}
		state := "stopped"
		switch {
		case s.Undo != nil:
			state = "restoring"
		case s.Done == nil && s.Result != "":
			state = "stop-failed"
		case s.Done == nil:
			state = "stopping"
		}
		out = append(out, api.QuiescedUnit{Unit: s.Target, State: state})
	}
	return out
}

func undone(s *Step) bool { return s.Undo != nil && s.Undo.Done != nil }

// journalError is a failed journal write (or the tests' crash): it ends the call at
// once, unlike a failed step.
type journalError struct{ err error }

func (e journalError) Error() string { return e.err.Error() }
func (e journalError) Unwrap() error { return e.err }

// save writes the journal and gives the crash hook its chance.
func (e *Engine) save(j *Journal) error {
	j.Updated = e.now().UTC()
	if err := e.store.save(j); err != nil {
		return journalError{err}
	}
	if e.o.AfterJournalWrite != nil {
		e.o.AfterJournalWrite()
	}
	if e.crash != nil {
		if err := e.crash(); err != nil {
			return journalError{err}
		}
	}
	return nil
}

func (e *Engine) stamp() *time.Time {
	t := e.now().UTC()
	return &t
}

// bootID reads the kernel's boot id ("" when unreadable).
func (e *Engine) bootID() string {
	b, err := os.ReadFile(e.o.Root.Proc("sys", "kernel", "random", "boot_id"))
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func isActive(state string) bool {
	switch state {
	case "active", "activating", "reloading", "refreshing":
		return true
	}
	return false
}

func matchAny(globs []string, name string) bool {
	for _, g := range globs {
		if ok, _ := filepath.Match(g, name); ok {
			return true
		}
	}
	return false
}

func finding(key, title, summary, hint string, blocker bool, related ...api.Related) api.Finding {
	sev := api.SeverityMedium
	if blocker {
		sev = api.SeverityHigh
	}
	return api.Finding{Key: key, Probe: "quiesce", Title: title, Summary: summary, Severity: sev,
		Blocker: blocker, Remediation: api.Remediation{Hint: hint}, Related: related}
}

func unitRel(u string) api.Related { return api.Related{Kind: "unit", ID: u} }

// sortFindings orders blockers first, then severity high→info, then key.
func sortFindings(fs []api.Finding) {
	slices.SortStableFunc(fs, func(a, b api.Finding) int {
		if a.Blocker != b.Blocker {
			if a.Blocker {
				return -1
			}
			return 1
		}
		if a.Severity.Rank() != b.Severity.Rank() {
			return b.Severity.Rank() - a.Severity.Rank()
		}
		return strings.Compare(a.Key, b.Key)
	})
}

// HostOptions fills the options that come from the host itself: the root, the embedded
// service catalog, the distribution's catalog family, and ADE's path for it (adePath is
// config ade.path: auto, unmount or online) with the reason. The daemon and `adeagent
// restore --owed` add the rest.
func HostOptions(root hostroot.Root, adePath string) (Options, error) {
	cat, err := catalog.Default()
	if err != nil {
		return Options{}, fmt.Errorf("service catalog: %w", err)
	}
	d, _ := probes.LoadDistro(root)
	d, err = d.WithPathOverride(adePath)
	if err != nil {
		return Options{}, fmt.Errorf("ade.path: %w", err)
	}
	path, reason := ResolvePath(d)
	return Options{Root: root, Catalog: cat, DistroFamily: catalog.DistroFamily(d.ID, d.IDLike),
		Path: path, PathReason: reason}, nil
}
