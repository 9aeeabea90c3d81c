package server

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

var (
	rootPeer = Peer{UID: 0, GID: 0, PID: 4242}
	userPeer = Peer{UID: 1000, GID: 1000, PID: 4343}
)

// do runs one request through s as peer and returns the recorder.
func do(t *testing.T, s *Server, peer *Peer, method, target string, body string, hdr ...string) *httptest.ResponseRecorder {
	t.Helper()
	var r *http.Request
	if body != "" {
		r = httptest.NewRequest(method, target, strings.NewReader(body))
	} else {
		r = httptest.NewRequest(method, target, nil)
	}
	r.Host = PseudoHost
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			r.Host = hdr[i+1]
			continue
		}
		r.Header.Set(hdr[i], hdr[i+1])
	}
	if peer != nil {
		r = r.WithContext(WithPeer(r.Context(), *peer))
	}
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	return w
}

// wantError checks code, the JSON error body and the version header.
func wantError(t *testing.T, w *httptest.ResponseRecorder, code int, contains string) {
	t.Helper()
	if w.Code != code {
		t.Fatalf("code %d, want %d; body %s", w.Code, code, w.Body)
	}
	if got := w.Header().Get(api.VersionHeader); got == "" {
		t.Errorf("no %s header", api.VersionHeader)
	}
	if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("content type %q", ct)
	}
	var e api.Error
	if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil {
		t.Fatalf("error body is not JSON: %v: %q", err, w.Body)
	}
	if !strings.Contains(e.Error, contains) {
		t.Errorf("error %q does not contain %q", e.Error, contains)
	}
}

func TestRoutesSorted(t *testing.T) {
	if !slices.IsSortedFunc(routes, func(a, b route) int { return strings.Compare(a.path, b.path) }) {
		t.Fatal("the route table must be sorted by path (findRoute does a binary search)")
	}
	for i := 1; i < len(routes); i++ {
		if routes[i].path == routes[i-1].path {
			t.Fatalf("duplicate route %s", routes[i].path)
		}
	}
	for _, p := range []string{"events", "holders", "metrics", "prepare", "report", "restore", "status"} {
		if _, ok := findRoute(p); !ok {
			t.Errorf("route %s missing", p)
		}
	}
}

func TestWriteAccess(t *testing.T) {
	for _, path := range []string{"/v1/prepare", "/v1/restore"} {
		t.Run(path, func(t *testing.T) {
			log, logs := observedLogger()
			s := New(newFake(testReport(true)), Options{Logger: log})
			wantError(t, do(t, s, &userPeer, "POST", path, ""), http.StatusForbidden, "uid 1000 is not root")
			entries := logs.FilterMessage("api: request refused").All()
			if len(entries) != 1 {
				t.Fatalf("%d refusal log entries, want 1", len(entries))
			}
			ctx := entries[0].ContextMap()
			if ctx["uid"] != uint32(1000) || ctx["pid"] != int32(4343) {
				t.Errorf("refusal logged without uid/pid: %v", ctx)
			}
			// No peer credentials: no writes.
			wantError(t, do(t, s, nil, "POST", path, ""), http.StatusForbidden, "peer credentials")
			// Root gets through the access check (to a backend without actions: 501).
			wantError(t, do(t, s, &rootPeer, "POST", path, ""), http.StatusNotImplemented, "not available from this backend")
			// Reads are for everyone.
			if w := do(t, s, &userPeer, "GET", "/v1/status", ""); w.Code != http.StatusOK {
				t.Errorf("GET status as uid 1000: %d", w.Code)
			}
			if w := do(t, s, nil, "GET", "/v1/report", ""); w.Code != http.StatusOK {
				t.Errorf("GET report without peer: %d", w.Code)
			}
		})
	}
}

func TestWriteAccessChecksBeforeBody(t *testing.T) {
	s := New(newFake(testReport(true)), Options{})
	// A refused caller gets 403 whatever the body says; the body is not even read.
	wantError(t, do(t, s, &userPeer, "POST", "/v1/prepare", "{not json"), http.StatusForbidden, "not root")
	// Refused before the first report too.
	wantError(t, do(t, New(newFake(nil), Options{}), &userPeer, "POST", "/v1/prepare", ""), http.StatusForbidden, "not root")
}

