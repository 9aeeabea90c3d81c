// Package watch keeps the holder set of a target current without rescanning all of /proc
// for every change.
//
// A Watcher starts with a full scan (unmount.Scan) and then follows two live sources:
//
//   - fanotify, with a filesystem mark (FAN_MARK_FILESYSTEM) on every target filesystem,
//     reports the pid of each process that opens (or last-closes) a file there, including
//     an exec of a binary; that pid alone is re-verified (unmount.PIDScanner).
//   - the netlink proc connector (CN_PROC) reports forks, execs and exits: the child of a
//     holder inherited its fds and cwd and is verified, a holder that execs is re-verified,
//     a holder that exits is re-verified (and so dropped).
//
// Neither source sees everything (no event for chdir, chroot, dup, fd passing, mmap of an
// already open fd, or io_uring registration: research/handles.md A.3), so a periodic full
// scan stays the ground truth; lost events (FAN_Q_OVERFLOW, netlink ENOBUFS) trigger one
// at once. Where a live source is unavailable (no CAP_SYS_ADMIN, an old kernel, a fixture
// root) the watcher runs on periodic scans alone and Mode says why.
//
// The watcher never holds the target itself: fanotify runs with FAN_REPORT_FID where it
// can (events carry file handles, which pin nothing), and in fd mode closes every event fd
// as soon as it is read (there, an event not read yet holds a reference to its mount for
// the few milliseconds it is queued). Filesystem marks pin nothing: the target unmounts
// while it is watched. The marks are set through O_PATH handles that are closed at once.
//
// Cost: with an OS-drive target every open on "/" is an event. Readers drain the queue and
// then pause 2 ms so events arrive in batches (and the kernel merges repeats); a process
// that exits within Settle (50 ms) costs no per-pid scan, and a known holder is verified
// at most every Debounce (250 ms) except on exit. Measured here: 20000 opens by one
// process cost the watcher about 20 ms of CPU, 500 short-lived processes about 140 ms.
package watch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"reflect"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Options tune a Watcher.
type Options struct {
	// Interval is the period of the full ground-truth scan. Default 60 s.
	Interval time.Duration
	// Scan tunes the full scans; its ProcessScanOptions also tune the per-pid scans.
	Scan unmount.Options
	// NoFanotify and NoProcConnector turn the live sources off (for tests, or to avoid
	// fanotify's cost on every open of the OS drive).
	NoFanotify      bool
	NoProcConnector bool
	// Settle is how long after an event a process that does not hold the target yet is
	// verified. fanotify reports an open before the new fd is in the process's table, and
	// a process that exits within Settle (most short-lived commands) costs no scan at
	// all. Default 50 ms.
	Settle time.Duration
	// Debounce is the least time between two verifications of a known holder (its opens
	// and execs rarely change whether it holds the target; its exit is verified at once).
	// Default 250 ms.
	Debounce time.Duration
	// MinRescanGap is the least time between two full scans triggered by lost events, so
	// that an overflow storm does not turn into back-to-back scans. Default 1 s.
	MinRescanGap time.Duration
	// Logf, if set, receives diagnostics: a source that fails, and why a rescan ran.
	Logf func(format string, args ...any)
}

// Modes reported by Mode besides the live combinations.
const (
	ModeStopped  = "stopped"
	ModePeriodic = "periodic"
)

// Watcher keeps the holder set of one target current. Create it with New and start it
// with Run; the other methods are safe for concurrent use at any time.
type Watcher struct {
	root   hostroot.Root
	target *unmount.Target
	opts   Options
	q      *queue

	mu       sync.Mutex
	rep      *api.HoldersReport // published; never modified after publication
	changed  chan struct{}
	mode     string
	running  bool
	rescanCh chan rescanReq // the running loop's, nil when stopped
	loopDone chan struct{}  // closed when the running loop ends

	// Owned by the loop goroutine.
	pids     *unmount.PIDScanner
	procs    map[int][]api.Holder     // process and thread holders by pid
	pidInc   map[int][]api.Incomplete // what could not be inspected, by pid
	kernel   []api.Holder             // non-process holders of the last full scan
	scanInc  []api.Incomplete         // incomplete entries without a pid, of the last full scan
	stats    api.ScanStats
	forks    []forkRec
	due      map[int]time.Time // pids to verify, and when
	lastVer  map[int]time.Time // when each known holder was last verified
	exited   map[int]time.Time // processes the proc connector saw exit, and when
	exitLog  []forkRec         // the same in order (child: the pid), for pruning
	lastFull time.Time

	nVerified, nFull, nForced atomic.Uint64
	lastFullNS, lastFullDur   atomic.Int64
}

