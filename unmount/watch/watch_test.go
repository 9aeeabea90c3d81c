package watch

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/looptest"
)

// started is a running watcher of a test.
type started struct {
	t      *testing.T
	w      *Watcher
	cancel context.CancelFunc
	done   chan error
	gor    int // goroutines before Run
	fds    int // open fds before Run
}

// start runs a watcher of the loop mount until stop (or the test's end).
func start(t *testing.T, m *looptest.Mount, opts Options) *started {
	t.Helper()
	target, err := unmount.PathTarget(hostroot.Host, m.Path)
	if err != nil {
		t.Fatal(err)
	}
	opts.Logf = t.Logf
	s := &started{t: t, w: New(hostroot.Host, target, opts), done: make(chan error, 1), gor: runtime.NumGoroutine(), fds: countFDs(t)}
	if s.w.Mode() != ModeStopped || s.w.Holders() != nil {
		t.Fatalf("before Run: mode %q, holders %v", s.w.Mode(), s.w.Holders())
	}
	changed := s.w.Changed()
	ctx, cancel := context.WithCancel(context.Background())
	s.cancel = cancel
	go func() { s.done <- s.w.Run(ctx) }()
	t.Cleanup(s.stop)
	select {
	case <-changed:
	case err := <-s.done:
		t.Fatalf("Run returned before the first scan: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("no first scan within 10 s")
	}
	if s.w.Holders() == nil {
		t.Fatal("no report after the first scan")
	}
	t.Logf("mode: %s", s.w.Mode())
	return s
}

// stop ends Run and checks that it returned cleanly and left no goroutine behind.
func (s *started) stop() {
	t := s.t
	if s.cancel == nil {
		return
	}
	s.cancel()
	s.cancel = nil
	select {
	case err := <-s.done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Run did not return within 10 s of cancel")
	}
	if m := s.w.Mode(); m != ModeStopped {
		t.Errorf("mode after Run = %q", m)
	}
	if err := s.w.Rescan(context.Background()); err != ErrNotRunning {
		t.Errorf("Rescan after Run = %v, want ErrNotRunning", err)
	}
	if n := countFDs(t); n > s.fds {
		t.Errorf("%d open fds after Run, %d before", n, s.fds)
	}
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > s.gor {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d after Run, %d before\n%s", runtime.NumGoroutine(), s.gor, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitFor waits until cond holds for the current report and returns how long that took.
func (s *started) waitFor(what string, limit time.Duration, cond func(*api.HoldersReport) bool) time.Duration {
	s.t.Helper()
	t0 := time.Now()
	deadline := time.After(limit)
	for {
		ch := s.w.Changed()
		rep := s.w.Holders()
		if cond(rep) {
			return time.Since(t0)
		}
		select {
		case <-ch:
		case <-deadline:
			s.t.Fatalf("%s: not within %v; holders: %s; mode %s", what, limit, describe(rep), s.w.Mode())
		}
	}
}

func countFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

func describe(r *api.HoldersReport) string {
	if r == nil {
		return "<no report>"
	}
	var parts []string
	for _, h := range r.Holders {
		parts = append(parts, fmt.Sprintf("%s %d/%d %s %v", h.Kind, h.PID, h.TID, h.Comm, h.Uses))
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func holds(rep *api.HoldersReport, pid int) bool {
	for _, h := range rep.Holders {
		if h.PID == pid {
			return true
		}
	}
	return false
}

// spawn starts sh -c script with the file as $1, in its own process group.
func spawn(t *testing.T, script, file string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("sh", "-c", script, "sh", file)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killGroup(cmd) })
	return cmd
}

func killGroup(cmd *exec.Cmd) {
	if cmd.ProcessState != nil {
		return
	}
	syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	cmd.Wait()
}

// A long period: only live events can explain an update within the test.
const noPeriodic = 10 * time.Minute

func requireLive(t *testing.T, w *Watcher) {
	t.Helper()
	if m := w.Mode(); m != "fanotify+proc-connector" {
		t.Fatalf("mode %q, want fanotify+proc-connector (root on Linux >= 5.1)", m)
	}
}

// TestLiveOpenAndExit: a process opens a file on the target and shows up through
// fanotify; it exits and is dropped through the proc connector. Latencies are measured
// from the moment the holder has its fd (it says so on stdout) and from SIGKILL, over
// several rounds, with the default Settle and with 1 ms (the bare event pipeline).
func TestLiveOpenAndExit(t *testing.T) {
	for _, settle := range []time.Duration{0, time.Millisecond} {
		name := "settle=default"
		if settle > 0 {
			name = "settle=" + settle.String()
		}
		t.Run(name, func(t *testing.T) { liveOpenAndExit(t, settle) })
	}
}

func liveOpenAndExit(t *testing.T, settle time.Duration) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic, Settle: settle})
	requireLive(t, s.w)
	if rep := s.w.Holders(); len(rep.Holders) != 0 {
		t.Fatalf("holders before any holder: %s", describe(rep))
	}
	self := os.Getpid()
	const rounds = 10
	var appear, disappear []time.Duration
	for i := range rounds {
		cmd := exec.Command("sh", "-c", `exec 3<"$1"; echo open; exec sleep 60`, "sh", m.At(fmt.Sprintf("dir/f%d", i%3)))
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { killGroup(cmd) })
		if _, err := out.Read(make([]byte, 5)); err != nil {
			t.Fatalf("holder: %v", err)
		}
		t0 := time.Now()
		pid := cmd.Process.Pid
		s.waitFor("holder appears", 5*time.Second, func(r *api.HoldersReport) bool { return holds(r, pid) })
		appear = append(appear, time.Since(t0))
		// The shell execs sleep: the exec event re-verifies it, fd 3 survives.
		s.waitFor("holder is sleep", 5*time.Second, func(r *api.HoldersReport) bool {
			for _, h := range r.Holders {
				if h.PID == pid && h.Comm == "sleep" && h.FDs == 1 && h.Mount == m.Path {
					return true
				}
			}
			return false
		})
		if holds(s.w.Holders(), self) {
			t.Errorf("the watcher's own process holds the target: %s", describe(s.w.Holders()))
		}
		t1 := time.Now()
		syscall.Kill(pid, syscall.SIGKILL) // not reaped yet: a zombie must not count as a holder
		s.waitFor("holder disappears", 5*time.Second, func(r *api.HoldersReport) bool { return !holds(r, pid) })
		disappear = append(disappear, time.Since(t1))
		killGroup(cmd)
	}
	slices.Sort(appear)
	slices.Sort(disappear)
	ms := func(d time.Duration) string { return fmt.Sprintf("%.2fms", float64(d.Microseconds())/1000) }
	t.Logf("latency over %d rounds (fanotify+proc-connector, settle %v): appear median %s max %s; disappear median %s max %s",
		rounds, s.w.opts.Settle, ms(appear[rounds/2]), ms(appear[rounds-1]), ms(disappear[rounds/2]), ms(disappear[rounds-1]))
	if appear[rounds-1] > 5*time.Second || disappear[rounds-1] > 5*time.Second {
		t.Errorf("latencies above 5 s")
	}
	if st := s.w.Stats(); st.FullScans != 1 {
		t.Errorf("%d full scans: only live events were to explain the updates", st.FullScans)
	}
	s.stop()
	m.Unmount() // the watcher held nothing
}

