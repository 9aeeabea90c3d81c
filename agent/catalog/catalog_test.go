package catalog

import (
	"strings"
	"testing"
	"time"
)

func TestDefaultParsesAndValidates(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	heavy := c.Heavy()
	if len(heavy) < 10 {
		t.Fatalf("only %d heavy families", len(heavy))
	}
	for i := 1; i < len(heavy); i++ {
		if heavy[i-1].Order > heavy[i].Order {
			t.Errorf("Heavy not in stop order at %s, %s", heavy[i-1].Name, heavy[i].Name)
		}
	}
	for _, want := range []string{"docker", "containerd", "mongodb", "cassandra", "sap", "postgresql", "mysql", "elasticsearch", "kafka", "redis"} {
		f, ok := c.Family(want)
		if !ok || !f.Heavy {
			t.Errorf("family %q missing or not heavy", want)
		}
	}
	// A heavy unit must never be on the never-stop list, and the never-stop list must
	// hold what DESIGN.md §5 names.
	for _, f := range heavy {
		for _, u := range f.UnitPatterns("") {
			if c.IsNeverStop(u) {
				t.Errorf("family %s unit %s is also never-stop", f.Name, u)
			}
		}
		if !f.HasProcessMatchers() {
			t.Errorf("heavy family %s has no process matchers for the /proc fallback", f.Name)
		}
	}
	for _, u := range []string{"dbus.service", "systemd-journald.service", "systemd-logind.service", "systemd-udevd.service",
		"NetworkManager.service", "ssh.socket", "sshd.service", "walinuxagent.service", "waagent.service",
		"azure-vmextensions-Microsoft.Azure.Security.AzureDiskEncryptionForLinux.slice", "auditd.service", "adeagent.service", "init.scope"} {
		if !c.IsNeverStop(u) {
			t.Errorf("%s not on the never-stop list", u)
		}
	}
}

func TestUnitMatching(t *testing.T) {
	c, _ := Default()
	cases := []struct {
		family, distro, unit string
		want                 bool
	}{
		{"docker", Debian, "docker.service", true},
		{"docker", RHEL, "docker.socket", false}, // a reactivator, not a unit
		{"postgresql", Debian, "postgresql@14-main.service", true},
		{"postgresql", RHEL, "postgresql@14-main.service", false},
		{"postgresql", RHEL, "postgresql-16.service", true},
		{"postgresql", "", "postgresql-16.service", true}, // unknown distro: every distro's names
		{"mongodb", Debian, "mongodb.service", true},
		{"mongodb", RHEL, "mongodb.service", false},
		{"sap", RHEL, "SAPHN1_00.service", true},
		{"sap", RHEL, "SAPHN1_0.service", false},
		{"sap", SUSE, "sapinit.service", true},
		{"mysql", RHEL, "mysqld.service", true},
		{"redis", Debian, "redis-server@6379.service", true},
	}
	for _, tc := range cases {
		f, ok := c.Family(tc.family)
		if !ok {
			t.Fatalf("no family %s", tc.family)
		}
		if got := f.MatchUnit(tc.distro, tc.unit); got != tc.want {
			t.Errorf("%s.MatchUnit(%q, %q) = %v, want %v", tc.family, tc.distro, tc.unit, got, tc.want)
		}
	}
	d, _ := c.Family("docker")
	if !d.MatchReactivator("docker.socket") {
		t.Error("docker.socket is not docker's reactivator")
	}
	p, _ := c.Family("postgresql")
	if !p.IsUmbrella("postgresql.service") || p.IsUmbrella("postgresql@14-main.service") {
		t.Error("umbrella matching wrong")
	}
}

