package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/adewatch"
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/quiesce"
	"github.com/adeagent/adeagent/agent/server"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
)

// actionTimeout bounds one prepare or restore. The engine bounds every step itself (a
// family's stop_timeout is at most 15 minutes); this is the backstop.
const actionTimeout = 45 * time.Minute

// actionError is an error the API answers with a particular status code.
type actionError struct {
	code int
	err  error
}

func (e *actionError) Error() string   { return e.err.Error() }
func (e *actionError) Unwrap() error   { return e.err }
func (e *actionError) HTTPStatus() int { return e.code }

// errActionRunning is returned while another prepare or restore runs.
var errActionRunning = errors.New("another prepare or restore is running")

// actions runs prepare and restore for the daemon and follows ADE (DESIGN.md §5, §6). The
// quiesce engine is made anew for every call from the current configuration (it is cheap);
// the systemd connection is kept and re-made after a failure, because PID 1's re-exec
// (ADE's telinit u) drops it.
type actions struct {
	d      *Daemon
	sd     quiesce.Systemd
	docker quiesce.Docker
	exec   quiesce.Exec

	mu      sync.Mutex
	ade     *adewatch.Watcher // nil until follow starts it (or with Options.NoADEWatch)
	life    context.Context   // the daemon's run: actions end with it, not with a client
	running string            // "prepare" or "restore" while one runs
	// restoredAt is when the phase became restored (it turns observing an interval later).
	restoredAt time.Time
	// adeFinding explains ADE's failed unmount of /oldroot with the holders adeagent saw.
	adeFinding *api.Finding
}

func newActions(d *Daemon) *actions {
	a := &actions{d: d, sd: d.opts.Systemd, docker: d.opts.Docker, exec: d.opts.Exec, life: context.Background()}
	if a.sd == nil {
		a.sd = &redialSystemd{d: d}
	}
	if a.docker == nil && d.root.IsHost() {
		a.docker = quiesce.NewDockerAPI(d.root)
	}
	if a.exec == nil && d.root.IsHost() {
		a.exec = quiesce.HostExec{}
	}
	return a
}

// engine makes the quiesce engine for the current configuration.
func (a *actions) engine() (*quiesce.Engine, error) { return a.engineWith(nil) }

// engineWith is engine with a hook after every journal write (the test crash switch;
// only prepare and restore arm it).
func (a *actions) engineWith(afterWrite func()) (*quiesce.Engine, error) {
	cfg := a.d.config()
	o, err := quiesce.HostOptions(a.d.root, cfg.ADE.Path)
	if err != nil {
		return nil, err
	}
	o.StateDir, o.Allow = cfg.StateDir, cfg.Quiesce.Allow
	o.Systemd, o.Docker, o.Exec = a.sd, a.docker, a.exec
	o.Rescan = a.rescan(o.Catalog)
	o.Log = a.d.log.Named("quiesce")
	o.AfterJournalWrite = afterWrite
	eng, err := quiesce.New(o)
	if err != nil {
		return nil, fmt.Errorf("quiesce: %w", err)
	}
	return eng, nil
}

// CrashFileEnv names an environment variable for tests only: when it is set and the file
// it names exists when a prepare or restore begins, the file is removed and the daemon
// kills itself with SIGKILL right after the Nth journal write of that action (N is the
// file's content), as a kill -9 at that instant would. Production never sets it.
const CrashFileEnv = "ADEAGENT_TEST_CRASH_FILE"

