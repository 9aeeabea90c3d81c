package probes

import (
	"context"
	"os"
	"slices"
	"testing"

	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// TestProcessListFromScanMatchesWalk: on the running host, the process list the holder
// scan's walk collects says of this test process what a walk of /proc says.
func TestProcessListFromScanMatchesWalk(t *testing.T) {
	root, err := hostroot.New("/")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unmount.OSDriveTarget(root); err != nil {
		t.Skipf("no OS drive to scan here: %v", err)
	}
	ctx := context.Background()
	scan := NewOSDriveScan(root, unmount.Options{})
	fromScan, err := NewProcessList(root, scan).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := scan.Processes(ctx); !ok {
		t.Skip("the holder scan did not cover every process here (no procfs?)")
	}
	walked, err := NewProcessList(root, nil).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	self := os.Getpid()
	find := func(list []Process) *Process {
		for i := range list {
			if list[i].PID == self {
				return &list[i]
			}
		}
		return nil
	}
	a, b := find(fromScan), find(walked)
	if a == nil || b == nil {
		t.Fatalf("this process (pid %d) missing: from the scan %v, walked %v", self, a != nil, b != nil)
	}
	exe, _ := os.Executable()
	cwd, _ := os.Getwd()
	if a.Comm != b.Comm || a.Exe != b.Exe || a.Cwd != b.Cwd || !slices.Equal(a.Argv, b.Argv) {
		t.Errorf("from the scan %+v, walked %+v", *a, *b)
	}
	if a.Exe != exe || a.Cwd != cwd || !slices.Equal(a.Argv, os.Args) {
		t.Errorf("from the scan %+v; want exe %s, cwd %s, argv %q", *a, exe, cwd, os.Args)
	}
	if !slices.IsSortedFunc(fromScan, func(x, y Process) int { return x.PID - y.PID }) {
		t.Error("the list from the scan is not in pid order")
	}
	for _, p := range fromScan {
		if len(p.Argv) == 0 {
			t.Errorf("pid %d has an empty command line", p.PID)
		}
	}
	// A few processes may start or exit between the two lists.
	if d := len(fromScan) - len(walked); d > 50 || d < -50 {
		t.Errorf("%d processes from the scan, %d walked", len(fromScan), len(walked))
	}
}
