package ctl

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
	"github.com/adeagent/adeagent/agent/server/servertest"
	"github.com/adeagent/adeagent/agent/version"
)

// backend is the in-memory server.Backend of servertest.
type backend = servertest.Backend

func newBackend(rep *api.Report) *backend { return servertest.NewBackend(rep) }

func notReadyReport() *api.Report {
	return &api.Report{
		SchemaVersion: 1,
		GeneratedAt:   time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC),
		Hostname:      "vm1",
		Phase:         api.PhaseBlocked,
		Findings: []api.Finding{
			{Key: "services.heavy-active", Probe: "services", Title: "MongoDB is running", Severity: api.SeverityHigh, Blocker: true,
				Remediation: api.Remediation{Hint: "Stop MongoDB before encrypting. It restarts otherwise.", Commands: [][]string{{"systemctl", "stop", "mongod.service"}}}},
			{Key: "selinux.enforcing", Probe: "selinux", Title: "SELinux is enforcing", Severity: api.SeverityHigh, Blocker: true,
				Remediation: api.Remediation{Hint: "Switch SELinux to permissive.", Commands: [][]string{{"setenforce", "0"}}}},
			{Key: "ade.in-progress", Probe: "ade", Title: "ADE is not running", Severity: api.SeverityInfo},
		},
		Holders:  []api.Holder{},
		Quiesced: []api.QuiescedUnit{{Unit: "docker.service", State: "stopped"}},
		SELinux:  &api.SELinuxState{Mode: "enforcing"},
		ADE:      &api.ADEState{Distro: "ubuntu 20.04", Support: "os", Path: "unmount", Progress: "Waiting for prepare"},
		Probes:   []api.ProbeRun{},
	}
}

func readyReport() *api.Report {
	r := notReadyReport()
	r.Ready, r.Phase = true, api.PhaseReady
	r.Findings = r.Findings[2:]
	r.SELinux = &api.SELinuxState{Mode: "permissive", Previous: "enforcing"}
	return r
}

func serve(t *testing.T, b server.Backend) string {
	t.Helper()
	return servertest.Serve(t, b, server.Options{})
}

func serveAt(t *testing.T, path string, b server.Backend) {
	t.Helper()
	servertest.ServeAt(t, path, b, server.Options{})
}

// run runs adeagentctl with args and returns the exit code, stdout and stderr.
func run(t *testing.T, env map[string]string, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	return runCtx(ctx, env, args...)
}

func runCtx(ctx context.Context, env map[string]string, args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := Run(ctx, args, Env{
		Stdout: &stdout,
		Stderr: &stderr,
		Getenv: func(k string) string { return env[k] },
		ServiceState: func(context.Context) string {
			return "adeagent.service is not running (systemctl is-active: inactive)."
		},
	})
	return code, stdout.String(), stderr.String()
}

func TestUnreachable(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.sock")
	for _, args := range [][]string{
		{"--socket", missing, "status"},
		{"status", "--socket", missing, "--json"},
		{"report", "--socket", missing},
		{"holders", "--socket", missing},
		{"events", "--socket", missing},
		{"version", "--socket", missing},
	} {
		code, _, stderr := run(t, nil, args...)
		if code != ExitUnreachable {
			t.Errorf("%v: exit %d, want 3; stderr:\n%s", args, code, stderr)
		}
		for _, want := range []string{"cannot reach the adeagent daemon at " + missing, "does not exist",
			"adeagent.service is not running", "systemctl start adeagent", "adeagent run"} {
			if !strings.Contains(stderr, want) {
				t.Errorf("%v: stderr lacks %q:\n%s", args, want, stderr)
			}
		}
	}
	// wait retries an unreachable daemon until its timeout, then says so.
	start := time.Now()
	code, _, stderr := run(t, nil, "wait", "--socket", missing, "--timeout", "500ms")
	if code != ExitUnreachable || time.Since(start) < 500*time.Millisecond || !strings.Contains(stderr, "systemctl start adeagent") {
		t.Errorf("wait on a missing socket: exit %d after %s\n%s", code, time.Since(start), stderr)
	}
	// The environment names the socket too.
	code, _, stderr = run(t, map[string]string{SocketEnv: missing}, "status")
	if code != ExitUnreachable || !strings.Contains(stderr, missing) {
		t.Errorf("%s: exit %d\n%s", SocketEnv, code, stderr)
	}
}

func TestServiceStateWithoutSystemd(t *testing.T) {
	// The real probe: on this machine systemd is not PID 1 (or not installed); whatever
	// the case, it answers one sentence within its 2 s timeout.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s := SystemctlIsActive(ctx)
	if !strings.Contains(s, "adeagent.service") && !strings.Contains(s, "systemctl") {
		t.Errorf("service state %q", s)
	}
	t.Setenv("PATH", t.TempDir())
	if s := SystemctlIsActive(ctx); !strings.Contains(s, "systemctl is not installed") {
		t.Errorf("without systemctl: %q", s)
	}
}

