package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/config"
	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata/")

// goldenRoots are the fixture roots of the golden tests.
const goldenRoots = "../../probes/testdata/golden"

// sampleProbe shows every other kind of finding in the golden report.
type sampleProbe struct{}

func (sampleProbe) Name() string { return "sample" }
func (sampleProbe) Run(context.Context, *probes.Env) ([]api.Finding, error) {
	return []api.Finding{
		{Key: "sample.info", Title: "Something worth knowing", Summary: "Informational findings show no fix.", Severity: api.SeverityInfo},
		{Key: "sample.low", Title: "A low-severity finding", Summary: "It does not block.", Severity: api.SeverityLow,
			Remediation: api.Remediation{Hint: "Optional clean-up.", Commands: [][]string{{"rm", "-f", "/var/tmp/it's here"}}}},
		{Key: "sample.medium", Title: "A medium-severity finding", Summary: "A long summary that has to wrap because it goes on and on about what was found, where it was found and why it matters for the encryption that is about to run.", Severity: api.SeverityMedium,
			Remediation: api.Remediation{Hint: "Do the first thing, then the second.", Commands: [][]string{{"systemctl", "stop", "a.service"}, {"systemctl", "mask", "--runtime", "a.service"}}}},
	}, nil
}

// brokenProbe returns an error, which the report must show as a blocker.
type brokenProbe struct{}

func (brokenProbe) Name() string { return "zz-broken" }
func (brokenProbe) Run(context.Context, *probes.Env) ([]api.Finding, error) {
	return nil, errors.New("read /etc/thing: permission denied")
}

// myProbes are the registered probes whose fixtures live in probes/testdata/golden.
func myProbes(t *testing.T) []probes.Probe {
	want := map[string]bool{"distro": true, "kernel": true, "memory": true, "oldroot": true, "selinux": true}
	var out []probes.Probe
	for _, p := range probes.All() {
		if want[p.Name()] {
			out = append(out, p)
		}
	}
	if len(out) != len(want) {
		t.Fatalf("registry lacks some of %v", want)
	}
	return out
}

// goldenReport runs list on a fixture root with a fixed clock and normalises the timings.
func goldenReport(t *testing.T, root string, list []probes.Probe, cfgText string) *api.Report {
	t.Helper()
	r, err := hostroot.New(filepath.Join(goldenRoots, root))
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Parse("golden.yaml", []byte(cfgText), probeNames())
	if err != nil {
		t.Fatal(err)
	}
	env, err := buildEnv(r, cfg)
	if err != nil {
		t.Fatal(err)
	}
	fixed := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	rep := check(context.Background(), env, list, probes.RunOptions{
		Enabled: cfg.ProbeEnabled,
		Now:     func() time.Time { return fixed },
	}, hostname(r))
	for i := range rep.Probes {
		rep.Probes[i].DurationMS = 0
	}
	rep.DurationMS = 0
	return rep
}

func compareGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run 'go test ./agent/cli -run Golden -update' to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs from the output (rerun with -update if the change is intended)\n--- got\n%s\n--- want\n%s", path, got, want)
	}
}

func TestCheckGolden(t *testing.T) {
	tests := []struct {
		name, root, cfg string
		extra           []probes.Probe
		ready           bool
	}{
		{name: "check-rhel7-blocked", root: "rhel7-blocked", extra: []probes.Probe{sampleProbe{}, brokenProbe{}}},
		{name: "check-ubuntu2404-ready", root: "ubuntu2404-ready", cfg: "probes:\n  kernel: {enabled: false}\n", ready: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep := goldenReport(t, tt.root, append(myProbes(t), tt.extra...), tt.cfg)
			if rep.Ready != tt.ready {
				t.Errorf("ready = %v, want %v", rep.Ready, tt.ready)
			}
			var human bytes.Buffer
			writeReport(&human, rep, false)
			if strings.Contains(human.String(), "\x1b[") {
				t.Error("colour in a non-terminal report")
			}
			compareGolden(t, tt.name+".golden", human.Bytes())
			var js bytes.Buffer
			if err := writeJSON(&js, rep); err != nil {
				t.Fatal(err)
			}
			compareGolden(t, tt.name+".json.golden", js.Bytes())
		})
	}
}

func TestCheckReportColour(t *testing.T) {
	rep := goldenReport(t, "rhel7-blocked", myProbes(t), "")
	var b bytes.Buffer
	writeReport(&b, rep, true)
	if !strings.Contains(b.String(), ansiRed) || !strings.HasPrefix(b.String(), ansiBold+ansiRed+"NOT READY") {
		t.Errorf("no colour on a terminal:\n%q", b.String()[:80])
	}
}

