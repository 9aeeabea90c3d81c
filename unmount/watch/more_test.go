package watch

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/looptest"
)

// TestFixtureRoot needs no privileges: on a fixture root there is nothing live to follow,
// the watcher runs periodic scans, and a root without procfs is reported incomplete.
func TestFixtureRoot(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "proc"), 0o755); err != nil { // a directory, not procfs
		t.Fatal(err)
	}
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	target := &unmount.Target{Devs: []unmount.Dev{{Major: 7, Minor: 99}}}
	w := New(root, target, Options{Interval: time.Hour, Logf: t.Logf})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	changed := w.Changed()
	go func() { done <- w.Run(ctx) }()
	select {
	case <-changed:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no first scan")
	}
	if m := w.Mode(); m != "periodic: fanotify unavailable: not the host root; proc-connector unavailable: not the host root" {
		t.Errorf("mode %q", m)
	}
	rep := w.Holders()
	if len(rep.Holders) != 0 || len(rep.Incomplete) == 0 || !strings.Contains(rep.Incomplete[0].Reason, "not a procfs mount") {
		t.Errorf("report: %+v", rep)
	}
	if err := w.Rescan(ctx); err != nil {
		t.Errorf("Rescan: %v", err)
	}
	if st := w.Stats(); st.FullScans != 2 || st.Verified != 0 || st.LastFullScan.IsZero() {
		t.Errorf("stats %+v", st)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("Run: %v", err)
	}
	if err := w.Rescan(context.Background()); err != ErrNotRunning {
		t.Errorf("Rescan after Run: %v", err)
	}
}

// TestSelfHolderUnprivileged runs as any user: the test process holds a file in its
// temporary directory, and the watcher finds it (live where the privileges allow, through
// Rescan otherwise). Run it as an unprivileged user to see the fallback mode.
func TestSelfHolderUnprivileged(t *testing.T) {
	dir := t.TempDir()
	target, err := unmount.PathTarget(hostroot.Host, dir)
	if err != nil {
		t.Fatal(err)
	}
	w := New(hostroot.Host, target, Options{Interval: time.Hour, Logf: t.Logf})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	changed := w.Changed()
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	<-changed
	t.Logf("euid %d: mode %s", os.Geteuid(), w.Mode())
	if os.Geteuid() != 0 && !strings.HasPrefix(w.Mode(), "periodic: ") && !strings.HasPrefix(w.Mode(), "proc-connector; ") {
		t.Errorf("unprivileged mode %q", w.Mode())
	}
	f, err := os.Create(filepath.Join(dir, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := w.Rescan(ctx); err != nil {
		t.Fatal(err)
	}
	if !holds(w.Holders(), os.Getpid()) {
		t.Errorf("own fd not found: %s", describe(w.Holders()))
	}
}

// TestLostEventsRescan: a lost-events signal (as FAN_Q_OVERFLOW or ENOBUFS raise it)
// makes the watcher rescan at once, which finds a holder no live event reported.
func TestLostEventsRescan(t *testing.T) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic, MinRescanGap: 10 * time.Millisecond})
	cmd := spawn(t, `cd "$1" && exec sleep 60`, m.At("dir"))
	pid := cmd.Process.Pid
	deadline := time.Now().Add(5 * time.Second)
	for {
		if cwd, _ := os.Readlink("/proc/" + itoa(pid) + "/cwd"); cwd == m.At("dir") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("holder did not chdir")
		}
		time.Sleep(5 * time.Millisecond)
	}
	if holds(s.w.Holders(), pid) {
		t.Fatal("a cwd holder was found without a scan")
	}
	s.w.q.rescan("test: simulated fanotify queue overflow")
	lat := s.waitFor("rescan after lost events", 5*time.Second, func(r *api.HoldersReport) bool { return holds(r, pid) })
	t.Logf("forced rescan found the cwd holder within %v", lat.Round(time.Millisecond))
	if st := s.w.Stats(); st.Forced != 1 {
		t.Errorf("stats %+v", st)
	}
	killGroup(cmd)
	s.stop()
	m.Unmount()
}

