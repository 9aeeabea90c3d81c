package unmount_test

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// The benchmarks scan the real /proc for holders of the filesystem under a temp dir, so
// they need no root (as non-root, other users' processes come back incomplete). They
// report the cost per fd seen; e2e/holderbench builds a real P×F load and compares.
//
//	go test -run '^$' -bench . -benchtime 20x ./unmount

func benchTarget(b *testing.B) *unmount.Target {
	t, err := unmount.PathTarget(hostroot.Host, b.TempDir())
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