// Stats count what a watcher did since New.
type Stats struct {
	// Events is the number of live events received (before filtering).
	Events uint64
	// Verified is the number of per-pid scans.
	Verified uint64
	// FullScans is the number of full scans; Forced of them ran because events were lost
	// or a live source failed.
	FullScans, Forced uint64
	// LastFullScan is when the last full scan ended, and how long it took.
	LastFullScan         time.Time
	LastFullScanDuration time.Duration
}

// Stats returns the watcher's counters.
func (w *Watcher) Stats() Stats {
	st := Stats{Events: w.q.count.Load(), Verified: w.nVerified.Load(), FullScans: w.nFull.Load(), Forced: w.nForced.Load(),
		LastFullScanDuration: time.Duration(w.lastFullDur.Load())}
	if ns := w.lastFullNS.Load(); ns != 0 {
		st.LastFullScan = time.Unix(0, ns)
	}
	return st
}

type rescanReq struct{ done chan error }

// forkRec remembers a recent fork, so that when a process turns out to be a holder (its
// fanotify event may be read after the proc connector reported its fork) the children it
// forked meanwhile are verified too.
type forkRec struct {
	parent, child int
	at            time.Time
}

const (
	forkMemory = 30 * time.Second
	maxForks   = 1 << 16
)

// New returns a watcher of target under root. Nothing happens until Run.
func New(root hostroot.Root, target *unmount.Target, opts Options) *Watcher {
	if opts.Interval <= 0 {
		opts.Interval = 60 * time.Second
	}
	if opts.Settle <= 0 {
		opts.Settle = 50 * time.Millisecond
	}
	if opts.Debounce <= 0 {
		opts.Debounce = 250 * time.Millisecond
	}
	if opts.MinRescanGap <= 0 {
		opts.MinRescanGap = time.Second
	}
	return &Watcher{root: root, target: target, opts: opts, q: newQueue(), changed: make(chan struct{}), mode: ModeStopped}
}

// Mode says how the watcher keeps up: "fanotify+proc-connector", "fanotify" or
// "proc-connector" (with the reason the other source is off), "periodic: …" with the
// reasons, or "stopped" when Run is not running.
func (w *Watcher) Mode() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.mode
}

// Holders returns a copy of the current holder report, or nil before Run has finished
// its first full scan (the report of an earlier Run is kept until the next one starts).
// Process holders are as of their last verification; kernel holders (mounts, swap, loop,
// namespaces, …) and Stats are those of the last full scan; GeneratedAt is the last update.
func (w *Watcher) Holders() *api.HoldersReport {
	w.mu.Lock()
	rep := w.rep
	w.mu.Unlock()
	if rep == nil {
		return nil
	}
	return copyReport(rep)
}

// Changed returns a channel that is closed when the holder set (or what could not be
// inspected) changes next, including when the first full scan completes. Call it again
// for the following change.
func (w *Watcher) Changed() <-chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.changed
}

// ErrNotRunning is returned by Rescan when Run is not running.
var ErrNotRunning = errors.New("holder watch is not running")

// Rescan runs a full scan now and waits for it.
func (w *Watcher) Rescan(ctx context.Context) error {
	w.mu.Lock()
	ch, done := w.rescanCh, w.loopDone
	w.mu.Unlock()
	if ch == nil {
		return ErrNotRunning
	}
	req := rescanReq{done: make(chan error, 1)}
	select {
	case ch <- req:
	case <-done:
		return ErrNotRunning
	case <-ctx.Done():
		return fmt.Errorf("rescan: %w", ctx.Err())
	}
	select {
	case err := <-req.done:
		return err
	case <-done:
		return ErrNotRunning
	case <-ctx.Done():
		return fmt.Errorf("rescan: %w", ctx.Err())
	}
}

