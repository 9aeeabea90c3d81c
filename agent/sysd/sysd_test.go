package sysd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"

	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// fakeBus plays systemd.
type fakeBus struct {
	units       []sdbus.UnitStatus
	noPatterns  bool // answer ListUnitsByPatterns like systemd 219
	fail        error
	byPatterns  atomic.Int32
	listAll     atomic.Int32
	closed      atomic.Int32
	mainPID     map[string]uint32
	gotPatterns []string
	gotDeadline bool
}

func (f *fakeBus) ListUnitsByPatternsContext(ctx context.Context, states, patterns []string) ([]sdbus.UnitStatus, error) {
	f.byPatterns.Add(1)
	_, f.gotDeadline = ctx.Deadline()
	f.gotPatterns = patterns
	if f.noPatterns {
		return nil, godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownMethod",
			Body: []any{"Unknown method 'ListUnitsByPatterns' or interface 'org.freedesktop.systemd1.Manager'."}}
	}
	if f.fail != nil {
		return nil, f.fail
	}
	return filterByPatterns(f.units, patterns), nil
}

func (f *fakeBus) ListUnitsContext(ctx context.Context) ([]sdbus.UnitStatus, error) {
	f.listAll.Add(1)
	_, f.gotDeadline = ctx.Deadline()
	if f.fail != nil {
		return nil, f.fail
	}
	return f.units, nil
}

func (f *fakeBus) GetUnitTypePropertyContext(_ context.Context, unit, unitType, prop string) (*sdbus.Property, error) {
	if unitType != "Service" || prop != "MainPID" {
		return nil, fmt.Errorf("unexpected property %s.%s", unitType, prop)
	}
	pid, ok := f.mainPID[unit]
	if !ok {
		return nil, godbus.Error{Name: "org.freedesktop.systemd1.NoSuchUnit"}
	}
	return &sdbus.Property{Name: prop, Value: godbus.MakeVariant(pid)}, nil
}

func (f *fakeBus) Close() { f.closed.Add(1) }

var sample = []sdbus.UnitStatus{
	{Name: "docker.service", ActiveState: "active", SubState: "running"},
	{Name: "docker.socket", ActiveState: "active", SubState: "running"},
	{Name: "mongod.service", ActiveState: "inactive", SubState: "dead"},
	{Name: "ssh.service", ActiveState: "active", SubState: "running"},
	{Name: "docker.service", ActiveState: "active", SubState: "running"}, // an alias listed twice
}

func TestListUnitsByPatterns(t *testing.T) {
	f := &fakeBus{units: sample, mainPID: map[string]uint32{"docker.service": 812}}
	c := &Client{bus: f, stop: func() {}}
	got, err := c.ListUnits(context.Background(), []string{"docker.*", "mongod.service"})
	if err != nil {
		t.Fatal(err)
	}
	if !f.gotDeadline {
		t.Error("call without a deadline")
	}
	if f.listAll.Load() != 0 {
		t.Error("fell back although ListUnitsByPatterns works")
	}
	want := "docker.service active running 812|docker.socket active running 0|mongod.service inactive dead 0"
	if s := render(got); s != want {
		t.Errorf("got %s\nwant %s", s, want)
	}
}

func TestListUnitsFallsBackOnOldSystemd(t *testing.T) {
	f := &fakeBus{units: sample, noPatterns: true}
	c := &Client{bus: f, stop: func() {}}
	for range 2 {
		got, err := c.ListUnits(context.Background(), []string{"docker.s*"})
		if err != nil {
			t.Fatal(err)
		}
		if s := render(got); s != "docker.service active running 0|docker.socket active running 0" {
			t.Errorf("got %s", s)
		}
	}
	if n := f.byPatterns.Load(); n != 1 {
		t.Errorf("ListUnitsByPatterns tried %d times; want once, then remembered", n)
	}
	if f.listAll.Load() != 2 {
		t.Errorf("ListUnits called %d times", f.listAll.Load())
	}
}

