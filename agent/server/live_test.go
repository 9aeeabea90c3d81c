package server

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// waitFor polls cond until it holds or the deadline passes (for conditions that have no
// channel: goroutine counts, counters).
func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestListen(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run", "adeagent")
	path := filepath.Join(dir, "adeagent.sock")
	ln, err := Listen(path, "no-such-group-adeagent-test")
	if err != nil {
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: SocketDirMode, path: SocketMode} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %o, want %o", p, fi.Mode().Perm(), want)
		}
	}
	// A daemon answers: refuse, and leave its socket alone.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	if _, err := Listen(path, ""); !errors.Is(err, ErrAlreadyRunning) {
		t.Fatalf("second Listen: %v, want ErrAlreadyRunning", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the live socket was removed: %v", err)
	}
	ln.Close()

	// A stale socket (nobody listens) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	sl, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	sl.SetUnlinkOnClose(false)
	sl.Close()
	if _, err := os.Stat(stale); err != nil {
		t.Fatalf("stale socket fixture: %v", err)
	}
	ln2, err := Listen(stale, "")
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	ln2.Close()

	// Not a socket: never removed.
	file := filepath.Join(t.TempDir(), "file.sock")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen(file, ""); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Fatalf("Listen over a regular file: %v", err)
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Fatalf("the regular file was touched: %q %v", b, err)
	}
}

func TestListenGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to chown the socket to another group")
	}
	path := filepath.Join(t.TempDir(), "sub", "a.sock")
	ln, err := Listen(path, "nogroup")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	gid := groupOf(t, path)
	if gid == 0 {
		t.Skip("group nogroup does not exist here")
	}
	if d := groupOf(t, filepath.Dir(path)); d != gid {
		t.Errorf("directory group %d, socket group %d", d, gid)
	}
}

func TestPeerCredentials(t *testing.T) {
	f := newFake(testReport(true))
	log, logs := observedLogger()
	path := liveServer(t, New(f, Options{Logger: log}), "")
	c := unixClient(path, false)
	resp, err := c.Get("http://" + PseudoHost + "/v1/holders")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("holders: %d", resp.StatusCode)
	}
	if resp.Header.Get(api.VersionHeader) == "" {
		t.Error("no version header over the socket")
	}
	p := <-f.holdersPeer
	if p.Err != nil || p.UID != uint32(os.Getuid()) || p.GID != uint32(os.Getgid()) || p.PID != int32(os.Getpid()) {
		t.Fatalf("peer %v, want uid=%d gid=%d pid=%d", p, os.Getuid(), os.Getgid(), os.Getpid())
	}
	// The write route decides on the real credentials too.
	resp, err = c.Post("http://"+PseudoHost+"/v1/prepare", "application/json", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := http.StatusForbidden
	if os.Getuid() == 0 {
		want = http.StatusNotImplemented
	} else if n := logs.FilterMessage("api: request refused").Len(); n != 1 {
		t.Errorf("%d refusals logged", n)
	}
	if resp.StatusCode != want {
		t.Errorf("POST prepare as uid %d: %d, want %d", os.Getuid(), resp.StatusCode, want)
	}
}

