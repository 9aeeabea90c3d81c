// Package looptest gives root-only tests a real filesystem to hold: a small ext4 image,
// attached to a loop device and mounted under a temporary directory whose name contains a
// space (so mountinfo's \040 escape is exercised everywhere). Tests skip with a reason
// when not root or when the tools are missing.
package looptest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Mount is a loop-mounted ext4 filesystem.
type Mount struct {
	t *testing.T
	// Dir is a scratch directory beside the mount (not on it).
	Dir string
	// Path is the mount point.
	Path string
	// Loop is the loop device, e.g. /dev/loop3.
	Loop string
	// Extra are mounts a test stacked on or beside the target, unmounted first.
	Extra []string
}

// NeedRoot skips the test unless it runs as root with the loop and mount tools.
func NeedRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: loop devices, mount and other processes' /proc entries (run ./test.sh as root)")
	}
	for _, tool := range []string{"mkfs.ext4", "losetup", "mount", "umount", "truncate"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("needs %s (apt-get install e2fsprogs util-linux mount)", tool)
		}
	}
}

// Run runs a command and fails the test if it fails; it returns trimmed output.
func Run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// New makes, attaches and mounts a fresh 96 MiB ext4 image with directories dir, lower,
// upper, work and files dir/f0..f2. Everything is undone at cleanup.
func New(t *testing.T) *Mount {
	t.Helper()
	NeedRoot(t)
	dir := t.TempDir()
	img := filepath.Join(dir, "disk.img")
	Run(t, "truncate", "-s", "96M", img)
	Run(t, "mkfs.ext4", "-q", "-F", img)
	m := &Mount{t: t, Dir: dir, Path: filepath.Join(dir, "mnt point")}
	if err := os.Mkdir(m.Path, 0o755); err != nil {
		t.Fatal(err)
	}
	m.Loop = Run(t, "losetup", "--find", "--show", img)
	t.Cleanup(func() { exec.Command("losetup", "-d", m.Loop).Run() })
	Run(t, "mount", m.Loop, m.Path)
	t.Cleanup(func() {
		for _, x := range m.Extra {
			exec.Command("umount", "-l", x).Run()
		}
		exec.Command("umount", "-l", m.Path).Run()
	})
	for _, d := range []string{"dir", "lower", "upper", "work"} {
		if err := os.Mkdir(filepath.Join(m.Path, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 3 {
		if err := os.WriteFile(filepath.Join(m.Path, "dir", fmt.Sprintf("f%d", i)), make([]byte, 8192), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return m
}

// At is the path of rel on the mount.
func (m *Mount) At(rel string) string { return filepath.Join(m.Path, rel) }

// Unmount unmounts the extra mounts and then the target, failing the test if the target
// stays busy. Some holders are released by the kernel asynchronously after their owner
// is gone (an io_uring ring is torn down by a workqueue), so EBUSY is retried briefly.
func (m *Mount) Unmount() {
	m.t.Helper()
	for _, x := range m.Extra {
		if err := unix.Unmount(x, 0); err != nil {
			m.t.Fatalf("umount %s: %v", x, err)
		}
	}
	m.Extra = nil
	deadline := time.Now().Add(5 * time.Second)
	for {
		err := unix.Unmount(m.Path, 0)
		if err == nil {
			return
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			m.t.Fatalf("umount %s after the holder went away: %v", m.Path, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Busy asserts umount(2) of the target fails with EBUSY now.
func (m *Mount) Busy() {
	m.t.Helper()
	if err := unix.Unmount(m.Path, 0); err != unix.EBUSY {
		m.t.Fatalf("umount %s while held: got %v, want EBUSY", m.Path, err)
	}
}
