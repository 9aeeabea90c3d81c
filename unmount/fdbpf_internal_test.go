package unmount

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// The iterator program's three record kinds, from this test process's own files: a file on
// the target is counted, a file through an overlay is handed back to be verified, an
// anon-inode file (here an eventfd) is handed back for the io_uring check.
func TestBPFRecordKinds(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loading a BPF program needs root")
	}
	dir := t.TempDir()
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		t.Fatal(err)
	}
	target := DevFromStat(st.Dev)
	for _, d := range []string{"l", "u", "w", "m"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	merged := filepath.Join(dir, "m")
	if out, err := exec.Command("mount", "-t", "overlay", "overlay", "-o",
		"lowerdir="+dir+"/l,upperdir="+dir+"/u,workdir="+dir+"/w", merged).CombinedOutput(); err != nil {
		t.Skipf("overlay mount not available: %v %s", err, out)
	}
	t.Cleanup(func() { exec.Command("umount", merged).Run() })

	plain, err := os.Create(filepath.Join(dir, "plain"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	over, err := os.Create(filepath.Join(merged, "over"))
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(efd)

	procFD, err := unix.Open("/proc", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(procFD)
	x, err := bpfFDIndex(context.Background(), procFD, []Dev{target}, anonInodeDev())
	if err != nil {
		t.Skipf("BPF fd source unusable here: %v", err)
	}
	me := x.forTask(os.Getpid(), os.Getpid())
	if me == nil {
		t.Fatalf("no records for this process (pid %d)", os.Getpid())
	}
	if me.targets < 1 || me.dev != devKey(target.Major, target.Minor) {
		t.Errorf("files on the target: %d (dev %#x), want ≥ 1 on %d:%d", me.targets, me.dev, target.Major, target.Minor)
	}
	kinds := map[int32]uint32{}
	for _, r := range me.others {
		kinds[r.fd] = r.kind
	}
	if k := kinds[int32(over.Fd())]; k != fdRecVerify {
		t.Errorf("overlay file fd %d: kind %d, want verify (%d); others %+v", over.Fd(), k, fdRecVerify, me.others)
	}
	if k := kinds[int32(efd)]; k != fdRecAnon {
		t.Errorf("eventfd %d: kind %d, want anon (%d)", efd, k, fdRecAnon)
	}
	if x.files < 3 {
		t.Errorf("files counted: %d", x.files)
	}
}
