package probes

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// fakeProbe is a probe driven by a function.
type fakeProbe struct {
	name    string
	run     func(ctx context.Context) ([]api.Finding, error)
	timeout time.Duration
}

func (p fakeProbe) Name() string { return p.name }
func (p fakeProbe) Run(ctx context.Context, _ *Env) ([]api.Finding, error) {
	return p.run(ctx)
}

type slowProbe struct {
	fakeProbe
}

func (p slowProbe) Timeout() time.Duration { return p.timeout }

func findings(fs ...api.Finding) func(context.Context) ([]api.Finding, error) {
	return func(context.Context) ([]api.Finding, error) { return fs, nil }
}

func TestRunSurvivesPanicTimeoutAndError(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	probes := []Probe{
		fakeProbe{name: "aaa", run: findings(api.Finding{Key: "aaa.info", Severity: api.SeverityInfo})},
		fakeProbe{name: "boom", run: func(context.Context) ([]api.Finding, error) {
			var m map[string]int
			if len(m) == 0 {
				panic("boom: the probe hit a bug")
			}
			return nil, nil
		}},
		fakeProbe{name: "broken", run: func(context.Context) ([]api.Finding, error) {
			return []api.Finding{{Key: "broken.partial", Severity: api.SeverityLow}}, errors.New("read /etc/thing: permission denied")
		}},
		fakeProbe{name: "hang", run: func(context.Context) ([]api.Finding, error) {
			<-release // ignores its context entirely
			return nil, nil
		}},
		fakeProbe{name: "off", run: func(context.Context) ([]api.Finding, error) {
			t.Error("disabled probe ran")
			return nil, nil
		}},
		fakeProbe{name: "zzz", run: findings(api.Finding{Key: "zzz.bad", Severity: api.SeverityMedium, Blocker: true})},
	}
	start := time.Now()
	res := Run(context.Background(), &Env{}, probes, RunOptions{
		Timeout: 100 * time.Millisecond,
		Enabled: func(name string) bool { return name != "off" },
	})
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("run took %s; the hanging probe held it up", el)
	}

	status := map[string]api.ProbeRun{}
	for _, p := range res.Probes {
		status[p.Name] = p
	}
	want := map[string]string{"aaa": "ok", "boom": "panic", "broken": "error", "hang": "timeout", "off": "disabled", "zzz": "ok"}
	for name, st := range want {
		if got := status[name].Status; got != st {
			t.Errorf("probe %s status %q, want %q", name, got, st)
		}
	}
	if d := status["hang"].DurationMS; d < 90 || d > 1500 {
		t.Errorf("hang duration %.1f ms, want about 100", d)
	}
	if !strings.Contains(status["boom"].Error, "boom: the probe hit a bug") || !strings.Contains(status["boom"].Error, "runner_test.go:") {
		t.Errorf("panic text lacks message or location: %q", status["boom"].Error)
	}
	if res.Failed() != 3 {
		t.Errorf("Failed() = %d, want 3", res.Failed())
	}
	if res.Ready() {
		t.Error("result claims ready with blockers")
	}

	var keys []string
	for _, f := range res.Findings {
		keys = append(keys, f.Key)
		if f.Probe == "" {
			t.Errorf("finding %s has no probe", f.Key)
		}
	}
	// Blockers (high error findings by key, then the medium blocker), then the rest.
	wantKeys := []string{"boom.error", "broken.error", "hang.error", "zzz.bad", "broken.partial", "aaa.info"}
	if strings.Join(keys, " ") != strings.Join(wantKeys, " ") {
		t.Errorf("findings order\n got %v\nwant %v", keys, wantKeys)
	}
	for _, f := range res.Findings[:3] {
		if !f.Blocker || f.Severity != api.SeverityHigh {
			t.Errorf("%s: blocker=%v severity=%s, want blocking high", f.Key, f.Blocker, f.Severity)
		}
	}
	if !strings.Contains(res.Findings[0].Remediation.Hint, "report") {
		t.Errorf("panic finding hint does not ask for a bug report: %q", res.Findings[0].Remediation.Hint)
	}
	if !strings.Contains(res.Findings[2].Summary, "did not finish within 100ms") {
		t.Errorf("timeout summary: %q", res.Findings[2].Summary)
	}
}

func TestRunBoundsParallelismAndHonoursProbeTimeout(t *testing.T) {
	var running, peak atomic.Int32
	var probes []Probe
	for _, n := range []string{"a", "b", "c", "d", "e", "f", "g", "h"} {
		probes = append(probes, fakeProbe{name: n, run: func(context.Context) ([]api.Finding, error) {
			c := running.Add(1)
			for {
				p := peak.Load()
				if c <= p || peak.CompareAndSwap(p, c) {
					break
				}
			}
			time.Sleep(20 * time.Millisecond)
			running.Add(-1)
			return nil, nil
		}})
	}
	// A probe with its own, longer timeout finishes although the default would cut it.
	probes = append(probes, slowProbe{fakeProbe{name: "slow", timeout: time.Second, run: func(ctx context.Context) ([]api.Finding, error) {
		select {
		case <-time.After(80 * time.Millisecond):
			return nil, nil
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}}})
	res := Run(context.Background(), &Env{}, probes, RunOptions{Parallelism: 2, Timeout: 50 * time.Millisecond})
	if p := peak.Load(); p > 2 {
		t.Errorf("peak parallelism %d, want ≤ 2", p)
	}
	if !res.Ready() || res.Failed() != 0 {
		t.Errorf("want a clean run, got %+v", res.Probes)
	}
	if res.Duration <= 0 {
		t.Error("run duration not recorded")
	}
}

func TestRunContextAwareTimeoutIsATimeout(t *testing.T) {
	p := fakeProbe{name: "ctx", run: func(ctx context.Context) ([]api.Finding, error) {
		<-ctx.Done()
		return nil, ctx.Err()
	}}
	res := Run(context.Background(), &Env{}, []Probe{p}, RunOptions{Timeout: 20 * time.Millisecond})
	if res.Probes[0].Status != api.ProbeTimeout {
		t.Errorf("status %q, want timeout", res.Probes[0].Status)
	}
}

func TestSortFindings(t *testing.T) {
	fs := []api.Finding{
		{Key: "b.info", Severity: api.SeverityInfo},
		{Key: "a.low", Severity: api.SeverityLow},
		{Key: "c.block-medium", Severity: api.SeverityMedium, Blocker: true},
		{Key: "a.high", Severity: api.SeverityHigh},
		{Key: "z.block-high", Severity: api.SeverityHigh, Blocker: true},
		{Key: "a.block-high", Severity: api.SeverityHigh, Blocker: true, Summary: "2"},
		{Key: "a.block-high", Severity: api.SeverityHigh, Blocker: true, Summary: "1"},
	}
	SortFindings(fs)
	var got []string
	for _, f := range fs {
		got = append(got, f.Key+f.Summary)
	}
	want := "a.block-high1 a.block-high2 z.block-high c.block-medium a.high a.low b.info"
	if strings.Join(got, " ") != want {
		t.Errorf("got  %v\nwant %v", strings.Join(got, " "), want)
	}
}
