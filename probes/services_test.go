package probes

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// fxUnits plays systemd for the services probe.
type fxUnits struct {
	units    []UnitState
	err      error
	patterns []string
}

func (f *fxUnits) ListUnits(_ context.Context, patterns []string) ([]UnitState, error) {
	f.patterns = patterns
	if f.err != nil {
		return nil, f.err
	}
	return f.units, nil
}

var (
	fxUbuntu2204 = Distro{ID: "ubuntu", IDLike: []string{"debian"}, VersionID: "22.04", PrettyName: "Ubuntu 22.04.4 LTS", Support: SupportOS, Path: PathUnmount}
	fxRHEL79     = Distro{ID: "rhel", IDLike: []string{"fedora"}, VersionID: "7.9", PrettyName: "Red Hat Enterprise Linux Server 7.9", Support: SupportOS, Path: PathUnmount}
	fxRHEL94     = Distro{ID: "rhel", IDLike: []string{"fedora"}, VersionID: "9.4", PrettyName: "Red Hat Enterprise Linux 9.4", Support: SupportOS, Path: PathOnline}
	fxUbuntu2404 = Distro{ID: "ubuntu", IDLike: []string{"debian"}, VersionID: "24.04", PrettyName: "Ubuntu 24.04 LTS", Support: SupportOS, Path: PathOnline}
	fxSLES15     = Distro{ID: "sles", VersionID: "15.5", PrettyName: "SUSE Linux Enterprise Server 15 SP5", Support: SupportDataOnly, Path: PathNone}
)

// fxEnv is the Env of fixture root testdata/<probe>/<name> with a given distribution.
func fxEnv(t *testing.T, probe, name string, d Distro) *Env {
	t.Helper()
	root, err := hostroot.New(filepath.Join("testdata", probe, name))
	if err != nil {
		t.Fatalf("fixture root: %v", err)
	}
	return &Env{Root: root, Distro: d}
}

// fxCheck runs p and checks the one finding it may return: key with "!" for a
// blocker, severity, and substrings of summary+hint, commands and related ids.
type fxWant struct {
	key      string // "" = no finding; "services.heavy-active!" = blocker
	severity api.Severity
	text     []string // each must appear in title, summary or hint
	notText  []string
	commands []string // each argv joined by spaces, in order, exactly
	related  []string // kind:id that must be present
	err      string   // substring of the error; "" = no error
}

