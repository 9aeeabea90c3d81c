package agent

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/quiesce"
	"github.com/adeagent/adeagent/agent/server"
	"github.com/adeagent/adeagent/agent/version"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/watch"
)

// ExitStripdown is the daemon's exit status when it finds ADE's stripdown under way (the
// root filesystem is a tmpfs and /oldroot is mounted, DESIGN.md §6): it has written its
// state to the state directory and left, so that it does not pin the old root ADE is
// about to unmount. systemd must not restart it: adeagent.service sets
// RestartPreventExitStatus=75 (and SuccessExitStatus=75). 75 is EX_TEMPFAIL (sysexits.h).
const ExitStripdown = 75

// DefaultInterval is how often the daemon re-evaluates readiness.
const DefaultInterval = 60 * time.Second

// Defaults and bounds of the daemon's work.
const (
	// evaluationTimeout bounds one full evaluation (probes have their own, shorter timeouts).
	evaluationTimeout = 2 * time.Minute
	// holdersMaxAge is how old the last evaluation's holder scan may be for Holders to
	// return it instead of scanning again.
	holdersMaxAge = 10 * time.Second
	// holdersScanTimeout bounds an on-demand holder scan.
	holdersScanTimeout = 20 * time.Second
	// shutdownTimeout bounds the graceful shutdown of the API.
	shutdownTimeout = 5 * time.Second
	// subscriberBuffer is how many events a slow subscriber may lag before losing some.
	subscriberBuffer = 16
	// onDemandGap is the least time between the starts of an evaluation asked for through
	// the API (?fresh=1) and the one before it: any member of the socket's group may ask,
	// and one evaluation costs a few hundred ms of CPU on a VM with ~1000 processes.
	onDemandGap = 5 * time.Second
)

// StallFileEnv names an environment variable for tests only: when it is set and the file
// it names exists, the daemon's main loop stalls (does nothing, answers no signal but
// SIGTERM/SIGINT) until the file is removed, so a test can see the watchdog pings stop.
// Production never sets it.
const StallFileEnv = "ADEAGENT_TEST_STALL_FILE"

// Options configure a Daemon.
type Options struct {
	// Root is the host root everything is read through.
	Root hostroot.Root
	// LoadConfig loads the configuration (file plus command-line overrides). It is called
	// again on SIGHUP; an error then keeps the old configuration.
	LoadConfig func() (*config.Config, error)
	// Interval is the re-evaluation interval; 0 means DefaultInterval.
	Interval time.Duration
	// LogFormat is "json" (default) or "console".
	LogFormat string
	// Stderr receives the logs (the journal under systemd).
	Stderr io.Writer
	// LiveHolders runs the live holder watch (unmount/watch: fanotify + proc connector) so
	// that Holders and holders events follow changes between evaluations. Off by default:
	// it wakes for every open on the OS drive and every fork/exit, so its cost follows the
	// machine's activity, not the daemon's: 2-8 % of a core on a busy 2-core machine, 8.5 %
	// measured again with e2e/idlecpu -live (load average 8 from builds), against ~0.3 %
	// with the periodic scans alone (issue 4's target is < 0.5 %).
	LiveHolders bool
	// Systemd, Docker and Exec replace prepare's and restore's connections to systemd,
	// the Docker Engine and pre-stop commands (tests). Nil: the real ones (systemd over
	// D-Bus when it is PID 1; Docker and Exec only when Root is the running host).
	Systemd quiesce.Systemd
	Docker  quiesce.Docker
	Exec    quiesce.Exec
	// NoADEWatch turns off the ADE watch (agent/adewatch) — tests on fixture roots.
	NoADEWatch bool
}