func TestJSONOutputs(t *testing.T) {
	sock := serve(t, newBackend(notReadyReport()))
	env := map[string]string{SocketEnv: sock}
	for _, tc := range []struct {
		cmd  string
		code int
	}{{"status", 1}, {"report", 1}, {"holders", 1}} {
		code, stdout, stderr := run(t, env, tc.cmd, "--json")
		if code != tc.code {
			t.Errorf("%s --json: exit %d, want %d; %s", tc.cmd, code, tc.code, stderr)
		}
		var doc map[string]any
		if err := json.Unmarshal([]byte(stdout), &doc); err != nil {
			t.Fatalf("%s --json is not one JSON object: %v\n%s", tc.cmd, err, stdout)
		}
		if doc["schema_version"] != float64(1) {
			t.Errorf("%s --json: schema_version %v", tc.cmd, doc["schema_version"])
		}
	}
}

func TestFreshFlag(t *testing.T) {
	b := newBackend(notReadyReport())
	env := map[string]string{SocketEnv: serve(t, b)}
	for _, cmd := range []string{"report", "holders"} {
		if code, _, stderr := run(t, env, cmd, "--json"); code != 1 {
			t.Fatalf("%s: exit %d; %s", cmd, code, stderr)
		}
	}
	if n := b.FreshCount(); n != 0 {
		t.Fatalf("without --fresh the daemon was asked for %d evaluations", n)
	}
	for i, cmd := range []string{"report", "holders"} {
		code, stdout, stderr := run(t, env, cmd, "--fresh", "--json")
		if code != 1 || !strings.Contains(stdout, `"schema_version"`) {
			t.Fatalf("%s --fresh: exit %d; %s%s", cmd, code, stdout, stderr)
		}
		if n := b.FreshCount(); n != i+1 {
			t.Errorf("%s --fresh: %d fresh evaluations asked for, want %d", cmd, n, i+1)
		}
	}
}

func TestHumanOutputs(t *testing.T) {
	b := newBackend(notReadyReport())
	sock := serve(t, b)
	code, stdout, _ := run(t, nil, "--socket", sock, "status")
	if code != ExitNotReady {
		t.Errorf("status exit %d", code)
	}
	for _, want := range []string{
		"Status:    NOT READY (2 blockers)", "Phase:     blocked", "SELinux:   enforcing",
		"ADE:       ubuntu 20.04: OS drive supported, unmount path", "Progress:  Waiting for prepare",
		"Quiesced:  docker.service (stopped)",
		"  1. MongoDB is running  [services.heavy-active]",
		"     Fix: Stop MongoDB before encrypting.  # systemctl stop mongod.service",
		"  2. SELinux is enforcing  [selinux.enforcing]",
		"Other findings: 0 high, 0 medium, 0 low, 1 info",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("status lacks %q:\n%s", want, stdout)
		}
	}
	code, stdout, _ = run(t, nil, "--socket", sock, "report")
	if code != ExitNotReady || !strings.Contains(stdout, "NOT READY: 2 blockers") {
		t.Errorf("report exit %d:\n%s", code, stdout)
	}
	code, stdout, _ = run(t, nil, "--socket", sock, "holders")
	if code != ExitNotReady || !strings.Contains(stdout, "mongod.service") || !strings.Contains(stdout, "1 holder(s).") {
		t.Errorf("holders exit %d:\n%s", code, stdout)
	}

	b.Set(readyReport())
	code, stdout, _ = run(t, nil, "--socket", sock, "status")
	if code != ExitOK || !strings.Contains(stdout, "Status:    READY") || !strings.Contains(stdout, "permissive (was enforcing before prepare)") {
		t.Errorf("ready status exit %d:\n%s", code, stdout)
	}
	if strings.Contains(stdout, "Blockers") {
		t.Errorf("ready status lists blockers:\n%s", stdout)
	}
}