// crashSwitch returns the AfterJournalWrite hook of CrashFileEnv, or nil.
func (a *actions) crashSwitch() func() {
	path := os.Getenv(CrashFileEnv)
	if path == "" {
		return nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	n, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || n < 1 {
		a.d.log.Warn("test crash switch: want a positive number", zap.String("file", path))
		return nil
	}
	if err := os.Remove(path); err != nil {
		return nil // never crash twice on one file
	}
	a.d.log.Warn("test crash switch armed", zap.String("file", path), zap.Int("after_journal_writes", n))
	var writes atomic.Int64
	return func() {
		if writes.Add(1) == int64(n) {
			a.d.log.Warn("test crash switch: SIGKILL now", zap.Int("journal_writes", n))
			_ = a.d.log.Sync()
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is on its way
		}
	}
}

// rescan is prepare's holder scan after its stops: a fresh scan of the OS drive, filtered
// by the readiness report's own rule (probes.BlockingHolders) so that prepare and the
// report agree on what blocks.
func (a *actions) rescan(cat *catalog.Catalog) quiesce.Rescan {
	return func(ctx context.Context) (*api.HoldersReport, error) {
		rep, err := probes.NewOSDriveScan(a.d.root, scanOptions(a.d.config())).Get(ctx)
		if err != nil {
			return nil, err
		}
		return probes.BlockingHolders(rep, os.Getpid(), cat), nil
	}
}

// begin marks an action as running (only one runs at a time) and returns its context:
// the daemon's life, bounded by actionTimeout. A client that goes away does not abandon a
// prepare half way (the journal would cope, but nobody would see the outcome); the
// daemon's shutdown does, and the journal says what is owed.
func (a *actions) begin(what string) (context.Context, context.CancelFunc, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.running != "" {
		return nil, nil, &actionError{http.StatusConflict, fmt.Errorf("%w (%s)", errActionRunning, a.running)}
	}
	a.running = what
	ctx, cancel := context.WithTimeout(a.life, actionTimeout)
	return ctx, cancel, nil
}

func (a *actions) end() {
	a.mu.Lock()
	a.running = ""
	a.mu.Unlock()
}

// plan is prepare --dry-run.
func (a *actions) plan(ctx context.Context) (*api.QuiescePlan, error) {
	eng, err := a.engine()
	if err != nil {
		return nil, err
	}
	p, err := eng.Plan(ctx)
	if err != nil {
		return nil, classify(err)
	}
	return p, nil
}

// prepare quiesces the VM for who.
func (a *actions) prepare(who quiesce.Who) (*api.QuiesceResult, error) {
	return a.run("prepare", who,
		func(*quiesce.Engine) string { return api.PhasePreparing },
		func(ctx context.Context, eng *quiesce.Engine) (*api.QuiesceResult, error) {
			return eng.Prepare(ctx, who)
		},
		func(res *api.QuiesceResult, _ string) string {
			if res.Outcome == api.OutcomeReady {
				return api.PhaseReady
			}
			return api.PhaseBlocked
		})
}

// restore undoes what prepare did. With nothing owed the phase does not pass through
// restoring.
func (a *actions) restore(who quiesce.Who) (*api.QuiesceResult, error) {
	return a.run("restore", who,
		func(eng *quiesce.Engine) string {
			if owed, _ := eng.Owed(); owed {
				return api.PhaseRestoring
			}
			return ""
		},
		func(ctx context.Context, eng *quiesce.Engine) (*api.QuiesceResult, error) {
			return eng.Restore(ctx, who)
		},
		func(res *api.QuiesceResult, prev string) string {
			switch res.Outcome {
			case api.OutcomeRestored:
				a.mu.Lock()
				a.restoredAt = time.Now()
				a.mu.Unlock()
				return api.PhaseRestored
			case api.OutcomeNothing:
				return api.PhaseObserving
			}
			// Still owed: the phase stays what it was (ready/blocked), so status keeps
			// saying that services are down.
			return prev
		})
}

// run is the frame of prepare and restore: one action at a time, on the daemon's life,
// with an engine carrying the test crash switch; the phase while it runs (running: ""
// keeps the phase) and after it (after, given the phase before), logged with who asked,
// then a new evaluation so the report shows the result.
func (a *actions) run(what string, who quiesce.Who, running func(*quiesce.Engine) string,
	call func(context.Context, *quiesce.Engine) (*api.QuiesceResult, error),
	after func(res *api.QuiesceResult, prev string) string) (*api.QuiesceResult, error) {
	ctx, cancel, err := a.begin(what)
	if err != nil {
		return nil, err
	}
	defer cancel()
	defer a.end()
	eng, err := a.engineWith(a.crashSwitch())
	if err != nil {
		return nil, err
	}
	log := a.d.log.With(zap.String("who", who.String()))
	log.Info(what + " requested")
	prev := a.d.Phase()
	if p := running(eng); p != "" {
		a.d.setPhase(p, what+" requested by "+who.String())
	}
	res, err := call(ctx, eng)
	if err != nil {
		a.d.setPhase(prev, what+" failed: "+err.Error())
		log.Error(what+" failed", zap.Error(err))
		return nil, classify(err)
	}
	a.d.setPhase(after(res, prev), fmt.Sprintf("%s by %s: %s", what, who, res.Outcome))
	log.Info(what+" finished", zap.String("outcome", res.Outcome),
		zap.Int("findings", len(res.Findings)), zap.Float64("took_ms", res.DurationMS))
	a.d.Reevaluate()
	return res, nil
}

// classify maps the engine's errors to API status codes.
func classify(err error) error {
	var ae *actionError
	switch {
	case errors.As(err, &ae):
		return err
	case errors.Is(err, quiesce.ErrBusy), errors.Is(err, quiesce.ErrRestoreInProgress), errors.Is(err, quiesce.ErrCorrupt):
		return &actionError{http.StatusConflict, err}
	case errors.Is(err, errNoSystemd):
		return &actionError{http.StatusServiceUnavailable, err}
	}
	return err
}

// decorate adds what the actions know to a new report: the quiesced units and SELinux
// from the journal, ADE's progress, and the explanation of a failed unmount.
func (a *actions) decorate(rep *api.Report) {
	if eng, err := a.engine(); err == nil {
		st, err := eng.State()
		if err != nil {
			a.d.log.Warn("quiesce journal", zap.Error(err))
		}
		rep.Quiesced = st.Quiesced
		if st.SELinux != nil {
			rep.SELinux = st.SELinux
		}
	}
	if w := a.watcher(); w != nil && rep.ADE != nil {
		if cur := w.Current(); cur.Message != "" {
			rep.ADE.Progress = cur.Message
		}
	}
	a.mu.Lock()
	f := a.adeFinding
	a.mu.Unlock()
	if f != nil {
		rep.Findings = append(rep.Findings, *f)
		probes.SortFindings(rep.Findings)
	}
}

// settleRestored turns the phase restored into observing once an interval has passed
// (DESIGN.md §6: restored → observing), so status says "restored" long enough to be seen.
func (a *actions) settleRestored(interval time.Duration) {
	a.mu.Lock()
	at := a.restoredAt
	a.mu.Unlock()
	if a.d.Phase() == api.PhaseRestored && !at.IsZero() && time.Since(at) >= interval {
		a.d.setPhase(api.PhaseObserving, "restored "+time.Since(at).Round(time.Second).String()+" ago")
	}
}

// who turns an API peer into the journal's Who.
func (a *actions) who(p server.Peer) quiesce.Who {
	w := quiesce.Who{Origin: quiesce.OriginSocket, UID: int(p.UID), PID: int(p.PID)}
	if p.PID > 0 {
		if b, err := os.ReadFile(a.d.root.PID(int(p.PID), "comm")); err == nil {
			w.Comm = strings.TrimSpace(string(b))
		}
	}
	return w
}

// follow runs for the daemon's life (ctx): it settles a journal a previous run left
// (restoreAtStart), then follows ADE (agent/adewatch): its request marker prepares the VM
// when ade.auto_prepare is on, its start moves the phase to encrypting, and its end
// (success or failure) restores what prepare changed. The stripdown itself is the main
// loop's business (it exits with ExitStripdown).
func (a *actions) follow(ctx context.Context) {
	a.mu.Lock()
	a.life = ctx
	a.mu.Unlock()
	var initial []adewatch.Event
	var w *adewatch.Watcher
	if !a.d.opts.NoADEWatch {
		w = adewatch.New(a.d.root, a.d.log.Named("ade"))
		initial = w.Scan()
		a.mu.Lock()
		a.ade = w
		a.mu.Unlock()
	}
	a.restoreAtStart()
	if w == nil {
		<-ctx.Done()
		return
	}
	for _, ev := range initial {
		a.onADE(ev)
	}
	events := make(chan adewatch.Event, 16)
	go func() {
		if err := w.Run(ctx, events); err != nil {
			a.d.log.Warn("ADE watch ended", zap.Error(err))
		}
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case ev := <-events:
			a.onADE(ev)
		}
	}
}