// Daemon is the running adeagent: it evaluates readiness periodically and on demand and
// serves the result (it implements server.Backend).
type Daemon struct {
	opts  Options
	root  hostroot.Root
	log   *zap.Logger
	level zap.AtomicLevel

	// evalReq asks the main loop for an evaluation now (buffer 1: requests coalesce).
	evalReq chan struct{}
	// demandReq asks the main loop for an on-demand evaluation (Fresh): like evalReq, but
	// spaced by onDemandGap from the previous evaluation's start.
	demandReq chan struct{}
	// nudge is the watchdog's heartbeat request to the main loop.
	nudge chan struct{}
	// progress counts main-loop iterations; the watchdog pings only while it advances.
	progress atomic.Uint64

	mu          sync.Mutex
	cfg         *config.Config
	report      *api.Report
	holders     *api.HoldersReport
	holdersAt   time.Time
	changed     chan struct{}
	phase       string
	evaluations uint64
	lastEval    time.Time
	subs        map[chan api.Event]struct{}
	// evalStarted and evalEnded count evaluations begun and finished (published or
	// failed); evalDone is closed and replaced when one finishes; lastStart is when the
	// latest began. Fresh waits on them.
	evalStarted, evalEnded uint64
	evalDone               chan struct{}
	evalErr                error
	lastStart              time.Time

	scanMu sync.Mutex // one on-demand holder scan at a time

	// watcher is the live holder watch (nil without one); set once before the main loop.
	watcher atomic.Pointer[watch.Watcher]

	// act runs prepare and restore and follows ADE.
	act *actions

	// saved is the fingerprint of the report last written to the state directory (main
	// loop only).
	saved [sha256.Size]byte
}

var _ server.Backend = (*Daemon)(nil)

// New makes a daemon from its initial configuration.
func New(cfg *config.Config, opts Options) (*Daemon, error) {
	if opts.Interval <= 0 {
		opts.Interval = DefaultInterval
	}
	if opts.Stderr == nil {
		opts.Stderr = os.Stderr
	}
	if opts.LoadConfig == nil {
		return nil, errors.New("daemon: no configuration loader")
	}
	if _, err := NewEnv(opts.Root, cfg, nil); err != nil {
		return nil, fmt.Errorf("configuration: %w", err)
	}
	lvl, err := parseLevel(cfg.LogLevel)
	if err != nil {
		return nil, err
	}
	level := zap.NewAtomicLevelAt(lvl)
	log, err := newLogger(opts.LogFormat, opts.Stderr, level)
	if err != nil {
		return nil, err
	}
	d := &Daemon{
		opts:      opts,
		root:      opts.Root,
		log:       log,
		level:     level,
		evalReq:   make(chan struct{}, 1),
		demandReq: make(chan struct{}, 1),
		evalDone:  make(chan struct{}),
		nudge:     make(chan struct{}, 1),
		cfg:       cfg,
		changed:   make(chan struct{}),
		phase:     api.PhaseObserving,
		subs:      map[chan api.Event]struct{}{},
	}
	d.act = newActions(d)
	return d, nil
}

func parseLevel(s string) (zapcore.Level, error) {
	switch s {
	case "debug":
		return zapcore.DebugLevel, nil
	case "info", "":
		return zapcore.InfoLevel, nil
	case "warn":
		return zapcore.WarnLevel, nil
	case "error":
		return zapcore.ErrorLevel, nil
	}
	return 0, fmt.Errorf("log level %q: want debug, info, warn or error", s)
}

// newLogger logs to w: JSON lines (the journal keeps them whole) or the console format.
func newLogger(format string, w io.Writer, level zap.AtomicLevel) (*zap.Logger, error) {
	var enc zapcore.Encoder
	switch format {
	case "", "json":
		ec := zap.NewProductionEncoderConfig()
		ec.TimeKey = "ts"
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewJSONEncoder(ec)
	case "console":
		ec := zap.NewDevelopmentEncoderConfig()
		ec.EncodeTime = zapcore.ISO8601TimeEncoder
		enc = zapcore.NewConsoleEncoder(ec)
	default:
		return nil, fmt.Errorf("log format %q: want json or console", format)
	}
	core := zapcore.NewCore(enc, zapcore.Lock(zapcore.AddSync(w)), level)
	return zap.New(core, zap.AddCaller(), zap.ErrorOutput(zapcore.Lock(zapcore.AddSync(w)))), nil
}

// Logger is the daemon's logger.
func (d *Daemon) Logger() *zap.Logger { return d.log }

