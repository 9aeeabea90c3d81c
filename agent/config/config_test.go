package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

var names = []string{"distro", "kernel", "memory", "network", "selinux"}

func TestMissingFileIsDefaults(t *testing.T) {
	c, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), names)
	if err != nil {
		t.Fatal(err)
	}
	if c.Source() != "" || c.LogLevel != "info" || c.Socket != "/run/adeagent/adeagent.sock" || c.StateDir != "/var/lib/adeagent" {
		t.Errorf("defaults: %+v", c)
	}
	if time.Duration(c.Network.ConnectTimeout) != 2*time.Second || !c.ADE.AutoPrepare || c.ADE.Path != "auto" {
		t.Errorf("defaults: %+v", c)
	}
	want := []Endpoint{{"imds", "169.254.169.254:80"}, {"wireserver", "168.63.129.16:80"}}
	if !reflect.DeepEqual(c.AllEndpoints(), want) {
		t.Errorf("endpoints %v", c.AllEndpoints())
	}
	for _, n := range names {
		if !c.ProbeEnabled(n) {
			t.Errorf("probe %s disabled by default", n)
		}
	}
}

func TestEmptyAndNullFiles(t *testing.T) {
	for _, text := range []string{"", "# only a comment\n", "~\n", "---\n"} {
		c, err := Parse("x.yaml", []byte(text), names)
		if err != nil || c.LogLevel != "info" {
			t.Errorf("%q: %v %+v", text, err, c)
		}
	}
}

func TestFullFile(t *testing.T) {
	c, err := Load("testdata/full.yaml", names)
	if err != nil {
		t.Fatal(err)
	}
	if c.LogLevel != "debug" || c.Socket != "/run/custom/adeagent.sock" || c.StateDir != "/srv/adeagent" || c.OperatorGroup != "adeagent-ops" {
		t.Errorf("scalars: %+v", c)
	}
	if c.ProbeEnabled("memory") || !c.ProbeEnabled("network") || !c.ProbeEnabled("kernel") {
		t.Errorf("probes: %+v", c.Probes)
	}
	if time.Duration(c.Network.ConnectTimeout) != 500*time.Millisecond {
		t.Errorf("timeout %v", c.Network.ConnectTimeout)
	}
	want := []Endpoint{{"imds", "169.254.169.254:80"}, {"proxy", "[fd00::1]:3128"}, {"key-vault", "myvault.vault.azure.net:443"}}
	if !reflect.DeepEqual(c.AllEndpoints(), want) {
		t.Errorf("endpoints %v", c.AllEndpoints())
	}
	if c.ADE.AutoPrepare || c.ADE.Path != "online" {
		t.Errorf("ade %+v", c.ADE)
	}
	if !reflect.DeepEqual(c.Quiesce.Allow, []string{"myapp-*.service", "batch.timer"}) {
		t.Errorf("allow %v", c.Quiesce.Allow)
	}
	if c.HolderScan.FDSource != "proc" {
		t.Errorf("holder_scan.fd_source %q", c.HolderScan.FDSource)
	}
}

func TestYAMLRoundTrip(t *testing.T) {
	for _, src := range []string{"testdata/full.yaml", "testdata/absent.yaml"} {
		c, err := Load(src, names)
		if err != nil {
			t.Fatal(err)
		}
		out, err := c.YAML()
		if err != nil {
			t.Fatal(err)
		}
		text := string(out)
		for _, n := range names {
			if !strings.Contains(text, "  "+n+":\n    enabled: ") {
				t.Errorf("%s: probe %s not listed:\n%s", src, n, text)
			}
		}
		back, err := Parse("printed.yaml", out, names)
		if err != nil {
			t.Fatalf("%s: printed config does not load: %v\n%s", src, err, text)
		}
		for _, n := range names {
			if back.ProbeEnabled(n) != c.ProbeEnabled(n) {
				t.Errorf("%s: probe %s changed in the round trip", src, n)
			}
		}
		back.Probes, c.Probes = nil, nil
		back.source, c.source = "", ""
		if !reflect.DeepEqual(back, c) {
			t.Errorf("%s: round trip differs:\n got %+v\nwant %+v\n%s", src, back, c, text)
		}
	}
}