func TestOperatorGroup(t *testing.T) {
	s := New(newFake(testReport(true)), Options{})
	s.opts.OperatorGroup = "adeagent-ops"
	s.operatorGID = "1500"
	s.groupIDs = func(uid uint32) ([]string, error) {
		if uid == 1001 {
			return []string{"1001", "1500"}, nil
		}
		return []string{"1000"}, nil
	}
	// Primary group.
	wantError(t, do(t, s, &Peer{UID: 1002, GID: 1500, PID: 1}, "POST", "/v1/prepare", ""), http.StatusNotImplemented, "not available")
	// Supplementary group.
	wantError(t, do(t, s, &Peer{UID: 1001, GID: 1001, PID: 1}, "POST", "/v1/prepare", ""), http.StatusNotImplemented, "not available")
	// Not a member.
	wantError(t, do(t, s, &userPeer, "POST", "/v1/prepare", ""), http.StatusForbidden, "group adeagent-ops")

	// A group that does not exist admits nobody but root.
	s2 := New(newFake(testReport(true)), Options{OperatorGroup: "no-such-group-adeagent-test"})
	wantError(t, do(t, s2, &userPeer, "POST", "/v1/prepare", ""), http.StatusForbidden, "not root")
}

func TestOriginRefererHost(t *testing.T) {
	s := New(newFake(testReport(true)), Options{})
	wantError(t, do(t, s, &rootPeer, "GET", "/v1/status", "", "Origin", "http://evil.example"), http.StatusForbidden, "Origin or Referer")
	wantError(t, do(t, s, &rootPeer, "GET", "/v1/status", "", "Referer", "http://evil.example/x"), http.StatusForbidden, "Origin or Referer")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", "", "Origin", "null"), http.StatusForbidden, "Origin or Referer")
	wantError(t, do(t, s, &rootPeer, "GET", "/v1/status", "", "Host", "evil.example"), http.StatusForbidden, "invalid Host")
	wantError(t, do(t, s, &rootPeer, "GET", "/v1/status", "", "Host", "localhost:80"), http.StatusForbidden, "invalid Host")
	for _, host := range []string{"", PseudoHost} {
		if w := do(t, s, &rootPeer, "GET", "/v1/status", "", "Host", host); w.Code != http.StatusOK {
			t.Errorf("Host %q: %d %s", host, w.Code, w.Body)
		}
	}
}

func TestBadRequests(t *testing.T) {
	s := New(newFake(testReport(true)), Options{})
	for _, tc := range []struct{ target, want string }{
		{"/v1/status?wait=ready&timeout=banana", "timeout"},
		{"/v1/status?wait=ready&timeout=-1s", "more than 0"},
		{"/v1/status?wait=ready&timeout=0s", "more than 0"},
		{"/v1/status?wait=ready&timeout=2h", "at most"},
		{"/v1/status?timeout=5s", "needs wait=ready"},
		{"/v1/status?wait=yes", `"ready"`},
		{"/v1/status?wait=ready&wait=ready", "2 times"},
		{"/v1/status?colour=blue", "unknown query parameter"},
		{"/v1/status?holders=no", "want 0"},
		{"/v1/status?wait=%zz", "malformed query"},
		{"/v1/report?x=1", "unknown query parameter"},
		{"/v1/report?fresh=maybe", "want 1 or 0"},
		{"/v1/holders?fresh=1&fresh=1", "2 times"},
		{"/v1/metrics?fresh=1", "takes none"},
		{"/v1/holders?%", "malformed query"},
	} {
		wantError(t, do(t, s, &userPeer, "GET", tc.target, ""), http.StatusBadRequest, tc.want)
	}
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", "[1,2]"), http.StatusBadRequest, "JSON object")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", "{} {}"), http.StatusBadRequest, "trailing")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", "null"), http.StatusBadRequest, "not null")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/restore", `{"dry_run":true}`), http.StatusBadRequest, `unknown field "dry_run" for restore`)
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", `{"dry_run":"yes"}`), http.StatusBadRequest, "want true or false")
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", `{"force":true}`), http.StatusBadRequest, `unknown field "force"`)
	big := `{"x":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`
	wantError(t, do(t, s, &rootPeer, "POST", "/v1/prepare", big), http.StatusRequestEntityTooLarge, "larger than")
}