func itoa(n int) string { return strconv.Itoa(n) }

// TestOSDriveLoad watches the real OS drive (root only) while a process opens files on it
// in a tight loop, and reports what the watcher did: events, per-pid scans, full scans.
func TestOSDriveLoad(t *testing.T) {
	looptest.NeedRoot(t)
	if testing.Short() {
		t.Skip("load test")
	}
	target, err := unmount.OSDriveTarget(hostroot.Host)
	if err != nil {
		t.Skipf("no OS drive target here: %v", err)
	}
	w := New(hostroot.Host, target, Options{Interval: noPeriodic})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	changed := w.Changed()
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	<-changed
	rep := w.Holders()
	t.Logf("mode %s; initial scan: %d holders, %d processes, %v", w.Mode(), len(rep.Holders), rep.Stats.Processes, w.Stats().LastFullScanDuration)
	var ru0 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
	// 20000 open+close of files on the OS drive, from one shell (dd reads /etc/hostname).
	t0 := time.Now()
	out, err := exec.Command("sh", "-c", `i=0; while [ $i -lt 20000 ]; do : < /etc/hostname; i=$((i+1)); done`).CombinedOutput()
	if err != nil {
		t.Fatalf("load: %v %s", err, out)
	}
	wall := time.Since(t0)
	time.Sleep(200 * time.Millisecond) // let the watcher drain
	var ru1 syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu := time.Duration((ru1.Utime.Nano() + ru1.Stime.Nano()) - (ru0.Utime.Nano() + ru0.Stime.Nano()))
	st := w.Stats()
	t.Logf("20000 opens in %v: %d events, %d per-pid scans, %d full scans (%d forced); watcher process CPU %v",
		wall.Round(time.Millisecond), st.Events, st.Verified, st.FullScans, st.Forced, cpu.Round(time.Millisecond))

	// 500 short-lived processes: each forks from a holder, execs, opens and exits.
	ru0, st0 := ru1, st
	t0 = time.Now()
	if out, err := exec.Command("sh", "-c", `i=0; while [ $i -lt 500 ]; do /bin/cat /etc/hostname >/dev/null; i=$((i+1)); done`).CombinedOutput(); err != nil {
		t.Fatalf("load: %v %s", err, out)
	}
	wall = time.Since(t0)
	time.Sleep(200 * time.Millisecond)
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	cpu = time.Duration((ru1.Utime.Nano() + ru1.Stime.Nano()) - (ru0.Utime.Nano() + ru0.Stime.Nano()))
	st = w.Stats()
	t.Logf("500 processes in %v: %d events, %d per-pid scans, %d full scans (%d forced); watcher process CPU %v",
		wall.Round(time.Millisecond), st.Events-st0.Events, st.Verified-st0.Verified, st.FullScans-st0.FullScans,
		st.Forced-st0.Forced, cpu.Round(time.Millisecond))
	if n := len(w.Holders().Holders); n > len(rep.Holders)+50 {
		t.Errorf("holders grew from %d to %d: exited processes were not dropped", len(rep.Holders), n)
	}
}

// TestRunTwice: a second concurrent Run is refused; after Run returned, Run starts again.
func TestRunTwice(t *testing.T) {
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "proc"), 0o755); err != nil {
		t.Fatal(err)
	}
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	w := New(root, &unmount.Target{}, Options{Interval: time.Hour})
	for round := range 2 {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		changed := w.Changed()
		go func() { done <- w.Run(ctx) }()
		<-changed
		// Wait until the first Run is surely in its loop, then try a second one.
		if err := waitRunning(w); err != nil {
			t.Fatal(err)
		}
		if err := w.Run(ctx); err == nil {
			t.Errorf("round %d: a second concurrent Run succeeded", round)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("round %d: Run: %v", round, err)
		}
		if w.Mode() != ModeStopped {
			t.Errorf("round %d: mode %q after Run", round, w.Mode())
		}
	}
}

func waitRunning(w *Watcher) error {
	for range 500 {
		if err := w.Rescan(context.Background()); err == nil {
			return nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return ErrNotRunning
}