func (w *Watcher) logf(format string, args ...any) {
	if w.opts.Logf != nil {
		w.opts.Logf(format, args...)
	}
}

func (w *Watcher) setMode(m string) {
	w.mu.Lock()
	w.mode = m
	w.mu.Unlock()
}

// Run watches until ctx is done, then releases every fd and returns nil (or the reason
// the first full scan failed). It may run again after it returned, but not twice at once.
func (w *Watcher) Run(ctx context.Context) error {
	if w.target == nil {
		return errors.New("holder watch: no target")
	}
	w.mu.Lock()
	if w.running {
		w.mu.Unlock()
		return errors.New("holder watch: Run is already running")
	}
	w.running = true
	rescanCh, loopDone := make(chan rescanReq), make(chan struct{})
	w.rescanCh, w.loopDone = rescanCh, loopDone
	w.mu.Unlock()
	defer func() {
		w.mu.Lock()
		w.running = false
		w.rescanCh = nil
		w.mode = ModeStopped
		close(loopDone)
		w.mu.Unlock()
	}()

	w.mu.Lock()
	w.rep = nil // stale: the first scan of this run publishes afresh (and wakes Changed)
	w.mu.Unlock()
	w.procs, w.pidInc = map[int][]api.Holder{}, map[int][]api.Incomplete{}
	w.forks, w.due, w.lastVer = nil, map[int]time.Time{}, map[int]time.Time{}
	w.exited, w.exitLog = map[int]time.Time{}, nil
	w.q.take(nil) // events of an earlier run are stale

	var wg sync.WaitGroup
	src := w.startSources(ctx, &wg)
	defer func() {
		src.stop()
		wg.Wait()
		if w.pids != nil {
			w.pids.Close()
			w.pids = nil
		}
	}()
	w.setMode(src.mode())
	w.logf("holder watch: mode %s", src.mode())

	// Sources are live before the first scan, so nothing between the two is missed.
	if err := w.fullScan(ctx, "initial scan"); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return fmt.Errorf("holder watch: %w", err)
	}
	w.loop(ctx, rescanCh, src)
	return nil
}

// sources are the live event sources of one Run.
type sources struct {
	w       *Watcher
	fan     *fanGroup
	cn      *cnSocket
	fanErr  string // why fanotify is off
	cnErr   string // why the proc connector is off
	mu      sync.Mutex
	stopped bool
}

func (w *Watcher) startSources(ctx context.Context, wg *sync.WaitGroup) *sources {
	s := &sources{w: w}
	if !w.root.IsHost() {
		s.fanErr, s.cnErr = "not the host root", "not the host root"
		return s
	}
	ps, err := unmount.NewPIDScanner(w.root, w.target, w.opts.Scan.ProcessScanOptions)
	if err != nil {
		s.fanErr, s.cnErr = err.Error(), err.Error()
		return s
	}
	w.pids = ps
	if w.opts.NoFanotify {
		s.fanErr = "disabled"
	} else if g, err := openFanotify(w.target); err != nil {
		s.fanErr = err.Error()
	} else {
		s.fan = g
		for _, u := range g.unwatched {
			w.logf("holder watch: fanotify: not watched: %s", u)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readFanotify(g, w.q); err != nil {
				// Close at once: in fd mode, unread events pin the target's mount.
				g.f.Close()
				s.failed("fanotify", err)
			}
		}()
	}
	if w.opts.NoProcConnector {
		s.cnErr = "disabled"
	} else if c, err := openCnProc(ctx, w.q); err != nil {
		s.cnErr = err.Error()
	} else {
		s.cn = c
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := readCnProc(c, w.q); err != nil {
				c.f.Close()
				s.failed("proc connector", err)
			}
		}()
	}
	return s
}

