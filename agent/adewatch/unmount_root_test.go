package adewatch

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/looptest"
)

// TestInotifyDoesNotPinUnmount answers, on the running kernel, whether an inotify watch on
// a directory of a mounted filesystem keeps it busy: it does not. umount(2) succeeds with
// watches on the filesystem's root and on a subdirectory, and the kernel then reports
// IN_UNMOUNT and IN_IGNORED for each watch (the watch is gone). As a control, an open
// directory fd on the same filesystem does make umount fail with EBUSY.
func TestInotifyDoesNotPinUnmount(t *testing.T) {
	m := looptest.New(t)

	// Control: an open fd (what a read in progress holds) pins the filesystem.
	d, err := os.Open(m.At("dir"))
	if err != nil {
		t.Fatal(err)
	}
	m.Busy()
	d.Close()

	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	wds := map[int32]string{}
	for _, p := range []string{m.Path, m.At("dir")} {
		wd, err := unix.InotifyAddWatch(fd, p, maskTarget)
		if err != nil {
			t.Fatalf("inotify_add_watch %s: %v", p, err)
		}
		wds[int32(wd)] = p
	}
	// The watches work: a change on the filesystem is reported.
	if err := os.WriteFile(m.At("dir/new"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if evs := readFor(t, fd, time.Second); len(evs) == 0 {
		t.Fatal("no inotify event for a write under the watched directory")
	}

	if err := unix.Unmount(m.Path, 0); err != nil {
		t.Fatalf("umount with inotify watches on the filesystem: %v (watches pin it)", err)
	}
	t.Logf("umount %s succeeded with %d inotify watches on it", m.Path, len(wds))

	unmounted, ignored := map[int32]bool{}, map[int32]bool{}
	deadline := time.Now().Add(3 * time.Second)
	for (len(unmounted) < len(wds) || len(ignored) < len(wds)) && time.Now().Before(deadline) {
		for _, e := range readFor(t, fd, 200*time.Millisecond) {
			if e.mask&unix.IN_UNMOUNT != 0 {
				unmounted[e.wd] = true
			}
			if e.mask&unix.IN_IGNORED != 0 {
				ignored[e.wd] = true
			}
		}
	}
	for wd, p := range wds {
		if !unmounted[wd] || !ignored[wd] {
			t.Errorf("watch on %s: IN_UNMOUNT %v, IN_IGNORED %v; want both", p, unmounted[wd], ignored[wd])
		}
	}
	// The kernel dropped the watches: removing one now fails with EINVAL.
	for wd := range wds {
		if _, err := unix.InotifyRmWatch(fd, uint32(wd)); err != unix.EINVAL {
			t.Errorf("inotify_rm_watch after umount: %v, want EINVAL", err)
		}
	}
}

// TestWatcherDoesNotPinUnmount: a running Watcher whose whole host root (ADE's config dir,
// markers, handler status and config dirs) lives on a loop-mounted filesystem does not
// stop that filesystem from being unmounted at the first attempt, and it notices the
// unmount (IN_UNMOUNT → a re-read) and keeps running.
func TestWatcherDoesNotPinUnmount(t *testing.T) {
	m := looptest.New(t)
	root, err := hostroot.New(m.Path)
	if err != nil {
		t.Fatal(err)
	}
	// No proc/1/mountinfo here: the Watcher keeps that file open for POLLPRI, which is
	// right for procfs but would pin a fixture on the filesystem under test.
	f := &fixture{t: t, dir: m.Path, root: root}
	f.request("OS")
	f.marker("PrereqState")
	f.settings("0")
	f.status("0", "Enable", "transitioning", "0", "", "EncryptionInProgress", "NotMounted")

	r := startWatcher(t, f, WithInterval(time.Hour), WithDebounce(20*time.Millisecond))
	r.expect(RequestSeen, time.Second)
	r.expect(EncryptionStarted, time.Second)
	// Let the re-read that follows the first one finish, so nothing is being read.
	time.Sleep(300 * time.Millisecond)
	n := r.watches()
	if n < 5 {
		t.Fatalf("watches = %d, want ADE's dirs on the filesystem watched", n)
	}
	r.w.mu.Lock()
	scans := r.w.scans
	r.w.mu.Unlock()

	if err := unix.Unmount(m.Path, 0); err != nil {
		t.Fatalf("umount with the Watcher's %d watches on the filesystem: %v", n, err)
	}
	t.Logf("umount succeeded at the first attempt with %d watches held", n)

	deadline := time.Now().Add(3 * time.Second)
	for time.Now().Before(deadline) {
		r.w.mu.Lock()
		s := r.w.scans
		r.w.mu.Unlock()
		if s > scans {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.w.mu.Lock()
	s := r.w.scans
	r.w.mu.Unlock()
	if s == scans {
		t.Error("the Watcher did not re-read after its watches were unmounted")
	}
	if _, err := os.Stat(filepath.Join(m.Path, "var")); !os.IsNotExist(err) {
		t.Fatalf("the filesystem still looks mounted: %v", err)
	}
}

// readFor reads inotify events from a non-blocking fd for up to d.
func readFor(t *testing.T, fd int, d time.Duration) []rawEvent {
	t.Helper()
	fds := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	if n, err := unix.Poll(fds, int(d/time.Millisecond)); err != nil || n == 0 {
		return nil
	}
	buf := make([]byte, 64*1024)
	n, err := unix.Read(fd, buf)
	if err != nil {
		return nil
	}
	return decodeEvents(buf[:n], nil)
}
