package quiesce

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/sysd"
)

var who = Who{Origin: OriginCLI, UID: 0, PID: 42, Comm: "test"}

func index(t *testing.T, calls []string, c string) int {
	t.Helper()
	i := slices.Index(calls, c)
	if i < 0 {
		t.Fatalf("call %q missing from %v", c, calls)
	}
	return i
}

func TestPrepareOrderAndRestore(t *testing.T) {
	w := standard(t)
	e := w.engine(nil)
	res, err := e.Prepare(context.Background(), who)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != api.OutcomeReady {
		t.Fatalf("outcome %s, findings %+v", res.Outcome, res.Findings)
	}
	calls := w.callLog()
	want := []string{
		"stop docker.socket",      // reactivators first
		"exec nodetool drain",     // pre-stop before any unit stop
		"stop myapp.service",      // allowlisted apps first
		"stop cassandra.service",  // databases (catalog order 40, by family name)
		"stop mongod.service",     //
		"stop docker.service",     // runtimes (50)
		"stop containerd.service", // (60)
		"mask docker.socket,myapp.service,cassandra.service,mongod.service,docker.service,containerd.service",
		"setenforce 0", // SELinux last
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("prepare calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	for _, n := range []string{"ssh.service", "rsyslog.service", "postgresql.service"} {
		if w.units[n].stops > 0 {
			t.Errorf("%s stopped", n)
		}
	}
	if len(res.Quiesced) != 6 || res.SELinux == nil || res.SELinux.Mode != "permissive" || res.SELinux.Previous != "enforcing" {
		t.Errorf("quiesced %v selinux %+v", res.Quiesced, res.SELinux)
	}
	if owed, err := e.Owed(); err != nil || !owed {
		t.Fatalf("Owed = %v, %v", owed, err)
	}
	st, _ := e.State()
	if st.Phase != "prepared" || st.Outcome != "ready" || len(st.Quiesced) != 6 || st.SELinux.Previous != "enforcing" {
		t.Errorf("state %+v", st)
	}

	n := len(w.callLog())
	rres, err := e.Restore(context.Background(), Who{Origin: OriginSocket})
	if err != nil {
		t.Fatal(err)
	}
	if rres.Outcome != api.OutcomeRestored {
		t.Fatalf("restore outcome %s: %+v", rres.Outcome, rres.Findings)
	}
	calls = w.callLog()[n:]
	want = []string{
		"unmask docker.socket,myapp.service,cassandra.service,mongod.service,docker.service,containerd.service",
		"start containerd.service", "start docker.service", "start mongod.service", "start cassandra.service", "start myapp.service",
		"docker start c1", // c2 came back by its restart policy, c3 was not running
		"start docker.socket",
		"setenforce 1", // SELinux last
	}
	if !slices.Equal(calls, want) {
		t.Fatalf("restore calls\n%s\nwant\n%s", strings.Join(calls, "\n"), strings.Join(want, "\n"))
	}
	w.restoredLikeBefore()
	if owed, _ := e.Owed(); owed {
		t.Error("still owed after restore")
	}
	// Restore twice: nothing happens.
	n = len(w.callLog())
	rres, err = e.Restore(context.Background(), who)
	if err != nil || rres.Outcome != api.OutcomeNothing || len(w.callLog()) != n {
		t.Fatalf("second restore: %v %+v calls %v", err, rres, w.callLog()[n:])
	}
}

func TestPlanChangesNothing(t *testing.T) {
	w := standard(t)
	w.unit("auditd.service", "active")
	e := w.engine(func(o *Options) { o.Allow = append(o.Allow, "auditd.service") })
	p, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(w.callLog()) != 0 {
		t.Fatalf("plan made calls: %v", w.callLog())
	}
	if _, err := os.Stat(e.JournalPath()); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("plan wrote a journal")
	}
	var units []string
	for _, u := range p.Units {
		units = append(units, u.Unit)
	}
	if strings.Join(units, " ") != "myapp.service cassandra.service mongod.service docker.service containerd.service" {
		t.Errorf("units %v", units)
	}
	if len(p.Reactivators) != 1 || p.Reactivators[0].Unit != "docker.socket" {
		t.Errorf("reactivators %+v", p.Reactivators)
	}
	if p.Units[1].StopTimeoutS != 300 {
		t.Errorf("cassandra stop timeout %v", p.Units[1].StopTimeoutS)
	}
	skipped := map[string]string{}
	for _, s := range p.NotStopping {
		skipped[s.Unit] = s.Reason
	}
	// Never-stop wins over the allowlist.
	if skipped["ssh.service"] != "never-stop" || skipped["auditd.service"] != "never-stop" {
		t.Errorf("not stopping %+v", p.NotStopping)
	}
	if p.SELinux.Runtime != "set-permissive" || p.SELinux.ConfigFile != "none" {
		t.Errorf("selinux %+v", p.SELinux)
	}
	if len(p.PreStop) < 2 {
		t.Errorf("prestop %+v", p.PreStop)
	}
	b, _ := json.Marshal(p)
	if !strings.Contains(string(b), `"schema_version":1`) {
		t.Error("plan without schema_version")
	}
}