func TestNotFoundAndMethod(t *testing.T) {
	s := New(newFake(testReport(true)), Options{})
	for _, target := range []string{"/", "/v1/", "/v1/nope", "/v2/status", "/v1/status/", "/v1/STATUS", "/status"} {
		wantError(t, do(t, s, &rootPeer, "GET", target, ""), http.StatusNotFound, "no route")
	}
	for _, tc := range []struct{ method, target, allow string }{
		{"POST", "/v1/status", "GET"},
		{"GET", "/v1/prepare", "POST"},
		{"DELETE", "/v1/report", "GET"},
		{"HEAD", "/v1/events", "GET"},
		{"PUT", "/v1/restore", "POST"},
	} {
		w := do(t, s, &rootPeer, tc.method, tc.target, "")
		if tc.method == "HEAD" {
			if w.Code != http.StatusMethodNotAllowed {
				t.Errorf("HEAD %s: %d", tc.target, w.Code)
			}
			continue
		}
		wantError(t, w, http.StatusMethodNotAllowed, "use "+tc.allow)
		if got := w.Header().Get("Allow"); got != tc.allow {
			t.Errorf("%s %s: Allow %q, want %q", tc.method, tc.target, got, tc.allow)
		}
	}
}

func TestNotReadyBeforeFirstReport(t *testing.T) {
	s := New(newFake(nil), Options{})
	for _, tc := range []struct{ method, target string }{
		{"GET", "/v1/status"}, {"GET", "/v1/report"}, {"GET", "/v1/holders"},
		{"GET", "/v1/events"}, {"POST", "/v1/prepare"}, {"POST", "/v1/restore"},
	} {
		wantError(t, do(t, s, &rootPeer, tc.method, tc.target, ""), http.StatusServiceUnavailable, "not ready")
	}
	w := do(t, s, &userPeer, "GET", "/v1/metrics", "")
	if w.Code != http.StatusOK || w.Header().Get("Content-Type") != MetricsContentType {
		t.Fatalf("metrics before the first report: %d %q", w.Code, w.Header().Get("Content-Type"))
	}
	if !strings.Contains(w.Body.String(), "adeagent_ready 0") {
		t.Errorf("metrics body %q", w.Body)
	}
}

