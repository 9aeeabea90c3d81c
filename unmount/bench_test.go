package unmount_test

import (
	"context"
	"os"
	"testing"

	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// The benchmarks scan the real /proc for holders of the filesystem under a temp dir, so
// they need no root (as non-root, other users' processes come back incomplete). They
// report the cost per fd seen. To profile against a real load, start
// `go run ./e2e/holderbench -hold` (as root) and point them at the mount it prints:
//
//	go test -run '^$' -bench . -benchtime 20x ./unmount
//	ADEAGENT_BENCH_MOUNT=/tmp/holderbench-…/mnt go test -run '^$' -bench Scan -cpuprofile cpu.out ./unmount

func benchTarget(b *testing.B) *unmount.Target {
	dir := os.Getenv("ADEAGENT_BENCH_MOUNT")
	if dir == "" {
		dir = b.TempDir()
	}
	t, err := unmount.PathTarget(hostroot.Host, dir)
	if err != nil {
		b.Fatal(err)
	}
	return t
}

// BenchmarkScanProcesses is the process scan alone (the hot path).
func BenchmarkScanProcesses(b *testing.B) {
	target := benchTarget(b)
	fds := 0
	for b.Loop() {
		ps, err := unmount.ScanProcesses(context.Background(), hostroot.Host, target, unmount.ProcessScanOptions{})
		if err != nil {
			b.Fatal(err)
		}
		fds += ps.Stats.FDs
	}
	if fds > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(fds), "ns/fd")
	}
}

// BenchmarkScan is what `adeagent holders` does: processes, kernel holders, attribution.
func BenchmarkScan(b *testing.B) {
	target := benchTarget(b)
	fds := 0
	for b.Loop() {
		rep, err := unmount.Scan(context.Background(), hostroot.Host, target, unmount.Options{})
		if err != nil {
			b.Fatal(err)
		}
		fds += rep.Stats.FDs
	}
	if fds > 0 {
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(fds), "ns/fd")
	}
}