// failed records that a source's reader stopped with an error: the watcher falls back on
// the periodic scan (and rescans now, as events may have been lost).
func (s *sources) failed(name string, err error) {
	s.mu.Lock()
	if s.stopped {
		s.mu.Unlock()
		return
	}
	switch name {
	case "fanotify":
		s.fanErr = "failed: " + err.Error()
	default:
		s.cnErr = "failed: " + err.Error()
	}
	s.mu.Unlock()
	s.w.logf("holder watch: %s stopped: %v", name, err)
	s.w.setMode(s.mode())
	s.w.q.rescan(name + " stopped")
}

func (s *sources) mode() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	fanOK, cnOK := s.fanErr == "", s.cnErr == ""
	switch {
	case fanOK && cnOK:
		return "fanotify+proc-connector"
	case fanOK:
		return "fanotify; proc-connector unavailable: " + s.cnErr
	case cnOK:
		return "proc-connector; fanotify unavailable: " + s.fanErr
	}
	return fmt.Sprintf("%s: fanotify unavailable: %s; proc-connector unavailable: %s", ModePeriodic, s.fanErr, s.cnErr)
}

// stop closes the sources, which ends their readers.
func (s *sources) stop() {
	s.mu.Lock()
	s.stopped = true
	s.mu.Unlock()
	if s.fan != nil {
		if err := s.fan.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			s.w.logf("holder watch: close fanotify: %v", err)
		}
	}
	if s.cn != nil {
		if err := s.cn.close(); err != nil && !errors.Is(err, os.ErrClosed) {
			s.w.logf("holder watch: %v", err)
		}
	}
}

func (w *Watcher) loop(ctx context.Context, rescanCh chan rescanReq, src *sources) {
	ticker := time.NewTicker(w.opts.Interval)
	defer ticker.Stop()
	dueTimer := time.NewTimer(time.Hour)
	dueTimer.Stop()
	defer dueTimer.Stop()
	var batch []event
	var pendingReason string
	gapTimer := time.NewTimer(time.Hour)
	gapTimer.Stop()
	defer gapTimer.Stop()
	for {
		var rescanWait <-chan time.Time
		if pendingReason != "" {
			rescanWait = gapTimer.C
		}
		select {
		case <-ctx.Done():
			return
		case <-ticker.C:
			w.fullScanLogged(ctx, "periodic scan")
			pendingReason = "" // the scan covers events lost before it started
			ticker.Reset(w.opts.Interval)
		case req := <-rescanCh:
			err := w.fullScan(ctx, "rescan requested")
			pendingReason = ""
			ticker.Reset(w.opts.Interval)
			req.done <- err
		case <-rescanWait:
			w.nForced.Add(1)
			w.fullScanLogged(ctx, pendingReason)
			pendingReason = ""
			ticker.Reset(w.opts.Interval)
		case <-dueTimer.C:
		case <-w.q.wake:
			var reason string
			batch, reason = w.q.take(batch)
			if reason != "" && pendingReason == "" {
				pendingReason = reason
				gapTimer.Reset(max(0, w.opts.MinRescanGap-time.Since(w.lastFull)))
			}
			w.handle(batch)
		}
		if ctx.Err() != nil {
			return
		}
		if next, ok := w.runDue(ctx); ok {
			dueTimer.Reset(max(0, time.Until(next)))
		} else {
			dueTimer.Stop()
		}
	}
}

func (w *Watcher) fullScanLogged(ctx context.Context, why string) {
	if err := w.fullScan(ctx, why); err != nil && ctx.Err() == nil {
		w.logf("holder watch: %s: %v", why, err)
	}
}