// watcher is the ADE watch, nil before follow started it.
func (a *actions) watcher() *adewatch.Watcher {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.ade
}

// owed reports whether the journal owes a restore (true when it cannot be read: the
// unknown is not clean).
func (a *actions) owed() bool {
	eng, err := a.engine()
	if err != nil {
		return true
	}
	owed, _ := eng.Owed()
	return owed
}

func (a *actions) onADE(ev adewatch.Event) {
	log := a.d.log.With(zap.String("ade_event", string(ev.Kind)), zap.String("message", ev.Message),
		zap.String("source", ev.Source), zap.Bool("initial", ev.Initial))
	who := quiesce.Who{Origin: quiesce.OriginADEAuto, UID: 0}
	switch ev.Kind {
	case adewatch.RequestSeen:
		cur := a.watcher().Current()
		if !a.d.config().ADE.AutoPrepare {
			log.Info("ADE's encryption request appeared; ade.auto_prepare is off, not preparing")
			return
		}
		if cur.Request == nil || !cur.Request.CoversOS() {
			log.Info("ADE's encryption request does not cover the OS volume; not preparing")
			return
		}
		a.mu.Lock()
		a.adeFinding = nil
		a.mu.Unlock()
		log.Info("ADE's encryption request appeared; preparing (ade.auto_prepare)")
		// ADE sleeps about 60 s before it starts (research ade_extension.md §4): prepare
		// runs now, in the background, so that the watch keeps following ADE meanwhile.
		go func() {
			if _, err := a.prepare(who); err != nil {
				log.Error("automatic prepare failed", zap.Error(err))
			}
		}()
	case adewatch.EncryptionStarted:
		log.Info("ADE started encrypting the OS drive")
		a.d.setPhase(api.PhaseEncrypt, "ADE: "+ev.Message)
	case adewatch.Progress:
		log.Debug("ADE progress")
		a.d.Reevaluate()
	case adewatch.Succeeded, adewatch.Failed:
		if ev.Kind == adewatch.Failed && ev.Unmount != nil {
			a.explainUnmountFailure(ev)
		}
		if ev.Initial {
			// ADE's last outcome, from before the daemon started: it may be weeks old and
			// must not undo a prepare made since. A restore owed across a reboot is
			// restoreAtStart's business.
			log.Info("ADE's last run had already ended when the daemon started")
			return
		}
		if !a.owed() {
			log.Info("ADE finished; prepare changed nothing, nothing to restore")
			if p := a.d.Phase(); p == api.PhaseEncrypt || p == api.PhaseReady || p == api.PhaseBlocked {
				a.d.setPhase(api.PhaseObserving, "ADE finished: "+ev.Message)
			}
			return
		}
		log.Info("ADE finished; restoring what prepare changed")
		go func() {
			if _, err := a.restore(who); err != nil {
				log.Error("automatic restore failed", zap.Error(err))
			}
		}()
	case adewatch.Stripdown:
		a.d.Reevaluate() // the main loop checks the mount table and exits
	}
}

