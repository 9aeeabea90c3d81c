package selinux

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

const mountinfoWith = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
24 23 0:22 / /sys/fs/selinux rw,relatime shared:8 - selinuxfs selinuxfs rw
`

const mountinfoWithout = `22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
23 22 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
`

const rhelConfig = "\n# This file controls the state of SELinux on the system.\n# SELINUX= can take one of these three values:\n#     enforcing - SELinux security policy is enforced.\n#     permissive - SELinux prints warnings instead of enforcing.\n#     disabled - No SELinux policy is loaded.\nSELINUX=enforcing\r\n# SELINUXTYPE= can take one of these three values:\nSELINUXTYPE=targeted   \n\n\tnot=touched # trailing\n"

func write(t *testing.T, p, s string, mode os.FileMode) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(s), mode); err != nil {
		t.Fatal(err)
	}
}

// fixture makes a root with a mount table, an enforce file (enforce "" = none) and a config.
func fixture(t *testing.T, mountinfo, enforce, config string) (*FS, string) {
	t.Helper()
	dir := t.TempDir()
	write(t, filepath.Join(dir, "proc/self/mountinfo"), mountinfo, 0o644)
	if enforce != "" {
		write(t, filepath.Join(dir, "sys/fs/selinux/enforce"), enforce, 0o644)
	}
	if config != "" {
		write(t, filepath.Join(dir, "etc/selinux/config"), config, 0o644)
	}
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := New(root)
	if f.Magic != nil {
		t.Fatal("a fixture root must not be statfs-checked")
	}
	return f, dir
}

func TestStateAndSetEnforce(t *testing.T) {
	f, dir := fixture(t, mountinfoWith, "1\n", rhelConfig)
	s, err := f.State()
	if err != nil {
		t.Fatal(err)
	}
	if s.Mount != "/sys/fs/selinux" || s.Enforce != Enforcing || s.Config != "enforcing" {
		t.Fatalf("state = %+v", s)
	}
	if err := f.SetEnforce(Permissive); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(dir, "sys/fs/selinux/enforce"))
	if string(b) != "0" {
		t.Fatalf("enforce = %q", b)
	}
	if m, _ := f.Enforce(); m != Permissive {
		t.Fatalf("mode = %d", m)
	}
	if err := f.SetEnforce(7); err == nil {
		t.Fatal("invalid mode accepted")
	}
}

func TestNotMounted(t *testing.T) {
	f, dir := fixture(t, mountinfoWithout, "", "SELINUX=disabled\n")
	m, err := f.Enforce()
	if err != nil || m != Disabled {
		t.Fatalf("Enforce = %d, %v", m, err)
	}
	if err := f.SetEnforce(Permissive); !errors.Is(err, ErrNotMounted) {
		t.Fatalf("SetEnforce = %v, want ErrNotMounted", err)
	}
	// The pitfall of go-selinux: never create an enforce file anywhere.
	if _, err := os.Stat(filepath.Join(dir, "sys/fs/selinux/enforce")); !errors.Is(err, os.ErrNotExist) {
		t.Fatal("enforce file created")
	}
}

func TestMountedWithoutPolicy(t *testing.T) {
	f, _ := fixture(t, mountinfoWith, "", "")
	m, err := f.Enforce()
	if err != nil || m != Disabled {
		t.Fatalf("Enforce = %d, %v", m, err)
	}
	if err := f.SetEnforce(Permissive); err == nil {
		t.Fatal("SetEnforce created an enforce file")
	}
}

func TestMagicChecked(t *testing.T) {
	f, _ := fixture(t, mountinfoWith, "1", "")
	var asked string
	f.Magic = func(p string) error { asked = p; return errors.New("not selinuxfs") }
	if _, err := f.Enforce(); err == nil {
		t.Fatal("a failed magic check must be an error")
	}
	if asked != f.Root.Path("/sys/fs/selinux") {
		t.Fatalf("magic asked about %q", asked)
	}
	// The real check on a temp dir (tmpfs/ext4, never selinuxfs) says no.
	if err := StatfsMagic(t.TempDir()); err == nil {
		t.Fatal("a temp dir passed the SELINUX_MAGIC check")
	}
}

func TestSetConfigModePreservesBytes(t *testing.T) {
	f, dir := fixture(t, mountinfoWith, "1", rhelConfig)
	p := filepath.Join(dir, "etc/selinux/config")
	if err := os.Chmod(p, 0o640); err != nil {
		t.Fatal(err)
	}
	changed, err := f.SetConfigMode("permissive")
	if err != nil || !changed {
		t.Fatalf("SetConfigMode = %v, %v", changed, err)
	}
	b, _ := os.ReadFile(p)
	want := "\n# This file controls the state of SELinux on the system.\n# SELINUX= can take one of these three values:\n#     enforcing - SELinux security policy is enforced.\n#     permissive - SELinux prints warnings instead of enforcing.\n#     disabled - No SELinux policy is loaded.\nSELINUX=permissive\r\n# SELINUXTYPE= can take one of these three values:\nSELINUXTYPE=targeted   \n\n\tnot=touched # trailing\n"
	if string(b) != want {
		t.Fatalf("config =\n%q\nwant\n%q", b, want)
	}
	fi, _ := os.Stat(p)
	if fi.Mode().Perm() != 0o640 {
		t.Fatalf("mode = %v, want 0640", fi.Mode().Perm())
	}
	if v, _ := f.ConfigMode(); v != "permissive" {
		t.Fatalf("ConfigMode = %q", v)
	}
	// Same value again: no rewrite.
	if changed, err := f.SetConfigMode("permissive"); err != nil || changed {
		t.Fatalf("second SetConfigMode = %v, %v", changed, err)
	}
	// Back: byte-identical to the original.
	if _, err := f.SetConfigMode("enforcing"); err != nil {
		t.Fatal(err)
	}
	b, _ = os.ReadFile(p)
	if string(b) != rhelConfig {
		t.Fatalf("round trip changed the file:\n%q", b)
	}
	// No temp files left behind.
	ents, _ := os.ReadDir(filepath.Dir(p))
	if len(ents) != 1 {
		t.Fatalf("directory holds %d entries", len(ents))
	}
}

func TestConfigValueVariants(t *testing.T) {
	for _, tc := range []struct{ in, want, out string }{
		{"SELINUX=enforcing # boot mode\n", "enforcing", "SELINUX=permissive # boot mode\n"},
		{"  SELINUX=\"enforcing\"\n", "enforcing", "  SELINUX=permissive\n"},
		{"SELINUX=Permissive", "permissive", "SELINUX=permissive"},
		{"SELINUX=enforcing\nSELINUX=disabled\n", "disabled", "SELINUX=enforcing\nSELINUX=permissive\n"},
	} {
		f, dir := fixture(t, mountinfoWith, "1", tc.in)
		if v, _ := f.ConfigMode(); v != tc.want {
			t.Errorf("%q: ConfigMode = %q, want %q", tc.in, v, tc.want)
		}
		if _, err := f.SetConfigMode("permissive"); err != nil {
			t.Fatal(err)
		}
		b, _ := os.ReadFile(filepath.Join(dir, "etc/selinux/config"))
		if string(b) != tc.out {
			t.Errorf("%q: rewritten %q, want %q", tc.in, b, tc.out)
		}
	}
	f, _ := fixture(t, mountinfoWith, "1", "SELINUXTYPE=targeted\n")
	if _, err := f.SetConfigMode("permissive"); err == nil {
		t.Fatal("a config without SELINUX= was rewritten")
	}
	if _, err := f.SetConfigMode("bogus"); err == nil {
		t.Fatal("invalid value accepted")
	}
}
