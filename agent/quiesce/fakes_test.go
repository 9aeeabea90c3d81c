package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/selinux"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// world is a fake machine: systemd units, Docker, a pre-stop executor and SELinux on a
// fixture root, all writing one ordered call log.
type world struct {
	t     *testing.T
	dir   string
	root  hostroot.Root
	mu    sync.Mutex
	calls []string
	units map[string]*fakeUnit
	// initial active state per unit, for "nothing started that was not running".
	initial map[string]string
	docker  *fakeDocker
	exec    *fakeExec
	se      *recSELinux
}

type fakeUnit struct {
	active    string
	sub       string
	fileState string
	masked    bool
	stopRes   string // job result of a stop; "" = done
	stopErr   error
	stopHang  bool // the stop job never finishes (TimeoutStopSec=0, SendSIGKILL=no)
	startRes  string
	leftover  []int  // pids left in the cgroup after the stop (KillMode=process)
	startsTo  string // ActiveState after a "done" start; "" = active
	mounts    []string
	inSlice   string // "" = system.slice
	fragment  string // the unit file's path
	starts    int
	stops     int
}

func newWorld(t *testing.T) *world {
	t.Helper()
	dir := t.TempDir()
	w := &world{t: t, dir: dir, units: map[string]*fakeUnit{}, initial: map[string]string{}}
	w.file("proc/self/mountinfo", "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"+
		"24 22 0:22 / /sys/fs/selinux rw,relatime shared:8 - selinuxfs selinuxfs rw\n")
	w.file("sys/fs/selinux/enforce", "1")
	w.file("etc/selinux/config", "# keep me\nSELINUX=enforcing\nSELINUXTYPE=targeted\n")
	w.file("proc/sys/kernel/random/boot_id", "boot-1\n")
	w.file("sys/fs/cgroup/cgroup.procs", "1\n")
	w.file("etc/fstab", "UUID=x / ext4 defaults 0 1\n")
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	w.root = root
	w.docker = &fakeDocker{w: w, containers: map[string]*fakeContainer{}}
	w.exec = &fakeExec{w: w}
	w.se = &recSELinux{w: w, fs: selinux.New(root)}
	return w
}

func (w *world) file(rel, content string) {
	w.t.Helper()
	p := filepath.Join(w.dir, rel)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		w.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		w.t.Fatal(err)
	}
}

func (w *world) unit(name, active string) *fakeUnit {
	u := &fakeUnit{active: active, sub: "running", fileState: "enabled"}
	if active != "active" {
		u.sub = "dead"
	}
	w.units[name] = u
	w.initial[name] = active
	return u
}

func (w *world) log(format string, a ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.calls = append(w.calls, fmt.Sprintf(format, a...))
}

func (w *world) callLog() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]string(nil), w.calls...)
}

// ---- Systemd ----

