package probes

import (
	"strings"
	"testing"
)

func TestLoadDistro(t *testing.T) {
	tests := []struct {
		dir                 string
		id, version, pretty string
		support             Support
		path                ADEPath
		minKernel           string
		wantErr             bool
	}{
		{dir: "ubuntu-1404", id: "ubuntu", version: "14.04", pretty: "Ubuntu 14.04.6 LTS", support: SupportOS, path: PathUnmount, minKernel: "4.15"},
		{dir: "ubuntu-2204", id: "ubuntu", version: "22.04", pretty: "Ubuntu 22.04.4 LTS", support: SupportOS, path: PathUnmount},
		{dir: "ubuntu-2210", id: "ubuntu", version: "22.10", support: SupportNone, path: PathNone},
		{dir: "ubuntu-2310", id: "ubuntu", version: "23.10", support: SupportOS, path: PathOnline},
		{dir: "ubuntu-2404", id: "ubuntu", version: "24.04", support: SupportOS, path: PathOnline},
		{dir: "rhel-68", id: "rhel", version: "6.8", support: SupportDataOnly, path: PathNone},
		{dir: "rhel-79", id: "rhel", version: "7.9", support: SupportOS, path: PathUnmount},
		{dir: "rhel-80", id: "rhel", version: "8.0", support: SupportNone, path: PathNone},
		{dir: "rhel-94", id: "rhel", version: "9.4", support: SupportOS, path: PathOnline},
		{dir: "centos-7", id: "centos", version: "7.9.2009", support: SupportOS, path: PathUnmount},
		{dir: "centos-71", id: "centos", version: "7.1.1503", support: SupportNone, path: PathNone},
		{dir: "oracle-86", id: "ol", version: "8.6", support: SupportOS, path: PathOnline},
		{dir: "oracle-84", id: "ol", version: "8.4", support: SupportNone, path: PathNone},
		{dir: "mariner-2", id: "mariner", version: "2.0", support: SupportOS, path: PathOnline},
		{dir: "azurelinux-3", id: "azurelinux", version: "3.0", support: SupportOS, path: PathOnline},
		{dir: "sles-15", id: "sles", version: "15.5", support: SupportDataOnly, path: PathNone},
		{dir: "opensuse-423", id: "opensuse", version: "42.3", support: SupportDataOnly, path: PathNone},
		{dir: "debian-12", id: "debian", version: "12", pretty: "Debian GNU/Linux 12 (bookworm)", support: SupportUnknown, path: PathNone},
		{dir: "rocky-9", id: "rocky", version: "9.3", support: SupportUnknown, path: PathNone},
		{dir: "usrlib-only", id: "ubuntu", version: "20.04", pretty: "Ubuntu 20.04.6 LTS", support: SupportOS, path: PathUnmount},
		{dir: "quoting", id: "ubuntu", version: "22.04", pretty: `Ubuntu "Quoted" $HOME \ done`, support: SupportOS, path: PathUnmount},
		{dir: "malformed", id: "linux", support: SupportUnknown, path: PathNone},
		{dir: "missing", support: SupportUnknown, path: PathNone, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			env := fixtureEnv(t, "distro", tt.dir)
			_, err := LoadDistro(env.Root)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			d := env.Distro
			if d.ID != tt.id || d.VersionID != tt.version || d.Support != tt.support || d.Path != tt.path || d.MinKernel != tt.minKernel {
				t.Errorf("got id=%q version=%q support=%s path=%s minKernel=%q, want %q %q %s %s %q",
					d.ID, d.VersionID, d.Support, d.Path, d.MinKernel, tt.id, tt.version, tt.support, tt.path, tt.minKernel)
			}
			if tt.pretty != "" && d.PrettyName != tt.pretty {
				t.Errorf("PRETTY_NAME %q, want %q", d.PrettyName, tt.pretty)
			}
		})
	}
}

func TestParseOSReleaseQuoting(t *testing.T) {
	kv := ParseOSRelease([]byte("A=plain\nB=\"dq \\\"x\\\" \\$y \\\\ \\n\"\nC='sq \\n $z'\nD=esc\\ aped\nE=\"open\nF=a\"b c\"d\n"))
	want := map[string]string{"A": "plain", "B": `dq "x" $y \ \n`, "C": `sq \n $z`, "D": "esc aped", "F": "ab cd"}
	for k, v := range want {
		if kv[k] != v {
			t.Errorf("%s = %q, want %q", k, kv[k], v)
		}
	}
	if _, ok := kv["E"]; ok {
		t.Error("unterminated quote accepted")
	}
}

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
	}{
		{"7.9", "7.2", 1}, {"7.10", "7.9", 1}, {"8", "8.1", -1}, {"8.1", "8.1.0", 0}, {"9.0", "9", 0}, {"7.2.1511", "7.2", 1},
	}
	for _, tt := range tests {
		if got := compareVersions(tt.a, tt.b); got != tt.want {
			t.Errorf("compareVersions(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestWithPathOverride(t *testing.T) {
	d := Distro{ID: "debian", Support: SupportUnknown, Path: PathNone}
	for _, tt := range []struct {
		in   string
		want ADEPath
		cfg  bool
	}{{"", PathNone, false}, {"auto", PathNone, false}, {"unmount", PathUnmount, true}, {"online", PathOnline, true}} {
		got, err := d.WithPathOverride(tt.in)
		if err != nil || got.Path != tt.want || got.PathFromConfig != tt.cfg || got.Support != SupportUnknown {
			t.Errorf("override %q: %+v, %v", tt.in, got, err)
		}
	}
	if _, err := d.WithPathOverride("offline"); err == nil || !strings.Contains(err.Error(), "offline") {
		t.Errorf("bad path accepted: %v", err)
	}
}

func TestDistroProbe(t *testing.T) {
	tests := []struct {
		dir, want, mention string
	}{
		{"ubuntu-2204", "", ""},
		{"rhel-94", "", ""},
		{"sles-15", "distro.unsupported!", "data drives only"},
		{"rhel-68", "distro.unsupported!", "data drives only"},
		{"ubuntu-2210", "distro.unsupported!", "Ubuntu 16.04"},
		{"oracle-84", "distro.unsupported!", "Oracle Linux 8.5+"},
		{"debian-12", "distro.unsupported!", "encryption at host"},
		{"rocky-9", "distro.unsupported!", "ID_LIKE"},
		{"missing", "distro.unsupported!", "os-release"},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			keys, fs, err := runProbe(t, distroProbe{}, fixtureEnv(t, "distro", tt.dir))
			if err != nil {
				t.Fatal(err)
			}
			if keys != tt.want {
				t.Fatalf("keys %q, want %q", keys, tt.want)
			}
			if tt.mention != "" {
				text := fs[0].Title + " " + fs[0].Summary + " " + fs[0].Remediation.Hint
				if !strings.Contains(text, tt.mention) {
					t.Errorf("finding does not mention %q: %s", tt.mention, text)
				}
			}
		})
	}
}
