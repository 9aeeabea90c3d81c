package agent

// Tests that start the real adeagent binary on a temporary socket and state directory
// (DESIGN.md §8 tier 3). They need neither root nor systemd: NOTIFY_SOCKET is a unixgram
// socket the test owns.

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
)

// binDir holds the binaries built once by TestMain.
var binDir string

func TestMain(m *testing.M) {
	os.Exit(runTests(m))
}

func runTests(m *testing.M) int {
	dir, err := os.MkdirTemp("", "adeagent-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	if goTool, err := exec.LookPath("go"); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
		cmd := exec.CommandContext(ctx, goTool, "build", "-o", filepath.Join(dir, "adeagent"), "github.com/adeagent/adeagent/cmd/adeagent")
		out, err := cmd.CombinedOutput()
		cancel()
		if err != nil {
			fmt.Fprintf(os.Stderr, "build adeagent: %v\n%s", err, out)
			return 1
		}
		binDir = dir
	}
	return m.Run()
}

// waitTimeout bounds every wait on a condition: generous, for a loaded 2-core machine.
const waitTimeout = 60 * time.Second

// syncBuffer is a bytes.Buffer safe for the child's writes and the test's reads.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// daemonProc is one adeagent run started by a test.
type daemonProc struct {
	t        *testing.T
	dir      string // short temporary directory (socket paths are limited to 108 bytes)
	socket   string
	stateDir string
	config   string
	stall    string // the test stall switch file (absent: no stall)
	cmd      *exec.Cmd
	stderr   *syncBuffer
	exited   chan struct{}
	exitErr  error
	client   *http.Client
}

type daemonOpts struct {
	root     string   // --root; default "/"
	args     []string // extra flags of run
	config   string   // configuration file text
	env      []string // extra environment
	interval string   // --interval; default 1s
	stalled  bool     // start with the stall switch on
}

// testConfig keeps evaluations fast and off the network: the endpoints are a closed
// local port.
const testConfig = "log_level: debug\nnetwork:\n  connect_timeout: 1s\n  endpoints:\n    - {name: local, addr: \"127.0.0.1:1\"}\n"

func startDaemon(t *testing.T, o daemonOpts) *daemonProc {
	t.Helper()
	if binDir == "" {
		t.Skip("no go tool to build adeagent")
	}
	dir, err := os.MkdirTemp("", "ada-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	p := &daemonProc{
		t:        t,
		dir:      dir,
		socket:   filepath.Join(dir, "run", "a.sock"),
		stateDir: filepath.Join(dir, "state"),
		config:   filepath.Join(dir, "adeagent.yaml"),
		stall:    filepath.Join(dir, "stall"),
		stderr:   &syncBuffer{},
		exited:   make(chan struct{}),
	}
	if o.config == "" {
		o.config = testConfig
	}
	if err := os.WriteFile(p.config, []byte(o.config), 0o644); err != nil {
		t.Fatal(err)
	}
	if o.stalled {
		p.setStall(true)
	}
	if o.root == "" {
		o.root = "/"
	}
	if o.interval == "" {
		o.interval = "1s"
	}
	p.cmd = exec.Command(filepath.Join(binDir, "adeagent"), "run",
		"--config", p.config, "--socket", p.socket, "--state-dir", p.stateDir,
		"--root", o.root, "--interval", o.interval, "--log-format", "console")
	p.cmd.Args = append(p.cmd.Args, o.args...)
	env := []string{StallFileEnv + "=" + p.stall}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "NOTIFY_SOCKET=") && !strings.HasPrefix(kv, "WATCHDOG_") {
			env = append(env, kv)
		}
	}
	p.cmd.Env = append(env, o.env...)
	p.cmd.Stdout = p.stderr
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		p.exitErr = p.cmd.Wait()
		close(p.exited)
	}()
	t.Cleanup(func() {
		select {
		case <-p.exited:
		default:
			p.cmd.Process.Kill()
			<-p.exited
		}
		if t.Failed() {
			t.Logf("adeagent output:\n%s", p.stderr.String())
		}
	})
	p.client = &http.Client{
		Timeout: 30 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", p.socket)
			},
		},
	}
	return p
}

func (p *daemonProc) setStall(on bool) {
	p.t.Helper()
	if on {
		if err := os.WriteFile(p.stall, nil, 0o644); err != nil {
			p.t.Fatal(err)
		}
	} else if err := os.Remove(p.stall); err != nil {
		p.t.Fatal(err)
	}
}

