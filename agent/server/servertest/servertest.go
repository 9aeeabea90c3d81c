// Package servertest gives tests of the socket API's clients an in-memory Backend and a
// real server on a Unix socket in a temp dir.
package servertest

import (
	"context"
	"io"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
)

// Backend is an in-memory server.Backend.
type Backend struct {
	mu      sync.Mutex
	rep     *api.Report
	changed chan struct{}
	// Events feeds the (one) subscriber's stream.
	Events chan api.Event
	// Subscribed receives a value each time a client subscribes.
	Subscribed chan struct{}
	// HoldersReport is what Holders returns.
	HoldersReport *api.HoldersReport
	// Metrics is what WriteMetrics writes.
	Metrics string
	// FreshCalls counts Fresh calls (under mu; read it with FreshCount).
	FreshCalls int
	// Plan, PrepareResult and RestoreResult are what the actions return (server.Actions),
	// or ActionErr when set.
	PlanResult    *api.QuiescePlan
	PrepareResult *api.QuiesceResult
	RestoreResult *api.QuiesceResult
	ActionErr     error
}

// FreshCount is how many times Fresh was called.
func (b *Backend) FreshCount() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.FreshCalls
}

// NewBackend returns a backend serving rep (nil: before the first evaluation), one
// mongod holder, and the metrics line "adeagent_ready 0".
func NewBackend(rep *api.Report) *Backend {
	return &Backend{
		rep:        rep,
		changed:    make(chan struct{}),
		Events:     make(chan api.Event, 16),
		Subscribed: make(chan struct{}, 16),
		HoldersReport: &api.HoldersReport{
			SchemaVersion: api.SchemaVersion,
			Target:        api.Target{Mounts: []string{"/"}, Devices: []string{"8:1"}},
			Holders: []api.Holder{{Kind: api.KindProcess, PID: 77, Comm: "mongod", Unit: "mongod.service",
				Uses: []string{"fd"}, Paths: []string{"/var/lib/mongodb/x.wt"}}},
			Incomplete: []api.Incomplete{},
		},
		Metrics: "adeagent_ready 0\n",
		PlanResult: &api.QuiescePlan{SchemaVersion: api.SchemaVersion, Path: "unmount", PathReason: "config ade.path: unmount",
			Units:   []api.PlannedUnit{{Unit: "mongod.service", Family: "mongodb", ActiveState: "active", StopTimeoutS: 300}},
			SELinux: api.PlannedSELinux{Mode: "enforcing", Runtime: "set-permissive", ConfigFile: "none"}},
		PrepareResult: &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "prepare", Outcome: api.OutcomeReady,
			Steps: []api.QuiesceStep{{Kind: "stop-unit", Target: "mongod.service", Before: "active", Result: "done"}}},
		RestoreResult: &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "restore", Outcome: api.OutcomeRestored,
			Steps: []api.QuiesceStep{{Kind: "stop-unit", Target: "mongod.service", Before: "active", Result: "started"}}},
	}
}

// Report implements server.Backend.
func (b *Backend) Report() *api.Report {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.rep
}

// Changed implements server.Backend.
func (b *Backend) Changed() <-chan struct{} {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.changed
}

// Set replaces the report and wakes long polls.
func (b *Backend) Set(rep *api.Report) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.rep = rep
	close(b.changed)
	b.changed = make(chan struct{})
}

// Holders implements server.Backend.
func (b *Backend) Holders(context.Context) (*api.HoldersReport, error) { return b.HoldersReport, nil }

// Fresh implements server.Backend: it counts the call and returns the current report and
// HoldersReport.
func (b *Backend) Fresh(context.Context) (*api.Report, *api.HoldersReport, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.FreshCalls++
	return b.rep, b.HoldersReport, nil
}

// Subscribe implements server.Backend: it forwards Events until ctx is done.
func (b *Backend) Subscribe(ctx context.Context) <-chan api.Event {
	out := make(chan api.Event)
	b.Subscribed <- struct{}{}
	go func() {
		defer close(out)
		for {
			select {
			case <-ctx.Done():
				return
			case ev := <-b.Events:
				select {
				case out <- ev:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out
}

// WriteMetrics implements server.Backend.
func (b *Backend) WriteMetrics(w io.Writer) error {
	_, err := io.WriteString(w, b.Metrics)
	return err
}

var _ server.Actions = (*Backend)(nil)

// Plan implements server.Actions.
func (b *Backend) Plan(context.Context) (*api.QuiescePlan, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.PlanResult, b.ActionErr
}

// Prepare implements server.Actions.
func (b *Backend) Prepare(context.Context, server.Peer) (*api.QuiesceResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.PrepareResult, b.ActionErr
}

// Restore implements server.Actions.
func (b *Backend) Restore(context.Context, server.Peer) (*api.QuiesceResult, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.RestoreResult, b.ActionErr
}

// Serve runs a real server for b on a socket in a temp dir until the test ends and
// returns the socket's path.
func Serve(t testing.TB, b server.Backend, opts server.Options) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "adeagent.sock")
	ServeAt(t, path, b, opts)
	return path
}

// ServeAt is Serve on a given socket path.
func ServeAt(t testing.TB, path string, b server.Backend, opts server.Options) {
	t.Helper()
	ln, err := server.Listen(path, "")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- server.New(b, opts).Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("server did not stop")
		}
	})
}
