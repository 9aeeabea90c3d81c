package api_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
	"github.com/adeagent/adeagent/agent/server/servertest"
	"github.com/adeagent/adeagent/agent/version"
)

// backend is the in-memory server.Backend of servertest.
type backend = servertest.Backend

func newBackend(rep *api.Report) *backend {
	b := servertest.NewBackend(rep)
	b.HoldersReport = &api.HoldersReport{SchemaVersion: 1, Holders: []api.Holder{{Kind: api.KindProcess, PID: 7, Comm: "mongod"}}}
	b.Metrics = "adeagent_ready 1\n"
	return b
}

func report(ready bool) *api.Report {
	return &api.Report{SchemaVersion: 1, Hostname: "vm1", Ready: ready, Phase: api.PhaseObserving}
}

func serve(t *testing.T, b server.Backend, opts server.Options) string {
	t.Helper()
	return servertest.Serve(t, b, opts)
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return c
}

func TestUnreachable(t *testing.T) {
	dir := t.TempDir()
	c := &api.Client{Socket: filepath.Join(dir, "missing.sock")}
	_, err := c.Status(ctx(t), false, 0)
	var ue *api.UnreachableError
	if !errors.Is(err, api.ErrDaemonUnreachable) || !errors.As(err, &ue) || !errors.Is(err, syscall.ENOENT) {
		t.Fatalf("missing socket: %v", err)
	}
	// A socket file nobody listens on.
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close()
	_, _, err = (&api.Client{Socket: stale}).Report(ctx(t))
	if !errors.Is(err, api.ErrDaemonUnreachable) || !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("stale socket: %v", err)
	}
	if !strings.Contains(err.Error(), stale) {
		t.Errorf("error does not name the socket: %v", err)
	}
}