// waitFor polls cond until it holds, failing the test after waitTimeout or when the
// daemon exits.
func (p *daemonProc) waitFor(what string, cond func() bool) {
	p.t.Helper()
	deadline := time.Now().Add(waitTimeout)
	for !cond() {
		select {
		case <-p.exited:
			if cond() {
				return
			}
			p.t.Fatalf("adeagent exited (%v) while waiting for %s", p.exitErr, what)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.t.Fatalf("timed out after %s waiting for %s", waitTimeout, what)
		}
	}
}

// get does GET /v1/<path> and returns the status code and body (code 0: no answer).
func (p *daemonProc) get(path string) (int, []byte) {
	req, err := http.NewRequest(http.MethodGet, "http://"+server.PseudoHost+"/v1/"+path, nil)
	if err != nil {
		p.t.Fatal(err)
	}
	resp, err := p.client.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, body
}

func (p *daemonProc) statusCode() int {
	code, _ := p.get("status")
	return code
}

// stop sends SIGTERM and returns the exit code.
func (p *daemonProc) stop() int {
	p.t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatal(err)
	}
	return p.exitCode()
}

func (p *daemonProc) exitCode() int {
	p.t.Helper()
	select {
	case <-p.exited:
	case <-time.After(waitTimeout):
		p.t.Fatalf("adeagent did not exit within %s", waitTimeout)
	}
	return p.cmd.ProcessState.ExitCode()
}