// Run runs the daemon until ctx is done, SIGTERM or SIGINT (exit 0 after a graceful
// shutdown), or ADE's stripdown is detected (ExitStripdown). An error comes with exit 1.
func (d *Daemon) Run(ctx context.Context) (int, error) {
	defer d.log.Sync() //nolint:errcheck // stderr may not sync
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, syscall.SIGINT)
	defer stopSignals()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)

	cfg := d.config()
	d.log.Info("adeagent starting",
		zap.String("version", version.String()),
		zap.Int("pid", os.Getpid()),
		zap.String("root", d.root.Dir()),
		zap.Duration("interval", d.opts.Interval))
	d.logConfig(cfg)

	if sd, err := d.stripdown(); err != nil {
		d.log.Warn("cannot tell whether ADE's stripdown is under way", zap.Error(err))
	} else if sd != "" {
		return d.exitStripdown(sd)
	}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		return 1, fmt.Errorf("state directory: %w", err)
	}

	// Listen early: until the first evaluation the API answers 503.
	srv, err := startAPI(ctx, d, cfg.Socket, cfg.OperatorGroup, d.log)
	if err != nil {
		return 1, fmt.Errorf("API socket %s: %w", cfg.Socket, err)
	}
	d.log.Info("API listening", zap.String("socket", cfg.Socket))
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), shutdownTimeout)
		defer cancel()
		if err := srv.shutdown(sctx); err != nil {
			d.log.Warn("API shutdown", zap.Error(err))
		}
		d.closeSubscribers()
		d.log.Info("adeagent stopped")
	}()

	mountsChanged := watchMounts(ctx, d.root, d.log)

	d.maybeStall(ctx)
	d.evaluate(ctx)
	if ctx.Err() == nil {
		if sd, err := d.stripdown(); err == nil && sd != "" {
			return d.exitStripdown(sd)
		}
	}
	if ctx.Err() == nil {
		d.notify("READY=1\nSTATUS=" + d.statusLine())
		d.log.Info("ready to serve", zap.String("status", d.statusLine()))
	}

	// The live holder watch starts after the first evaluation so that it does not slow the
	// start; it ends (and releases its fanotify marks) before Run returns.
	var watchWG sync.WaitGroup
	watchCtx, stopWatch := context.WithCancel(ctx)
	defer func() {
		stopWatch()
		watchWG.Wait()
	}()
	// ADE's watch, and the settling of a journal a previous run left, after READY: a
	// restore owed from before a reboot must not hold back systemd's start of the daemon
	// (nor the guest agent ordered after it).
	if ctx.Err() == nil {
		watchWG.Add(1)
		go func() {
			defer watchWG.Done()
			d.act.follow(watchCtx)
		}()
	}
	if d.opts.LiveHolders {
		if w := d.startHolderWatch(watchCtx, &watchWG); w != nil {
			d.watcher.Store(w)
		}
	}

	wd, err := sddaemon.SdWatchdogEnabled(false)
	if err != nil {
		d.log.Warn("watchdog settings", zap.Error(err))
	} else if wd > 0 {
		d.log.Info("watchdog enabled", zap.Duration("ping_every", wd/2))
		go d.watchdog(ctx, wd/2)
	}

	timer := time.NewTimer(d.opts.Interval)
	defer timer.Stop()
	var demand <-chan time.Time // an on-demand evaluation waiting for onDemandGap
	for {
		d.progress.Add(1)
		d.maybeStall(ctx)
		evaluate := false
		select {
		case <-ctx.Done():
			d.notify("STOPPING=1")
			d.log.Info("stopping", zap.NamedError("reason", context.Cause(ctx)))
			d.persist()
			return 0, nil
		case <-d.nudge:
			continue
		case <-hup:
			if d.reload() {
				evaluate = true
			}
		case <-mountsChanged:
			d.log.Debug("mount table changed")
		case <-d.evalReq:
			evaluate = true
		case <-d.demandReq:
			if demand != nil {
				continue // already scheduled
			}
			d.mu.Lock()
			wait := onDemandGap - time.Since(d.lastStart)
			d.mu.Unlock()
			if wait > 0 {
				demand = time.After(wait)
				continue
			}
			evaluate = true
		case <-demand:
			evaluate = true
		case <-timer.C:
			evaluate = true
		}
		if sd, err := d.stripdown(); err == nil && sd != "" {
			return d.exitStripdown(sd)
		}
		if evaluate {
			demand = nil // this evaluation serves the waiting Fresh calls too
			d.evaluate(ctx)
			if !timer.Stop() {
				select {
				case <-timer.C:
				default:
				}
			}
			timer.Reset(d.opts.Interval)
			d.notify("STATUS=" + d.statusLine())
		}
	}
}