// TestLiveForkedChild: a holder's child inherits its fd without opening anything: only
// the fork event can find it.
func TestLiveForkedChild(t *testing.T) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic})
	requireLive(t, s.w)
	cmd := spawn(t, `exec 3<"$1"; sleep 60 & wait`, m.At("dir/f1"))
	sh := cmd.Process.Pid
	child := 0
	lat := s.waitFor("child holder", 5*time.Second, func(r *api.HoldersReport) bool {
		shHolds := false
		for _, h := range r.Holders {
			if h.PID == sh && h.FDs == 1 {
				shHolds = true
			}
			if h.PID != sh && h.Comm == "sleep" && h.FDs == 1 && h.Mount == m.Path {
				child = h.PID
			}
		}
		return shHolds && child != 0
	})
	t.Logf("shell %d and its child %d found within %v", sh, child, lat.Round(time.Microsecond))

	// The child dies first (the shell then ends its wait and exits too).
	syscall.Kill(child, syscall.SIGKILL)
	s.waitFor("child dropped", 5*time.Second, func(r *api.HoldersReport) bool { return !holds(r, child) })
	killGroup(cmd)
	s.waitFor("all dropped", 5*time.Second, func(r *api.HoldersReport) bool { return len(r.Holders) == 0 })

	// Filesystem marks pin nothing: the target unmounts while the watcher still runs.
	m.Unmount()
	s.stop()
}