func TestDaemonStatusBeforeAndAfterFirstEvaluation(t *testing.T) {
	p := startDaemon(t, daemonOpts{stalled: true})
	// The socket answers before the first evaluation (held back by the stall switch): 503.
	p.waitFor("the socket to answer", func() bool { return p.statusCode() != 0 })
	code, body := p.get("status")
	if code != http.StatusServiceUnavailable {
		t.Fatalf("status before the first evaluation = %d %s, want 503", code, body)
	}
	var e api.Error
	if err := json.Unmarshal(body, &e); err != nil || e.Error == "" {
		t.Errorf("503 body %q is not a JSON error (%v)", body, err)
	}
	p.setStall(false)
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
	_, body = p.get("status")
	var rep api.Report
	if err := json.Unmarshal(body, &rep); err != nil {
		t.Fatalf("status body: %v\n%s", err, body)
	}
	if rep.SchemaVersion != api.SchemaVersion || rep.Phase != api.PhaseObserving || len(rep.Probes) == 0 {
		t.Errorf("status: schema %d, phase %q, %d probes", rep.SchemaVersion, rep.Phase, len(rep.Probes))
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
}

func TestDaemonSIGTERMRemovesSocket(t *testing.T) {
	p := startDaemon(t, daemonOpts{})
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
	if fi, err := os.Stat(p.socket); err != nil || fi.Mode().Perm() != server.SocketMode {
		t.Errorf("socket: %v, mode %v", err, fi.Mode())
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code after SIGTERM = %d, want 0", code)
	}
	if _, err := os.Lstat(p.socket); !os.IsNotExist(err) {
		t.Errorf("socket still there after shutdown: %v", err)
	}
	var rep api.Report
	if b, err := os.ReadFile(filepath.Join(p.stateDir, "report.json")); err != nil {
		t.Errorf("last report not saved: %v", err)
	} else if err := json.Unmarshal(b, &rep); err != nil || rep.SchemaVersion != api.SchemaVersion {
		t.Errorf("saved report: %v", err)
	}
	if out := p.stderr.String(); !strings.Contains(out, "stopping") || !strings.Contains(out, "adeagent stopped") {
		t.Errorf("no shutdown in the log:\n%s", out)
	}
}

func TestDaemonSIGHUPReload(t *testing.T) {
	p := startDaemon(t, daemonOpts{interval: "1h"})
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })

	// A broken configuration is rejected with FILE:LINE; the daemon keeps serving.
	broken := testConfig + "probes:\n  memroy: {enabled: false}\n"
	if err := os.WriteFile(p.config, []byte(broken), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	wantLoc := fmt.Sprintf("%s:%d", p.config, strings.Count(testConfig, "\n")+2)
	p.waitFor("the rejection in the log", func() bool {
		out := p.stderr.String()
		return strings.Contains(out, "configuration rejected; keeping the old one") && strings.Contains(out, wantLoc)
	})
	if code := p.statusCode(); code != http.StatusOK {
		t.Errorf("status after a rejected reload = %d, want 200", code)
	}

	// A good configuration is taken and re-evaluated: switching the memory probe off
	// shows in the next report.
	good := testConfig + "probes:\n  memory: {enabled: false}\n"
	if err := os.WriteFile(p.config, []byte(good), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	p.waitFor("the memory probe disabled in the report", func() bool {
		code, body := p.get("report")
		if code != http.StatusOK {
			return false
		}
		var rep api.Report
		if json.Unmarshal(body, &rep) != nil {
			return false
		}
		for _, pr := range rep.Probes {
			if pr.Name == "memory" {
				return pr.Status == api.ProbeDisabled
			}
		}
		return false
	})
	if code := p.stop(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

// notifyListener collects the sd_notify datagrams a child sends.
type notifyListener struct {
	path string
	mu   sync.Mutex
	msgs []string
}

func listenNotify(t *testing.T, dir string) *notifyListener {
	t.Helper()
	n := &notifyListener{path: filepath.Join(dir, "notify")}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: n.path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	go func() {
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, strings.Split(strings.TrimSpace(string(buf[:k])), "\n")...)
			n.mu.Unlock()
		}
	}()
	return n
}

// lines returns the notify lines received so far.
func (n *notifyListener) lines() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

func (n *notifyListener) count(line string) int {
	k := 0
	for _, l := range n.lines() {
		if l == line {
			k++
		}
	}
	return k
}

func TestDaemonNotifyReadyStatusWatchdog(t *testing.T) {
	dir, err := os.MkdirTemp("", "adn-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	n := listenNotify(t, dir)
	const period = 100 * time.Millisecond // pings every 100 ms
	p := startDaemon(t, daemonOpts{env: []string{
		"NOTIFY_SOCKET=" + n.path,
		fmt.Sprintf("WATCHDOG_USEC=%d", (2 * period).Microseconds()),
	}, interval: "1h"})

	p.waitFor("READY=1", func() bool { return n.count("READY=1") == 1 })
	if code := p.statusCode(); code != http.StatusOK {
		t.Errorf("status after READY=1 = %d, want 200 (READY only once the API serves a report)", code)
	}
	var status string
	for _, l := range n.lines() {
		if strings.HasPrefix(l, "STATUS=") {
			status = l
		}
	}
	if !strings.HasPrefix(status, "STATUS=ready=") || !strings.Contains(status, " blockers=") ||
		!strings.Contains(status, " holders=") || !strings.HasSuffix(status, " phase=observing") {
		t.Errorf("status line %q, want STATUS=ready=… blockers=… holders=… phase=observing", status)
	}
	p.waitFor("three watchdog pings", func() bool { return n.count("WATCHDOG=1") >= 3 })

	// Stall the main loop: pings stop. Once the loop is stalled, the first watchdog tick
	// may still ping (the loop went round before it stalled); from the first withheld ping
	// on, none may arrive while two more are withheld.
	p.setStall(true)
	p.waitFor("the loop to stall", func() bool { return strings.Contains(p.stderr.String(), "main loop stalled") })
	withheld := func() int { return strings.Count(p.stderr.String(), "withholding the watchdog ping") }
	w0 := withheld()
	p.waitFor("a withheld ping", func() bool { return withheld() > w0 })
	before, w1 := n.count("WATCHDOG=1"), withheld()
	p.waitFor("two more withheld pings", func() bool { return withheld() >= w1+2 })
	if after := n.count("WATCHDOG=1"); after != before {
		t.Errorf("%d watchdog pings while the main loop was stalled", after-before)
	}
	// Unstall: pings resume.
	p.setStall(false)
	p.waitFor("pings to resume", func() bool { return n.count("WATCHDOG=1") >= before+2 })

	if code := p.stop(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
	if n.count("STOPPING=1") != 1 {
		t.Errorf("STOPPING=1 sent %d times, want once; got %q", n.count("STOPPING=1"), n.lines())
	}
}

// fixtureRoot makes a minimal host root whose mount table is mountinfo.
func fixtureRoot(t *testing.T, mountinfo string) string {
	t.Helper()
	root := t.TempDir()
	for _, d := range []string{"proc/1", "etc", "sys"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	writeMountinfo(t, root, mountinfo)
	if err := os.WriteFile(filepath.Join(root, "etc/os-release"), []byte("ID=ubuntu\nVERSION_ID=\"22.04\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return root
}

func writeMountinfo(t *testing.T, root, text string) {
	t.Helper()
	tmp := filepath.Join(root, "proc/1/.mountinfo")
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(root, "proc/1/mountinfo")); err != nil {
		t.Fatal(err)
	}
}

const (
	normalMounts    = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
	stripdownMounts = "40 1 0:50 / / rw,relatime shared:20 - tmpfs tmpfs rw\n" +
		"41 40 8:1 / /oldroot rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
)

func TestDaemonStripdownExit(t *testing.T) {
	t.Run("at start", func(t *testing.T) {
		p := startDaemon(t, daemonOpts{root: fixtureRoot(t, stripdownMounts)})
		if code := p.exitCode(); code != ExitStripdown {
			t.Fatalf("exit code = %d, want %d", code, ExitStripdown)
		}
		if _, err := os.Stat(filepath.Join(p.stateDir, "stripdown.json")); err != nil {
			t.Errorf("stripdown marker: %v", err)
		}
		if _, err := os.Lstat(p.socket); !os.IsNotExist(err) {
			t.Errorf("socket exists after a stripdown exit at start: %v", err)
		}
	})
	t.Run("while running", func(t *testing.T) {
		root := fixtureRoot(t, normalMounts)
		p := startDaemon(t, daemonOpts{root: root, interval: "200ms"})
		p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
		writeMountinfo(t, root, stripdownMounts)
		if code := p.exitCode(); code != ExitStripdown {
			t.Fatalf("exit code = %d, want %d", code, ExitStripdown)
		}
		var marker struct {
			Why string `json:"why"`
		}
		if b, err := os.ReadFile(filepath.Join(p.stateDir, "stripdown.json")); err != nil {
			t.Errorf("stripdown marker: %v", err)
		} else if err := json.Unmarshal(b, &marker); err != nil || !strings.Contains(marker.Why, "/oldroot") {
			t.Errorf("stripdown marker %s: %v", b, err)
		}
		if _, err := os.Stat(filepath.Join(p.stateDir, "report.json")); err != nil {
			t.Errorf("last report not saved: %v", err)
		}
		if _, err := os.Lstat(p.socket); !os.IsNotExist(err) {
			t.Errorf("socket still there: %v", err)
		}
	})
}

func TestDaemonMetricsOverSocket(t *testing.T) {
	p := startDaemon(t, daemonOpts{})
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
	code, body := p.get("metrics")
	if code != http.StatusOK {
		t.Fatalf("metrics: %d %s", code, body)
	}
	for _, want := range []string{
		"# TYPE adeagent_ready gauge\nadeagent_ready ",
		"# TYPE adeagent_evaluations_total counter\n",
		"adeagent_phase{phase=\"observing\"} 1\n",
		"adeagent_findings{severity=\"high\"} ",
		"adeagent_probe_success{probe=\"memory\"} 1\n",
		"adeagent_probe_duration_seconds{probe=\"os-drive\"} ",
		"adeagent_holders ",
		"adeagent_last_evaluation_timestamp_seconds ",
		"adeagent_build_info{version=\"",
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("metrics lack %q:\n%s", want, body)
		}
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

// evaluationsTotal reads adeagent_evaluations_total from the daemon's metrics.
func (p *daemonProc) evaluationsTotal() int {
	p.t.Helper()
	_, body := p.get("metrics")
	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, "adeagent_evaluations_total "); ok {
			n, err := strconv.Atoi(strings.TrimSpace(v))
			if err != nil {
				p.t.Fatalf("adeagent_evaluations_total %q", v)
			}
			return n
		}
	}
	p.t.Fatalf("no adeagent_evaluations_total in the metrics:\n%s", body)
	return 0
}

// TestDaemonFreshAndSavedReport: the report is saved after the first evaluation (not only
// at shutdown), and ?fresh=1 requests get a new evaluation, concurrent ones sharing it.
func TestDaemonFreshAndSavedReport(t *testing.T) {
	p := startDaemon(t, daemonOpts{interval: "1h"})
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
	saved := filepath.Join(p.stateDir, "report.json")
	// The report is published, then saved: give the write a moment.
	p.waitFor("report.json", func() bool { _, err := os.Stat(saved); return err == nil })
	var rep api.Report
	if b, err := os.ReadFile(saved); err != nil {
		t.Fatalf("report not saved after the first evaluation: %v", err)
	} else if err := json.Unmarshal(b, &rep); err != nil || rep.SchemaVersion != api.SchemaVersion {
		t.Fatalf("saved report: %v", err)
	}
	if n := p.evaluationsTotal(); n != 1 {
		t.Fatalf("evaluations before any fresh request = %d, want 1", n)
	}
	const clients = 20
	codes := make(chan int, clients)
	for i := range clients {
		path := "report?fresh=1"
		if i%2 == 1 {
			path = "holders?fresh=1"
		}
		go func() {
			code, _ := p.get(path)
			codes <- code
		}()
	}
	for range clients {
		if code := <-codes; code != http.StatusOK {
			t.Errorf("fresh request: %d", code)
		}
	}
	// All 20 asked before the second evaluation could start (it waits onDemandGap after
	// the first): they share it. A slow machine may let a straggler ask after it began.
	if n := p.evaluationsTotal(); n < 2 || n > 3 {
		t.Errorf("evaluations after %d concurrent fresh requests = %d, want 2 (3 at most)", clients, n)
	}
	if code := p.stop(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

func TestDaemonBadConfigExits2(t *testing.T) {
	p := startDaemon(t, daemonOpts{config: "log_level: loud\n"})
	if code := p.exitCode(); code != 2 {
		t.Errorf("exit code = %d, want 2", code)
	}
	if !strings.Contains(p.stderr.String(), "adeagent.yaml:1") {
		t.Errorf("error without FILE:LINE:\n%s", p.stderr.String())
	}
}

func TestDaemonLiveHolders(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the live holder watch (fanotify, proc connector) needs root")
	}
	p := startDaemon(t, daemonOpts{interval: "1h", args: []string{"--live-holders"}})
	p.waitFor("status 200", func() bool { return p.statusCode() == http.StatusOK })
	p.waitFor("the live watch to start", func() bool {
		return strings.Contains(p.stderr.String(), "holder watch: initial scan")
	})
	if strings.Contains(p.stderr.String(), "mode periodic") {
		t.Skipf("no live source here:\n%s", p.stderr.String())
	}

	// With an hour between evaluations, holders events and a new holder in GET
	// /v1/holders come from the live watch alone.
	req, err := http.NewRequest(http.MethodGet, "http://"+server.PseudoHost+"/v1/events", nil)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	resp, err := p.client.Do(req.WithContext(ctx))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	events := make(chan api.Event, 64)
	go func() {
		dec := json.NewDecoder(resp.Body)
		for {
			var ev api.Event
			if dec.Decode(&ev) != nil {
				close(events)
				return
			}
			events <- ev
		}
	}()

	sleeper := exec.Command("sleep", "120")
	sleeper.Dir = "/"
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })

	p.waitFor("the new process in GET /v1/holders", func() bool {
		code, body := p.get("holders")
		var hr api.HoldersReport
		if code != http.StatusOK || json.Unmarshal(body, &hr) != nil {
			return false
		}
		for _, h := range hr.Holders {
			if h.PID == sleeper.Process.Pid {
				return true
			}
		}
		return false
	})
	timeout := time.After(waitTimeout)
	for got := false; !got; {
		select {
		case ev, ok := <-events:
			if !ok {
				t.Fatal("event stream ended")
			}
			got = ev.Type == api.EventHolders && ev.Holders > 0
		case <-timeout:
			t.Fatal("no holders event from the live watch")
		}
	}
	cancel()
	if code := p.stop(); code != 0 {
		t.Errorf("exit code = %d, want 0", code)
	}
}

func TestDaemonSecondInstanceRefused(t *testing.T) {
	a := startDaemon(t, daemonOpts{interval: "1h"})
	a.waitFor("status 200", func() bool { return a.statusCode() == http.StatusOK })
	ctx, cancel := context.WithTimeout(context.Background(), waitTimeout)
	defer cancel()
	b2 := exec.CommandContext(ctx, filepath.Join(binDir, "adeagent"), "run", "--config", a.config, "--socket", a.socket,
		"--state-dir", t.TempDir(), "--interval", "1h")
	out, err := b2.CombinedOutput()
	if code := b2.ProcessState.ExitCode(); code != 1 || !strings.Contains(string(out), "another adeagent answers on the socket") {
		t.Errorf("second daemon on the same socket: exit %d (%v), want 1\n%s", code, err, out)
	}
	// The first one still serves and its socket is intact.
	if code := a.statusCode(); code != http.StatusOK {
		t.Errorf("first daemon: status %d after the second was refused", code)
	}
	if code := a.stop(); code != 0 {
		t.Errorf("exit %d", code)
	}
}