func fxCheck(t *testing.T, p Probe, env *Env, w fxWant) []api.Finding {
	t.Helper()
	fs, err := p.Run(context.Background(), env)
	if w.err != "" {
		if err == nil || !strings.Contains(err.Error(), w.err) {
			t.Fatalf("err = %v, want %q", err, w.err)
		}
		return fs
	}
	if err != nil {
		t.Fatalf("unexpected error: %v", err)
	}
	if w.key == "" {
		if len(fs) != 0 {
			t.Fatalf("want no finding, got %+v", fs)
		}
		return fs
	}
	if len(fs) != 1 {
		t.Fatalf("want 1 finding, got %d: %+v", len(fs), fs)
	}
	f := fs[0]
	key := f.Key
	if f.Blocker {
		key += "!"
	}
	if key != w.key {
		t.Errorf("key = %q, want %q", key, w.key)
	}
	if w.severity != "" && f.Severity != w.severity {
		t.Errorf("severity = %s, want %s", f.Severity, w.severity)
	}
	if !strings.HasPrefix(f.Key, p.Name()+".") || f.Title == "" || f.Summary == "" || f.Remediation.Hint == "" {
		t.Errorf("incomplete finding: %+v", f)
	}
	all := f.Title + "\n" + f.Summary + "\n" + f.Remediation.Hint
	for _, s := range w.text {
		if !strings.Contains(all, s) {
			t.Errorf("text lacks %q:\n%s", s, all)
		}
	}
	for _, s := range w.notText {
		if strings.Contains(all, s) {
			t.Errorf("text has %q:\n%s", s, all)
		}
	}
	if w.commands != nil {
		var got []string
		for _, c := range f.Remediation.Commands {
			got = append(got, strings.Join(c, " "))
		}
		if strings.Join(got, "\n") != strings.Join(w.commands, "\n") {
			t.Errorf("commands:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(w.commands, "\n"))
		}
	}
	have := map[string]bool{}
	for _, r := range f.Related {
		have[r.Kind+":"+r.ID] = true
	}
	for _, r := range w.related {
		if !have[r] {
			t.Errorf("related lacks %s (have %v)", r, f.Related)
		}
	}
	return fs
}

func TestServicesProbe(t *testing.T) {
	cases := []struct {
		name   string
		root   string
		distro Distro
		units  *fxUnits
		want   fxWant
	}{
		{name: "pass from /proc", root: "pass", distro: fxUbuntu2204, want: fxWant{}},
		{name: "docker from /proc, unmount path", root: "docker", distro: fxUbuntu2204, want: fxWant{
			key: "services.heavy-active!", severity: api.SeverityHigh,
			text: []string{"running: MongoDB, Docker (moby), containerd", "source: /proc (systemd not asked", "dockerd, pid 812 in docker.service",
				"mongod, pid 5000 in container docker-ab12cd34.scope", "containerd, pids 700 4900 in containerd.service", "adeagentctl prepare", "stripdown"},
			commands: []string{"adeagentctl prepare", "systemctl stop docker.socket docker.service", "systemctl stop containerd.service"},
			related:  []string{"unit:docker.service", "unit:docker.socket", "unit:containerd.service", "pid:812", "pid:5000", "path:/var/lib/docker"},
		}},
		{name: "cassandra cgroup v1 with drain", root: "cassandra", distro: fxRHEL79, want: fxWant{
			key: "services.heavy-active!", severity: api.SeverityHigh,
			text:     []string{"Apache Cassandra: java, pid 2100 in cassandra.service", "nodetool drain"},
			commands: []string{"adeagentctl prepare", "nodetool drain", "systemctl stop cassandra.service"},
			related:  []string{"unit:cassandra.service", "pid:2100", "path:/var/lib/cassandra"},
		}},
		{name: "processes outside services", root: "manual", distro: fxUbuntu2204, want: fxWant{
			key:  "services.heavy-active!",
			text: []string{"mongod, pid 3000 in session-3.scope, not a service", "java, pid 3100, unit unknown"},
			// Nothing for systemctl to stop, and prepare never kills unmanaged processes.
			commands: []string{},
			notText:  []string{"Run 'adeagentctl prepare'"},
			related:  []string{"pid:3000", "pid:3100"},
		}},
		{name: "malformed /proc", root: "malformed", distro: fxUbuntu2204, want: fxWant{}},
		{name: "no /proc and no systemd", root: "noproc", distro: fxUbuntu2204, want: fxWant{err: "no systemd to ask"}},
		{name: "online path is not a blocker", root: "docker", distro: fxRHEL94, want: fxWant{
			key: "services.heavy-active", severity: api.SeverityMedium,
			text:     []string{"online after a reboot", "Red Hat Enterprise Linux 9.4"},
			notText:  []string{"adeagentctl prepare"},
			commands: []string{"systemctl stop docker.socket docker.service", "systemctl stop containerd.service"},
		}},
		{name: "data-only distribution", root: "docker", distro: fxSLES15, want: fxWant{
			key: "services.heavy-active", severity: api.SeverityLow,
		}},
		{name: "systemd answers", root: "pass", distro: fxUbuntu2204, units: &fxUnits{units: []UnitState{
			{Name: "docker.service", ActiveState: "active", SubState: "running", MainPID: 812},
			{Name: "docker.socket", ActiveState: "active", SubState: "running"},
			{Name: "mongod.service", ActiveState: "inactive", SubState: "dead"},
			{Name: "postgresql.service", ActiveState: "active", SubState: "exited"}, // Debian's umbrella
			{Name: "postgresql@14-main.service", ActiveState: "active", SubState: "running", MainPID: 1400},
			{Name: "ssh.service", ActiveState: "active", SubState: "running"}, // never matched
		}}, want: fxWant{
			key:      "services.heavy-active!",
			text:     []string{"source: systemd and /proc", "docker.service (active/running, pid 812)", "PostgreSQL: postgresql@14-main.service (active/running, pid 1400)"},
			notText:  []string{"postgresql.service", "mongod", "ssh"},
			commands: []string{"adeagentctl prepare", "systemctl stop postgresql@14-main.service", "systemctl stop docker.socket docker.service"},
			related:  []string{"unit:docker.service", "unit:docker.socket", "unit:postgresql@14-main.service", "pid:1400"},
		}},
		{name: "systemd quiet, /proc finds a hand-started mongod", root: "manual", distro: fxUbuntu2204, units: &fxUnits{}, want: fxWant{
			key:  "services.heavy-active!",
			text: []string{"source: systemd and /proc", "MongoDB: mongod, pid 3000 in session-3.scope"},
		}},
		{name: "systemd and /proc agree: pids join the unit", root: "docker", distro: fxUbuntu2204, units: &fxUnits{units: []UnitState{
			{Name: "docker.service", ActiveState: "active", SubState: "running", MainPID: 812},
			{Name: "containerd.service", ActiveState: "active", SubState: "running", MainPID: 700},
		}}, want: fxWant{
			key:  "services.heavy-active!",
			text: []string{"containerd.service (active/running, pids 700 4900)", "docker.service (active/running, pid 812)"},
			// systemd says docker.socket is not active: not in the stop command
			commands: []string{"adeagentctl prepare", "systemctl stop docker.service", "systemctl stop containerd.service"},
		}},
		{name: "systemd fails: /proc alone, said so", root: "docker", distro: fxUbuntu2204, units: &fxUnits{err: errors.New("connection reset")}, want: fxWant{
			key:  "services.heavy-active!",
			text: []string{"systemd did not answer: connection reset", "docker.socket docker.service"},
		}},
		{name: "systemd answers, /proc missing: fine", root: "noproc", distro: fxRHEL79, units: &fxUnits{units: []UnitState{
			{Name: "mariadb.service", ActiveState: "active", SubState: "running", MainPID: 990},
		}}, want: fxWant{
			key: "services.heavy-active!", text: []string{"source: systemd)", "MySQL / MariaDB: mariadb.service"},
			commands: []string{"adeagentctl prepare", "systemctl stop mariadb.service"},
		}},
		{name: "systemd and /proc both fail", root: "noproc", distro: fxRHEL79, units: &fxUnits{err: errors.New("bus gone")},
			want: fxWant{err: "systemd: bus gone"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			env := fxEnv(t, "services", tc.root, tc.distro)
			if tc.units != nil {
				env.Units = tc.units
			}
			fxCheck(t, servicesProbe{}, env, tc.want)
		})
	}
}

func TestServicesAsksSystemdForDistroPatterns(t *testing.T) {
	u := &fxUnits{}
	env := fxEnv(t, "services", "pass", fxRHEL79)
	env.Units = u
	if _, err := (servicesProbe{}).Run(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	pats := strings.Join(u.patterns, " ")
	for _, want := range []string{"docker.service", "docker.socket", "postgresql-*.service", "mongod.service", "SAP[A-Z0-9][A-Z0-9][A-Z0-9]_[0-9][0-9].service"} {
		if !strings.Contains(pats, want) {
			t.Errorf("patterns lack %q: %s", want, pats)
		}
	}
	if strings.Contains(pats, "postgresql@*.service") || strings.Contains(pats, "snapd") {
		t.Errorf("patterns for another distro or a non-heavy family: %s", pats)
	}
}

func TestCgroupUnit(t *testing.T) {
	for _, tc := range []struct {
		path, unit string
		container  bool
	}{
		{"/system.slice/docker.service", "docker.service", false},
		{"/system.slice/docker-ab12.scope", "docker-ab12.scope", true},
		{"/kubepods.slice/kubepods-burstable.slice/kubepods-pod1.slice/cri-containerd-9f.scope", "cri-containerd-9f.scope", true},
		{"/docker/0123abcd", "", true},
		{"/user.slice/user-0.slice/session-1.scope", "session-1.scope", false},
		{"/system.slice/postgresql@14-main.service/x", "postgresql@14-main.service", false},
		{"", "", false},
	} {
		unit, c := svcCgroupUnit(tc.path)
		if unit != tc.unit || c != tc.container {
			t.Errorf("svcCgroupUnit(%q) = %q, %v; want %q, %v", tc.path, unit, c, tc.unit, tc.container)
		}
	}
}