func TestReadRoutes(t *testing.T) {
	s := New(newFake(testReport(false)), Options{Version: "9.9.9"})
	for _, path := range []string{"/v1/status", "/v1/report", "/v1/holders"} {
		w := do(t, s, &userPeer, "GET", path, "")
		if w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", path, w.Code, w.Body)
		}
		if v := w.Header().Get(api.VersionHeader); v != "9.9.9" {
			t.Errorf("%s: version header %q", path, v)
		}
		var doc struct {
			SchemaVersion int `json:"schema_version"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil || doc.SchemaVersion != api.SchemaVersion {
			t.Errorf("%s: schema_version %d, err %v", path, doc.SchemaVersion, err)
		}
	}
	var rep api.Report
	if err := json.Unmarshal(do(t, s, &userPeer, "GET", "/v1/status", "").Body.Bytes(), &rep); err != nil {
		t.Fatal(err)
	}
	if rep.Ready || len(rep.Findings) != 1 || rep.Findings[0].Key != "selinux.enforcing" {
		t.Errorf("status = %+v", rep)
	}
}

func TestFreshQuery(t *testing.T) {
	f := newFake(testReport(false))
	s := New(f, Options{})
	for _, target := range []string{"/v1/report", "/v1/report?fresh=0", "/v1/holders", "/v1/holders?fresh=false"} {
		if w := do(t, s, &userPeer, "GET", target, ""); w.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", target, w.Code, w.Body)
		}
	}
	if f.freshCalls != 0 {
		t.Fatalf("Fresh called %d times without ?fresh=1", f.freshCalls)
	}
	if w := do(t, s, &userPeer, "GET", "/v1/report?fresh=1", ""); w.Code != http.StatusOK {
		t.Fatalf("report?fresh=1: %d %s", w.Code, w.Body)
	}
	w := do(t, s, &userPeer, "GET", "/v1/holders?fresh=true", "")
	var hr api.HoldersReport
	if err := json.Unmarshal(w.Body.Bytes(), &hr); err != nil || w.Code != http.StatusOK {
		t.Fatalf("holders?fresh=true: %d %v %s", w.Code, err, w.Body)
	}
	if len(hr.Holders) != 1 || hr.Holders[0].PID != 4242 {
		t.Errorf("holders?fresh=1 did not answer from the fresh scan: %+v", hr.Holders)
	}
	if f.freshCalls != 2 {
		t.Errorf("Fresh called %d times, want 2", f.freshCalls)
	}
	f.freshErr = context.DeadlineExceeded
	wantError(t, do(t, s, &userPeer, "GET", "/v1/report?fresh=1", ""), http.StatusServiceUnavailable, "fresh evaluation")
	f.freshErr = errors.New("probe runner broke")
	wantError(t, do(t, s, &userPeer, "GET", "/v1/holders?fresh=1", ""), http.StatusInternalServerError, "probe runner broke")
}

func TestReportEncodedOncePerReport(t *testing.T) {
	f := newFake(testReport(false))
	s := New(f, Options{})
	a := do(t, s, &userPeer, "GET", "/v1/status", "").Body.String()
	if b := do(t, s, &userPeer, "GET", "/v1/report", "").Body.String(); a != b {
		t.Fatalf("status and report differ for one report:\n%s\n%s", a, b)
	}
	f.setReport(testReport(true))
	var rep api.Report
	if err := json.Unmarshal(do(t, s, &userPeer, "GET", "/v1/status", "").Body.Bytes(), &rep); err != nil || !rep.Ready {
		t.Errorf("status after a new report: ready %v, %v (stale encoding?)", rep.Ready, err)
	}
}

func TestStatusWithoutHolders(t *testing.T) {
	rep := testReport(false)
	rep.Holders = []api.Holder{{Kind: api.KindProcess, PID: 77, Comm: "mongod"}}
	s := New(newFake(rep), Options{})
	for _, tc := range []struct {
		target string
		want   int
	}{{"/v1/status", 1}, {"/v1/status?holders=1", 1}, {"/v1/status?holders=0", 0}, {"/v1/report", 1}, {"/v1/status?holders=0", 0}, {"/v1/status", 1}} {
		w := do(t, s, &userPeer, "GET", tc.target, "")
		var got api.Report
		if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil || w.Code != http.StatusOK {
			t.Fatalf("%s: %d %v", tc.target, w.Code, err)
		}
		if got.Holders == nil || len(got.Holders) != tc.want || len(got.Findings) != len(rep.Findings) {
			t.Errorf("%s: holders %v, %d findings", tc.target, got.Holders, len(got.Findings))
		}
	}
}

func TestHoldersError(t *testing.T) {
	f := newFake(testReport(true))
	f.holdersErr = errors.New("scan failed")
	wantError(t, do(t, New(f, Options{}), &userPeer, "GET", "/v1/holders", ""), http.StatusInternalServerError, "scan failed")
}

func TestPanicBecomes500(t *testing.T) {
	log, logs := observedLogger()
	f := newFake(testReport(true))
	f.metricsPanic = true
	wantError(t, do(t, New(f, Options{Logger: log}), &userPeer, "GET", "/v1/metrics", ""), http.StatusInternalServerError, "internal error")
	if n := logs.FilterMessage("api: handler panic").Len(); n != 1 {
		t.Errorf("%d panic log lines, want 1", n)
	}
}

// statusAsync runs a long-poll GET /v1/status in the background.
func statusAsync(s *Server, ctx context.Context, target string) <-chan *httptest.ResponseRecorder {
	out := make(chan *httptest.ResponseRecorder, 1)
	go func() {
		r := httptest.NewRequest("GET", target, nil).WithContext(WithPeer(ctx, userPeer))
		r.Host = PseudoHost
		w := httptest.NewRecorder()
		s.ServeHTTP(w, r)
		out <- w
	}()
	return out
}

func TestLongPollReady(t *testing.T) {
	f := newFake(nil)
	s := New(f, Options{})
	got := statusAsync(s, context.Background(), "/v1/status?wait=ready&timeout=60s")
	// Not ready yet: first no report, then a report with blockers. Neither answers.
	f.setReport(testReport(false))
	select {
	case w := <-got:
		t.Fatalf("answered before ready: %d %s", w.Code, w.Body)
	default:
	}
	f.setReport(testReport(true))
	select {
	case w := <-got:
		if w.Code != http.StatusOK || w.Header().Get(WaitResultHeader) != "ready" {
			t.Fatalf("%d %q %s", w.Code, w.Header().Get(WaitResultHeader), w.Body)
		}
		var rep api.Report
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil || !rep.Ready {
			t.Fatalf("report %+v, err %v", rep, err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long poll did not return after the report became ready")
	}
	// Already ready: answers at once.
	w := <-statusAsync(s, context.Background(), "/v1/status?wait=ready")
	if w.Code != http.StatusOK || w.Header().Get(WaitResultHeader) != "ready" {
		t.Fatalf("already ready: %d %q", w.Code, w.Header().Get(WaitResultHeader))
	}
}

func TestLongPollTimeout(t *testing.T) {
	f := newFake(testReport(false))
	s := New(f, Options{})
	start := time.Now()
	select {
	case w := <-statusAsync(s, context.Background(), "/v1/status?wait=ready&timeout=200ms"):
		if w.Code != http.StatusOK || w.Header().Get(WaitResultHeader) != "timeout" {
			t.Fatalf("%d %q %s", w.Code, w.Header().Get(WaitResultHeader), w.Body)
		}
		var rep api.Report
		if err := json.Unmarshal(w.Body.Bytes(), &rep); err != nil || rep.Ready {
			t.Fatalf("report %+v, err %v", rep, err)
		}
		if d := time.Since(start); d < 200*time.Millisecond {
			t.Errorf("returned after %s, before the timeout", d)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("long poll ignored its timeout")
	}
	// Timeout before any report: 503 with the timeout header.
	w := <-statusAsync(New(newFake(nil), Options{}), context.Background(), "/v1/status?wait=ready&timeout=50ms")
	wantError(t, w, http.StatusServiceUnavailable, "not ready")
	if w.Header().Get(WaitResultHeader) != "timeout" {
		t.Errorf("no timeout header")
	}
}

func TestLongPollClientGone(t *testing.T) {
	s := New(newFake(testReport(false)), Options{})
	ctx, cancel := context.WithCancel(context.Background())
	got := statusAsync(s, ctx, "/v1/status?wait=ready&timeout=1h")
	cancel()
	select {
	case <-got:
	case <-time.After(30 * time.Second):
		t.Fatal("long poll kept waiting after the client went away")
	}
}

func TestMaxStreams(t *testing.T) {
	f := newFake(testReport(false))
	s := New(f, Options{MaxStreams: 1})
	ctx, cancel := context.WithCancel(context.Background())
	got := statusAsync(s, ctx, "/v1/status?wait=ready&timeout=1h")
	waitFor(t, "the long poll to start", 30*time.Second, func() bool { return s.streams.Load() == 1 })
	wantError(t, do(t, s, &userPeer, "GET", "/v1/status?wait=ready&timeout=1s", ""), http.StatusTooManyRequests, "at most 1")
	wantError(t, do(t, s, &userPeer, "GET", "/v1/events", ""), http.StatusTooManyRequests, "at most 1")
	// Plain reads are not streams.
	if w := do(t, s, &userPeer, "GET", "/v1/status", ""); w.Code != http.StatusOK {
		t.Errorf("plain status while a stream is open: %d", w.Code)
	}
	cancel()
	<-got
	waitFor(t, "the long poll to end", 30*time.Second, func() bool { return s.streams.Load() == 0 })
	go f.setReport(testReport(true))
	if w := <-statusAsync(s, context.Background(), "/v1/status?wait=ready&timeout=30s"); w.Code != http.StatusOK {
		t.Errorf("after the stream closed: %d", w.Code)
	}
}