func TestEventsStreamEndsWhenClientLeaves(t *testing.T) {
	f := newFake(testReport(true))
	s := New(f, Options{})
	path := liveServer(t, s, "")
	// Warm up: one plain request so that the server's lazily started goroutines exist.
	if resp, err := unixClient(path, false).Get("http://" + PseudoHost + "/v1/status"); err == nil {
		resp.Body.Close()
	}
	before := runtime.NumGoroutine()

	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	conn.SetDeadline(time.Now().Add(60 * time.Second))
	fmt.Fprintf(conn, "GET /v1/events HTTP/1.1\r\nHost: %s\r\n\r\n", PseudoHost)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "application/jsonl") {
		t.Fatalf("events: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	<-f.subscribed
	lines := bufio.NewScanner(resp.Body)
	for i := range 3 {
		f.publish(api.Event{SchemaVersion: 1, Type: api.EventPhase, Phase: api.PhaseReady, Ready: true, Holders: i})
		if !lines.Scan() {
			t.Fatalf("event %d: stream ended: %v", i, lines.Err())
		}
		var ev api.Event
		if err := json.Unmarshal(lines.Bytes(), &ev); err != nil || ev.Holders != i || ev.Phase != api.PhaseReady {
			t.Fatalf("event %d: %+v, %v: %q", i, ev, err, lines.Bytes())
		}
	}
	// The client goes away mid-stream.
	conn.Close()
	select {
	case <-f.unsubscribed:
	case <-time.After(30 * time.Second):
		t.Fatal("the subscription did not end after the client left")
	}
	waitFor(t, "the events handler to return", 30*time.Second, func() bool { return s.streams.Load() == 0 })
	waitFor(t, fmt.Sprintf("goroutines back to %d", before), 30*time.Second, func() bool { return runtime.NumGoroutine() <= before })
}

func TestServeShutdownEndsStreams(t *testing.T) {
	f := newFake(testReport(false))
	s := New(f, Options{})
	path := filepath.Join(t.TempDir(), "a.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	c := unixClient(path, true)
	resp, err := c.Get("http://" + PseudoHost + "/v1/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	poll := make(chan error, 1)
	go func() {
		r, err := c.Get("http://" + PseudoHost + "/v1/status?wait=ready&timeout=1h")
		if err == nil {
			r.Body.Close()
		}
		poll <- err
	}()
	<-f.subscribed
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Serve did not return: a stream or long poll held the shutdown")
	}
	select {
	case <-poll:
	case <-time.After(30 * time.Second):
		t.Fatal("the long poll did not end at shutdown")
	}
	if _, err := io.Copy(io.Discard, resp.Body); err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Logf("events body after shutdown: %v", err)
	}
}

func TestConcurrentClients(t *testing.T) {
	f := newFake(testReport(true))
	path := liveServer(t, New(f, Options{}), "")
	const n = 200
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := unixClient(path, false)
			route := []string{"/v1/status", "/v1/report", "/v1/holders", "/v1/metrics"}[i%4]
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+PseudoHost+route, nil)
			<-start
			resp, err := c.Do(req)
			if err != nil {
				errs <- fmt.Errorf("client %d: %w", i, err)
				return
			}
			defer resp.Body.Close()
			if _, err := io.Copy(io.Discard, resp.Body); err != nil {
				errs <- fmt.Errorf("client %d: read: %w", i, err)
				return
			}
			if resp.StatusCode != http.StatusOK {
				errs <- fmt.Errorf("client %d %s: %d", i, route, resp.StatusCode)
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStatusRoundTrip measures GET /v1/status over the real socket with keep-alive.
func TestStatusRoundTrip(t *testing.T) {
	path := liveServer(t, New(newFake(testReport(false)), Options{}), "")
	c := unixClient(path, true)
	const n = 2000
	d := make([]time.Duration, 0, n)
	for range n {
		t0 := time.Now()
		resp, err := c.Get("http://" + PseudoHost + "/v1/status")
		if err != nil {
			t.Fatal(err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("%d %v", resp.StatusCode, err)
		}
		d = append(d, time.Since(t0))
	}
	slices.Sort(d)
	t.Logf("GET /v1/status over the socket (keep-alive, %d requests): p50 %s, p90 %s, p99 %s, max %s",
		n, d[n/2], d[n*9/10], d[n*99/100], d[n-1])
}

func BenchmarkStatusRoundTrip(b *testing.B) {
	path := liveServer(b, New(newFake(testReport(false)), Options{}), "")
	c := unixClient(path, true)
	b.ResetTimer()
	for b.Loop() {
		resp, err := c.Get("http://" + PseudoHost + "/v1/status")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// The helper process for TestUnprivilegedPeer: run as another uid, it reports the status
// codes of GET /v1/status and POST /v1/prepare on the socket named by the environment.
const helperSocketEnv = "ADEAGENT_SERVER_TEST_SOCKET"

func TestHelperUnprivilegedClient(t *testing.T) {
	path := os.Getenv(helperSocketEnv)
	if path == "" {
		t.Skip("helper process for TestUnprivilegedPeer")
	}
	c := unixClient(path, false)
	var codes []string
	for _, m := range []string{"GET /v1/status", "POST /v1/prepare"} {
		method, p, _ := strings.Cut(m, " ")
		req, _ := http.NewRequest(method, "http://"+PseudoHost+p, nil)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		codes = append(codes, strconv.Itoa(resp.StatusCode))
	}
	fmt.Printf("HELPER uid=%d codes=%s\n", os.Getuid(), strings.Join(codes, ","))
}

func TestUnprivilegedPeer(t *testing.T) {
	if os.Getuid() != 0 {
		t.Skip("needs root to run a client as uid 65534")
	}
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Skip("setpriv (util-linux) not installed")
	}
	// A directory uid 65534 can enter, with a copy of this test binary it can execute.
	dir, err := os.MkdirTemp("", "adeagent-peer-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "server.test")
	if err := copyFile(self, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	log, logs := observedLogger()
	path := liveServer(t, New(newFake(testReport(true)), Options{Logger: log}), dir)
	if err := os.Chmod(path, 0o666); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, setpriv, "--reuid=65534", "--regid=65534", "--clear-groups",
		bin, "-test.run=^TestHelperUnprivilegedClient$", "-test.count=1", "-test.v")
	cmd.Env = append(os.Environ(), helperSocketEnv+"="+path, "GOCOVERDIR="+dir)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("helper: %v\n%s", err, out)
	}
	m := regexp.MustCompile(`HELPER uid=(\d+) codes=(\S+)`).FindSubmatch(out)
	if m == nil {
		t.Fatalf("helper printed no result:\n%s", out)
	}
	if string(m[1]) != "65534" || string(m[2]) != "200,403" {
		t.Fatalf("helper as uid %s got %s, want uid 65534 with 200 on GET status and 403 on POST prepare", m[1], m[2])
	}
	refusals := logs.FilterMessage("api: request refused").All()
	if len(refusals) != 1 {
		t.Fatalf("%d refusals logged, want 1", len(refusals))
	}
	if uid := refusals[0].ContextMap()["uid"]; uid != uint32(65534) {
		t.Errorf("refusal logged uid %v, want 65534", uid)
	}
	if pid, _ := refusals[0].ContextMap()["pid"].(int32); pid <= 0 {
		t.Errorf("refusal logged no pid: %v", refusals[0].ContextMap())
	}
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}
