// Package adewatch watches Azure Disk Encryption (ADE) at work and turns what it sees into
// typed, deduplicated state transitions for the daemon: RequestSeen, EncryptionStarted,
// Progress, Stripdown, Succeeded and Failed (see docs/ade-awareness.md).
//
// It watches, with inotify, ADE's config directory /var/lib/azure_disk_encryption_config
// (the encryption marker and os_encryption_markers/) and every ADE handler's status/ and
// config/ directories under /var/lib/waagent — or, while one does not exist yet, its
// nearest existing ancestor, adding the watch when it appears — plus PID 1's mount table
// (POLLPRI) for the stripdown, and re-reads everything periodically as a safety net for
// missed events and queue overflows. Every event only triggers a full re-read, so a lost
// event costs at most one interval.
//
// An inotify watch does not keep a filesystem busy: umount succeeds and the kernel drops
// the watch with IN_UNMOUNT and IN_IGNORED (TestInotifyDoesNotPinUnmount, as root). The
// Watcher nevertheless closes its inotify instance and reads nothing but the mount table
// while the stripdown lasts, so it never opens anything on the old root.
package adewatch

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Defaults.
const (
	DefaultInterval = 30 * time.Second
	DefaultDebounce = 150 * time.Millisecond
)

// Option configures a Watcher.
type Option func(*Watcher)

// WithInterval sets the periodic full re-read (default 30 s).
func WithInterval(d time.Duration) Option {
	return func(w *Watcher) {
		if d > 0 {
			w.interval = d
		}
	}
}

// WithDebounce sets how long the Watcher waits after an inotify event for more before it
// re-reads (default 150 ms): ADE writes several files in a row.
func WithDebounce(d time.Duration) Option {
	return func(w *Watcher) {
		if d >= 0 {
			w.debounce = d
		}
	}
}

// WithoutInotify makes the Watcher rely on the periodic re-read alone (tests of the
// safety net; hosts where inotify is unavailable fall back to it by themselves).
func WithoutInotify() Option { return func(w *Watcher) { w.noInotify = true } }

// Watcher watches ADE. Create it with New, run it with Run; Current may be called from any
// goroutine.
type Watcher struct {
	root      hostroot.Root
	log       *zap.Logger
	interval  time.Duration
	debounce  time.Duration
	noInotify bool

	mu    sync.Mutex
	tr    tracker
	cur   State
	scans int
	wds   int // watches held, for tests
}

// New returns a Watcher of the host under root.
func New(root hostroot.Root, log *zap.Logger, opts ...Option) *Watcher {
	if log == nil {
		log = zap.NewNop()
	}
	w := &Watcher{root: root, log: log, interval: DefaultInterval, debounce: DefaultDebounce}
	for _, o := range opts {
		o(w)
	}
	w.cur = State{Phase: PhaseNone}
	return w
}

// Current returns the last known state (Phase "none" before the first read).
func (w *Watcher) Current() State {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.cur.clone()
}

// Scan reads the host once and returns the transitions since the last read (the first
// read's events are Initial). Run calls it for every trigger; do not call it while Run
// runs, as the events it returns would not reach Run's channel. Calling it once before
// Run (a synchronous first look at start) is fine: Run then sends only later changes.
func (w *Watcher) Scan() []Event {
	var s snapshot
	readMountFacts(w.root, &s)
	if s.stripdown != "" {
		s.skippedFiles = true
	} else {
		readFileFacts(w.root, &s)
	}
	now := time.Now().UTC()
	w.mu.Lock()
	defer w.mu.Unlock()
	evs := w.tr.apply(s, now)
	w.cur = w.tr.state.clone()
	w.scans++
	return evs
}

