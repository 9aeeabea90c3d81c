package probes

import (
	"context"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

func TestMemoryProbe(t *testing.T) {
	tests := []struct {
		dir, want, mention string
		wantErr            bool
	}{
		{dir: "ubuntu-ok"},
		{dir: "online-ok"},
		{dir: "edge-7000000"},
		{dir: "edge-6999999", want: "memory.insufficient!", mention: "6,999,999 kB"},
		{dir: "small-ram", want: "memory.insufficient!", mention: "4,025,040 kB"},
		{dir: "small-ram-online", want: "memory.insufficient!"}, // ADE has no online exemption
		{dir: "debian-small", want: "memory.insufficient!"},
		{dir: "missing-meminfo", wantErr: true},
		{dir: "malformed-meminfo", wantErr: true},
		{dir: "no-memtotal", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			keys, fs, err := runProbe(t, memoryProbe{}, fixtureEnv(t, "memory", tt.dir))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if keys != tt.want {
				t.Fatalf("keys %q, want %q", keys, tt.want)
			}
			if tt.mention != "" && !strings.Contains(fs[0].Title+fs[0].Summary, tt.mention) {
				t.Errorf("finding does not show %q: %s / %s", tt.mention, fs[0].Title, fs[0].Summary)
			}
		})
	}
}

// tmpfsRoot builds an Ubuntu 22.04 root with MemTotal memKB and a file of size bytes of
// random (incompressible, non-sparse) data under var/lib/docker.
func tmpfsRoot(t *testing.T, memKB string, size int) string {
	t.Helper()
	dir := t.TempDir()
	src, err := os.ReadFile("testdata/distro/ubuntu-2204/etc/os-release")
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, size)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "etc/os-release"), src)
	write(t, filepath.Join(dir, "proc/meminfo"), []byte("MemTotal: "+memKB+" kB\n"))
	write(t, filepath.Join(dir, "var/lib/docker/overlay2/layer"), data)
	write(t, filepath.Join(dir, "opt/huge"), data) // /opt is not copied
	return dir
}

func write(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestMemoryTmpfsCopyTooBig(t *testing.T) {
	// 64 kB of RAM gives a 32 KiB tmpfs; 256 KiB under /var/lib cannot fit.
	env := dirEnv(t, tmpfsRoot(t, "64", 256<<10))
	keys, fs, err := runProbe(t, memoryProbe{}, env)
	if err != nil {
		t.Fatal(err)
	}
	if keys != "memory.insufficient! memory.tmpfs-copy!" {
		t.Fatalf("keys %q", keys)
	}
	var f api.Finding
	for _, x := range fs {
		if x.Key == "memory.tmpfs-copy" {
			f = x
		}
	}
	if !strings.Contains(f.Summary, "/var/lib/docker") || strings.Contains(f.Summary, "/opt") {
		t.Errorf("summary should name /var/lib/docker as largest and not count /opt: %s", f.Summary)
	}
	if len(f.Remediation.Commands) == 0 || f.Remediation.Commands[0][0] != "apt-get" {
		t.Errorf("want an apt-get clean command: %+v", f.Remediation)
	}

	// The same tree on a distribution with the online path is not copied anywhere.
	env.Distro.Path = PathOnline
	if keys, _, _ := runProbe(t, memoryProbe{}, env); keys != "memory.insufficient!" {
		t.Errorf("online path: keys %q", keys)
	}
}

func TestMemoryWalkBudget(t *testing.T) {
	env := dirEnv(t, tmpfsRoot(t, "16000000", 4096))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	m := measureTrees(ctx, env, stripdownTrees(env))
	if m.incomplete == nil {
		t.Fatal("cancelled walk claims to be complete")
	}
	// An exhausted budget with a total below the limit is "unknown", not clean.
	_, err := memoryProbe{budget: time.Nanosecond}.Run(context.Background(), env)
	if err == nil || !strings.Contains(err.Error(), "measure") {
		t.Errorf("want a measuring error, got %v", err)
	}
}

func TestMeasureTreesLinksAndSymlinks(t *testing.T) {
	dir := t.TempDir()
	data := make([]byte, 64<<10)
	if _, err := rand.Read(data); err != nil {
		t.Fatal(err)
	}
	write(t, filepath.Join(dir, "usr/bin/a"), data)
	if err := os.Link(filepath.Join(dir, "usr/bin/a"), filepath.Join(dir, "usr/bin/b")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("usr/bin", filepath.Join(dir, "bin")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/usr/bin/a", filepath.Join(dir, "usr/bin/c")); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(dir, "usr/bin/a"), &st); err != nil {
		t.Fatal(err)
	}
	env := dirEnv(t, dir)
	m := measureTrees(context.Background(), env, []string{"/bin", "/usr/bin", "/etc"})
	if m.incomplete != nil {
		t.Fatal(m.incomplete)
	}
	if want := int64(st.Blocks) * 512; m.total != want || m.files != 1 {
		t.Errorf("total %d in %d files, want %d in 1 (hard link once, symlinks not followed)", m.total, m.files, want)
	}
}

func TestTmpfsFindingThresholds(t *testing.T) {
	env := &Env{Distro: Distro{ID: "rhel", Path: PathUnmount}}
	const memKB = 8 << 20 // 8 GiB → 4 GiB tmpfs
	sizes := func(total int64) treeSizes {
		return treeSizes{total: total, children: map[string]int64{"/var/lib/mysql": total}}
	}
	if _, ok := tmpfsFinding(env, memKB, sizes(3<<30)); ok {
		t.Error("75% of the tmpfs reported")
	}
	f, ok := tmpfsFinding(env, memKB, sizes(7<<29)) // 3.5 GiB, 87%
	if !ok || f.Blocker || f.Severity != api.SeverityMedium {
		t.Errorf("87%%: %+v", f)
	}
	f, ok = tmpfsFinding(env, memKB, sizes(5<<30))
	if !ok || !f.Blocker || f.Severity != api.SeverityHigh || !strings.Contains(f.Summary, "/var/lib/mysql 5.0 GiB") {
		t.Errorf("125%%: %+v", f)
	}
	if f.Remediation.Commands[0][0] != "yum" || !strings.Contains(f.Remediation.Hint, "13 GiB") {
		t.Errorf("remediation: %+v", f.Remediation)
	}
}

func TestGroupDigitsAndHumanBytes(t *testing.T) {
	for in, want := range map[int64]string{0: "0", 999: "999", 1000: "1,000", 7000000: "7,000,000", -1234: "-1,234"} {
		if got := groupDigits(in); got != want {
			t.Errorf("groupDigits(%d) = %q", in, got)
		}
	}
	for in, want := range map[int64]string{512: "512 B", 2048: "2.0 KiB", 3 << 20: "3.0 MiB", 5 << 30: "5.0 GiB"} {
		if got := humanBytes(in); got != want {
			t.Errorf("humanBytes(%d) = %q", in, got)
		}
	}
}