func TestErrors(t *testing.T) {
	tests := []struct {
		name, text, want string
	}{
		{"unknown probe", "log_level: info\nprobes:\n  memroy:\n    enabled: false\n", `bad.yaml:3: probes.memroy: unknown probe "memroy" (did you mean "memory"?)`},
		{"unknown probe far", "probes:\n  docker: {enabled: false}\n", `bad.yaml:2: probes.docker: unknown probe "docker"`},
		{"unknown top key", "\n\nlog_levle: debug\n", `bad.yaml:3: log_levle: unknown key (did you mean "log_level"?)`},
		{"unknown nested key", "network:\n  timeout: 2s\n", `bad.yaml:2: network.timeout: unknown key (known: connect_timeout, endpoints, key_vault)`},
		{"duplicate key", "socket: /a\nsocket: /b\n", `bad.yaml:2: socket: duplicate key`},
		{"bad level", "log_level: loud\n", `bad.yaml:1: log_level: unknown level "loud" (want debug, info, warn or error)`},
		{"bad fd source", "holder_scan:\n  fd_source: ebpf\n", `bad.yaml:2: holder_scan.fd_source: unknown fd source "ebpf" (want auto, bpf or proc)`},
		{"relative socket", "socket: run/x.sock\n", `bad.yaml:1: socket: want an absolute path, got "run/x.sock"`},
		{"number as path", "state_dir: 12\n", `bad.yaml:1: state_dir: want a string, got int 12`},
		{"empty value", "state_dir:\n", `bad.yaml:1: state_dir: missing value (remove the key for the default)`},
		{"bad group name", "operator_group: \"ops team\"\n", `bad.yaml:1: operator_group: invalid group name "ops team"`},
		{"yes is not a bool", "ade:\n  auto_prepare: yes\n", `bad.yaml:2: ade.auto_prepare: want true or false, got "yes"`},
		{"enabled string", "probes:\n  kernel:\n    enabled: \"false\"\n", `bad.yaml:3: probes.kernel.enabled: want true or false, got "false"`},
		{"probe not a mapping", "probes:\n  kernel: false\n", `bad.yaml:2: probes.kernel: want a mapping, got bool false`},
		{"bad path", "ade:\n  path: offline\n", `bad.yaml:2: ade.path: unknown path "offline" (want auto, unmount or online)`},
		{"bad duration", "network:\n  connect_timeout: 2\n", `bad.yaml:2: network.connect_timeout: want a string, got int 2`},
		{"bad duration text", "network:\n  connect_timeout: soon\n", `bad.yaml:2: network.connect_timeout: want a duration between 1ms and 1m such as 2s, got "soon"`},
		{"long duration", "network:\n  connect_timeout: 5m\n", `bad.yaml:2: network.connect_timeout: want a duration between 1ms and 1m such as 2s, got "5m"`},
		{"endpoint no port", "network:\n  endpoints:\n    - name: kv\n      addr: vault.example\n", `bad.yaml:4: network.endpoints[0].addr: want host:port, got "vault.example"`},
		{"endpoint bad port", "network:\n  endpoints:\n    - {name: kv, addr: \"h:99999\"}\n", `bad.yaml:3: network.endpoints[0].addr: port "99999" in "h:99999": want 1-65535`},
		{"endpoint no name", "network:\n  endpoints:\n    - addr: h:1\n", `bad.yaml:3: network.endpoints[0].name: missing (every endpoint needs a name)`},
		{"endpoint dup name", "network:\n  endpoints:\n    - {name: a, addr: \"h:1\"}\n    - {name: a, addr: \"h:2\"}\n", `bad.yaml:4: network.endpoints[1].name: duplicate endpoint name "a"`},
		{"endpoint unknown key", "network:\n  endpoints:\n    - {name: a, adr: \"h:1\"}\n", `bad.yaml:3: network.endpoints[0].adr: unknown key (did you mean "addr"?)`},
		{"endpoints not list", "network:\n  endpoints: imds\n", `bad.yaml:2: network.endpoints: want a list of {name, addr}, got the string "imds"`},
		{"key vault url", "network:\n  key_vault: https://v.vault.azure.net/\n", `bad.yaml:2: network.key_vault: want a host name such as myvault.vault.azure.net, not a URL: "https://v.vault.azure.net/"`},
		{"bad glob", "quiesce:\n  allow:\n    - ok.service\n    - \"[x.service\"\n", `bad.yaml:4: quiesce.allow[1]: invalid unit glob "[x.service"`},
		{"allow not list", "quiesce:\n  allow: docker.service\n", `bad.yaml:2: quiesce.allow: want a list of strings, got the string "docker.service"`},
		{"top not mapping", "- a\n- b\n", `bad.yaml:1: want a mapping, got a list`},
		{"syntax", "log_level: info\nprobes: [\n", `bad.yaml:2: YAML syntax:`},
		{"tab indent", "probes:\n\tmemory: {}\n", `bad.yaml:2: YAML syntax:`},
		{"two documents", "log_level: info\n---\nlog_level: debug\n", `bad.yaml:2: more than one YAML document; keep one`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(tt.text), names)
			if err == nil {
				t.Fatal("accepted")
			}
			var ce *Error
			if !errors.As(err, &ce) {
				t.Errorf("not a *config.Error: %T", err)
			}
			if !strings.HasPrefix(err.Error(), tt.want) {
				t.Errorf("got  %s\nwant %s", err, tt.want)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
}

func TestLoadErrorsNameTheFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "adeagent.yaml")
	if err := os.WriteFile(p, []byte("log_level: info\n\nprobes:\n  memroy: {enabled: false}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(p, names)
	if err == nil || !strings.HasPrefix(err.Error(), p+":4: probes.memroy: unknown probe") {
		t.Errorf("got %v", err)
	}
	if _, err := Load(dir, names); err == nil {
		t.Error("a directory loaded as configuration")
	}
	// Without probe names, any probe key is accepted.
	if _, err := Load(p, nil); err != nil {
		t.Errorf("nil probe names: %v", err)
	}
}

func TestEditDistance(t *testing.T) {
	for _, tt := range []struct {
		a, b string
		d    int
	}{{"memroy", "memory", 1}, {"kernel", "kernel", 0}, {"", "abc", 3}, {"selinx", "selinux", 1}, {"abc", "xyz", 3}} {
		if got := editDistance(tt.a, tt.b); got != tt.d {
			t.Errorf("editDistance(%q,%q) = %d, want %d", tt.a, tt.b, got, tt.d)
		}
	}
}