// Reevaluate asks for an evaluation now; requests made while one is pending coalesce.
func (d *Daemon) Reevaluate() {
	select {
	case d.evalReq <- struct{}{}:
	default:
	}
}

func (d *Daemon) config() *config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.cfg
}

func (d *Daemon) logConfig(cfg *config.Config) {
	src := cfg.Source()
	if src == "" {
		src = "built-in defaults"
	}
	text, err := cfg.YAML()
	if err != nil {
		d.log.Warn("render the configuration", zap.Error(err))
	}
	d.log.Info("effective configuration",
		zap.String("source", src),
		zap.String("log_level", cfg.LogLevel),
		zap.String("socket", cfg.Socket),
		zap.String("state_dir", cfg.StateDir),
		zap.String("config", string(text)))
}

// reload re-reads the configuration on SIGHUP. An invalid one is rejected and the old
// kept. It reports whether the new configuration was taken.
func (d *Daemon) reload() bool {
	d.log.Info("SIGHUP: reloading the configuration")
	cfg, err := d.opts.LoadConfig()
	if err == nil {
		if _, eerr := NewEnv(d.root, cfg, nil); eerr != nil {
			err = eerr
		}
	}
	var lvl zapcore.Level
	if err == nil {
		lvl, err = parseLevel(cfg.LogLevel)
	}
	if err != nil {
		// config errors name FILE:LINE and the key.
		d.log.Error("configuration rejected; keeping the old one", zap.Error(err))
		return false
	}
	old := d.config()
	if cfg.Socket != old.Socket || cfg.StateDir != old.StateDir {
		d.log.Warn("socket and state_dir changes take effect at the next restart",
			zap.String("socket", old.Socket), zap.String("state_dir", old.StateDir))
		cfg.Socket, cfg.StateDir = old.Socket, old.StateDir
	}
	d.level.SetLevel(lvl)
	d.mu.Lock()
	d.cfg = cfg
	d.mu.Unlock()
	d.logConfig(cfg)
	return true
}

// evaluate runs one full evaluation and publishes its report.
func (d *Daemon) evaluate(ctx context.Context) {
	cfg := d.config()
	ectx, cancel := context.WithTimeout(ctx, evaluationTimeout)
	defer cancel()
	start := time.Now()
	d.mu.Lock()
	d.evalStarted++
	d.lastStart = start
	d.mu.Unlock()
	var err error
	defer func() { d.endEvaluation(err) }()
	rep, holders, err := Evaluate(ectx, d.root, cfg)
	if err != nil {
		d.log.Error("evaluation failed", zap.Error(err))
		return
	}
	if ctx.Err() != nil {
		err = fmt.Errorf("evaluation cancelled: %w", context.Cause(ctx))
		return // cancelled by shutdown: the report is incomplete
	}
	d.act.decorate(rep)
	d.act.settleRestored(d.opts.Interval)
	now := time.Now()
	prev := d.Report()
	d.publish(rep, holders, now)
	d.persistIfChanged(rep)
	fields := []zap.Field{
		zap.Bool("ready", rep.Ready),
		zap.Int("blockers", rep.Blockers()),
		zap.Int("findings", len(rep.Findings)),
		zap.Int("holders", len(rep.Holders)),
		zap.Duration("took", now.Sub(start)),
	}
	var failed []string
	for _, p := range rep.Probes {
		switch p.Status {
		case api.ProbeError, api.ProbeTimeout, api.ProbePanic:
			failed = append(failed, p.Name+":"+p.Status)
		}
	}
	if len(failed) > 0 {
		fields = append(fields, zap.Strings("failed_probes", failed))
	}
	// Every evaluation at debug level; at info only when the outcome changed, so the
	// journal gets a line per change rather than one a minute.
	if prev == nil || prev.Ready != rep.Ready || !slices.Equal(blockerKeys(prev), blockerKeys(rep)) ||
		len(prev.Holders) != len(rep.Holders) || len(failed) > 0 {
		d.log.Info("evaluation finished", fields...)
	} else {
		d.log.Debug("evaluation finished", fields...)
	}
}

