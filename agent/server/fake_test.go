package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/adeagent/adeagent/agent/api"
)

// fakeBackend is an in-memory Backend.
type fakeBackend struct {
	mu      sync.Mutex
	rep     *api.Report
	changed chan struct{}
	subs    map[int]chan api.Event
	nextSub int

	subscribed   chan struct{} // one value per Subscribe
	unsubscribed chan struct{} // one value per ended subscription

	holdersPeer  chan Peer // receives the peer of each Holders call (buffered)
	metricsPanic bool
	holdersErr   error
	freshErr     error
	freshCalls   int
}

func newFake(rep *api.Report) *fakeBackend {
	return &fakeBackend{
		rep:          rep,
		changed:      make(chan struct{}),
		subs:         map[int]chan api.Event{},
		subscribed:   make(chan struct{}, 1024),
		unsubscribed: make(chan struct{}, 1024),
		holdersPeer:  make(chan Peer, 1024),
	}
}

func (f *fakeBackend) Report() *api.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.rep
}

func (f *fakeBackend) Changed() <-chan struct{} {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.changed
}

// setReport publishes rep and wakes the long polls.
func (f *fakeBackend) setReport(rep *api.Report) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rep = rep
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeBackend) Holders(ctx context.Context) (*api.HoldersReport, error) {
	select {
	case f.holdersPeer <- PeerFromContext(ctx):
	default:
	}
	if f.holdersErr != nil {
		return nil, f.holdersErr
	}
	return &api.HoldersReport{SchemaVersion: api.SchemaVersion, Holders: []api.Holder{}, Incomplete: []api.Incomplete{}}, nil
}

func (f *fakeBackend) Fresh(ctx context.Context) (*api.Report, *api.HoldersReport, error) {
	f.mu.Lock()
	f.freshCalls++
	err, rep := f.freshErr, f.rep
	f.mu.Unlock()
	if err != nil {
		return nil, nil, err
	}
	return rep, &api.HoldersReport{SchemaVersion: api.SchemaVersion, Holders: []api.Holder{{Kind: api.KindProcess, PID: 4242}}, Incomplete: []api.Incomplete{}}, nil
}

func (f *fakeBackend) Subscribe(ctx context.Context) <-chan api.Event {
	ch := make(chan api.Event, 16)
	f.mu.Lock()
	id := f.nextSub
	f.nextSub++
	f.subs[id] = ch
	f.mu.Unlock()
	f.subscribed <- struct{}{}
	go func() {
		<-ctx.Done()
		f.mu.Lock()
		delete(f.subs, id)
		close(ch)
		f.mu.Unlock()
		f.unsubscribed <- struct{}{}
	}()
	return ch
}

// publish sends ev to every subscriber that has room.
func (f *fakeBackend) publish(ev api.Event) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, ch := range f.subs {
		select {
		case ch <- ev:
		default:
		}
	}
}

func (f *fakeBackend) WriteMetrics(w io.Writer) error {
	if f.metricsPanic {
		panic("metrics exploded")
	}
	_, err := fmt.Fprintf(w, "# TYPE adeagent_ready gauge\nadeagent_ready %d\n", boolInt(f.Report() != nil && f.Report().Ready))
	return err
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func testReport(ready bool) *api.Report {
	r := &api.Report{
		SchemaVersion: api.SchemaVersion,
		GeneratedAt:   time.Date(2026, 11, 28, 5, 0, 0, 0, time.UTC),
		Hostname:      "vm1",
		Ready:         ready,
		Phase:         api.PhaseObserving,
		Findings:      []api.Finding{},
		Holders:       []api.Holder{},
		Quiesced:      []api.QuiescedUnit{},
		Probes:        []api.ProbeRun{},
	}
	if !ready {
		r.Findings = []api.Finding{{Key: "selinux.enforcing", Probe: "selinux", Title: "SELinux is enforcing",
			Severity: api.SeverityHigh, Blocker: true, Remediation: api.Remediation{Hint: "switch to permissive", Commands: [][]string{{"setenforce", "0"}}}}}
	}
	return r
}

// observedLogger returns a logger whose entries the test can inspect.
func observedLogger() (*zap.Logger, *observer.ObservedLogs) {
	core, logs := observer.New(zap.DebugLevel)
	return zap.New(core), logs
}

// liveServer serves s on a real Unix socket in dir (a new temp dir when empty) until
// the test ends, and returns the socket path.
func liveServer(t testing.TB, s *Server, dir string) string {
	t.Helper()
	if dir == "" {
		dir = t.TempDir()
	}
	path := filepath.Join(dir, "adeagent.sock")
	ln, err := Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(30 * time.Second):
			t.Errorf("Serve did not return after cancel")
		}
		if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("socket left behind after Serve: %v", err)
		}
	})
	return path
}

// unixClient is an http.Client that dials the socket at path.
func unixClient(path string, keepAlive bool) *http.Client {
	return &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{
			DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "unix", path)
			},
			DisableKeepAlives:   !keepAlive,
			MaxIdleConnsPerHost: 4,
		},
	}
}