func (w *world) ListUnits(_ context.Context, patterns []string) ([]probes.UnitState, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	var out []probes.UnitState
	for name, u := range w.units {
		if matchAny(patterns, name) {
			out = append(out, probes.UnitState{Name: name, ActiveState: u.active, SubState: u.sub})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (w *world) Unit(_ context.Context, name string) (sysd.UnitInfo, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	u, ok := w.units[name]
	if !ok {
		return sysd.UnitInfo{}, errors.New("org.freedesktop.systemd1.NoSuchUnit")
	}
	fs := u.fileState
	if u.masked {
		fs = "masked-runtime"
	}
	info := sysd.UnitInfo{Name: name, ID: name, LoadState: "loaded", ActiveState: u.active, SubState: u.sub,
		UnitFileState: fs, CanStop: true, CanStart: true, RequiresMountsFor: u.mounts, FragmentPath: u.fragment}
	if strings.HasSuffix(name, ".service") && u.active != "inactive" {
		info.ControlGroup = "/" + u.slice() + "/" + name
	}
	return info, nil
}

func (w *world) StopUnit(ctx context.Context, name string) (string, error) {
	if _, ok := ctx.Deadline(); !ok {
		w.t.Error("stop job without a deadline")
	}
	w.log("stop %s", name)
	w.mu.Lock()
	u := w.units[name]
	if u.stopHang {
		w.mu.Unlock()
		<-ctx.Done()
		return "", ctx.Err()
	}
	defer w.mu.Unlock()
	u.stops++
	if u.stopErr != nil {
		return "", u.stopErr
	}
	if u.stopRes != "" && u.stopRes != sysd.JobDone {
		return u.stopRes, nil
	}
	u.active, u.sub = "inactive", "dead"
	if len(u.leftover) > 0 {
		var b strings.Builder
		for _, p := range u.leftover {
			fmt.Fprintf(&b, "%d\n", p)
		}
		d := filepath.Join(w.dir, "sys/fs/cgroup", u.slice(), name, "payload")
		_ = os.MkdirAll(d, 0o755)
		_ = os.WriteFile(filepath.Join(d, "cgroup.procs"), []byte(b.String()), 0o644)
	}
	if name == "docker.service" {
		w.docker.daemonStopped()
	}
	// docker.service has Requires=docker.socket: stopping the socket stops the service.
	if d := w.units["docker.service"]; name == "docker.socket" && d != nil && d.active == "active" {
		d.active, d.sub = "inactive", "dead"
		w.docker.daemonStopped()
	}
	return sysd.JobDone, nil
}

func (w *world) StartUnit(ctx context.Context, name string) (string, error) {
	w.log("start %s", name)
	w.mu.Lock()
	defer w.mu.Unlock()
	u := w.units[name]
	if u.masked {
		return "", errors.New("org.freedesktop.systemd1.UnitMasked")
	}
	u.starts++
	if u.startRes != "" {
		return u.startRes, nil
	}
	u.active, u.sub = "active", "running"
	if u.startsTo != "" {
		u.active, u.sub = u.startsTo, "dead"
	}
	if name == "docker.service" {
		w.docker.daemonStarted()
	}
	return sysd.JobDone, nil
}

func (w *world) MaskRuntime(_ context.Context, units []string) error {
	w.log("mask %s", strings.Join(units, ","))
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range units {
		w.units[n].masked = true
	}
	return nil
}

func (w *world) UnmaskRuntime(_ context.Context, units []string) error {
	w.log("unmask %s", strings.Join(units, ","))
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, n := range units {
		w.units[n].masked = false
	}
	return nil
}

// ---- Docker ----

type fakeContainer struct {
	running bool
	policy  string
}

type fakeDocker struct {
	w          *world
	containers map[string]*fakeContainer
	live       bool
	up         bool
}

// daemonStopped: without live-restore dockerd stops its containers.
func (d *fakeDocker) daemonStopped() {
	d.up = false
	if !d.live {
		for _, c := range d.containers {
			c.running = false
		}
	}
}

// daemonStarted: "always" containers come back by themselves.
func (d *fakeDocker) daemonStarted() {
	d.up = true
	for _, c := range d.containers {
		if c.policy == "always" {
			c.running = true
		}
	}
}

func (d *fakeDocker) Present() bool { return true }

func (d *fakeDocker) Running(context.Context) ([]Container, error) {
	if !d.up {
		return nil, errors.New("docker daemon down")
	}
	var out []Container
	for id, c := range d.containers {
		if c.running {
			out = append(out, Container{ID: id, RestartPolicy: c.policy, Running: true})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out, nil
}

func (d *fakeDocker) LiveRestore(context.Context) (bool, error) { return d.live, nil }

func (d *fakeDocker) Stop(_ context.Context, id string, _ time.Duration) error {
	d.w.log("docker stop %s", id)
	d.containers[id].running = false
	return nil
}

func (d *fakeDocker) Start(_ context.Context, id string) error {
	d.w.log("docker start %s", id)
	if !d.up {
		return errors.New("docker daemon down")
	}
	d.containers[id].running = true
	return nil
}

func (d *fakeDocker) IsRunning(_ context.Context, id string) (bool, error) {
	if !d.up {
		return false, errors.New("docker daemon down")
	}
	return d.containers[id].running, nil
}

// ---- Exec ----

type fakeExec struct {
	w   *world
	err error
}

func (x *fakeExec) Run(ctx context.Context, argv []string) ([]byte, error) {
	if _, ok := ctx.Deadline(); !ok {
		x.w.t.Error("pre-stop step without a deadline")
	}
	x.w.log("exec %s", strings.Join(argv, " "))
	return nil, x.err
}

// ---- SELinux ----

type recSELinux struct {
	w  *world
	fs *selinux.FS
}

func (r *recSELinux) State() (selinux.State, error) { return r.fs.State() }

func (r *recSELinux) SetEnforce(mode int) error {
	r.w.log("setenforce %d", mode)
	return r.fs.SetEnforce(mode)
}

func (r *recSELinux) SetConfigMode(v string) (bool, error) {
	r.w.log("selinux-config %s", v)
	return r.fs.SetConfigMode(v)
}

// standard is the usual heavy VM: Docker with containers, MongoDB, Cassandra, an app in
// the allowlist, sshd (never stop) and an inactive PostgreSQL.
func standard(t *testing.T) *world {
	w := newWorld(t)
	w.unit("docker.service", "active")
	w.unit("docker.socket", "active")
	w.unit("containerd.service", "active")
	w.unit("mongod.service", "active")
	w.unit("cassandra.service", "active")
	w.unit("postgresql.service", "inactive")
	w.unit("ssh.service", "active")
	w.unit("myapp.service", "active")
	w.unit("rsyslog.service", "active")
	w.docker.up = true
	w.docker.containers["c1"] = &fakeContainer{running: true, policy: "no"}
	w.docker.containers["c2"] = &fakeContainer{running: true, policy: "always"}
	w.docker.containers["c3"] = &fakeContainer{running: false, policy: "no"}
	return w
}

func (w *world) engine(mod func(*Options)) *Engine {
	w.t.Helper()
	cat, err := catalog.Default()
	if err != nil {
		w.t.Fatal(err)
	}
	o := Options{Root: w.root, StateDir: filepath.Join(w.dir, "var/lib/adeagent"), Catalog: cat,
		DistroFamily: catalog.Debian, Path: PathUnmount, PathReason: "test", Allow: []string{"myapp.service", "ssh.service"},
		Systemd: w, Docker: w.docker, Exec: w.exec, SELinux: w.se, MountWait: 200 * time.Millisecond}
	if mod != nil {
		mod(&o)
	}
	e, err := New(o)
	if err != nil {
		w.t.Fatal(err)
	}
	e.poll = 10 * time.Millisecond
	return e
}

// restoredLikeBefore checks every unit, container and SELinux are as before prepare.
func (w *world) restoredLikeBefore() {
	w.t.Helper()
	for name, u := range w.units {
		if u.active != w.initial[name] {
			w.t.Errorf("%s is %s, was %s before prepare", name, u.active, w.initial[name])
		}
		if u.masked {
			w.t.Errorf("%s is still masked", name)
		}
		if w.initial[name] != "active" && u.starts > 0 {
			w.t.Errorf("%s started although it was %s before prepare", name, w.initial[name])
		}
	}
	for id, c := range w.docker.containers {
		want := id != "c3"
		if c.running != want {
			w.t.Errorf("container %s running=%v, want %v", id, c.running, want)
		}
	}
	if m, _ := w.se.fs.Enforce(); m != selinux.Enforcing {
		w.t.Errorf("SELinux mode %d, want enforcing", m)
	}
	b, _ := os.ReadFile(filepath.Join(w.dir, "etc/selinux/config"))
	if string(b) != "# keep me\nSELINUX=enforcing\nSELINUXTYPE=targeted\n" {
		w.t.Errorf("selinux config = %q", b)
	}
}

func (u *fakeUnit) slice() string {
	if u.inSlice != "" {
		return u.inSlice
	}
	return "system.slice"
}
