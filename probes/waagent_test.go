package probes

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// waFixtureEnv is an Env whose root is testdata/<probe>/<name>.
func waFixtureEnv(t *testing.T, probe, name string, d Distro) *Env {
	t.Helper()
	root, err := hostroot.New(filepath.Join("testdata", probe, name))
	if err != nil {
		t.Fatal(err)
	}
	return &Env{Root: root, Distro: d}
}

// wantFinding describes one expected finding; empty fields are not checked.
type wantFinding struct {
	key      string
	blocker  bool
	severity api.Severity
	title    string   // substring of Title
	summary  []string // substrings of Summary
	hint     []string // substrings of Remediation.Hint
	command  string   // a command, argv joined by spaces, that must be among the commands
	related  string   // "kind:id" that must be among Related
}

// checkFindings compares findings with the expectations, in order.
func checkFindings(t *testing.T, probe string, got []api.Finding, want []wantFinding) {
	t.Helper()
	if len(got) != len(want) {
		js, _ := json.MarshalIndent(got, "", "  ")
		t.Fatalf("got %d findings, want %d:\n%s", len(got), len(want), js)
	}
	for i, w := range want {
		f := got[i]
		js, _ := json.MarshalIndent(f, "", "  ")
		if f.Key != w.key || f.Blocker != w.blocker || (w.severity != "" && f.Severity != w.severity) {
			t.Errorf("finding %d: key/blocker/severity = %s/%v/%s, want %s/%v/%s\n%s", i, f.Key, f.Blocker, f.Severity, w.key, w.blocker, w.severity, js)
		}
		if f.Probe != probe {
			t.Errorf("finding %d: probe %q, want %q", i, f.Probe, probe)
		}
		if f.Title == "" || f.Summary == "" || f.Remediation.Hint == "" || f.Severity.Rank() < 0 {
			t.Errorf("finding %d: title, summary, hint and severity are required\n%s", i, js)
		}
		if w.title != "" && !strings.Contains(f.Title, w.title) {
			t.Errorf("finding %d: title %q does not contain %q", i, f.Title, w.title)
		}
		for _, s := range w.summary {
			if !strings.Contains(f.Summary, s) {
				t.Errorf("finding %d: summary %q does not contain %q", i, f.Summary, s)
			}
		}
		for _, s := range w.hint {
			if !strings.Contains(f.Remediation.Hint, s) {
				t.Errorf("finding %d: hint %q does not contain %q", i, f.Remediation.Hint, s)
			}
		}
		if w.command != "" {
			found := false
			for _, c := range f.Remediation.Commands {
				if strings.Join(c, " ") == w.command {
					found = true
				}
			}
			if !found {
				t.Errorf("finding %d: no command %q in %q", i, w.command, f.Remediation.Commands)
			}
		}
		if w.related != "" {
			found := false
			for _, r := range f.Related {
				if r.Kind+":"+r.ID == w.related {
					found = true
				}
			}
			if !found {
				t.Errorf("finding %d: no related %q in %v", i, w.related, f.Related)
			}
		}
	}
}

func TestWAAgentProbe(t *testing.T) {
	ubuntu := Distro{ID: "ubuntu", VersionID: "18.04", Support: SupportOS, Path: PathUnmount}
	rhel := Distro{ID: "rhel", VersionID: "7.9", Support: SupportOS, Path: PathUnmount}
	tests := []struct {
		name   string
		distro Distro
		want   []wantFinding
	}{
		{"not-installed", Distro{ID: "debian", VersionID: "12"}, []wantFinding{{
			key: "waagent.version", blocker: true, severity: api.SeverityHigh, title: "WALinuxAgent not installed",
			summary: []string{"only WALinuxAgent can run", "required", "does not identify itself as an Azure VM"},
			command: "apt-get install -y walinuxagent", related: "package:walinuxagent",
		}}},
		{"not-installed-azure", rhel, []wantFinding{{
			key: "waagent.version", blocker: true, title: "WALinuxAgent not installed",
			summary: []string{"is an Azure VM"}, command: "systemctl enable --now waagent.service",
		}}},
		{"dpkg-removed", ubuntu, []wantFinding{{key: "waagent.version", blocker: true, title: "not installed"}}},
		{"dpkg-old", ubuntu, []wantFinding{{
			key: "waagent.version", blocker: true, severity: api.SeverityHigh, title: "WALinuxAgent 2.2.32 is older than 2.2.38",
			summary: []string{"package walinuxagent 2.2.32-0ubuntu1~18.04.1"},
			command: "apt-get install -y --only-upgrade walinuxagent",
		}}},
		{"dpkg-ok", ubuntu, nil},
		{"autoupdated", ubuntu, []wantFinding{{
			key: "waagent.version", blocker: false, severity: api.SeverityLow, title: "package 2.2.32 is older",
			summary: []string{"Extensions run on WALinuxAgent 2.9.1.1", "incomplete (no HandlerManifest.json)"},
		}}},
		{"blacklisted", rhel, []wantFinding{{
			key: "waagent.version", blocker: true, title: "2.2.37 is older than 2.2.38",
			summary: []string{"blacklisted by the agent"}, command: "yum update -y WALinuxAgent",
		}}},
		{"autoupdate-off", rhel, []wantFinding{{
			key: "waagent.version", blocker: true, title: "2.2.20 is older",
			summary: []string{"auto-update off (/etc/waagent.conf: AutoUpdate.Enabled=n)"},
			hint:    []string{"AutoUpdate.Enabled=y"}, command: "systemctl restart waagent.service",
		}}},
		{"running-ok", ubuntu, nil},
		{"running-old", ubuntu, []wantFinding{{
			key: "waagent.version", blocker: true, title: "2.2.36 is older",
			summary: []string{"the running extension handler", "pid 900"},
		}}},
		{"script-2.0", Distro{ID: "centos", VersionID: "7"}, []wantFinding{{
			key: "waagent.version", blocker: true, title: "WALinuxAgent 2.0.16 is older", summary: []string{"/usr/sbin/waagent"},
		}}},
		{"egg-info", rhel, nil},
		{"unknown", Distro{}, []wantFinding{{
			key: "waagent.version", blocker: false, severity: api.SeverityMedium, title: "version unknown",
			summary: []string{"/usr/sbin/waagent", "no AGENT_VERSION"}, command: "waagent --version",
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "waagent", tc.name, tc.distro)
			got, err := waagentProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "waagent", got, tc.want)
		})
	}
}

func TestWAVersionCompare(t *testing.T) {
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"2.2.38", "2.2.38", 0}, {"2.2.38.0", "2.2.38", 0}, {"2.2.37", "2.2.38", -1},
		{"2.10.0.8", "2.9.1.1", 1}, {"2.2.45-0ubuntu1", "2.2.38", 1},
	} {
		a, _ := parseWAVersion(tc.a)
		b, _ := parseWAVersion(tc.b)
		if got := a.compare(b); got != tc.want {
			t.Errorf("compare(%s, %s) = %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
	if _, ok := parseWAVersion("x.y"); ok {
		t.Error("x.y parsed")
	}
}
