package unmount_test

// Integration tests on the real kernel (root only): a loop-mounted ext4 image held by real
// processes and kernel objects in every way research/handles.md lists that this kernel can
// produce. Each case asserts the holder is found with the right kind, pid and path, and
// that once the holder is gone, umount succeeds. Each case also runs `fuser -m` and `lsof`
// on the same mount, and TestMain writes the measured comparison table when
// ADEAGENT_MATRIX names a file.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/looptest"
)

func init() {
	if os.Getenv("ADEAGENT_HOLDER") != "" {
		// Keep the main goroutine on the thread-group leader, so the threads that unshare
		// their fs or fd table below are never the leader itself.
		runtime.LockOSThread()
	}
}

func TestMain(m *testing.M) {
	if mode := os.Getenv("ADEAGENT_HOLDER"); mode != "" {
		os.Exit(holderMain(mode, os.Getenv("ADEAGENT_HOLDER_PATH")))
	}
	code := m.Run()
	writeMatrix()
	os.Exit(code)
}

// holderMain is the holder process: it takes hold of path the way mode says, prints
// "ready <tid>" and waits for stdin to close.
func holderMain(mode, path string) int {
	tid := 0
	fail := func(err error) int { fmt.Printf("error %v\n", err); return 1 }
	switch mode {
	case "fd":
		if _, err := unix.Open(path, unix.O_RDONLY, 0); err != nil {
			return fail(err)
		}
	case "deleted":
		if _, err := unix.Open(path, unix.O_RDONLY, 0); err != nil {
			return fail(err)
		}
		if err := os.Remove(path); err != nil {
			return fail(err)
		}
	case "cwd":
		if err := unix.Chdir(path); err != nil {
			return fail(err)
		}
	case "chroot":
		if err := unix.Chroot(path); err != nil {
			return fail(err)
		}
		if err := unix.Chdir("/"); err != nil {
			return fail(err)
		}
	case "mmap":
		if err := mapAndClose(path); err != nil {
			return fail(err)
		}
	case "fd-many":
		// 5000 fds before the one on the target: the fd directory takes several getdents
		// batches, and the holder is in the last.
		for range 5000 {
			if _, err := unix.Open("/dev/null", unix.O_RDONLY, 0); err != nil {
				return fail(err)
			}
		}
		if _, err := unix.Open(path, unix.O_RDONLY, 0); err != nil {
			return fail(err)
		}
	case "mmap-many":
		// The target's mapping comes first (mmap goes top-down, so it is listed last) and
		// 3000 mappings of another file follow, so maps is read in several chunks.
		if err := mapAndClose(path); err != nil {
			return fail(err)
		}
		self, err := os.Executable()
		if err != nil {
			return fail(err)
		}
		other, err := unix.Open(self, unix.O_RDONLY, 0)
		if err != nil {
			return fail(err)
		}
		for range 3000 {
			if _, err := unix.Mmap(other, 0, 4096, unix.PROT_READ, unix.MAP_PRIVATE); err != nil {
				return fail(err)
			}
		}
		unix.Close(other)
	case "thread-cwd", "thread-fd":
		ch := make(chan error, 1)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread keeps its private fs/fd table
			tid = unix.Gettid()
			var err error
			if mode == "thread-cwd" {
				if err = unix.Unshare(unix.CLONE_FS); err == nil {
					err = unix.Chdir(path)
				}
			} else if err = unix.Unshare(unix.CLONE_FILES); err == nil {
				_, err = unix.Open(path, unix.O_RDONLY, 0)
			}
			ch <- err
			select {}
		}()
		if err := <-ch; err != nil {
			return fail(err)
		}
	case "io_uring":
		fd, err := unix.Open(path, unix.O_RDONLY, 0)
		if err != nil {
			return fail(err)
		}
		var params [120]byte
		ring, _, e := unix.Syscall(unix.SYS_IO_URING_SETUP, 4, uintptr(unsafe.Pointer(&params[0])), 0)
		if e != 0 {
			return fail(fmt.Errorf("io_uring_setup: %w", e))
		}
		fds := []int32{int32(fd)}
		const ioringRegisterFiles = 2
		if _, _, e := unix.Syscall6(unix.SYS_IO_URING_REGISTER, ring, ioringRegisterFiles, uintptr(unsafe.Pointer(&fds[0])), 1, 0, 0); e != 0 {
			return fail(fmt.Errorf("io_uring_register: %w", e))
		}
		unix.Close(fd) // only the ring holds the file now
	default:
		return fail(fmt.Errorf("unknown mode %q", mode))
	}
	fmt.Printf("ready %d\n", tid)
	io.Copy(io.Discard, os.Stdin)
	return 0
}