func TestNeverStopEvenIfAllowed(t *testing.T) {
	w := standard(t)
	w.unit("walinuxagent.service", "active")
	e := w.engine(func(o *Options) { o.Allow = []string{"*.service"} })
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"ssh.service", "walinuxagent.service"} {
		if w.units[n].stops != 0 {
			t.Errorf("%s stopped", n)
		}
	}
	// "*.service" allows rsyslog: the allowlist is the operator's word.
	if w.units["rsyslog.service"].stops != 1 {
		t.Error("allowlisted rsyslog not stopped")
	}
}

func TestOutsideCatalogNotStopped(t *testing.T) {
	w := standard(t)
	e := w.engine(func(o *Options) {
		o.Allow = nil
		o.Rescan = func(context.Context) (*api.HoldersReport, error) {
			return &api.HoldersReport{Holders: []api.Holder{{Kind: api.KindProcess, PID: 99, Comm: "rsyslogd", Unit: "rsyslog.service", Paths: []string{"/var/log/syslog"}}}}, nil
		}
	})
	p, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var reason string
	for _, s := range p.NotStopping {
		if s.Unit == "rsyslog.service" {
			reason = s.Reason + ": " + s.Detail
		}
	}
	if !strings.HasPrefix(reason, "not-allowed") || !strings.Contains(reason, "pid 99") {
		t.Errorf("rsyslog reason %q", reason)
	}
	res, err := e.Prepare(context.Background(), who)
	if err != nil {
		t.Fatal(err)
	}
	if w.units["myapp.service"].stops != 0 || w.units["rsyslog.service"].stops != 0 {
		t.Error("stopped a unit outside catalog + allowlist")
	}
	// The holder is still there after the stops: blocked, naming it.
	if res.Outcome != api.OutcomeBlocked || !hasFinding(res, "os-drive.holders", "rsyslog.service") {
		t.Errorf("outcome %s findings %+v", res.Outcome, res.Findings)
	}
}

func hasFinding(res *api.QuiesceResult, key, text string) bool {
	for _, f := range res.Findings {
		if f.Key == key && f.Blocker && strings.Contains(f.Title+f.Summary+relIDs(f), text) {
			return true
		}
	}
	return false
}

func relIDs(f api.Finding) string {
	var s []string
	for _, r := range f.Related {
		s = append(s, r.ID)
	}
	return strings.Join(s, " ")
}

func TestOnlyDoneCounts(t *testing.T) {
	for _, r := range []string{sysd.JobFailed, sysd.JobTimeout, sysd.JobCanceled, sysd.JobDependency} {
		w := standard(t)
		w.units["mongod.service"].stopRes = r
		e := w.engine(nil)
		res, err := e.Prepare(context.Background(), who)
		if err != nil {
			t.Fatal(err)
		}
		if res.Outcome != api.OutcomeBlocked || !hasFinding(res, "quiesce.stop-failed", "mongod.service") {
			t.Errorf("%s: outcome %s findings %+v", r, res.Outcome, res.Findings)
		}
		// Restore still brings everything back (mongod never stopped: started is harmless
		// but not needed — it is active, so no start call).
		if _, err := e.Restore(context.Background(), who); err != nil {
			t.Fatal(err)
		}
		w.restoredLikeBefore()
		if w.units["mongod.service"].starts != 0 {
			t.Errorf("%s: mongod started although it never stopped", r)
		}
	}
	// A refused job (RefuseManualStop) is an error, not a result.
	w := standard(t)
	w.units["mongod.service"].stopErr = errors.New("org.freedesktop.systemd1.OnlyByDependency")
	res, err := w.engine(nil).Prepare(context.Background(), who)
	if err != nil || !hasFinding(res, "quiesce.stop-failed", "OnlyByDependency") {
		t.Fatalf("err %v findings %+v", err, res.Findings)
	}
}