// endEvaluation records that an evaluation finished (err: it published nothing) and wakes
// the Fresh calls waiting for it.
func (d *Daemon) endEvaluation(err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.evalEnded++
	d.evalErr = err
	close(d.evalDone)
	d.evalDone = make(chan struct{})
}

// Fresh implements server.Backend: it asks the main loop for an evaluation and waits for
// the first one that starts after the call. Calls made meanwhile wait for the same one;
// on-demand evaluations start at least onDemandGap after the previous one.
func (d *Daemon) Fresh(ctx context.Context) (*api.Report, *api.HoldersReport, error) {
	d.mu.Lock()
	want := d.evalStarted + 1
	d.mu.Unlock()
	select {
	case d.demandReq <- struct{}{}:
	default: // one is queued already
	}
	for {
		d.mu.Lock()
		if d.evalEnded >= want {
			rep, holders, err := d.report, d.holders, d.evalErr
			d.mu.Unlock()
			if err != nil {
				return nil, nil, err
			}
			return rep, holders, nil
		}
		done := d.evalDone
		d.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("waiting for an evaluation: %w", ctx.Err())
		case <-done:
		}
	}
}

// publish makes rep the current report, wakes Changed waiters and sends events.
func (d *Daemon) publish(rep *api.Report, holders *api.HoldersReport, now time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	rep.Phase = d.phase
	prevHolders := -1
	if d.holders != nil {
		prevHolders = len(d.holders.Holders)
	}
	d.report = rep
	if holders != nil {
		d.holders, d.holdersAt = holders, now
	}
	d.evaluations++
	d.lastEval = now
	close(d.changed)
	d.changed = make(chan struct{})

	ev := api.Event{
		SchemaVersion: api.SchemaVersion,
		Time:          now.UTC(),
		Type:          api.EventReport,
		Phase:         d.phase,
		Ready:         rep.Ready,
		Blockers:      blockerKeys(rep),
	}
	d.sendLocked(ev)
	if holders != nil && len(holders.Holders) != prevHolders {
		ev.Type = api.EventHolders
		ev.Holders = len(holders.Holders)
		d.sendLocked(ev)
	}
}

// setPhase moves the daemon to phase, says why in a phase event, the journal and
// systemd's STATUS line, and returns the phase before. The current report is replaced by
// a copy with the new phase, so that status answers it at once.
func (d *Daemon) setPhase(phase, why string) string {
	d.mu.Lock()
	prev := d.phase
	d.phase = phase
	if d.report != nil && d.report.Phase != phase {
		rep := *d.report
		rep.Phase = phase
		d.report = &rep
		close(d.changed)
		d.changed = make(chan struct{})
	}
	ev := api.Event{SchemaVersion: api.SchemaVersion, Time: time.Now().UTC(), Type: api.EventPhase,
		Phase: phase, Message: why, Blockers: []string{}}
	if d.report != nil {
		ev.Ready, ev.Blockers = d.report.Ready, blockerKeys(d.report)
	}
	if prev != phase {
		d.sendLocked(ev)
	}
	d.mu.Unlock()
	if prev != phase {
		d.log.Info("phase changed", zap.String("from", prev), zap.String("to", phase), zap.String("why", why))
		d.notify("STATUS=" + d.statusLine())
	}
	return prev
}

// Phase is the daemon's phase now.
func (d *Daemon) Phase() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.phase
}

func blockerKeys(rep *api.Report) []string {
	keys := []string{}
	for _, f := range rep.Findings {
		if f.Blocker {
			keys = append(keys, f.Key)
		}
	}
	return keys
}