func TestWait(t *testing.T) {
	b := newBackend(nil)
	sock := serve(t, b)
	env := map[string]string{SocketEnv: sock}

	// Timeout: before the first report, and with blockers.
	code, stdout, stderr := run(t, env, "wait", "--timeout", "100ms")
	if code != ExitNotReady || !strings.Contains(stdout, "first evaluation") {
		t.Errorf("wait without a report: %d\n%s%s", code, stdout, stderr)
	}
	b.Set(notReadyReport())
	code, stdout, _ = run(t, env, "wait", "--timeout", "100ms")
	if code != ExitNotReady || !strings.Contains(stdout, "NOT READY after 100ms (phase blocked): 2 blockers: services.heavy-active, selinux.enforcing") {
		t.Errorf("wait with blockers: %d\n%s", code, stdout)
	}
	code, _, _ = run(t, env, "wait", "--timeout", "0")
	if code != ExitNotReady {
		t.Errorf("wait --timeout 0 with blockers: %d", code)
	}

	// Becomes ready while waiting.
	done := make(chan int, 1)
	go func() {
		code, _, _ := run(t, env, "wait", "--timeout", "2m")
		done <- code
	}()
	b.Set(readyReport())
	select {
	case code := <-done:
		if code != ExitOK {
			t.Errorf("wait: exit %d when ready", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wait did not return when the daemon became ready")
	}
}

func TestEvents(t *testing.T) {
	b := newBackend(readyReport())
	sock := serve(t, b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"--socket", sock, "events"}, Env{Stdout: &stdout, Stderr: io.Discard})
	}()
	<-b.Subscribed
	b.Events <- api.Event{SchemaVersion: 1, Type: api.EventPhase, Phase: api.PhaseReady, Ready: true, Blockers: []string{}}
	b.Events <- api.Event{SchemaVersion: 1, Type: api.EventReport, Phase: api.PhaseReady, Ready: true, Blockers: []string{}}
	b.Events <- api.Event{SchemaVersion: 1, Type: api.EventHolders, Holders: 3}
	select {
	case <-stdout.lines(3):
	case <-time.After(30 * time.Second):
		t.Fatalf("3 events not printed:\n%s", stdout.String())
	}
	cancel() // the user presses Ctrl-C
	select {
	case code := <-done:
		if code != ExitOK {
			t.Errorf("events exit %d after interrupt", code)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("events did not stop")
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("%d lines:\n%s", len(lines), stdout.String())
	}
	for i, l := range lines {
		var ev api.Event
		if err := json.Unmarshal([]byte(l), &ev); err != nil || ev.SchemaVersion != 1 {
			t.Errorf("line %d %q: %v", i, l, err)
		}
	}
}

// syncBuffer is a goroutine-safe buffer that can signal when it holds n lines.
type syncBuffer struct {
	mu     sync.Mutex
	b      bytes.Buffer
	want   int
	signal chan struct{}
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	n, err := s.b.Write(p)
	s.check()
	return n, err
}

// lines returns a channel closed once the buffer holds n lines.
func (s *syncBuffer) lines(n int) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.want, s.signal = n, make(chan struct{})
	s.check()
	return s.signal
}

func (s *syncBuffer) check() {
	if s.signal != nil && bytes.Count(s.b.Bytes(), []byte("\n")) >= s.want {
		close(s.signal)
		s.signal = nil
	}
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestVersionAndUsage(t *testing.T) {
	sock := serve(t, newBackend(nil)) // versions work before the first report
	code, stdout, stderr := run(t, nil, "--socket", sock, "version")
	if code != ExitOK || !strings.Contains(stdout, "adeagentctl "+version.Version) || !strings.Contains(stdout, "adeagent daemon "+version.Version) {
		t.Errorf("version: %d\n%s%s", code, stdout, stderr)
	}
	for _, args := range [][]string{{}, {"bogus"}, {"status", "extra"}, {"status", "--bogus"}, {"--bogus", "status"}, {"wait", "--timeout", "soon"}, {"wait", "--timeout", "-1s"}} {
		if code, _, _ := run(t, nil, args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	for _, args := range [][]string{{"prepare", "--bogus"}, {"prepare", "now"}, {"restore", "--dry-run"}, {"prepare", "--timeout", "soon"}} {
		if code, _, _ := run(t, nil, append([]string{"--socket", sock}, args...)...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	if code, stdout, _ := run(t, nil, "help"); code != ExitOK || !strings.Contains(stdout, "wait") {
		t.Errorf("help: %d\n%s", code, stdout)
	}
	// 503 before the first report: exit 1 with an explanation.
	code, _, stderr = run(t, nil, "--socket", sock, "status")
	if code != ExitNotReady || !strings.Contains(stderr, "first evaluation") {
		t.Errorf("status before the first report: %d\n%s", code, stderr)
	}
}

func TestStaleSocketIsUnreachable(t *testing.T) {
	path := filepath.Join(t.TempDir(), "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	code, _, stderr := run(t, nil, "--socket", path, "status")
	if code != ExitUnreachable || !strings.Contains(stderr, "connection refused") {
		t.Errorf("stale socket: %d\n%s", code, stderr)
	}
	if _, err := os.Stat(path); err != nil {
		t.Errorf("the client touched the socket file: %v", err)
	}
}

func TestWaitForStartingDaemon(t *testing.T) {
	path := filepath.Join(t.TempDir(), "later", "adeagent.sock")
	done := make(chan int, 1)
	go func() {
		code, _, _ := run(t, nil, "wait", "--socket", path, "--timeout", "2m")
		done <- code
	}()
	// The daemon comes up after the client started waiting, ready at once.
	serveAt(t, path, newBackend(readyReport()))
	select {
	case code := <-done:
		if code != ExitOK {
			t.Errorf("wait for a starting daemon: exit %d", code)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("wait did not notice the daemon starting")
	}
}

func TestPermissionDeniedHint(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("needs a non-root user: root connects to any socket whatever its mode")
	}
	path := serve(t, newBackend(readyReport()))
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	code, _, stderr := run(t, nil, "--socket", path, "status")
	if code != ExitUnreachable || !strings.Contains(stderr, "Permission denied") || !strings.Contains(stderr, "group adeagent") {
		t.Errorf("permission denied: %d\n%s", code, stderr)
	}
	if strings.Contains(stderr, "Start the daemon") {
		t.Errorf("advises starting a daemon that runs:\n%s", stderr)
	}
}