func TestCgroupNotEmpty(t *testing.T) {
	w := standard(t)
	// In another slice, left in a child cgroup (Delegate=yes), and systemd no longer
	// reports the cgroup of the inactive unit: the journaled one is read.
	w.units["containerd.service"].leftover = []int{4242}
	w.units["containerd.service"].inSlice = "runtime.slice"
	w.file("proc/4242/comm", "containerd-shim\n")
	res, err := w.engine(nil).Prepare(context.Background(), who)
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != api.OutcomeBlocked || !hasFinding(res, "quiesce.cgroup-not-empty", "4242 containerd-shim") {
		t.Fatalf("outcome %s findings %+v", res.Outcome, res.Findings)
	}
}

func TestDoublePrepareKeepsBeforeStates(t *testing.T) {
	w := standard(t)
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	// A new unit became active meanwhile; everything else is stopped now.
	w.unit("redis-server.service", "active")
	n := len(w.callLog())
	res, err := w.engine(nil).Prepare(context.Background(), Who{Origin: OriginADEAuto})
	if err != nil {
		t.Fatal(err)
	}
	if res.Outcome != api.OutcomeReady {
		t.Fatalf("second prepare %s %+v", res.Outcome, res.Findings)
	}
	calls := w.callLog()[n:]
	if strings.Join(calls, "|") != "stop redis-server.service|mask redis-server.service" {
		t.Errorf("second prepare calls %v", calls)
	}
	p, _ := w.engine(nil).Plan(context.Background())
	if !p.Resume {
		t.Error("plan does not say it resumes")
	}
	if _, err := w.engine(nil).Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	w.restoredLikeBefore()
}

