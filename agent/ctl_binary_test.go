package agent

// adeagentctl (the real binary) against the real daemon (DESIGN.md §8 tier 3).

import (
	"context"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

var (
	ctlOnce sync.Once
	ctlPath string
	ctlErr  string
)

// ctlBinary builds adeagentctl once (next to adeagent) or skips the test.
func ctlBinary(t *testing.T) string {
	t.Helper()
	if binDir == "" {
		t.Skip("no go tool to build the binaries")
	}
	ctlOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		defer cancel()
		out := filepath.Join(binDir, "adeagentctl")
		b, err := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/adeagent/adeagent/cmd/adeagentctl").CombinedOutput()
		if err != nil {
			ctlErr = err.Error() + "\n" + string(b)
			return
		}
		ctlPath = out
	})
	if ctlPath == "" {
		t.Fatalf("build adeagentctl: %s", ctlErr)
	}
	return ctlPath
}

type ctlResult struct {
	code           int
	stdout, stderr string
}

// ctl runs adeagentctl with args against socket.
func ctl(t *testing.T, socket string, args ...string) ctlResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout+30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, ctlBinary(t), append([]string{"--socket", socket}, args...)...)
	cmd.Env = append(os.Environ(), "NO_COLOR=1")
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil && cmd.ProcessState == nil {
		t.Fatalf("adeagentctl %v: %v", args, err)
	}
	return ctlResult{cmd.ProcessState.ExitCode(), stdout.String(), stderr.String()}
}

// readyConfig makes the golden ubuntu2404-ready fixture root ready: only the probes whose
// fixtures it has run.
const readyConfig = `probes:
  ade: {enabled: false}
  encryption: {enabled: false}
  extension: {enabled: false}
  fs: {enabled: false}
  fstab: {enabled: false}
  kernel: {enabled: false}
  lvm: {enabled: false}
  mounts: {enabled: false}
  network: {enabled: false}
  os-drive: {enabled: false}
  services: {enabled: false}
  tools: {enabled: false}
  waagent: {enabled: false}
`

const readyRoot = "../probes/testdata/golden/ubuntu2404-ready"

func TestCtlUnreachable(t *testing.T) {
	dir := t.TempDir()
	r := ctl(t, filepath.Join(dir, "none.sock"), "status")
	if r.code != 3 {
		t.Errorf("status without a daemon: exit %d, want 3\n%s", r.code, r.stderr)
	}
	if !strings.Contains(r.stderr, "adeagent") || !strings.Contains(r.stderr, "start") {
		t.Errorf("no hint how to start the daemon:\n%s", r.stderr)
	}
	if r := ctl(t, filepath.Join(dir, "none.sock"), "status", "--json"); r.code != 3 {
		t.Errorf("status --json without a daemon: exit %d, want 3", r.code)
	}
}

func TestCtlAgainstDaemon(t *testing.T) {
	p := startDaemon(t, daemonOpts{root: readyRoot, config: readyConfig, stalled: true, interval: "1h"})
	p.waitFor("the socket", func() bool { return p.statusCode() != 0 })

	// Before the first evaluation: not ready (1), never "unreachable" (3).
	r := ctl(t, p.socket, "status")
	if r.code != 1 || !strings.Contains(r.stderr, "first evaluation") {
		t.Errorf("status before the first evaluation: exit %d, want 1\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	// wait blocks across the first evaluation and exits 0 once ready.
	waited := make(chan ctlResult, 1)
	go func() { waited <- ctl(t, p.socket, "wait", "--timeout", "60s") }()
	// Give wait a moment to meet the 503 first; if it starts late it must still exit 0.
	time.Sleep(300 * time.Millisecond)
	p.setStall(false)
	select {
	case r := <-waited:
		if r.code != 0 {
			t.Errorf("wait: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
		}
	case <-time.After(waitTimeout + 30*time.Second):
		t.Fatal("wait did not return")
	}

	r = ctl(t, p.socket, "status")
	if r.code != 0 || r.stdout == "" {
		t.Errorf("status when ready: exit %d, want 0\n%s%s", r.code, r.stdout, r.stderr)
	}
	r = ctl(t, p.socket, "status", "--json")
	var rep map[string]any
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("status --json: %v\n%s", err, r.stdout)
	}
	for _, k := range []string{"schema_version", "generated_at", "hostname", "ready", "phase", "findings", "holders", "quiesced", "probes"} {
		if _, ok := rep[k]; !ok {
			t.Errorf("status --json lacks %q", k)
		}
	}
	if rep["schema_version"] != float64(api.SchemaVersion) || rep["ready"] != true || rep["phase"] != api.PhaseObserving || rep["hostname"] != "golden-ubuntu" {
		t.Errorf("status --json: schema_version %v ready %v phase %v hostname %v", rep["schema_version"], rep["ready"], rep["phase"], rep["hostname"])
	}
	if r.code != 0 {
		t.Errorf("status --json when ready: exit %d", r.code)
	}
	if r := ctl(t, p.socket, "report", "--json"); r.code != 0 || !strings.Contains(r.stdout, `"schema_version"`) {
		t.Errorf("report --json: exit %d\n%s", r.code, r.stderr)
	}
	if r := ctl(t, p.socket, "version"); r.code != 0 || !strings.Contains(r.stdout, "adeagent") {
		t.Errorf("version: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
	// The daemon is gone: unreachable.
	if r := ctl(t, p.socket, "status"); r.code != 3 {
		t.Errorf("status after the daemon stopped: exit %d, want 3", r.code)
	}
}

func TestCtlNotReadyHost(t *testing.T) {
	// The real host has blockers here (no ADE tools, no waagent): exit 1 with blockers.
	p := startDaemon(t, daemonOpts{})
	p.waitFor("status 200", func() bool { return p.statusCode() == 200 })
	var rep api.Report
	_, body := p.get("status")
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatal(err)
	}
	r := ctl(t, p.socket, "status")
	want := 0
	if !rep.Ready {
		want = 1
	}
	if r.code != want {
		t.Errorf("status: exit %d, want %d (ready=%v)\n%s%s", r.code, want, rep.Ready, r.stdout, r.stderr)
	}
	if !rep.Ready && !strings.Contains(r.stdout, rep.Findings[0].Key) {
		t.Errorf("status does not name the first blocker %s:\n%s", rep.Findings[0].Key, r.stdout)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}

// TestStatusRoundTrip measures GET /v1/status through api.Client against the real daemon
// on the host (reported with -v; it asserts only a generous bound).
func TestStatusRoundTrip(t *testing.T) {
	p := startDaemon(t, daemonOpts{interval: "1h"})
	p.waitFor("status 200", func() bool { return p.statusCode() == 200 })
	c := &api.Client{Socket: p.socket}
	var d []time.Duration
	for range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		start := time.Now()
		_, err := c.Status(ctx, false, 0)
		d = append(d, time.Since(start))
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}
	slices.Sort(d)
	t.Logf("status round trip over %d requests: p50 %v, p90 %v, max %v", len(d), d[len(d)/2], d[len(d)*9/10], d[len(d)-1])
	if d[len(d)/2] > time.Second {
		t.Errorf("status p50 %v", d[len(d)/2])
	}
	if code := p.stop(); code != 0 {
		t.Errorf("daemon exit %d", code)
	}
}