// fullScan replaces the whole state with a fresh unmount.Scan.
func (w *Watcher) fullScan(ctx context.Context, why string) error {
	start := time.Now()
	rep, err := unmount.Scan(ctx, w.root, w.target, w.opts.Scan)
	w.lastFull = time.Now()
	w.nFull.Add(1)
	w.lastFullNS.Store(w.lastFull.UnixNano())
	w.lastFullDur.Store(int64(w.lastFull.Sub(start)))
	if err != nil {
		// Keep what is known, but never let it pass as complete.
		w.scanInc = []api.Incomplete{{What: "processes", Reason: "full scan failed: " + err.Error()}}
		w.publish()
		return fmt.Errorf("full scan: %w", err)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("full scan: %w", ctx.Err())
	}
	procs := map[int][]api.Holder{}
	var kernel []api.Holder
	for _, h := range rep.Holders {
		if h.Kind == api.KindProcess || h.Kind == api.KindThread {
			procs[h.PID] = append(procs[h.PID], h)
		} else {
			kernel = append(kernel, h)
		}
	}
	pidInc := map[int][]api.Incomplete{}
	var scanInc []api.Incomplete
	for _, in := range rep.Incomplete {
		if in.PID > 0 {
			pidInc[in.PID] = append(pidInc[in.PID], in)
		} else {
			scanInc = append(scanInc, in)
		}
	}
	w.procs, w.kernel, w.pidInc, w.scanInc, w.stats = procs, kernel, pidInc, scanInc, rep.Stats
	w.lastVer = map[int]time.Time{} // a full scan verified everyone; do not debounce on it
	w.logf("holder watch: %s: %d holders in %v", why, len(rep.Holders), time.Since(start).Round(time.Millisecond))
	w.publish()
	return nil
}

// handle applies a batch of live events: it schedules the pids worth verifying.
func (w *Watcher) handle(batch []event) {
	if w.pids == nil || len(batch) == 0 {
		return
	}
	now := time.Now()
	w.pruneForks(now)
	for _, ev := range batch {
		_, holder := w.procs[ev.pid]
		switch ev.kind {
		case evFile, evExec:
			// The two sources are read independently: a process's last fanotify events
			// may be read after the proc connector reported its exit.
			if _, gone := w.exited[ev.pid]; !gone {
				w.schedule(ev.pid, holder, now)
			}
		case evFork:
			_, reused := w.exited[ev.pid]
			delete(w.exited, ev.pid)
			if len(w.forks) < maxForks {
				w.forks = append(w.forks, forkRec{parent: ev.parent, child: ev.pid, at: now})
			}
			// A reused pid: its file events may have been dropped as the old process's.
			if _, ok := w.procs[ev.parent]; ok || reused {
				w.schedule(ev.pid, false, now)
			}
		case evExit:
			switch {
			case holder:
				w.due[ev.pid] = now // drop it now
			case ev.tid == ev.pid:
				delete(w.due, ev.pid) // gone before it was looked at: nothing to do
			}
			if ev.tid == ev.pid {
				w.exited[ev.pid] = now
				w.exitLog = append(w.exitLog, forkRec{child: ev.pid, at: now})
			}
		}
	}
}

// schedule asks for a verification of pid: Settle from now for a new candidate, no sooner
// than Debounce after the last one for a known holder. An earlier request stands.
func (w *Watcher) schedule(pid int, holder bool, now time.Time) {
	at := now.Add(w.opts.Settle)
	if holder {
		if last, ok := w.lastVer[pid]; ok && last.Add(w.opts.Debounce).After(at) {
			at = last.Add(w.opts.Debounce)
		}
	}
	if old, ok := w.due[pid]; !ok || at.Before(old) {
		w.due[pid] = at
	}
}

// runDue verifies every pid whose time has come and returns when the next one is due.
func (w *Watcher) runDue(ctx context.Context) (next time.Time, ok bool) {
	if len(w.due) == 0 || w.pids == nil {
		return time.Time{}, false
	}
	now := time.Now()
	changed := false
	for pid, at := range w.due {
		if at.After(now) {
			continue
		}
		delete(w.due, pid)
		became, ch := w.verify(ctx, pid)
		changed = changed || ch
		if became {
			// Children it forked before it was known to hold the target inherited its fds.
			for _, f := range w.forks {
				if f.parent == pid {
					if _, pending := w.due[f.child]; !pending {
						w.due[f.child] = now
					}
				}
			}
		}
		if ctx.Err() != nil {
			return time.Time{}, false
		}
	}
	if changed {
		w.publish()
	}
	for _, at := range w.due {
		if !ok || at.Before(next) {
			next, ok = at, true
		}
	}
	return next, ok
}