func TestPrepareRefusedDuringRestore(t *testing.T) {
	w := standard(t)
	w.units["mongod.service"].startRes = sysd.JobFailed
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	res, err := e.Restore(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeFailed || !hasFinding(res, "quiesce.start-failed", "mongod.service") {
		t.Fatalf("restore %v %+v", err, res)
	}
	if owed, _ := e.Owed(); !owed {
		t.Fatal("a failed restore must stay owed")
	}
	if _, err := e.Prepare(context.Background(), who); !errors.Is(err, ErrRestoreInProgress) {
		t.Fatalf("prepare during restore: %v", err)
	}
	// Fixed: the second restore only does what is left.
	w.units["mongod.service"].startRes = ""
	n := len(w.callLog())
	res, err = e.Restore(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeRestored {
		t.Fatalf("second restore %v %+v", err, res)
	}
	if calls := w.callLog()[n:]; strings.Join(calls, "|") != "start mongod.service" {
		t.Errorf("second restore calls %v", calls)
	}
	w.restoredLikeBefore()
}

func TestOnlinePath(t *testing.T) {
	w := standard(t)
	e := w.engine(func(o *Options) { o.Path = PathOnline })
	p, err := e.Plan(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Units) != 1 || p.Units[0].Unit != "myapp.service" || len(p.Reactivators) != 0 || p.SELinux.Runtime != "none" {
		t.Fatalf("online plan %+v", p)
	}
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	if calls := w.callLog(); strings.Join(calls, "|") != "stop myapp.service|mask myapp.service" {
		t.Fatalf("online prepare calls %v", calls)
	}
	if _, err := e.Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	w.restoredLikeBefore()

	// With SELinux switching configured: runtime and the config file, back on restore.
	w = standard(t)
	e = w.engine(func(o *Options) { o.Path = PathOnline; o.SELinuxOnline = true })
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(w.dir, "etc/selinux/config"))
	if string(b) != "# keep me\nSELINUX=permissive\nSELINUXTYPE=targeted\n" {
		t.Fatalf("config %q", b)
	}
	calls := w.callLog()
	if calls[len(calls)-2] != "setenforce 0" || calls[len(calls)-1] != "selinux-config permissive" {
		t.Fatalf("calls %v", calls)
	}
	n := len(calls)
	if _, err := e.Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	calls = w.callLog()[n:]
	if calls[len(calls)-2] != "selinux-config enforcing" || calls[len(calls)-1] != "setenforce 1" {
		t.Fatalf("restore calls %v", calls)
	}
	w.restoredLikeBefore()
}

func TestLiveRestoreStopsContainers(t *testing.T) {
	w := standard(t)
	w.docker.live = true
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	calls := w.callLog()
	if index(t, calls, "docker stop c1") > index(t, calls, "stop docker.service") || slices.Contains(calls, "docker stop c3") {
		t.Errorf("calls %v", calls)
	}
	if _, err := e.Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	w.restoredLikeBefore()
}

func TestRestoreWaitsForDataMount(t *testing.T) {
	w := standard(t)
	w.units["mongod.service"].mounts = []string{"/data/mongo"}
	w.units["cassandra.service"].mounts = []string{"/data/cassandra"}
	w.file("etc/fstab", "UUID=x / ext4 defaults 0 1\nUUID=y /data ext4 defaults,nofail 0 2\nUUID=z /backup ext4 noauto 0 0\n")
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	// /data is not mounted: mongod is not started on the empty mount point.
	res, err := e.Restore(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeFailed || !hasFinding(res, "quiesce.restore-mount", "mongod.service") {
		t.Fatalf("restore %v %+v", err, res)
	}
	if w.units["mongod.service"].starts != 0 || w.units["cassandra.service"].starts != 0 {
		t.Fatal("a database started without its data mount")
	}
	if !hasFinding(res, "quiesce.restore-mount", "earlier in this restore") {
		t.Errorf("the second unit on the missing mount waited again: %+v", res.Findings)
	}
	// ADE unlocked and mounted the disk: the next restore starts it.
	w.file("proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"+
		"24 22 0:22 / /sys/fs/selinux rw,relatime shared:8 - selinuxfs selinuxfs rw\n"+
		"30 22 8:17 / /data rw,relatime shared:9 - ext4 /dev/sdb1 rw\n")
	res, err = e.Restore(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeRestored {
		t.Fatalf("restore %v %+v", err, res)
	}
	w.restoredLikeBefore()
}

func TestCorruptJournal(t *testing.T) {
	w := standard(t)
	e := w.engine(nil)
	if err := os.MkdirAll(filepath.Dir(e.JournalPath()), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(e.JournalPath(), []byte(`{"schema_version":1,"steps":[`), 0o600); err != nil {
		t.Fatal(err)
	}
	if owed, err := e.Owed(); !owed || !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Owed = %v, %v", owed, err)
	}
	if _, err := e.Prepare(context.Background(), who); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("prepare on a corrupt journal: %v", err)
	}
	if _, err := e.Plan(context.Background()); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("plan on a corrupt journal: %v", err)
	}
	res, err := e.Restore(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeFailed || len(res.Findings) != 1 || res.Findings[0].Key != "quiesce.journal-corrupt" {
		t.Fatalf("restore %v %+v", err, res)
	}
	matches, _ := filepath.Glob(e.JournalPath() + ".corrupt-*")
	if len(matches) != 1 {
		t.Fatalf("corrupt journal not kept aside: %v", matches)
	}
	b, _ := os.ReadFile(matches[0])
	if string(b) != `{"schema_version":1,"steps":[` {
		t.Fatal("corrupt journal content changed")
	}
	if len(w.callLog()) != 0 {
		t.Fatalf("calls on a corrupt journal: %v", w.callLog())
	}
}

func TestJournalFormat(t *testing.T) {
	w := standard(t)
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(e.JournalPath())
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("journal %v %v", fi, err)
	}
	j, err := e.store.load()
	if err != nil {
		t.Fatal(err)
	}
	if j.SchemaVersion != 1 || j.BootID != "boot-1" || j.Who != who || j.Path != PathUnmount || j.SELinux.Enforce != 1 || j.SELinux.Config != "enforcing" {
		t.Fatalf("journal %+v", j)
	}
	for _, s := range j.Steps {
		if s.Intent == nil || s.Done == nil || s.Intent.After(*s.Done) {
			t.Errorf("step %d %s %s: intent %v done %v", s.N, s.Kind, s.Target, s.Intent, s.Done)
		}
		if s.Kind == KindStopUnit && (s.Before.ActiveState != "active" || s.Before.UnitFileState != "enabled") {
			t.Errorf("step %s before %+v", s.Target, s.Before)
		}
		if s.Kind == KindDockerContainers && len(s.Before.Containers) != 2 {
			t.Errorf("containers %+v", s.Before.Containers)
		}
	}
	ents, _ := os.ReadDir(filepath.Dir(e.JournalPath()))
	for _, ent := range ents {
		if ent.Name() != JournalFile && ent.Name() != LockFile {
			t.Errorf("state dir holds %s (a temp file left?)", ent.Name())
		}
	}
}

func TestLockBetweenProcesses(t *testing.T) {
	w := standard(t)
	other := w.engine(nil)
	unlock, err := other.lock(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if _, err := w.engine(nil).Restore(ctx, who); !errors.Is(err, ErrBusy) {
		t.Fatalf("restore while locked: %v", err)
	}
	unlock()
	if _, err := w.engine(nil).Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	if owed, err := JournalOwed(filepath.Dir(w.engine(nil).JournalPath())); !owed || err != nil {
		t.Fatalf("JournalOwed = %v, %v", owed, err)
	}
}

func TestStopDeadline(t *testing.T) {
	w := standard(t)
	w.unit("elasticsearch.service", "active").stopHang = true
	base, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	es, _ := base.Family("elasticsearch")
	es.StopTimeout = "100ms"
	cat := base.Merge(&catalog.Catalog{Families: []catalog.Family{es}})
	start := time.Now()
	res, err := w.engine(func(o *Options) { o.Catalog = cat }).Prepare(context.Background(), who)
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(start) > time.Minute {
		t.Fatal("the family deadline was not applied")
	}
	if res.Outcome != api.OutcomeBlocked || !hasFinding(res, "quiesce.stop-failed", "systemctl cancel") {
		t.Fatalf("outcome %s findings %+v", res.Outcome, res.Findings)
	}
	// The other units were still stopped, and the rest of prepare ran.
	if w.units["mongod.service"].stops != 1 || !w.units["elasticsearch.service"].masked {
		t.Error("prepare did not go on after the timeout")
	}
}

func TestStateDoesNotWait(t *testing.T) {
	w := standard(t)
	e := w.engine(nil)
	e.mu.Lock() // a prepare is running
	defer e.mu.Unlock()
	done := make(chan struct{})
	go func() {
		_, _ = e.State()
		_, _ = e.Owed()
		_, _ = e.Plan(context.Background())
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("State/Owed/Plan wait for a running prepare")
	}
}

func TestPrepareAgainAfterBlocked(t *testing.T) {
	w := standard(t)
	w.units["mongod.service"].stopRes = sysd.JobFailed
	e := w.engine(nil)
	res, err := e.Prepare(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeBlocked {
		t.Fatalf("first prepare %v %+v", err, res)
	}
	// The operator fixed it; prepare again retries only what is not done.
	w.units["mongod.service"].stopRes = ""
	n := len(w.callLog())
	res, err = e.Prepare(context.Background(), who)
	if err != nil || res.Outcome != api.OutcomeReady {
		t.Fatalf("second prepare %v %+v", err, res)
	}
	if calls := w.callLog()[n:]; strings.Join(calls, "|") != "stop mongod.service" {
		t.Errorf("second prepare calls %v", calls)
	}
	if _, err := e.Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	w.restoredLikeBefore()
}

func TestSELinuxDisabled(t *testing.T) {
	w := standard(t)
	w.file("proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n")
	e := w.engine(nil)
	p, err := e.Plan(context.Background())
	if err != nil || p.SELinux.Runtime != "none" || p.SELinux.Mode != "disabled" {
		t.Fatalf("plan %v %+v", err, p.SELinux)
	}
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	for _, c := range w.callLog() {
		if strings.HasPrefix(c, "setenforce") || strings.HasPrefix(c, "selinux-config") {
			t.Fatalf("SELinux touched while disabled: %v", w.callLog())
		}
	}
}

// A unit whose file is in /etc gets a runtime drop-in that keeps it from starting (a
// runtime mask does not reach it); restore removes it. Units elsewhere get none.
func TestEtcUnitGuard(t *testing.T) {
	w := standard(t)
	w.units["myapp.service"].fragment = "/etc/systemd/system/myapp.service"
	w.units["mongod.service"].fragment = "/lib/systemd/system/mongod.service"
	e := w.engine(nil)
	if _, err := e.Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	guard := filepath.Join(w.dir, "run/systemd/system/myapp.service.d", guardDropIn)
	b, err := os.ReadFile(guard)
	if err != nil || !strings.Contains(string(b), "ConditionPathExists="+guardCondition) {
		t.Fatalf("drop-in for the /etc unit: %q, %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(w.dir, "run/systemd/system/mongod.service.d")); err == nil {
		t.Error("a drop-in for a unit outside /etc (the mask reaches it)")
	}
	if _, err := e.Restore(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(guard)); err == nil {
		t.Error("restore left the drop-in (or its directory)")
	}
}
