package agent

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// BenchmarkEvaluateHost is one full evaluation of the running host, as the daemon makes
// every interval: profile it with
//
//	go test ./agent -run '^$' -bench EvaluateHost -benchtime 20x -cpuprofile /tmp/eval.prof
//
// (start ~1000 processes first, e.g. with e2e/idlecpu -keep, for the workload).
func BenchmarkEvaluateHost(b *testing.B) {
	root, err := hostroot.New("/")
	if err != nil {
		b.Fatal(err)
	}
	var names []string
	for _, p := range probes.All() {
		names = append(names, p.Name())
	}
	cfg := config.Default(names)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := Evaluate(ctx, root, cfg); err != nil {
			b.Fatal(err)
		}
	}
}