// mapAndClose maps the first page of path and closes the fd: only the mapping holds it.
func mapAndClose(path string) error {
	fd, err := unix.Open(path, unix.O_RDONLY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	_, err = unix.Mmap(fd, 0, 4096, unix.PROT_READ, unix.MAP_SHARED)
	return err
}

// holder is a running holder process.
type holder struct {
	cmd   *exec.Cmd
	stdin io.WriteCloser
	pid   int
	tid   int
}

func (h *holder) stop() {
	if h.cmd == nil || h.cmd.Process == nil {
		return
	}
	h.stdin.Close()
	done := make(chan struct{})
	go func() { h.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		h.cmd.Process.Kill()
		<-done
	}
	h.cmd = nil
}

// startCmd starts cmd and waits for its "ready" line.
func startCmd(t *testing.T, cmd *exec.Cmd) *holder {
	t.Helper()
	if cmd.Dir == "" {
		cmd.Dir = "/"
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %v: %v", cmd.Args, err)
	}
	h := &holder{cmd: cmd, stdin: stdin, pid: cmd.Process.Pid}
	t.Cleanup(h.stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || !strings.HasPrefix(line, "ready") {
		h.stop()
		t.Fatalf("holder %v did not get ready: %q %v", cmd.Args, line, err)
	}
	h.tid, _ = strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(line, "ready")))
	return h
}

// startHolder runs this test binary as a holder process.
func startHolder(t *testing.T, mode, path string, wrap ...string) *holder {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, wrap...), self)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env = append(os.Environ(), "ADEAGENT_HOLDER="+mode, "ADEAGENT_HOLDER_PATH="+path)
	return startCmd(t, cmd)
}

// scratch is the loop-mounted target of one test.
type scratch struct {
	*looptest.Mount
	t *testing.T
}

func newScratch(t *testing.T) *scratch { return &scratch{Mount: looptest.New(t), t: t} }

func (s *scratch) path(rel string) string { return s.At(rel) }

func run(t *testing.T, name string, args ...string) string {
	t.Helper()
	return looptest.Run(t, name, args...)
}

func needRoot(t *testing.T) { t.Helper(); looptest.NeedRoot(t) }

// scan runs the holder scan on the scratch mount.
func (s *scratch) scan() *api.HoldersReport {
	s.t.Helper()
	target, err := unmount.PathTarget(hostroot.Host, s.Path)
	if err != nil {
		s.t.Fatal(err)
	}
	scan := func(source string) (*api.HoldersReport, error) {
		return unmount.Scan(context.Background(), hostroot.Host, target, unmount.Options{Timeout: 20 * time.Second,
			ProcessScanOptions: unmount.ProcessScanOptions{FDSource: source}})
	}
	slow, err := scan(unmount.FDSourceProc)
	if err != nil {
		s.t.Fatal(err)
	}
	// Where the BPF fast path can run (root, a kernel with BTF and the iterator), it must
	// find exactly what the /proc path finds, and its report is the one the test checks.
	fast, err := scan(unmount.FDSourceBPF)
	if err != nil {
		s.t.Logf("BPF fd source not used: %v", err)
		return slow
	}
	if got, want := holderKeys(fast), holderKeys(slow); !slices.Equal(got, want) {
		s.t.Errorf("fd sources disagree:\n bpf:  %q\n proc: %q", got, want)
	}
	return fast
}

// holderKeys sums up the task holders of a report: kind, pid, tid, uses, fd count, mount.
func holderKeys(rep *api.HoldersReport) []string {
	var keys []string
	for _, h := range rep.Holders {
		if h.Kind == api.KindProcess || h.Kind == api.KindThread {
			keys = append(keys, fmt.Sprintf("%s %d/%d %v fds=%d %s", h.Kind, h.PID, h.TID, h.Uses, h.FDs, h.Mount))
		}
	}
	return keys
}

// mountOverlay mounts an overlay beside the target (at Dir/merged) whose lower, upper and
// work directories are on it, unmounted with the target; the test skips without overlayfs.
func (s *scratch) mountOverlay() string {
	s.t.Helper()
	merged := filepath.Join(s.Dir, "merged")
	os.Mkdir(merged, 0o755)
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", s.path("lower"), s.path("upper"), s.path("work"))
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o", opts, merged).CombinedOutput(); err != nil {
		s.t.Skipf("overlay mount not available: %v %s", err, out)
	}
	s.Extra = append(s.Extra, merged)
	return merged
}