func TestListUnitsErrors(t *testing.T) {
	f := &fakeBus{units: sample, fail: errors.New("connection closed")}
	c := &Client{bus: f, stop: func() {}}
	if _, err := c.ListUnits(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "ListUnitsByPatterns") {
		t.Errorf("err = %v", err)
	}
	if f.gotPatterns == nil {
		t.Error("nil patterns sent over D-Bus (must be an empty array)")
	}
	f.noPatterns = true
	if _, err := c.ListUnits(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "ListUnits") {
		t.Errorf("fallback err = %v", err)
	}
}

func TestIsUnknownMethod(t *testing.T) {
	um := godbus.Error{Name: "org.freedesktop.DBus.Error.UnknownMethod"}
	for _, tc := range []struct {
		err  error
		want bool
	}{
		{nil, false},
		{errors.New("UnknownMethod"), false},
		{um, true},
		{&um, true},
		{fmt.Errorf("wrapped: %w", um), true},
		{godbus.Error{Name: "org.freedesktop.DBus.Error.AccessDenied"}, false},
	} {
		if got := isUnknownMethod(tc.err); got != tc.want {
			t.Errorf("isUnknownMethod(%v) = %v", tc.err, got)
		}
	}
}

func TestNewHonoursDeadlineAndCloses(t *testing.T) {
	old := dial
	defer func() { dial = old }()

	// A dialer that hangs until its lifetime context ends, like Auth on a wedged bus.
	var lifeEnded atomic.Bool
	dial = func(life context.Context) (bus, error) {
		<-life.Done()
		lifeEnded.Store(true)
		return nil, life.Err()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := New(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v", err)
	}
	if time.Since(start) > 2*time.Second {
		t.Error("New ignored the deadline")
	}
	deadline := time.Now().Add(2 * time.Second)
	for !lifeEnded.Load() && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	if !lifeEnded.Load() {
		t.Error("hung dialer was never released")
	}

	f := &fakeBus{}
	var life context.Context
	dial = func(l context.Context) (bus, error) { life = l; return f, nil }
	c, err := New(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if life.Err() != nil {
		t.Error("connection lifetime ended with New's deadline")
	}
	c.Close()
	c.Close()
	if f.closed.Load() != 1 || life.Err() == nil {
		t.Errorf("Close: bus closed %d times, life err %v", f.closed.Load(), life.Err())
	}
	var nilClient *Client
	nilClient.Close()

	dial = func(context.Context) (bus, error) { return nil, errors.New("no bus") }
	if _, err := New(context.Background()); err == nil || !strings.Contains(err.Error(), "connect to systemd") {
		t.Errorf("err = %v", err)
	}
}

func TestAvailableOnlyOnHost(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "run/systemd/system"), 0o755); err != nil {
		t.Fatal(err)
	}
	r, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if Available(r) {
		t.Error("a fixture root must never be asked over D-Bus")
	}
	if ForRoot(context.Background(), r) != nil {
		t.Error("ForRoot connected for a fixture root")
	}
}

// TestIntegrationSystemBus talks to the real systemd when there is one.
func TestIntegrationSystemBus(t *testing.T) {
	if !Available(hostroot.Host) {
		t.Skip("systemd is not PID 1 here (no /run/systemd/system): no system manager to ask")
	}
	if _, err := os.Stat("/run/dbus/system_bus_socket"); err != nil && os.Geteuid() != 0 {
		t.Skip("no system bus socket and not root (cannot use /run/systemd/private)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := New(ctx)
	if err != nil {
		t.Fatalf("systemd is PID 1 but D-Bus failed: %v", err)
	}
	defer c.Close()
	units, err := c.ListUnits(ctx, []string{"*.target"})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, u := range units {
		if !strings.HasSuffix(u.Name, ".target") {
			t.Errorf("pattern not applied: %s", u.Name)
		}
		if u.Name == "basic.target" || u.Name == "multi-user.target" {
			found = true
		}
	}
	if !found {
		t.Errorf("no basic.target/multi-user.target among %d targets", len(units))
	}
}

func render(us []probes.UnitState) string {
	var parts []string
	for _, u := range us {
		parts = append(parts, fmt.Sprintf("%s %s %s %d", u.Name, u.ActiveState, u.SubState, u.MainPID))
	}
	return strings.Join(parts, "|")
}
