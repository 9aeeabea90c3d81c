package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/adewatch"
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/agent/server"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// fakeSystemd is systemd for the daemon's actions: units with an active state, and a log
// of the calls.
type fakeSystemd struct {
	mu     sync.Mutex
	active map[string]string // unit → ActiveState
	calls  []string
	// stopGate, when set, holds every stop job until it is closed.
	stopGate chan struct{}
}

func (f *fakeSystemd) log(s string) {
	f.mu.Lock()
	f.calls = append(f.calls, s)
	f.mu.Unlock()
}

func (f *fakeSystemd) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.calls)
}

func (f *fakeSystemd) ListUnits(_ context.Context, patterns []string) ([]probes.UnitState, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []probes.UnitState
	for name, st := range f.active {
		for _, p := range patterns {
			if ok, _ := filepath.Match(p, name); ok || len(patterns) == 0 {
				out = append(out, probes.UnitState{Name: name, ActiveState: st, SubState: map[bool]string{true: "running", false: "dead"}[st == "active"]})
				break
			}
		}
	}
	slices.SortFunc(out, func(a, b probes.UnitState) int { return map[bool]int{true: -1, false: 1}[a.Name < b.Name] })
	return out, nil
}

func (f *fakeSystemd) Unit(_ context.Context, name string) (sysd.UnitInfo, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	st, ok := f.active[name]
	if !ok {
		return sysd.UnitInfo{Name: name, ID: name, LoadState: "not-found", ActiveState: "inactive"}, nil
	}
	return sysd.UnitInfo{Name: name, ID: name, LoadState: "loaded", ActiveState: st, UnitFileState: "enabled", CanStop: true, CanStart: true}, nil
}

func (f *fakeSystemd) StopUnit(_ context.Context, name string) (string, error) {
	f.log("stop " + name)
	if f.stopGate != nil {
		<-f.stopGate
	}
	f.mu.Lock()
	f.active[name] = "inactive"
	f.mu.Unlock()
	return sysd.JobDone, nil
}

func (f *fakeSystemd) StartUnit(_ context.Context, name string) (string, error) {
	f.log("start " + name)
	f.mu.Lock()
	f.active[name] = "active"
	f.mu.Unlock()
	return sysd.JobDone, nil
}

func (f *fakeSystemd) MaskRuntime(_ context.Context, units []string) error {
	f.log("mask " + joinUnits(units))
	return nil
}

func (f *fakeSystemd) UnmaskRuntime(_ context.Context, units []string) error {
	f.log("unmask " + joinUnits(units))
	return nil
}

func joinUnits(us []string) string {
	s := ""
	for i, u := range us {
		if i > 0 {
			s += " "
		}
		s += u
	}
	return s
}

// actionDaemon is a daemon on a fixture root (boot id "boot-1") with a fake systemd on
// which mongod.service runs.
func actionDaemon(t *testing.T) (*Daemon, *fakeSystemd, string) {
	t.Helper()
	dir := t.TempDir()
	setBootID(t, dir, "boot-1")
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := config.Default(nil)
	cfg.StateDir = t.TempDir()
	sd := &fakeSystemd{active: map[string]string{"mongod.service": "active", "cron.service": "active"}}
	d, err := New(cfg, Options{Root: root, LoadConfig: func() (*config.Config, error) { return cfg, nil },
		Stderr: io.Discard, Systemd: sd, NoADEWatch: true})
	if err != nil {
		t.Fatal(err)
	}
	return d, sd, dir
}