func TestClientRoutes(t *testing.T) {
	b := newBackend(report(false))
	var warnings []string
	c := &api.Client{
		Socket:            serve(t, b, server.Options{Version: "9.9.9-test"}),
		OnVersionMismatch: func(cl, d string) { warnings = append(warnings, cl+" != "+d) },
	}
	st, err := c.Status(ctx(t), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Report.Ready || st.Report.Hostname != "vm1" || st.TimedOut || !strings.Contains(string(st.Raw), `"schema_version": 1`) {
		t.Fatalf("status %+v raw %s", st.Report, st.Raw)
	}
	if _, raw, err := c.Report(ctx(t)); err != nil || !strings.Contains(string(raw), `"hostname": "vm1"`) {
		t.Fatalf("report: %v %s", err, raw)
	}
	hr, _, err := c.Holders(ctx(t))
	if err != nil || len(hr.Holders) != 1 || hr.Holders[0].Comm != "mongod" {
		t.Fatalf("holders %+v %v", hr, err)
	}
	m, err := c.Metrics(ctx(t))
	if err != nil || m != "adeagent_ready 1\n" {
		t.Fatalf("metrics %q %v", m, err)
	}
	v, err := c.DaemonVersion(ctx(t))
	if err != nil || v != "9.9.9-test" {
		t.Fatalf("daemon version %q %v", v, err)
	}
	if len(warnings) != 1 || warnings[0] != version.Version+" != 9.9.9-test" {
		t.Errorf("version warnings %q, want exactly one", warnings)
	}

	// Long poll: timeout, then ready.
	st, err = c.Status(ctx(t), true, 100*time.Millisecond)
	if err != nil || !st.TimedOut || st.Report.Ready {
		t.Fatalf("wait with timeout: %+v %v", st, err)
	}
	got := make(chan *api.StatusResult, 1)
	go func() {
		st, err := c.Status(context.Background(), true, time.Minute)
		if err != nil {
			t.Error(err)
		}
		got <- st
	}()
	b.Set(report(true))
	select {
	case st := <-got:
		if st == nil || st.TimedOut || !st.Report.Ready {
			t.Fatalf("wait: %+v", st)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("wait did not return when ready")
	}
}

func TestStatusSkipsHoldersReportHasThem(t *testing.T) {
	rep := report(false)
	rep.Holders = []api.Holder{{Kind: api.KindProcess, PID: 77, Comm: "mongod"}}
	rep.Findings = []api.Finding{{Key: "os-drive.holders", Title: "Processes hold the OS drive", Severity: api.SeverityHigh, Blocker: true,
		Remediation: api.Remediation{Hint: "stop them"}, Related: []api.Related{{Kind: "pid", ID: "77"}}}}
	c := &api.Client{Socket: serve(t, newBackend(rep), server.Options{})}
	st, err := c.Status(ctx(t), false, 0)
	if err != nil {
		t.Fatal(err)
	}
	if st.Report.Hostname != "vm1" || st.Report.Holders != nil {
		t.Errorf("status: hostname %q, holders %v (want none decoded)", st.Report.Hostname, st.Report.Holders)
	}
	// Findings come whole except for their related resources.
	want := rep.Findings[0]
	want.Related = nil
	if len(st.Report.Findings) != 1 || !reflect.DeepEqual(st.Report.Findings[0], want) {
		t.Errorf("status findings %+v, want %+v", st.Report.Findings, want)
	}
	if !strings.Contains(string(st.Raw), `"id": "77"`) {
		t.Errorf("status raw lacks the related pid: %s", st.Raw)
	}
	if !strings.Contains(string(st.Raw), `"comm": "mongod"`) {
		t.Errorf("status raw lacks the holders: %s", st.Raw)
	}
	full, _, err := c.Report(ctx(t))
	if err != nil || len(full.Holders) != 1 || full.Holders[0].Comm != "mongod" {
		t.Fatalf("report holders %+v %v", full, err)
	}
	if len(full.Findings) != 1 || !reflect.DeepEqual(full.Findings[0], rep.Findings[0]) {
		t.Errorf("report findings %+v, want %+v", full.Findings, rep.Findings)
	}
	// The fresh routes answer too.
	if r, _, err := c.ReportFresh(ctx(t)); err != nil || r.Hostname != "vm1" {
		t.Errorf("fresh report %+v %v", r, err)
	}
	if hr, _, err := c.HoldersFresh(ctx(t)); err != nil || len(hr.Holders) != 1 {
		t.Errorf("fresh holders %+v %v", hr, err)
	}
}

func TestAPIErrors(t *testing.T) {
	c := &api.Client{Socket: serve(t, newBackend(nil), server.Options{})}
	_, err := c.Status(ctx(t), false, 0)
	var ae *api.APIError
	if !errors.As(err, &ae) || ae.Status != 503 || ae.Message != "not ready" {
		t.Fatalf("before the first report: %v", err)
	}
	if errors.Is(err, api.ErrDaemonUnreachable) {
		t.Error("an answering daemon is not unreachable")
	}
	// The version still comes through.
	if v, err := c.DaemonVersion(ctx(t)); err != nil || v != version.Version {
		t.Fatalf("version %q %v", v, err)
	}
}

func TestEvents(t *testing.T) {
	b := newBackend(report(true))
	c := &api.Client{Socket: serve(t, b, server.Options{})}
	cx, cancel := context.WithCancel(ctx(t))
	defer cancel()
	done := make(chan error, 1)
	var seen []api.Event
	go func() {
		done <- c.Events(cx, func(ev api.Event) error {
			seen = append(seen, ev)
			if len(seen) == 3 {
				return fmt.Errorf("enough")
			}
			return nil
		})
	}()
	<-b.Subscribed
	for i := range 3 {
		b.Events <- api.Event{SchemaVersion: 1, Type: api.EventReport, Holders: i + 1}
	}
	select {
	case err := <-done:
		if err == nil || err.Error() != "enough" {
			t.Fatalf("Events returned %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Events did not return")
	}
	for i, ev := range seen {
		if ev.Holders != i+1 || ev.Type != api.EventReport {
			t.Errorf("event %d: %+v", i, ev)
		}
	}

	// Cancelling the context ends the stream with the context's error.
	cx2, cancel2 := context.WithCancel(ctx(t))
	done2 := make(chan error, 1)
	go func() { done2 <- c.Events(cx2, func(api.Event) error { return nil }) }()
	<-b.Subscribed
	cancel2()
	select {
	case err := <-done2:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("after cancel: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Events ignored its context")
	}
}

func TestPermissionDeniedIsUnreachable(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root connects to any socket")
	}
	path := serve(t, newBackend(report(true)), server.Options{})
	if err := os.Chmod(path, 0); err != nil {
		t.Fatal(err)
	}
	_, err := (&api.Client{Socket: path}).Status(ctx(t), false, 0)
	if !errors.Is(err, api.ErrDaemonUnreachable) || !errors.Is(err, syscall.EACCES) {
		t.Fatalf("%v", err)
	}
}
