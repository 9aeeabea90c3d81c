package unmount_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
	"github.com/adeagent/adeagent/unmount/looptest"
)

// TestScanPIDSelf needs no privileges: the test process holds a file on the filesystem of
// its temporary directory, and a scan of its own pid finds the fd.
func TestScanPIDSelf(t *testing.T) {
	dir := t.TempDir()
	target, err := unmount.PathTarget(hostroot.Host, dir)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(filepath.Join(dir, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ps, err := unmount.NewPIDScanner(hostroot.Host, target, unmount.ProcessScanOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	r, err := ps.Scan(context.Background(), os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if !r.Exists || len(r.Holders) == 0 {
		t.Fatalf("own pid: exists=%v holders=%+v incomplete=%+v", r.Exists, r.Holders, r.Incomplete)
	}
	h := r.Holders[0]
	if h.Kind != api.KindProcess || h.PID != os.Getpid() || !slices.Contains(h.Uses, api.UseFD) || h.FDs < 1 {
		t.Errorf("holder = %+v, want process %d using an fd", h, os.Getpid())
	}

	// A pid that does not exist: no holders, not an error.
	r, err = ps.Scan(context.Background(), 1<<22+1)
	if err != nil {
		t.Fatal(err)
	}
	if r.Exists || len(r.Holders) != 0 {
		t.Errorf("missing pid: %+v", r)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := ps.Scan(ctx, os.Getpid()); err == nil {
		t.Error("scan with a cancelled context succeeded")
	}
	if err := ps.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Scan(context.Background(), os.Getpid()); err == nil {
		t.Error("scan after Close succeeded")
	}
}

// TestScanPIDLoop checks another process holding a loop-mounted filesystem (root only).
func TestScanPIDLoop(t *testing.T) {
	m := looptest.New(t)
	target, err := unmount.PathTarget(hostroot.Host, m.Path)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("sh", "-c", `exec 3<"$1"; exec sleep 60`, "sh", m.At("dir/f0"))
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	pid := cmd.Process.Pid
	var r *unmount.PIDScan
	for range 200 { // the shell needs a moment to open the file and exec
		if r, err = unmount.ScanPID(context.Background(), hostroot.Host, target, pid, unmount.ProcessScanOptions{}); err != nil {
			t.Fatal(err)
		}
		if len(r.Holders) > 0 && r.Holders[0].Comm == "sleep" {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if len(r.Holders) != 1 || r.Holders[0].PID != pid || r.Holders[0].FDs != 1 || r.Holders[0].Mount != m.Path {
		t.Fatalf("holders of pid %d = %+v", pid, r.Holders)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if r, err = unmount.ScanPID(context.Background(), hostroot.Host, target, pid, unmount.ProcessScanOptions{}); err != nil {
		t.Fatal(err)
	}
	if r.Exists || len(r.Holders) != 0 {
		t.Errorf("after exit: %+v", r)
	}
	m.Unmount()
}
