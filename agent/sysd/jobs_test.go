package sysd

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	sdbus "github.com/coreos/go-systemd/v22/dbus"
	godbus "github.com/godbus/dbus/v5"
)

// fakeJobBus plays systemd's job and unit-file calls.
type fakeJobBus struct {
	fakeBus
	result   string // sent on the job channel; "" = never answer
	refuse   error
	calls    []string
	reloads  int
	chanCap  int
	props    map[string]any
	cgroup   string
	deadline bool
}

func (f *fakeJobBus) send(ctx context.Context, verb, name string, ch chan<- string) (int, error) {
	_, f.deadline = ctx.Deadline()
	f.calls = append(f.calls, verb+" "+name)
	f.chanCap = cap(ch)
	if f.refuse != nil {
		return 0, f.refuse
	}
	if f.result != "" {
		// go-systemd writes with a blocking send from its dispatcher.
		go func() { ch <- f.result }()
	}
	return 7, nil
}

func (f *fakeJobBus) StopUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.send(ctx, "stop", name, ch)
}

func (f *fakeJobBus) StartUnitContext(ctx context.Context, name, mode string, ch chan<- string) (int, error) {
	return f.send(ctx, "start", name, ch)
}

func (f *fakeJobBus) MaskUnitFilesContext(_ context.Context, files []string, runtime, force bool) ([]sdbus.MaskUnitFileChange, error) {
	if !runtime || force {
		return nil, errors.New("mask must be runtime and not forced")
	}
	f.calls = append(f.calls, "mask "+strings.Join(files, ","))
	return nil, nil
}

func (f *fakeJobBus) UnmaskUnitFilesContext(_ context.Context, files []string, runtime bool) ([]sdbus.UnmaskUnitFileChange, error) {
	if !runtime {
		return nil, errors.New("unmask must be runtime")
	}
	f.calls = append(f.calls, "unmask "+strings.Join(files, ","))
	return nil, nil
}

func (f *fakeJobBus) ReloadContext(context.Context) error { f.reloads++; return nil }

func (f *fakeJobBus) GetUnitPropertiesContext(_ context.Context, unit string) (map[string]any, error) {
	return f.props, nil
}

func (f *fakeJobBus) GetUnitTypePropertyContext(_ context.Context, unit, unitType, prop string) (*sdbus.Property, error) {
	if unitType != "Service" || prop != "ControlGroup" {
		return nil, errors.New("unexpected property")
	}
	return &sdbus.Property{Name: prop, Value: godbus.MakeVariant(f.cgroup)}, nil
}

func TestStopStartJobs(t *testing.T) {
	for _, res := range []string{JobDone, JobFailed, JobTimeout, JobCanceled} {
		f := &fakeJobBus{result: res}
		c := &Client{bus: f, stop: func() {}}
		got, err := c.StopUnit(context.Background(), "mongod.service")
		if err != nil || got != res {
			t.Fatalf("StopUnit = %q, %v; want %q", got, err, res)
		}
		if f.chanCap < 1 {
			t.Fatal("job channel is unbuffered")
		}
		if !f.deadline {
			t.Fatal("job call without a deadline")
		}
		if got, _ := c.StartUnit(context.Background(), "mongod.service"); got != res {
			t.Fatalf("StartUnit = %q", got)
		}
	}
}

func TestJobDeadlineAndRefusal(t *testing.T) {
	f := &fakeJobBus{} // never answers
	c := &Client{bus: f, stop: func() {}}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.StopUnit(ctx, "elasticsearch.service"); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want deadline", err)
	}
	f.refuse = godbus.Error{Name: "org.freedesktop.systemd1.OnlyByDependency"}
	if _, err := c.StopUnit(context.Background(), "auditd.service"); err == nil || !strings.Contains(err.Error(), "OnlyByDependency") {
		t.Fatalf("err = %v", err)
	}
}

func TestMaskReloads(t *testing.T) {
	f := &fakeJobBus{}
	c := &Client{bus: f, stop: func() {}}
	if err := c.MaskRuntime(context.Background(), []string{"docker.socket", "docker.service"}); err != nil {
		t.Fatal(err)
	}
	if err := c.UnmaskRuntime(context.Background(), []string{"docker.socket"}); err != nil {
		t.Fatal(err)
	}
	if err := c.MaskRuntime(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if strings.Join(f.calls, "|") != "mask docker.socket,docker.service|unmask docker.socket" || f.reloads != 2 {
		t.Fatalf("calls %v reloads %d", f.calls, f.reloads)
	}
}

func TestUnitProperties(t *testing.T) {
	f := &fakeJobBus{props: map[string]any{
		"Id": "mongod.service", "LoadState": "loaded", "ActiveState": "active", "SubState": "running",
		"UnitFileState": "enabled", "CanStop": true, "RequiresMountsFor": []string{"/data"},
	}, cgroup: "/system.slice/mongod.service"}
	c := &Client{bus: f, stop: func() {}}
	u, err := c.Unit(context.Background(), "mongod.service")
	if err != nil {
		t.Fatal(err)
	}
	if u.ID != "mongod.service" || u.ActiveState != "active" || !u.CanStop || u.CanStart ||
		u.UnitFileState != "enabled" || len(u.RequiresMountsFor) != 1 || u.ControlGroup != "/system.slice/mongod.service" {
		t.Fatalf("unit = %+v", u)
	}
	// A read-only connection (the probes' fake) cannot run jobs.
	ro := &Client{bus: &fakeBus{}, stop: func() {}}
	if _, err := ro.StopUnit(context.Background(), "x.service"); !errors.Is(err, ErrNoJobs) {
		t.Fatalf("err = %v", err)
	}
}