// Run watches until ctx ends, sending every transition to out (it waits for out, or for
// ctx). It returns nil when ctx ends; it never returns early for a host without inotify
// or without ADE — it then relies on the periodic re-read.
func (w *Watcher) Run(ctx context.Context, out chan<- Event) error {
	wake, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		return fmt.Errorf("adewatch: eventfd: %w", err)
	}
	defer unix.Close(wake)
	stop := context.AfterFunc(ctx, func() {
		var one [8]byte
		one[0] = 1
		_, _ = unix.Write(wake, one[:])
	})
	defer stop()

	// PID 1's mount table raises POLLPRI at every mount and unmount in the host's
	// namespace: the stripdown is seen at once (procfs; nothing on the OS drive).
	mountFD, err := unix.Open(w.root.Proc("1", "mountinfo"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		w.log.Debug("mount table watch unavailable; the periodic re-read checks it", zap.Error(err))
		mountFD = -1
	} else {
		defer unix.Close(mountFD)
	}

	var in *inotify
	defer func() { _ = in.close() }()
	var active specs // what the watches were set up for
	buf := make([]byte, 64*1024)
	warned := false

	// scan reads the host and then sets the watches up for what it found. A directory that
	// appeared between the read and its watch would go unseen, so a scan that added
	// watches asks for another read (it converges as soon as the tree stops changing).
	again := false
	scan := func() error {
		again = false
		evs := w.Scan()
		cur := w.Current()
		if cur.Stripdown != "" {
			// Hold nothing of the old root while ADE unmounts it.
			if in != nil {
				if err := in.close(); err != nil {
					w.log.Warn("drop inotify watches", zap.Error(err))
				}
				in = nil
				w.log.Info("ADE stripdown: inotify watches dropped", zap.String("why", cur.Stripdown))
			}
		} else if !w.noInotify {
			if in == nil {
				var err error
				if in, err = newInotify(); err != nil {
					if !warned {
						w.log.Warn("inotify unavailable; re-reading ADE's files periodically only",
							zap.Error(err), zap.Duration("interval", w.interval))
						warned = true
					}
					in = nil
				}
			}
			if in != nil {
				active = w.wanted()
				added, err := in.sync(w.root, active)
				if err != nil {
					w.log.Debug("some ADE watches could not be added", zap.Error(err))
				}
				again = added > 0
			}
		}
		w.mu.Lock()
		w.wds = 0
		if in != nil {
			w.wds = len(in.byDir)
		}
		w.mu.Unlock()
		for _, e := range evs {
			w.log.Info("ADE", zap.String("event", string(e.Kind)), zap.String("message", e.Message),
				zap.String("source", e.Source), zap.Bool("initial", e.Initial))
			select {
			case out <- e:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		return nil
	}

	if err := scan(); err != nil {
		return nil
	}
	next := time.Now().Add(w.interval)
	var due time.Time // a debounced re-read, zero when none is pending
	for ctx.Err() == nil {
		if again && due.IsZero() {
			due = time.Now().Add(w.debounce)
		}
		fds := []unix.PollFd{{Fd: int32(wake), Events: unix.POLLIN}}
		if mountFD >= 0 {
			fds = append(fds, unix.PollFd{Fd: int32(mountFD), Events: unix.POLLPRI})
		}
		inIdx := -1
		if in != nil {
			inIdx = len(fds)
			fds = append(fds, unix.PollFd{Fd: int32(in.fd), Events: unix.POLLIN})
		}
		deadline := next
		if !due.IsZero() && due.Before(deadline) {
			deadline = due
		}
		timeout := max(time.Until(deadline), 0)
		ms := int((timeout + time.Millisecond - 1) / time.Millisecond)
		if _, err := unix.Poll(fds, ms); err != nil && !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("adewatch: poll: %w", err)
		}
		if ctx.Err() != nil {
			break
		}
		now := time.Now()
		trigger := false
		if mountFD >= 0 && fds[1].Revents&(unix.POLLPRI|unix.POLLERR) != 0 {
			trigger = true
		}
		if inIdx >= 0 && fds[inIdx].Revents&unix.POLLIN != 0 {
			raws, err := in.read(buf)
			if err != nil {
				w.log.Warn("inotify read failed; re-reading", zap.Error(err))
				_ = in.close()
				in = nil
				trigger = true
			}
			if w.relevant(in, active, raws) {
				trigger = true
			}
		}
		if trigger && due.IsZero() {
			due = now.Add(w.debounce)
		}
		if (!due.IsZero() && !now.Before(due)) || !now.Before(next) {
			due = time.Time{}
			next = now.Add(w.interval)
			if err := scan(); err != nil {
				break
			}
		}
	}
	return nil
}

// relevant reports whether any of the events calls for a re-read: an overflow, a watched
// directory going away or being unmounted, or a change to an entry that matters.
func (w *Watcher) relevant(in *inotify, want specs, raws []rawEvent) bool {
	for _, r := range raws {
		if r.mask&unix.IN_Q_OVERFLOW != 0 {
			w.log.Info("inotify queue overflow; re-reading ADE's state")
			return true
		}
		if r.mask&(unix.IN_IGNORED|unix.IN_UNMOUNT|unix.IN_DELETE_SELF|unix.IN_MOVE_SELF) != 0 {
			if in != nil && r.mask&unix.IN_IGNORED != 0 {
				in.forget(r.wd)
			}
			return true
		}
		if s := want[r.dir]; s != nil && r.name != "" && s.relevant(r.name) {
			return true
		}
	}
	return false
}

// wanted is the set of directories to watch now.
func (w *Watcher) wanted() specs {
	exists := func(p string) bool {
		fi, err := os.Stat(w.root.Path(p))
		return err == nil && fi.IsDir()
	}
	ss := specs{}
	ss.want(probes.ADEConfigDir, maskTarget, exists, func(s *spec) {
		for _, f := range []string{probes.ADERequestMarker, probes.ADEDecryptMarker, probes.ADEConfigFile, probes.ADEMarkersDir} {
			s.names[path.Base(f)] = true
		}
	})
	if exists(probes.ADEConfigDir) {
		ss.want(probes.ADEMarkersDir, maskDirs, exists, func(s *spec) { s.any = true })
	}
	// WALinuxAgent rewrites its own files in /var/lib/waagent and the handler directory
	// often: there only entries appearing and going matter.
	ss.want(probes.WAAgentLibDir, maskDirs, exists, func(s *spec) { s.handlers = true })
	dirs, err := probes.ADEHandlerDirs(w.root)
	if err != nil {
		w.log.Debug("list ADE handler directories", zap.Error(err))
	}
	for _, h := range dirs {
		ss.want(h, maskDirs, exists, func(s *spec) { s.names["status"], s.names["config"] = true, true })
		ss.want(probes.ADEStatusDir(h), maskTarget, exists, func(s *spec) { s.suffixes = append(s.suffixes, ".status") })
		ss.want(probes.ADESettingsDir(h), maskDirs, exists, func(s *spec) { s.suffixes = append(s.suffixes, ".settings") })
	}
	return ss
}