// TestLiveFDMode runs fanotify without FAN_REPORT_FID: every event carries an open fd of
// the file, which the watcher must close at once or it would hold the target itself.
func TestLiveFDMode(t *testing.T) {
	tryFID = false
	defer func() { tryFID = true }()
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic, NoProcConnector: true})
	if !strings.HasPrefix(s.w.Mode(), "fanotify; proc-connector unavailable: disabled") {
		t.Fatalf("mode %q", s.w.Mode())
	}
	cmd := spawn(t, `exec 3<"$1"; exec sleep 60`, m.At("dir/f2"))
	pid := cmd.Process.Pid
	appear := s.waitFor("holder appears", 5*time.Second, func(r *api.HoldersReport) bool { return holds(r, pid) })
	// Without the proc connector, the last close at exit (a fanotify CLOSE event of the
	// exiting pid) re-verifies it.
	t1 := time.Now()
	killGroup(cmd)
	s.waitFor("holder disappears", 5*time.Second, func(r *api.HoldersReport) bool { return !holds(r, pid) })
	t.Logf("latency (fanotify fd mode, no proc connector): appear %v, disappear %v",
		appear.Round(time.Microsecond), time.Since(t1).Round(time.Microsecond))
	m.Unmount() // while running: no event fd is left open
	s.stop()
}

// TestPeriodicFallback: with both live sources off, the periodic scan picks a holder up,
// and Rescan does so on demand.
func TestPeriodicFallback(t *testing.T) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: 300 * time.Millisecond, NoFanotify: true, NoProcConnector: true})
	if mode := s.w.Mode(); !strings.HasPrefix(mode, "periodic: fanotify unavailable: disabled") {
		t.Fatalf("mode %q", mode)
	}
	cmd := spawn(t, `cd "$1"; exec sleep 60`, m.At("dir")) // a cwd holder: no live source sees that
	pid := cmd.Process.Pid
	lat := s.waitFor("periodic scan finds the holder", 5*time.Second, func(r *api.HoldersReport) bool { return holds(r, pid) })
	t.Logf("periodic (300 ms) found the cwd holder within %v", lat.Round(time.Millisecond))
	killGroup(cmd)
	s.waitFor("periodic scan drops the holder", 5*time.Second, func(r *api.HoldersReport) bool { return !holds(r, pid) })
	s.stop()
	m.Unmount()
}

// TestRescan: a cwd holder produces no live event; Rescan finds it at once.
func TestRescan(t *testing.T) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic})
	cmd := spawn(t, `cd "$1" && echo ready && exec sleep 60`, m.At("dir"))
	pid := cmd.Process.Pid
	// Wait until the shell has changed directory (no event tells the watcher).
	deadline := time.Now().Add(5 * time.Second)
	for {
		cwd, _ := os.Readlink(fmt.Sprintf("/proc/%d/cwd", pid))
		if cwd == m.At("dir") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("holder cwd %q", cwd)
		}
		time.Sleep(5 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.w.Rescan(ctx); err != nil {
		t.Fatal(err)
	}
	if !holds(s.w.Holders(), pid) {
		t.Fatalf("after Rescan: %s", describe(s.w.Holders()))
	}
	cancelled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	if err := s.w.Rescan(cancelled); err == nil {
		t.Error("Rescan with a cancelled context succeeded")
	}
	killGroup(cmd)
	s.stop()
	m.Unmount()
}

// TestHoldersIsACopy: changing a returned report changes nothing in the watcher.
func TestHoldersIsACopy(t *testing.T) {
	m := looptest.New(t)
	s := start(t, m, Options{Interval: noPeriodic, NoFanotify: true, NoProcConnector: true})
	cmd := spawn(t, `cd "$1" && exec sleep 60`, m.At("dir"))
	pid := cmd.Process.Pid
	time.Sleep(50 * time.Millisecond)
	if err := s.w.Rescan(context.Background()); err != nil {
		t.Fatal(err)
	}
	a := s.w.Holders()
	if !holds(a, pid) {
		t.Fatalf("holders: %s", describe(a))
	}
	a.Holders[0].Uses[0] = "mangled"
	a.Holders[0].PID = -1
	a.Target.Mounts[0] = "mangled"
	b := s.w.Holders()
	if b.Holders[0].Uses[0] == "mangled" || b.Holders[0].PID == -1 || b.Target.Mounts[0] == "mangled" {
		t.Errorf("report shares memory with the watcher: %+v", b)
	}
	killGroup(cmd)
	s.stop()
	m.Unmount()
}