// holdersBeforeStripdown is what held the OS drive when adeagent last looked before ADE's
// stripdown: the report saved when the daemon stepped aside (stripdown.json next to it),
// else the holders known now.
func (a *actions) holdersBeforeStripdown() *api.HoldersReport {
	dir := a.d.config().StateDir
	if _, err := os.Stat(filepath.Join(dir, "stripdown.json")); err == nil {
		if b, err := os.ReadFile(filepath.Join(dir, "report.json")); err == nil {
			var rep api.Report
			if json.Unmarshal(b, &rep) == nil {
				return &api.HoldersReport{Holders: rep.Holders}
			}
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	hr, _ := a.d.Holders(ctx)
	return hr
}

// explainUnmountFailure turns ADE's "unmount /oldroot failed" into a finding that names
// the holders adeagent saw before the stripdown (ADE's own report says only "target is
// busy"). The daemon is not running during the stripdown (it exits so as not to pin the
// old root), so this usually comes from the saved report when it starts again.
func (a *actions) explainUnmountFailure(ev adewatch.Event) {
	hr := a.holdersBeforeStripdown()
	cat, _ := catalog.Default()
	var names []string
	var rel []api.Related
	if hr != nil {
		for _, h := range probes.BlockingHolders(hr, os.Getpid(), cat).Holders {
			if len(names) == 10 {
				names = append(names, "…")
				break
			}
			switch h.Kind {
			case api.KindProcess, api.KindThread:
				n := fmt.Sprintf("pid %d %s", h.PID, h.Comm)
				if h.Unit != "" {
					n += " (" + h.Unit + ")"
				}
				names = append(names, n)
				rel = append(rel, api.Related{Kind: "pid", ID: fmt.Sprint(h.PID)})
			default:
				names = append(names, h.Kind+" "+h.Detail)
				if h.Mount != "" {
					rel = append(rel, api.Related{Kind: "mount", ID: h.Mount})
				}
			}
		}
	}
	summary := "ADE could not unmount the old root: " + ev.Message
	if len(names) > 0 {
		summary += " — before the stripdown adeagent saw these holders of the OS drive: " + strings.Join(names, "; ")
	} else {
		summary += " — adeagent saw no holder before the stripdown; something started after it"
	}
	f := api.Finding{
		Key:      "ade.unmount-failed",
		Probe:    "ade",
		Title:    "ADE failed to unmount the OS drive",
		Summary:  summary,
		Severity: api.SeverityHigh,
		Remediation: api.Remediation{
			Hint: "Stop these cleanly (or run 'adeagentctl prepare' and check it answers ready) before ADE is enabled again; see 'adeagent holders'.",
		},
		Related: rel,
	}
	a.mu.Lock()
	a.adeFinding = &f
	a.mu.Unlock()
	a.d.Reevaluate()
}

// restoreAtStart settles a journal left by a previous run (crash, kill -9, reboot):
//   - ADE is under way (requested, encrypting, stripdown): keep everything quiesced;
//   - a restore was started, the machine rebooted since the prepare, or the prepare never
//     finished (its caller got no answer): restore;
//   - a finished prepare on the same boot: keep it, and show its phase.
func (a *actions) restoreAtStart() {
	eng, err := a.engine()
	if err != nil {
		a.d.log.Warn("cannot check the quiesce journal", zap.Error(err))
		return
	}
	st, err := eng.State()
	if err != nil && !st.Owed {
		a.d.log.Warn("quiesce journal", zap.Error(err))
		return
	}
	if !st.Owed {
		return
	}
	if w := a.watcher(); w != nil {
		switch ph := w.Current().Phase; ph {
		case adewatch.PhaseRequested, adewatch.PhaseEncrypting, adewatch.PhaseStripdown:
			a.d.log.Info("a restore is owed, but ADE is under way: keeping the VM prepared",
				zap.String("ade_phase", string(ph)))
			a.d.setPhase(api.PhaseEncrypt, "ADE under way at daemon start")
			return
		}
	}
	rebooted := eng.OtherBoot()
	if st.Phase == "prepared" && !rebooted && err == nil {
		phase := api.PhaseReady
		if st.Outcome != api.OutcomeReady {
			phase = api.PhaseBlocked
		}
		a.d.setPhase(phase, "prepared before the daemon restarted")
		a.d.log.Info("the VM stays prepared (journal from this boot)", zap.String("outcome", st.Outcome))
		return
	}
	why := map[bool]string{true: "the machine rebooted since prepare", false: "the last " + st.Phase + " did not finish"}[rebooted]
	a.d.log.Info("a restore is owed; restoring", zap.String("why", why))
	if _, err := a.restore(quiesce.Who{Origin: quiesce.OriginStart, PID: os.Getpid(), Comm: "adeagent"}); err != nil {
		a.d.log.Error("restore at start failed", zap.Error(err))
	}
}

// errNoSystemd is returned when systemd's D-Bus API cannot be reached.
var errNoSystemd = errors.New("systemd's D-Bus API is not reachable")

// redialSystemd is the engine's systemd: it connects on first use and again after a
// failed call (PID 1's re-exec drops the connection).
type redialSystemd struct {
	d  *Daemon
	mu sync.Mutex
	c  *sysd.Client
}

func (r *redialSystemd) client(ctx context.Context) (*sysd.Client, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.c != nil {
		return r.c, nil
	}
	if !sysd.Available(r.d.root) {
		return nil, fmt.Errorf("%w: systemd is not PID 1 of %s", errNoSystemd, r.d.root.Dir())
	}
	c, err := sysd.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", errNoSystemd, err)
	}
	r.c = c
	return c, nil
}

// failed drops the connection after an error so the next call dials again.
func (r *redialSystemd) failed(c *sysd.Client, err error) {
	if err == nil {
		return
	}
	r.mu.Lock()
	if r.c == c {
		r.c = nil
		c.Close()
	}
	r.mu.Unlock()
}

// redial runs f on the connection, dialling first when there is none and dropping it
// when f fails.
func redial[T any](r *redialSystemd, ctx context.Context, f func(*sysd.Client) (T, error)) (T, error) {
	c, err := r.client(ctx)
	if err != nil {
		var zero T
		return zero, err
	}
	v, err := f(c)
	r.failed(c, err)
	return v, err
}

func (r *redialSystemd) ListUnits(ctx context.Context, patterns []string) ([]probes.UnitState, error) {
	return redial(r, ctx, func(c *sysd.Client) ([]probes.UnitState, error) { return c.ListUnits(ctx, patterns) })
}

func (r *redialSystemd) Unit(ctx context.Context, name string) (sysd.UnitInfo, error) {
	return redial(r, ctx, func(c *sysd.Client) (sysd.UnitInfo, error) { return c.Unit(ctx, name) })
}

func (r *redialSystemd) StopUnit(ctx context.Context, name string) (string, error) {
	return redial(r, ctx, func(c *sysd.Client) (string, error) { return c.StopUnit(ctx, name) })
}

func (r *redialSystemd) StartUnit(ctx context.Context, name string) (string, error) {
	return redial(r, ctx, func(c *sysd.Client) (string, error) { return c.StartUnit(ctx, name) })
}

func (r *redialSystemd) MaskRuntime(ctx context.Context, units []string) error {
	_, err := redial(r, ctx, func(c *sysd.Client) (struct{}, error) { return struct{}{}, c.MaskRuntime(ctx, units) })
	return err
}

func (r *redialSystemd) UnmaskRuntime(ctx context.Context, units []string) error {
	_, err := redial(r, ctx, func(c *sysd.Client) (struct{}, error) { return struct{}{}, c.UnmaskRuntime(ctx, units) })
	return err
}

var _ server.Actions = (*Daemon)(nil)

// Plan implements server.Actions: what prepare would do, changing nothing.
func (d *Daemon) Plan(ctx context.Context) (*api.QuiescePlan, error) { return d.act.plan(ctx) }

// Prepare implements server.Actions.
func (d *Daemon) Prepare(_ context.Context, p server.Peer) (*api.QuiesceResult, error) {
	return d.act.prepare(d.act.who(p))
}

// Restore implements server.Actions.
func (d *Daemon) Restore(_ context.Context, p server.Peer) (*api.QuiesceResult, error) {
	return d.act.restore(d.act.who(p))
}