// sendLocked fans ev out without blocking: a subscriber whose buffer is full loses it.
func (d *Daemon) sendLocked(ev api.Event) {
	for ch := range d.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

// Report implements server.Backend.
func (d *Daemon) Report() *api.Report {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.report
}

// Changed implements server.Backend.
func (d *Daemon) Changed() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.changed
}

// Holders implements server.Backend: the live holder watch's current set when it runs,
// else the last evaluation's holder scan when it is at most holdersMaxAge old, else a
// fresh scan of the OS drive.
func (d *Daemon) Holders(ctx context.Context) (*api.HoldersReport, error) {
	if w := d.watcher.Load(); w != nil {
		if h := w.Holders(); h != nil {
			return h, nil
		}
	}
	d.scanMu.Lock()
	defer d.scanMu.Unlock()
	d.mu.Lock()
	h, at := d.holders, d.holdersAt
	d.mu.Unlock()
	if h != nil && time.Since(at) <= holdersMaxAge {
		return h, nil
	}
	ctx, cancel := context.WithTimeout(ctx, holdersScanTimeout)
	defer cancel()
	target, err := unmount.OSDriveTarget(d.root)
	if err != nil {
		return nil, fmt.Errorf("resolve the OS drive: %w", err)
	}
	opts := scanOptions(d.config())
	opts.Timeout = holdersScanTimeout
	h, err = unmount.Scan(ctx, d.root, target, opts)
	if err != nil {
		return nil, fmt.Errorf("scan the OS drive's holders: %w", err)
	}
	d.mu.Lock()
	d.holders, d.holdersAt = h, time.Now()
	d.mu.Unlock()
	return h, nil
}

// Subscribe implements server.Backend.
func (d *Daemon) Subscribe(ctx context.Context) <-chan api.Event {
	ch := make(chan api.Event, subscriberBuffer)
	d.mu.Lock()
	if d.subs == nil { // shutting down
		d.mu.Unlock()
		close(ch)
		return ch
	}
	d.subs[ch] = struct{}{}
	d.mu.Unlock()
	go func() {
		<-ctx.Done()
		d.mu.Lock()
		defer d.mu.Unlock()
		if _, ok := d.subs[ch]; ok {
			delete(d.subs, ch)
			close(ch)
		}
	}()
	return ch
}

func (d *Daemon) closeSubscribers() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for ch := range d.subs {
		close(ch)
	}
	d.subs = nil
}

// WriteMetrics implements server.Backend.
func (d *Daemon) WriteMetrics(w io.Writer) error {
	d.mu.Lock()
	s := metricsSnapshot{
		report:      d.report,
		holders:     -1,
		phase:       d.phase,
		evaluations: d.evaluations,
		lastEval:    d.lastEval,
	}
	if d.holders != nil {
		s.holders = len(d.holders.Holders)
	}
	d.mu.Unlock()
	return writeMetrics(w, s)
}

// statusLine is the one-line summary for systemd's STATUS=.
func (d *Daemon) statusLine() string {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.report == nil {
		return "phase=" + d.phase + " evaluating"
	}
	return fmt.Sprintf("ready=%t blockers=%d holders=%d phase=%s",
		d.report.Ready, d.report.Blockers(), len(d.report.Holders), d.phase)
}

// notify sends state to systemd when NOTIFY_SOCKET is set.
func (d *Daemon) notify(state string) {
	if _, err := sddaemon.SdNotify(false, state); err != nil {
		d.log.Warn("sd_notify", zap.Error(err), zap.String("state", strings.ReplaceAll(state, "\n", " ")))
	}
}

// watchdog pings systemd every period, but only when the main loop went round since the
// last ping; it nudges the loop so an idle loop still advances.
func (d *Daemon) watchdog(ctx context.Context, period time.Duration) {
	t := time.NewTicker(period)
	defer t.Stop()
	last := d.progress.Load()
	d.poke()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if cur := d.progress.Load(); cur != last {
			last = cur
			d.notify("WATCHDOG=1")
		} else {
			d.log.Warn("main loop made no progress; withholding the watchdog ping")
		}
		d.poke()
	}
}

