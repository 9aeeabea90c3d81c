package unmount_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// bpfOrSkip skips when the kernel's task_file iterator cannot be used here (not root, a
// kernel without BTF or the iterator); the /proc path is what runs then, and is tested.
func bpfOrSkip(t *testing.T, target *unmount.Target) {
	t.Helper()
	needRoot(t)
	_, err := unmount.ScanProcesses(context.Background(), hostroot.Host, target, unmount.ProcessScanOptions{FDSource: unmount.FDSourceBPF})
	if err != nil {
		t.Skipf("BPF fd source unusable here: %v", err)
	}
}

// A file opened through an overlay whose upper layer is on the target: the file's
// superblock is the overlay's, and stat reports the overlay's device on current kernels
// but the layer's device on older ones (same-filesystem layers). The iterator hands such
// files back to be decided by statx, so the fast path follows stat whichever it says.
func TestBPFOverlayFileFollowsStat(t *testing.T) {
	s := newScratch(t)
	target, err := unmount.PathTarget(hostroot.Host, s.Path)
	if err != nil {
		t.Fatal(err)
	}
	bpfOrSkip(t, target)
	file := filepath.Join(s.mountOverlay(), "through-overlay")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	var fileSt, targetSt unix.Stat_t
	if err := unix.Stat(file, &fileSt); err != nil {
		t.Fatal(err)
	}
	if err := unix.Stat(s.Path, &targetSt); err != nil {
		t.Fatal(err)
	}
	h := startHolder(t, "fd", file)
	rep := s.scan() // also checks that the BPF and /proc sources agree
	if rep.Stats.FDSource != unmount.FDSourceBPF {
		t.Fatalf("fd source %q (%s), want bpf", rep.Stats.FDSource, rep.Stats.FDSourceNote)
	}
	found := len(find(rep, api.KindProcess, h.pid)) > 0
	if onTarget := fileSt.Dev == targetSt.Dev; found != onTarget {
		t.Errorf("holder found = %v, but stat says the file is on the target = %v (dev %#x, target %#x)", found, onTarget, fileSt.Dev, targetSt.Dev)
	}
	t.Logf("stat reports the overlay file on %s", map[bool]string{true: "the layer's device", false: "the overlay's own device"}[fileSt.Dev == targetSt.Dev])
	h.stop()
}

// The fast path counts every open file the kernel has (stats.fds) and each holder's exact
// fd count, as the /proc path does.
func TestBPFCountsMatchProc(t *testing.T) {
	s := newScratch(t)
	target, err := unmount.PathTarget(hostroot.Host, s.Path)
	if err != nil {
		t.Fatal(err)
	}
	bpfOrSkip(t, target)
	h := startHolder(t, "fd-many", s.path("dir/f1"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	fast, err := unmount.ScanProcesses(ctx, hostroot.Host, target, unmount.ProcessScanOptions{FDSource: unmount.FDSourceBPF})
	if err != nil {
		t.Fatal(err)
	}
	slow, err := unmount.ScanProcesses(ctx, hostroot.Host, target, unmount.ProcessScanOptions{FDSource: unmount.FDSourceProc})
	if err != nil {
		t.Fatal(err)
	}
	if fast.Stats.FDSource != unmount.FDSourceBPF || slow.Stats.FDSource != unmount.FDSourceProc {
		t.Fatalf("sources %q and %q", fast.Stats.FDSource, slow.Stats.FDSource)
	}
	var fastFDs, slowFDs int
	for _, x := range fast.Holders {
		if x.PID == h.pid {
			fastFDs = x.FDs
		}
	}
	for _, x := range slow.Holders {
		if x.PID == h.pid {
			slowFDs = x.FDs
		}
	}
	if fastFDs == 0 || fastFDs != slowFDs {
		t.Errorf("holder fds: bpf %d, proc %d", fastFDs, slowFDs)
	}
	// Other processes come and go between the two scans; the totals are close, not equal.
	if fast.Stats.FDs < slow.Stats.FDs*9/10 || fast.Stats.FDs > slow.Stats.FDs*11/10 {
		t.Errorf("files seen: bpf %d, proc %d", fast.Stats.FDs, slow.Stats.FDs)
	}
	h.stop()
}

func TestFDSourceUnknown(t *testing.T) {
	_, err := unmount.ScanProcesses(context.Background(), hostroot.Host, &unmount.Target{}, unmount.ProcessScanOptions{FDSource: "ebpf"})
	if err == nil {
		t.Fatal("an unknown fd source was accepted")
	}
	if errors.Is(err, context.Canceled) {
		t.Fatal(err)
	}
}