func setBootID(t *testing.T, root, id string) {
	t.Helper()
	p := filepath.Join(root, "proc", "sys", "kernel", "random")
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(p, "boot_id"), []byte(id+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestPrepareRestoreThroughTheDaemon(t *testing.T) {
	d, sd, _ := actionDaemon(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	events := d.Subscribe(ctx)
	root := server.Peer{UID: 0, PID: int32(os.Getpid())}

	plan, err := d.Plan(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Units) != 1 || plan.Units[0].Unit != "mongod.service" || plan.Path != "unmount" {
		t.Errorf("plan: %+v", plan)
	}
	if len(sd.Calls()) != 0 {
		t.Fatalf("the plan changed something: %v", sd.Calls())
	}

	res, err := d.Prepare(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	calls := sd.Calls()
	if !slices.Contains(calls, "stop mongod.service") || !slices.Contains(calls, "mask mongod.service") || slices.Contains(calls, "stop cron.service") {
		t.Errorf("prepare's systemd calls: %v (want mongod stopped and masked, cron left alone)", calls)
	}
	// The fixture root has no mount table, so the rescan fails: the unknown is not clean.
	if res.Outcome != api.OutcomeBlocked || d.Phase() != api.PhaseBlocked {
		t.Errorf("outcome %s, phase %s: want blocked (holder scan impossible)", res.Outcome, d.Phase())
	}
	eng, err := d.act.engine()
	if err != nil {
		t.Fatal(err)
	}
	st, err := eng.State()
	if err != nil || !st.Owed || st.Who == nil || st.Who.Origin != "socket" || st.Who.PID != os.Getpid() {
		t.Errorf("journal state %+v, %v: want owed, asked through the socket by this pid", st, err)
	}

	res, err = d.Restore(ctx, root)
	if err != nil {
		t.Fatal(err)
	}
	calls = sd.Calls()
	if !slices.Contains(calls, "start mongod.service") || !slices.Contains(calls, "unmask mongod.service") {
		t.Errorf("restore's systemd calls: %v", calls)
	}
	if res.Outcome != api.OutcomeRestored || d.Phase() != api.PhaseRestored {
		t.Errorf("restore: outcome %s, phase %s", res.Outcome, d.Phase())
	}
	// Nothing owed any more: a second restore does nothing and says so.
	n := len(sd.Calls())
	if res, err := d.Restore(ctx, root); err != nil || res.Outcome != api.OutcomeNothing || len(sd.Calls()) != n {
		t.Errorf("second restore: %+v %v, calls %v", res, err, sd.Calls()[n:])
	}

	var phases []string
	timeout := time.After(5 * time.Second)
	for len(phases) < 5 {
		select {
		case ev := <-events:
			if ev.Type == api.EventPhase {
				phases = append(phases, ev.Phase)
				if ev.Message == "" {
					t.Errorf("phase event without a message: %+v", ev)
				}
			}
		case <-timeout:
			t.Fatalf("phase events %v", phases)
		}
	}
	want := []string{api.PhasePreparing, api.PhaseBlocked, api.PhaseRestoring, api.PhaseRestored, api.PhaseObserving}
	if !slices.Equal(phases, want) {
		t.Errorf("phase events %v, want %v", phases, want)
	}
}

func TestOneActionAtATime(t *testing.T) {
	d, sd, _ := actionDaemon(t)
	sd.stopGate = make(chan struct{})
	root := server.Peer{UID: 0, PID: 1}
	done := make(chan error, 1)
	go func() {
		_, err := d.Prepare(context.Background(), root)
		done <- err
	}()
	for !slices.Contains(sd.Calls(), "stop mongod.service") {
		time.Sleep(5 * time.Millisecond)
	}
	_, err := d.Restore(context.Background(), root)
	var coded interface{ HTTPStatus() int }
	if !errors.As(err, &coded) || coded.HTTPStatus() != http.StatusConflict {
		t.Errorf("restore during a prepare: %v, want 409", err)
	}
	close(sd.stopGate)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestRestoreAtStart(t *testing.T) {
	// A prepare that finished on this boot stays; after a reboot it is restored.
	d, sd, dir := actionDaemon(t)
	if _, err := d.Prepare(context.Background(), server.Peer{UID: 0, PID: 1}); err != nil {
		t.Fatal(err)
	}
	d.act.restoreAtStart()
	if slices.Contains(sd.Calls(), "start mongod.service") || d.Phase() != api.PhaseBlocked {
		t.Fatalf("same boot: calls %v, phase %s; want the prepare kept", sd.Calls(), d.Phase())
	}
	setBootID(t, dir, "boot-2")
	d.act.restoreAtStart()
	if !slices.Contains(sd.Calls(), "start mongod.service") || d.Phase() != api.PhaseRestored {
		t.Errorf("after a reboot: calls %v, phase %s; want a restore", sd.Calls(), d.Phase())
	}
}

// writeFile writes a fixture file under root (a host path).
func writeFile(t *testing.T, root, hostPath, content string) {
	t.Helper()
	p := filepath.Join(root, hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

const adeHandler = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12"

// adeStatus writes ADE's N.status (research ade_extension.md §3).
func adeStatus(t *testing.T, root, status, message string) {
	t.Helper()
	sub := `{\"os\": \"Encrypted\", \"data\": \"NotEncrypted\"}`
	writeFile(t, root, adeHandler+"/status/0.status", `[{"version":"1.4.0.12","timestampUTC":"2026-11-28T07:00:00Z","status":{`+
		`"name":"Microsoft.Azure.Security.AzureDiskEncryptionForLinux","operation":"EnableEncryption","status":"`+status+`","code":"0",`+
		`"formattedMessage":{"lang":"en-US","message":"`+message+`"},"substatus":[{"name":"x","operation":"EnableEncryption","status":"`+status+
		`","code":"0","formattedMessage":{"lang":"en-US","message":"`+sub+`"}}]}}]`)
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// ADE's request marker prepares the VM (ade.auto_prepare is on by default) and ADE's
// success restores it.
func TestADEDrivesPrepareAndRestore(t *testing.T) {
	d, sd, dir := actionDaemon(t)
	writeFile(t, dir, "/proc/1/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
	writeFile(t, dir, "/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini",
		"[encryption_request_queue]\nencryptionoperation = EnableEncryption\nvolumetype = OS\n")
	w := attachADEWatcher(d)
	for _, ev := range w.Scan() {
		d.act.onADE(ev)
	}
	waitFor(t, "the automatic prepare", func() bool {
		p := d.Phase()
		return slices.Contains(sd.Calls(), "stop mongod.service") && (p == api.PhaseReady || p == api.PhaseBlocked)
	})

	// ADE succeeds: the marker goes, the status says so.
	if err := os.Remove(filepath.Join(dir, "var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini")); err != nil {
		t.Fatal(err)
	}
	adeStatus(t, dir, "success", "Encryption succeeded for all volumes")
	evs := w.Scan()
	if !slices.ContainsFunc(evs, func(e adewatch.Event) bool { return e.Kind == adewatch.Succeeded && !e.Initial }) {
		t.Fatalf("events after ADE's success: %+v", evs)
	}
	for _, ev := range evs {
		d.act.onADE(ev)
	}
	waitFor(t, "the automatic restore", func() bool {
		return slices.Contains(sd.Calls(), "start mongod.service") && d.Phase() == api.PhaseRestored
	})
}

// An outcome ADE reported before the daemon started does not undo a prepare made since.
func TestOldADEOutcomeDoesNotRestore(t *testing.T) {
	d, sd, dir := actionDaemon(t)
	writeFile(t, dir, "/proc/1/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
	adeStatus(t, dir, "success", "Encryption succeeded for all volumes")
	if _, err := d.Prepare(context.Background(), server.Peer{UID: 0, PID: 1}); err != nil {
		t.Fatal(err)
	}
	w := attachADEWatcher(d)
	evs := w.Scan()
	if !slices.ContainsFunc(evs, func(e adewatch.Event) bool { return e.Kind == adewatch.Succeeded && e.Initial }) {
		t.Fatalf("initial events: %+v", evs)
	}
	for _, ev := range evs {
		d.act.onADE(ev)
	}
	time.Sleep(100 * time.Millisecond)
	if slices.Contains(sd.Calls(), "start mongod.service") {
		t.Errorf("an old ADE outcome restored a new prepare: %v", sd.Calls())
	}
}

// ADE's "unmount /oldroot failed" — read when the daemon starts again after the stripdown —
// becomes a finding that names the holders of the report the daemon saved when it stepped
// aside, not the holders of the new boot.
func TestUnmountFailureNamesTheSavedHolders(t *testing.T) {
	d, _, dir := actionDaemon(t)
	state := d.config().StateDir
	writeFile(t, state, "stripdown.json", `{"schema_version":1}`)
	saved := api.Report{SchemaVersion: 1, Holders: []api.Holder{
		{Kind: api.KindProcess, PID: 4242, Comm: "stray", Unit: "session-3.scope", Uses: []string{api.UseFD}, Paths: []string{"/var/tmp/x"}},
		{Kind: api.KindProcess, PID: 77, Comm: "cron", Unit: "cron.service", Uses: []string{api.UseExe}},
	}}
	b, err := json.Marshal(saved)
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, state, "report.json", string(b))
	writeFile(t, dir, "/proc/1/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
	msg := "Failed to encrypt OS volume with error: Attempt #11 to unmount /oldroot failed with error: Could not unmount /oldroot in 10 attempts, stack trace: x"
	adeStatus(t, dir, "error", msg)
	w := attachADEWatcher(d)
	for _, ev := range w.Scan() {
		d.act.onADE(ev)
	}
	d.act.mu.Lock()
	f := d.act.adeFinding
	d.act.mu.Unlock()
	if f == nil {
		t.Fatal("no ade.unmount-failed finding")
	}
	if f.Key != "ade.unmount-failed" || !strings.Contains(f.Summary, "pid 4242 stray") || strings.Contains(f.Summary, "cron") {
		t.Errorf("finding %+v: want the saved stray holder named, not the service ADE restarts", f)
	}
	rep := &api.Report{Findings: []api.Finding{}}
	d.act.decorate(rep)
	if len(rep.Findings) != 1 || rep.Findings[0].Key != "ade.unmount-failed" {
		t.Errorf("report findings %+v", rep.Findings)
	}
}

// attachADEWatcher gives the daemon's actions an ADE watcher without inotify, which a test
// drives by feeding its Scan events to onADE.
func attachADEWatcher(d *Daemon) *adewatch.Watcher {
	w := adewatch.New(d.root, zap.NewNop(), adewatch.WithoutInotify())
	d.act.mu.Lock()
	d.act.ade = w
	d.act.mu.Unlock()
	return w
}