func (d *Daemon) poke() {
	select {
	case d.nudge <- struct{}{}:
	default:
	}
}

// maybeStall is the test-only stall switch (StallFileEnv).
func (d *Daemon) maybeStall(ctx context.Context) {
	file := os.Getenv(StallFileEnv)
	if file == "" {
		return
	}
	logged := false
	for {
		if _, err := os.Stat(file); err != nil {
			return
		}
		if !logged {
			d.log.Warn("test stall switch on: main loop stalled", zap.String("file", file))
			logged = true
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stripdown says why ADE's stripdown looks under way ("" when it does not): the root
// filesystem is a tmpfs and /oldroot is a mount point. It reads PID 1's mount table
// through the host root: that is the host's mount namespace even when the daemon runs in
// a private one (ProtectSystem=, PrivateTmp=), and ADE's pivot_root moves PID 1's root.
func (d *Daemon) stripdown() (string, error) {
	mounts, err := hostMounts(d.root)
	if err != nil {
		return "", err
	}
	rootMount, ok := unmount.MountFor(mounts, "/")
	if !ok || rootMount.FSType != "tmpfs" {
		return "", nil
	}
	for _, m := range mounts {
		if m.MountPoint == "/oldroot" {
			return fmt.Sprintf("the root filesystem is %s and /oldroot is mounted (%s from %s)", rootMount.FSType, m.FSType, m.Source), nil
		}
	}
	return "", nil
}

// hostMounts reads the host's mount table: PID 1's, else (a fixture root without it)
// what unmount.ReadMountInfo finds.
func hostMounts(root hostroot.Root) ([]unmount.Mount, error) {
	f, err := os.Open(root.Proc("1", "mountinfo"))
	if err != nil {
		mounts, err2 := unmount.ReadMountInfo(root)
		if err2 != nil {
			return nil, fmt.Errorf("mount table: %w", err)
		}
		return mounts, nil
	}
	defer f.Close()
	mounts, err := unmount.ParseMountInfo(f)
	if err != nil {
		return nil, fmt.Errorf("mount table %s: %w", f.Name(), err)
	}
	return mounts, nil
}

// exitStripdown persists what the daemon knows and returns ExitStripdown.
func (d *Daemon) exitStripdown(why string) (int, error) {
	d.log.Warn("ADE's stripdown is under way; saving state and exiting so as not to hold the old root",
		zap.String("why", why), zap.Int("exit_status", ExitStripdown))
	cfg := d.config()
	marker := struct {
		SchemaVersion int       `json:"schema_version"`
		DetectedAt    time.Time `json:"detected_at"`
		Why           string    `json:"why"`
	}{api.SchemaVersion, time.Now().UTC().Truncate(time.Second), why}
	if err := os.MkdirAll(cfg.StateDir, 0o700); err != nil {
		d.log.Error("state directory", zap.Error(err))
	} else if err := writeJSONFile(filepath.Join(cfg.StateDir, "stripdown.json"), marker); err != nil {
		d.log.Error("save the stripdown marker", zap.Error(err))
	}
	d.persist()
	d.notify("STOPPING=1\nSTATUS=ADE stripdown detected; exited")
	return ExitStripdown, nil
}

// persist writes the last report to the state directory, atomically.
func (d *Daemon) persist() {
	rep := d.Report()
	if rep == nil {
		return
	}
	path := filepath.Join(d.config().StateDir, "report.json")
	if err := writeJSONFile(path, rep); err != nil {
		d.log.Error("save the last report", zap.Error(err))
	}
}

// persistIfChanged writes rep to the state directory when it says something the last
// report written did not (its time and durations aside), so that a crash loses at most
// one interval and an unchanged report costs no disk write.
func (d *Daemon) persistIfChanged(rep *api.Report) {
	fp, err := reportFingerprint(rep)
	if err != nil {
		d.log.Error("fingerprint the report", zap.Error(err))
		return
	}
	if fp == d.saved {
		return
	}
	path := filepath.Join(d.config().StateDir, "report.json")
	if err := writeJSONFile(path, rep); err != nil {
		d.log.Error("save the report", zap.Error(err))
		return
	}
	d.saved = fp
}