func (s *scratch) umount()     { s.t.Helper(); s.Unmount() }
func (s *scratch) umountBusy() { s.t.Helper(); s.Busy() }

// find returns the holders of kind (and pid, if non-zero).
func find(rep *api.HoldersReport, kind string, pid int) []api.Holder {
	var out []api.Holder
	for _, h := range rep.Holders {
		if h.Kind == kind && (pid == 0 || h.PID == pid) {
			out = append(out, h)
		}
	}
	return out
}

func mustFind(t *testing.T, rep *api.HoldersReport, kind string, pid int, use, pathSub string) api.Holder {
	t.Helper()
	hs := find(rep, kind, pid)
	if len(hs) == 0 {
		t.Fatalf("no %s holder with pid %d; holders: %+v; incomplete: %+v", kind, pid, rep.Holders, rep.Incomplete)
	}
	h := hs[0]
	if use != "" && !contains(h.Uses, use) {
		t.Errorf("%s holder %d: uses %v, want %q", kind, pid, h.Uses, use)
	}
	if pathSub != "" && !anyContains(h.Paths, pathSub) {
		t.Errorf("%s holder %d: paths %q, want one containing %q", kind, pid, h.Paths, pathSub)
	}
	return h
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func anyContains(list []string, sub string) bool {
	for _, x := range list {
		if strings.Contains(x, sub) {
			return true
		}
	}
	return false
}

// The comparison matrix: case → which tools reported the holder pid.
var (
	matrixMu sync.Mutex
	matrix   = map[string][3]string{}
)

// compareTools runs fuser -m and lsof on the target and records whether they list pid
// (pid 0: whether they list anything at all besides our own scanner).
func (s *scratch) compareTools(name string, pid int, ours bool) {
	s.t.Helper()
	mark := func(found bool) string {
		if found {
			return "yes"
		}
		return "no"
	}
	fuserFound, lsofFound := false, false
	if out, err := exec.Command("fuser", "-m", s.Path).Output(); err == nil || len(out) > 0 {
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(strings.TrimRight(f, "cerfmn")); err == nil && (pid == 0 || p == pid) {
				fuserFound = true
			}
		}
	}
	if out, err := exec.Command("lsof", "-t", s.Path).Output(); err == nil || len(out) > 0 {
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil && (pid == 0 || p == pid) {
				lsofFound = true
			}
		}
	}
	matrixMu.Lock()
	matrix[name] = [3]string{mark(fuserFound), mark(lsofFound), mark(ours)}
	matrixMu.Unlock()
}

func writeMatrix() {
	path := os.Getenv("ADEAGENT_MATRIX")
	if path == "" || len(matrix) == 0 {
		return
	}
	names := make([]string, 0, len(matrix))
	for n := range matrix {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	b.WriteString("| holder | fuser -m | lsof | adeagent |\n|---|---|---|---|\n")
	for _, n := range names {
		r := matrix[n]
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", n, r[0], r[1], r[2])
	}
	os.WriteFile(path, []byte(b.String()), 0o644)
}

func TestProcessHolders(t *testing.T) {
	cases := []struct {
		name, mode, rel, use, kind string
	}{
		{"open fd", "fd", "dir/f0", api.UseFD, api.KindProcess},
		{"deleted-but-open file", "deleted", "dir/f1", api.UseFD, api.KindProcess},
		{"cwd", "cwd", "dir", api.UseCwd, api.KindProcess},
		{"chroot root", "chroot", "dir", api.UseRoot, api.KindProcess},
		{"mmap with fd closed", "mmap", "dir/f2", api.UseMmap, api.KindProcess},
		{"mmap listed after 3000 other mappings", "mmap-many", "dir/f2", api.UseMmap, api.KindProcess},
		{"fd after 5000 other fds", "fd-many", "dir/f1", api.UseFD, api.KindProcess},
		{"thread with its own cwd (CLONE_FS)", "thread-cwd", "dir", api.UseCwd, api.KindThread},
		{"thread with its own fd table (CLONE_FILES)", "thread-fd", "dir/f0", api.UseFD, api.KindThread},
		{"io_uring registered file, fd closed", "io_uring", "dir/f0", api.UseIOUring, api.KindProcess},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := newScratch(t)
			h := startHolder(t, c.mode, s.path(c.rel))
			rep := s.scan()
			got := mustFind(t, rep, c.kind, h.pid, c.use, strings.TrimSuffix(filepath.Base(c.rel), "dir"))
			if c.kind == api.KindThread && got.TID != h.tid {
				t.Errorf("thread holder tid = %d, want %d", got.TID, h.tid)
			}
			if got.Comm == "" {
				t.Errorf("holder has no comm: %+v", got)
			}
			if got.Mount != s.Path {
				t.Errorf("holder mount = %q, want %q", got.Mount, s.Path)
			}
			s.umountBusy()
			s.compareTools(c.name, h.pid, true)
			h.stop()
			if left := find(s.scan(), c.kind, h.pid); len(left) != 0 {
				t.Errorf("holder still reported after it exited: %+v", left)
			}
			s.umount()
		})
	}
}

