package agent

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/version"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

func TestEscapeLabel(t *testing.T) {
	for in, want := range map[string]string{
		"plain":         "plain",
		`a"b`:           `a\"b`,
		`back\slash`:    `back\\slash`,
		"two\nlines":    `two\nlines`,
		"\\\"\n":        `\\\"\n`,
		"unicode é ✓":   "unicode é ✓",
		`already \n ok`: `already \\n ok`,
	} {
		if got := escapeLabel(in); got != want {
			t.Errorf("escapeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestWriteMetrics(t *testing.T) {
	rep := &api.Report{
		Ready: false,
		Phase: api.PhaseObserving,
		Findings: []api.Finding{
			{Key: "os-drive.holders", Severity: api.SeverityHigh, Blocker: true},
			{Key: "selinux.enforcing", Severity: api.SeverityHigh, Blocker: true},
			{Key: "odd\"key\\\n", Severity: api.SeverityMedium, Blocker: true},
			{Key: "memory.low", Severity: api.SeverityInfo},
		},
		Probes: []api.ProbeRun{
			{Name: "memory", Status: api.ProbeOK, DurationMS: 1.5},
			{Name: "network", Status: api.ProbeTimeout, DurationMS: 2000},
			{Name: "kernel", Status: api.ProbeDisabled},
		},
	}
	var b bytes.Buffer
	err := writeMetrics(&b, metricsSnapshot{
		report: rep, holders: 12, phase: api.PhaseObserving, evaluations: 3,
		lastEval: time.Unix(1700000000, 250e6),
	})
	if err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"# HELP adeagent_build_info ",
		"# TYPE adeagent_build_info gauge\nadeagent_build_info{version=\"" + version.Version + "\"} 1\n",
		"adeagent_phase{phase=\"observing\"} 1\nadeagent_phase{phase=\"preparing\"} 0\n",
		"# TYPE adeagent_evaluations_total counter\nadeagent_evaluations_total 3\n",
		"adeagent_ready 0\n",
		"adeagent_last_evaluation_timestamp_seconds 1.70000000025e+09\n",
		"adeagent_blockers{key=\"odd\\\"key\\\\\\n\"} 1\nadeagent_blockers{key=\"os-drive.holders\"} 1\nadeagent_blockers{key=\"selinux.enforcing\"} 1\n",
		"adeagent_findings{severity=\"info\"} 1\nadeagent_findings{severity=\"low\"} 0\nadeagent_findings{severity=\"medium\"} 1\nadeagent_findings{severity=\"high\"} 2\n",
		"adeagent_holders 12\n",
		"adeagent_probe_duration_seconds{probe=\"memory\"} 0.0015\nadeagent_probe_duration_seconds{probe=\"network\"} 2\n",
		"adeagent_probe_success{probe=\"memory\"} 1\nadeagent_probe_success{probe=\"network\"} 0\n",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("metrics lack %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, `probe="kernel"`) {
		t.Error("a disabled probe has samples")
	}
	// Every sample line belongs to a family announced with HELP and TYPE before it.
	announced := map[string]bool{}
	for _, line := range strings.Split(strings.TrimSuffix(out, "\n"), "\n") {
		if rest, ok := strings.CutPrefix(line, "# TYPE "); ok {
			announced[strings.Fields(rest)[0]] = true
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		name := line[:strings.IndexAny(line, "{ ")]
		if !announced[name] {
			t.Errorf("sample before its TYPE: %q", line)
		}
	}

	// Before the first evaluation: only what is known.
	b.Reset()
	if err := writeMetrics(&b, metricsSnapshot{holders: -1, phase: api.PhaseObserving}); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), "adeagent_ready") || !strings.Contains(b.String(), "adeagent_evaluations_total 0\n") {
		t.Errorf("metrics before the first evaluation:\n%s", b.String())
	}
}

// testDaemon is a Daemon on a fixture root, not running: the Backend methods only.
func testDaemon(t *testing.T) *Daemon {
	t.Helper()
	root, err := hostroot.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default(nil)
	d, err := New(cfg, Options{Root: root, LoadConfig: func() (*config.Config, error) { return cfg, nil }, Stderr: io.Discard})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func TestBackendChangedAndSubscribe(t *testing.T) {
	d := testDaemon(t)
	if d.Report() != nil {
		t.Fatal("a report before the first evaluation")
	}
	if got := d.statusLine(); got != "phase=observing evaluating" {
		t.Errorf("status line before the first evaluation = %q", got)
	}
	ctx, cancel := context.WithCancel(context.Background())
	fast := d.Subscribe(ctx)
	slow := d.Subscribe(ctx) // never read until the end
	changed := d.Changed()

	const n = subscriberBuffer * 3
	got := make(chan int)
	go func() {
		k := 0
		for ev := range fast {
			if ev.Type == api.EventReport {
				k++
			}
		}
		got <- k
	}()
	for i := range n {
		rep := &api.Report{Ready: i%2 == 0, Findings: []api.Finding{{Key: "x.y", Blocker: i%2 == 1}}, Holders: make([]api.Holder, i%3)}
		hr := &api.HoldersReport{Holders: rep.Holders}
		d.publish(rep, hr, time.Now())
		select {
		case <-changed:
		default:
			t.Fatalf("Changed not closed by report %d", i)
		}
		changed = d.Changed()
		select {
		case <-changed:
			t.Fatal("the new Changed channel is already closed")
		default:
		}
		// Let the fast reader keep up (it may still lose some: sends never block).
		time.Sleep(time.Millisecond)
	}
	if d.Report().Phase != api.PhaseObserving {
		t.Errorf("phase %q", d.Report().Phase)
	}
	if s := d.statusLine(); s != "ready=false blockers=1 holders=2 phase=observing" {
		t.Errorf("status line %q", s)
	}
	// The slow subscriber lost events instead of blocking publish.
	if len(slow) != subscriberBuffer {
		t.Errorf("slow subscriber holds %d events, want its buffer (%d)", len(slow), subscriberBuffer)
	}
	cancel()
	k := <-got
	if k == 0 || k > n {
		t.Errorf("fast subscriber got %d report events of %d", k, n)
	}
	// Both channels are closed after ctx ends.
	for range slow {
	}
	var m bytes.Buffer
	if err := d.WriteMetrics(&m); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(m.String(), "adeagent_evaluations_total 48\n") || !strings.Contains(m.String(), "adeagent_holders 2\n") {
		t.Errorf("metrics:\n%s", m.String())
	}
	// Holders within holdersMaxAge are the last evaluation's.
	h, err := d.Holders(context.Background())
	if err != nil || len(h.Holders) != 2 {
		t.Errorf("Holders = %v, %v", h, err)
	}
	// After shutdown a subscriber gets a closed channel.
	d.closeSubscribers()
	if _, ok := <-d.Subscribe(context.Background()); ok {
		t.Error("Subscribe after shutdown gave an open channel")
	}
}