// exitMemory is how long an exited pid's late fanotify events are ignored.
const exitMemory = 5 * time.Second

func (w *Watcher) pruneForks(now time.Time) {
	n := 0
	for n < len(w.exitLog) && now.Sub(w.exitLog[n].at) > exitMemory {
		if at, ok := w.exited[w.exitLog[n].child]; ok && !at.After(w.exitLog[n].at) {
			delete(w.exited, w.exitLog[n].child)
		}
		n++
	}
	if n > 0 {
		w.exitLog = append(w.exitLog[:0], w.exitLog[n:]...)
	}
	i := 0
	for i < len(w.forks) && now.Sub(w.forks[i].at) > forkMemory {
		i++
	}
	if i > 0 {
		w.forks = append(w.forks[:0], w.forks[i:]...)
	}
}

// verify re-scans one pid and updates the state. became reports that the pid holds the
// target now and did not before; changed that anything about it changed.
func (w *Watcher) verify(ctx context.Context, pid int) (became, changed bool) {
	w.nVerified.Add(1)
	r, err := w.pids.Scan(ctx, pid)
	if err != nil {
		return false, false // only a cancelled context or a closed scanner
	}
	old, had := w.procs[pid]
	if len(r.Holders) > 0 {
		w.procs[pid] = r.Holders
		w.lastVer[pid] = time.Now()
	} else {
		delete(w.procs, pid)
		delete(w.lastVer, pid)
	}
	oldInc := w.pidInc[pid]
	if len(r.Incomplete) > 0 {
		w.pidInc[pid] = r.Incomplete
	} else {
		delete(w.pidInc, pid)
	}
	changed = !sameHolders(old, r.Holders) || !sameIncomplete(oldInc, r.Incomplete)
	return !had && len(r.Holders) > 0, changed
}

func sameHolders(a, b []api.Holder) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || reflect.DeepEqual(a, b)
}

func sameIncomplete(a, b []api.Incomplete) bool {
	if len(a) != len(b) {
		return false
	}
	return len(a) == 0 || reflect.DeepEqual(a, b)
}

// publish builds the report from the state and, if it differs from the last one, wakes
// Changed.
func (w *Watcher) publish() {
	rep := &api.HoldersReport{
		SchemaVersion: api.SchemaVersion,
		GeneratedAt:   time.Now().UTC(),
		Target:        api.Target{Mounts: w.target.MountPoints(), Devices: w.target.DevStrings(), Disks: w.target.Disks},
		Holders:       []api.Holder{},
		Incomplete:    []api.Incomplete{},
		Stats:         w.stats,
	}
	pids := make([]int, 0, len(w.procs))
	for pid := range w.procs {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		rep.Holders = append(rep.Holders, w.procs[pid]...)
	}
	rep.Holders = append(rep.Holders, w.kernel...)
	rep.Incomplete = append(rep.Incomplete, w.scanInc...)
	pids = pids[:0]
	for pid := range w.pidInc {
		pids = append(pids, pid)
	}
	sort.Ints(pids)
	for _, pid := range pids {
		rep.Incomplete = append(rep.Incomplete, w.pidInc[pid]...)
	}

	w.mu.Lock()
	defer w.mu.Unlock()
	old := w.rep
	w.rep = rep
	if old == nil || !reflect.DeepEqual(old.Holders, rep.Holders) || !reflect.DeepEqual(old.Incomplete, rep.Incomplete) {
		close(w.changed)
		w.changed = make(chan struct{})
	}
}

func copyReport(r *api.HoldersReport) *api.HoldersReport {
	c := *r
	c.Target.Mounts = slices.Clone(r.Target.Mounts)
	c.Target.Devices = slices.Clone(r.Target.Devices)
	c.Target.Disks = slices.Clone(r.Target.Disks)
	c.Holders = slices.Clone(r.Holders)
	for i := range c.Holders {
		c.Holders[i].Uses = slices.Clone(c.Holders[i].Uses)
		c.Holders[i].Paths = slices.Clone(c.Holders[i].Paths)
	}
	c.Incomplete = slices.Clone(r.Incomplete)
	return &c
}