// writeConfig writes a config that switches off the network probe (if registered) so
// tests never dial.
func writeConfig(t *testing.T, extra string) string {
	t.Helper()
	text := "probes:\n"
	for _, n := range probeNames() {
		if n == "network" {
			text += "  network: {enabled: false}\n"
		}
	}
	if text == "probes:\n" {
		text = ""
	}
	p := filepath.Join(t.TempDir(), "adeagent.yaml")
	if err := os.WriteFile(p, []byte(text+extra), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestCheckCommandJSON(t *testing.T) {
	cfg := writeConfig(t, "")
	code, out, errOut := runMain("check", "--json", "--root", filepath.Join(goldenRoots, "rhel7-blocked"), "--config", cfg)
	if code != ExitNotReady {
		t.Fatalf("exit %d, want 1 (blockers); stderr %s", code, errOut)
	}
	var rep api.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("not one JSON object: %v\n%s", err, out)
	}
	if rep.SchemaVersion != 1 || rep.Phase != "observing" || rep.Ready || rep.Hostname != "golden-rhel" {
		t.Errorf("report header: %+v", rep)
	}
	if len(rep.Probes) != len(probes.All()) {
		t.Errorf("%d probes recorded, %d registered", len(rep.Probes), len(probes.All()))
	}
	keys := map[string]bool{}
	for _, f := range rep.Findings {
		keys[f.Key] = true
	}
	for _, k := range []string{"distro.unsupported", "memory.insufficient", "selinux.enforcing", "oldroot.exists"} {
		if k == "distro.unsupported" {
			if keys[k] {
				t.Errorf("RHEL 7.9 reported unsupported")
			}
			continue
		}
		if !keys[k] {
			t.Errorf("missing finding %s", k)
		}
	}
	// Blockers come first.
	seenOther := false
	for _, f := range rep.Findings {
		if !f.Blocker {
			seenOther = true
		} else if seenOther {
			t.Errorf("blocker %s after a non-blocker", f.Key)
		}
	}
	// Human output of the same run.
	code, out, _ = runMain("check", "--root", filepath.Join(goldenRoots, "rhel7-blocked"), "--config", cfg)
	if code != ExitNotReady || !strings.HasPrefix(out, "NOT READY: ") || !strings.Contains(out, "# setenforce 0") {
		t.Errorf("human output (exit %d):\n%s", code, out)
	}
}

func TestCheckAndConfigUsageErrors(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	if err := os.WriteFile(bad, []byte("log_level: info\nprobes:\n  memroy:\n    enabled: false\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"check", "--config", bad},
		{"config", "--config", bad},
	} {
		code, out, errOut := runMain(args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
		want := bad + ":3: probes.memroy: unknown probe \"memroy\""
		if !strings.Contains(errOut, want) || strings.Count(errOut, "\n") != 1 || out != "" {
			t.Errorf("%v: stderr %q, want one line containing %q; stdout %q", args, errOut, want, out)
		}
	}
	for _, args := range [][]string{
		{"check", "--root", filepath.Join(t.TempDir(), "none")},
		{"check", "--bogus"},
		{"check", "extra"},
		{"check", "--log-level", "loud", "--config", writeConfig(t, "")},
		{"config", "extra"},
	} {
		if code, _, errOut := runMain(args...); code != ExitUsage {
			t.Errorf("%v: exit %d, want 2 (%s)", args, code, errOut)
		}
	}
}

func TestConfigCommand(t *testing.T) {
	cfg := writeConfig(t, "ade:\n  path: online\n")
	code, out, errOut := runMain("config", "--config", cfg, "--socket", "/tmp/x.sock")
	if code != ExitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"# adeagent effective configuration (from " + cfg + ")", "socket: /tmp/x.sock", "path: online", "  memory:\n    enabled: true", "connect_timeout: 2s"} {
		if !strings.Contains(out, want) {
			t.Errorf("missing %q in:\n%s", want, out)
		}
	}
	code, out, _ = runMain("config", "--config", filepath.Join(t.TempDir(), "absent.yaml"))
	if code != ExitOK || !strings.Contains(out, "built-in defaults") {
		t.Errorf("defaults (exit %d):\n%s", code, out)
	}
}

func TestShellQuote(t *testing.T) {
	for in, want := range map[string]string{"setenforce": "setenforce", "": "''", "a b": "'a b'", "it's": `'it'\''s'`, "/usr/bin/x-y_z.conf": "/usr/bin/x-y_z.conf", "$HOME": "'$HOME'"} {
		if got := shellQuote(in); got != want {
			t.Errorf("shellQuote(%q) = %q, want %q", in, got, want)
		}
	}
}