func TestExeOnTarget(t *testing.T) {
	s := newScratch(t)
	bin := s.path("dir/holder-sleep")
	data, err := os.ReadFile("/bin/sleep")
	if err != nil {
		t.Skip("no /bin/sleep to copy")
	}
	if err := os.WriteFile(bin, data, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "300")
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	var got api.Holder
	deadline := time.Now().Add(5 * time.Second)
	for {
		hs := find(s.scan(), api.KindProcess, cmd.Process.Pid)
		if len(hs) > 0 && contains(hs[0].Uses, api.UseExe) || time.Now().After(deadline) {
			got = mustFind(t, s.scan(), api.KindProcess, cmd.Process.Pid, api.UseExe, "holder-sleep")
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if !contains(got.Uses, api.UseMmap) {
		t.Errorf("exe holder should also map its binary: %v", got.Uses)
	}
	s.compareTools("exe on the mount", cmd.Process.Pid, true)
	cmd.Process.Kill()
	cmd.Wait()
	s.umount()
}

func TestHolderThroughBindMount(t *testing.T) {
	s := newScratch(t)
	bind := filepath.Join(s.Dir, "bind")
	os.Mkdir(bind, 0o755)
	run(t, "mount", "--bind", s.path("dir"), bind)
	s.Extra = append(s.Extra, bind)
	h := startHolder(t, "fd", filepath.Join(bind, "f0"))
	rep := s.scan()
	got := mustFind(t, rep, api.KindProcess, h.pid, api.UseFD, "bind/f0")
	_ = got
	b := mustFind(t, rep, api.KindMount, 0, "", "bind")
	if !strings.Contains(b.Detail, "bind mount") {
		t.Errorf("bind mount holder detail = %q", b.Detail)
	}
	s.compareTools("holder via a bind mount elsewhere", h.pid, true)
	h.stop()
	s.umount()
}

func TestBindMountWithoutHolder(t *testing.T) {
	s := newScratch(t)
	bind := filepath.Join(s.Dir, "bind")
	os.Mkdir(bind, 0o755)
	run(t, "mount", "--bind", s.path("dir"), bind)
	s.Extra = append(s.Extra, bind)
	rep := s.scan()
	mustFind(t, rep, api.KindMount, 0, "", bind)
	s.compareTools("bind mount elsewhere, no process", 0, true)
	s.umount()
}

func TestNestedMount(t *testing.T) {
	s := newScratch(t)
	run(t, "mount", "-t", "tmpfs", "nested", s.path("dir"))
	s.Extra = append(s.Extra, s.path("dir"))
	rep := s.scan()
	got := mustFind(t, rep, api.KindMount, 0, "", s.path("dir"))
	if !strings.Contains(got.Detail, "tmpfs") {
		t.Errorf("nested mount detail = %q", got.Detail)
	}
	s.umountBusy()
	s.compareTools("nested mount, no process", 0, true)
	s.umount()
}

func TestSwapFileOnTarget(t *testing.T) {
	s := newScratch(t)
	for _, tool := range []string{"mkswap", "swapon", "swapoff"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s", tool)
		}
	}
	sw := s.path("swapfile")
	run(t, "dd", "if=/dev/zero", "of="+sw, "bs=1M", "count=16", "status=none")
	os.Chmod(sw, 0o600)
	run(t, "mkswap", "-q", sw)
	if out, err := exec.Command("swapon", sw).CombinedOutput(); err != nil {
		t.Skipf("swapon not permitted here: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("swapoff", sw).Run() })
	rep := s.scan()
	mustFind(t, rep, api.KindSwap, 0, "", "swapfile")
	s.umountBusy()
	s.compareTools("swap file on the mount", 0, true)
	run(t, "swapoff", sw)
	s.umount()
}

func TestLoopDeviceBackedByTarget(t *testing.T) {
	s := newScratch(t)
	img := s.path("inner.img")
	run(t, "truncate", "-s", "8M", img)
	dev := run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", dev).Run() })
	rep := s.scan()
	got := mustFind(t, rep, api.KindLoop, 0, "", "inner.img")
	if !strings.Contains(got.Detail, filepath.Base(dev)) {
		t.Errorf("loop holder detail %q does not name %s", got.Detail, dev)
	}
	s.umountBusy()
	s.compareTools("loop device backed by a file on the mount", 0, true)
	run(t, "losetup", "-d", dev)
	// The kernel detaches asynchronously; wait for the backing file to be released.
	deadline := time.Now().Add(5 * time.Second)
	for len(find(s.scan(), api.KindLoop, 0)) > 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	s.umount()
}

func TestOverlayLayersOnTarget(t *testing.T) {
	s := newScratch(t)
	merged := s.mountOverlay()
	rep := s.scan()
	got := mustFind(t, rep, api.KindOverlay, 0, "", "upper")
	if got.Mount != merged {
		t.Errorf("overlay holder mount = %q, want %q", got.Mount, merged)
	}
	if !anyContains(got.Paths, "lower") || !anyContains(got.Paths, "work") {
		t.Errorf("overlay layers on target = %q, want lower, upper and work", got.Paths)
	}
	s.compareTools("overlay with layers on the mount, no process", 0, true)
	s.umount()
}

func TestOtherMountNamespace(t *testing.T) {
	s := newScratch(t)
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("needs unshare (util-linux)")
	}
	t.Run("private copy with a holder", func(t *testing.T) {
		h := startHolder(t, "fd", s.path("dir/f0"), "unshare", "--mount", "--propagation", "private", "--")
		rep := s.scan()
		mustFind(t, rep, api.KindProcess, h.pid, api.UseFD, "f0")
		ns := mustFind(t, rep, api.KindNamespace, h.pid, "", s.Path)
		if !strings.Contains(ns.Detail, "private") {
			t.Errorf("namespace detail = %q, want private propagation named", ns.Detail)
		}
		s.compareTools("holder in another mount namespace (private)", h.pid, true)
		h.stop()
	})
	t.Run("private copy without a holder", func(t *testing.T) {
		h := startHolder(t, "cwd", "/", "unshare", "--mount", "--propagation", "private", "--")
		rep := s.scan()
		if len(find(rep, api.KindProcess, h.pid)) != 0 {
			t.Errorf("process in the namespace does not use the target but was reported")
		}
		mustFind(t, rep, api.KindNamespace, h.pid, "", s.Path)
		s.compareTools("other mount namespace holding a copy, no process", 0, true)
		h.stop()
	})
	s.umount()
}

func TestUnreadableIsIncompleteNotClean(t *testing.T) {
	needRoot(t)
	// A pid whose fd table cannot be read must be listed as incomplete. On hosts where
	// PID 1 is unreadable even for root (containers, sandboxes) this happens naturally;
	// elsewhere drop the capability that lets root read other users' fd tables.
	if _, err := os.ReadDir("/proc/1/fd"); err == nil {
		if _, err := exec.LookPath("setpriv"); err != nil {
			t.Skip("needs setpriv to drop CAP_SYS_PTRACE")
		}
		self, _ := os.Executable()
		cmd := exec.Command("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", self, "-test.run=^TestIncompleteHelper$")
		cmd.Env = append(os.Environ(), "ADEAGENT_INCOMPLETE_HELPER=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("unprivileged scan: %v\n%s", err, out)
		}
		return
	}
	assertIncompletePID1(t)
}

// TestIncompleteHelper runs as an unprivileged user (from the test above): root-owned
// processes' fd tables are unreadable to it, and must come out incomplete.
func TestIncompleteHelper(t *testing.T) {
	if os.Getenv("ADEAGENT_INCOMPLETE_HELPER") == "" {
		t.Skip("helper for TestUnreadableIsIncompleteNotClean")
	}
	assertIncompletePID1(t)
}

func assertIncompletePID1(t *testing.T) {
	t.Helper()
	target, err := unmount.PathTarget(hostroot.Host, "/")
	if err != nil {
		t.Fatal(err)
	}
	rep, err := unmount.Scan(context.Background(), hostroot.Host, target, unmount.Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range rep.Incomplete {
		if in.PID == 1 && contains(strings.Split(in.What, ","), "fd") {
			return
		}
	}
	t.Fatalf("PID 1's unreadable fd table is not reported incomplete: %+v", rep.Incomplete)
}
