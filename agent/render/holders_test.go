package render

import (
	"bytes"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

// The summary line says where the open files came from, and why not BPF when it was not.
func TestHoldersSummaryNamesTheFDSource(t *testing.T) {
	for _, tc := range []struct {
		stats api.ScanStats
		want  string
	}{
		{api.ScanStats{Processes: 3070, FDs: 309173, FDSource: "bpf"}, "Scanned 3070 processes, 0 threads, 309173 fds in 0.0 ms (open files from the kernel's BPF task_file iterator).\n"},
		{api.ScanStats{Processes: 67, FDs: 525, FDSource: "proc", FDSourceNote: "67 processes: /proc is quicker below 1000"},
			"Scanned 67 processes, 0 threads, 525 fds in 0.0 ms (open files from /proc: 67 processes: /proc is quicker below 1000).\n"},
		{api.ScanStats{Processes: 2}, "Scanned 2 processes, 0 threads, 0 fds in 0.0 ms.\n"},
	} {
		var b bytes.Buffer
		Holders(&b, &api.HoldersReport{SchemaVersion: 1, Stats: tc.stats}, "")
		if !strings.HasSuffix(b.String(), tc.want) {
			t.Errorf("stats %+v:\n%s\nwant the last line %q", tc.stats, b.String(), tc.want)
		}
	}
}