func TestProcessMatching(t *testing.T) {
	c, _ := Default()
	cases := []struct {
		family, comm, exe string
		argv              []string
		want              bool
	}{
		{"docker", "dockerd", "dockerd", nil, true},
		{"containerd", "containerd-shim", "containerd-shim-runc-v2", nil, true},
		{"cassandra", "java", "java", []string{"/usr/bin/java", "-Xmx1G", "org.apache.cassandra.service.CassandraDaemon"}, true},
		{"cassandra", "java", "java", []string{"/usr/bin/java", "-jar", "app.jar"}, false},
		{"kafka", "java", "java", []string{"java", "-cp", "x", "kafka.Kafka", "server.properties"}, true},
		{"kafka", "java", "java", []string{"java", "-Dname=kafka.Kafkaesque"}, false},
		{"hana", "hdbindexserver", "", nil, true},
		{"mongodb", "mongo", "", nil, false},
		{"redis", "redis-server", "", nil, true},
	}
	for _, tc := range cases {
		f, _ := c.Family(tc.family)
		if got := f.MatchProcess(tc.comm, tc.exe, tc.argv); got != tc.want {
			t.Errorf("%s.MatchProcess(%q, %q, %q) = %v, want %v", tc.family, tc.comm, tc.exe, tc.argv, got, tc.want)
		}
	}
}

func TestParseRejectsBadData(t *testing.T) {
	for name, doc := range map[string]string{
		"not yaml":      "families: [",
		"no name":       "families:\n  - title: x\n",
		"duplicate":     "families:\n  - name: a\n  - name: a\n",
		"bad glob":      "families:\n  - name: a\n    units: ['[x']\n",
		"bad distro":    "families:\n  - name: a\n    distro_units: {gentoo: [x.service]}\n",
		"bad neverstop": "never_stop: ['[']\n",
	} {
		if _, err := Parse([]byte(doc)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestMerge(t *testing.T) {
	base, _ := Default()
	over, err := Parse([]byte(`
families:
  - name: docker
    title: Docker (site)
    heavy: false
  - name: myapp
    title: My app
    heavy: true
    units: [myapp.service]
    processes: {comm: [myapp]}
never_stop: [dbus.service, site-agent.service]
`))
	if err != nil {
		t.Fatal(err)
	}
	m := base.Merge(over)
	if d, _ := m.Family("docker"); d.Heavy || d.Title != "Docker (site)" {
		t.Errorf("docker not replaced: %+v", d)
	}
	if _, ok := m.Family("myapp"); !ok {
		t.Error("myapp not added")
	}
	if !m.IsNeverStop("site-agent.service") || !m.IsNeverStop("walinuxagent.service") {
		t.Error("never-stop lists not joined")
	}
	if d, _ := base.Family("docker"); !d.Heavy {
		t.Error("Merge modified its receiver")
	}
	n := 0
	for _, g := range m.NeverStop {
		if g == "dbus.service" {
			n++
		}
	}
	if n != 1 {
		t.Errorf("dbus.service listed %d times", n)
	}
}

func TestDistroFamily(t *testing.T) {
	cases := map[string]string{
		"ubuntu": Debian, "rhel": RHEL, "centos": RHEL, "ol": RHEL, "sles": SUSE,
		"mariner": Mariner, "azurelinux": Mariner, "arch": "",
	}
	for id, want := range cases {
		if got := DistroFamily(id, nil); got != want {
			t.Errorf("DistroFamily(%q) = %q, want %q", id, got, want)
		}
	}
	if got := DistroFamily("rocky-custom", strings.Fields("rhel centos fedora")); got != RHEL {
		t.Errorf("ID_LIKE not used: %q", got)
	}
}

func TestStopTimeoutsAndActions(t *testing.T) {
	c, err := Default()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range c.Families {
		if f.StopTimeout == "" {
			t.Errorf("family %s has no stop_timeout", f.Name)
		}
	}
	if f, _ := c.Family("mongodb"); f.StopDeadline() != 5*time.Minute {
		t.Errorf("mongodb stop deadline = %v", f.StopDeadline())
	}
	if f, _ := c.Family("docker"); len(f.PreStop) == 0 || f.PreStop[0].Action != ActionDockerContainers {
		t.Errorf("docker prestop = %+v", f.PreStop)
	}
	if (Family{}).StopDeadline() != DefaultStopTimeout || (Step{}).Deadline() != DefaultStepTimeout {
		t.Error("defaults")
	}
	for _, bad := range []string{
		"families: [{name: x, stop_timeout: soon}]",
		"families: [{name: x, prestop: [{action: reboot}]}]",
		"families: [{name: x, prestop: [{action: docker-containers, argv: [true]}]}]",
		"families: [{name: x, prestop: [{timeout: -1s}]}]",
	} {
		if _, err := Parse([]byte(bad)); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
