package unmount

import (
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// mountinfoUbuntu is a real-looking Ubuntu 22.04 Azure VM mount table: root on sda1,
// /boot on sda16, /boot/efi on sda15, the resource disk sdb1 on /mnt, a data disk on
// /data, API filesystems, and a snap squashfs on a loop device.
const mountinfoUbuntu = `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
24 28 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4015496k,nr_inodes=1003874,mode=755,inode64
25 24 0:23 / /dev/pts rw,nosuid,noexec,relatime shared:3 - devpts devpts rw,gid=5,mode=620,ptmxmode=000
26 28 0:24 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=806352k,mode=755,inode64
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard,errors=remount-ro
29 22 0:6 / /sys/kernel/security rw,nosuid,nodev,noexec,relatime shared:8 - securityfs securityfs rw
30 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
60 28 7:0 / /snap/core20/2015 ro,nodev,relatime shared:31 - squashfs /dev/loop0 ro,errors=continue
95 28 8:16 / /boot rw,relatime shared:50 - ext4 /dev/sda16 rw
98 95 8:15 / /boot/efi rw,relatime shared:53 - vfat /dev/sda15 rw,fmask=0077,dmask=0077,codepage=437,iocharset=iso8859-1,shortname=mixed,errors=remount-ro
101 28 8:17 / /mnt rw,relatime shared:55 - ext4 /dev/sdb1 rw
104 28 8:33 / /data rw,relatime shared:57 - xfs /dev/sdc1 rw,attr2,inode64,logbufs=8,logbsize=32k,noquota
`

func mustParseMountInfo(t testing.TB, s string) []Mount {
	t.Helper()
	m, err := ParseMountInfo(strings.NewReader(s))
	if err != nil {
		t.Fatalf("ParseMountInfo: %v", err)
	}
	return m
}

func TestParseMountInfoFields(t *testing.T) {
	mounts := mustParseMountInfo(t, mountinfoUbuntu)
	if len(mounts) != 13 {
		t.Fatalf("got %d mounts, want 13", len(mounts))
	}
	want := Mount{
		ID: 98, ParentID: 95, Dev: Dev{8, 15}, Root: "/", MountPoint: "/boot/efi",
		Options: "rw,relatime", Optional: []string{"shared:53"}, FSType: "vfat", Source: "/dev/sda15",
		SuperOpts: "rw,fmask=0077,dmask=0077,codepage=437,iocharset=iso8859-1,shortname=mixed,errors=remount-ro",
	}
	if got := mounts[10]; !reflect.DeepEqual(got, want) {
		t.Errorf("line 11:\n got %+v\nwant %+v", got, want)
	}
	if !mounts[10].Shared() {
		t.Error("shared:53 mount not reported as shared")
	}
}

func TestParseMountInfoOptionalFields(t *testing.T) {
	tests := []struct {
		name, line string
		optional   []string
		shared     bool
	}{
		{"none", "36 35 98:0 /mnt1 /mnt2 rw,noatime - ext3 /dev/root rw,errors=continue", nil, false},
		{"one", "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue", []string{"master:1"}, false},
		{"several", "36 35 98:0 /mnt1 /mnt2 rw,noatime shared:4 master:1 propagate_from:2 unbindable - ext3 /dev/root rw",
			[]string{"shared:4", "master:1", "propagate_from:2", "unbindable"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := mustParseMountInfo(t, tt.line+"\n")[0]
			if !reflect.DeepEqual(m.Optional, tt.optional) {
				t.Errorf("Optional = %q, want %q", m.Optional, tt.optional)
			}
			if m.Shared() != tt.shared {
				t.Errorf("Shared() = %v, want %v", m.Shared(), tt.shared)
			}
			if m.Root != "/mnt1" || m.MountPoint != "/mnt2" || m.FSType != "ext3" || m.Source != "/dev/root" || m.Dev != (Dev{98, 0}) {
				t.Errorf("fields after the optional ones shifted: %+v", m)
			}
		})
	}
}

// The kernel escapes space, tab, newline and backslash in paths and sources (mangle /
// seq_path with " \t\n\\"); everything else, including other whitespace-like bytes, is
// written raw. Lines captured from this machine's kernel (6.18) in a private namespace.
func TestParseMountInfoEscapes(t *testing.T) {
	in := "40 28 0:50 /a\\040b /mnt/my\\040disk rw - ext4 /dev/disk/by-label/my\\040label rw\n" +
		"41 28 0:51 / /mnt/tab\\011x rw - tmpfs t rw\n" +
		"42 28 0:52 / /mnt/nl\\012x rw - tmpfs t rw\n" +
		"43 28 0:53 / /mnt/back\\134slash rw - tmpfs back\\134src rw\n" +
		"44 28 0:54 / /mnt/keep\\9literal rw - tmpfs t rw\n" +
		// unescaped whitespace-like bytes: carriage return, non-breaking space (UTF-8), NEL
		"45 28 0:55 / /mnt/cr\rx rw,relatime - tmpfs x rw\n" +
		"46 28 0:56 / /mnt/nb\u00a0sp rw,relatime - tmpfs src\\040with\\040space rw\n" +
		"47 28 0:57 / /mnt/nel\u0085x rw - tmpfs t rw\n" +
		"48 28 0:58 / /mnt/vt\vff\fx rw - tmpfs t rw\n"
	mounts := mustParseMountInfo(t, in)
	want := []struct{ root, mp, src, opts string }{
		{"/a b", "/mnt/my disk", "/dev/disk/by-label/my label", "rw"},
		{"/", "/mnt/tab\tx", "t", "rw"},
		{"/", "/mnt/nl\nx", "t", "rw"},
		{"/", `/mnt/back\slash`, `back\src`, "rw"},
		{"/", `/mnt/keep\9literal`, "t", "rw"},
		{"/", "/mnt/cr\rx", "x", "rw,relatime"},
		{"/", "/mnt/nb\u00a0sp", "src with space", "rw,relatime"},
		{"/", "/mnt/nel\u0085x", "t", "rw"},
		{"/", "/mnt/vt\vff\fx", "t", "rw"},
	}
	if len(mounts) != len(want) {
		t.Fatalf("got %d mounts, want %d", len(mounts), len(want))
	}
	for i, w := range want {
		m := mounts[i]
		if m.Root != w.root || m.MountPoint != w.mp || m.Source != w.src || m.Options != w.opts || m.SuperOpts != "rw" {
			t.Errorf("line %d: got root %q mp %q src %q opts %q super %q; want %q %q %q %q \"rw\"",
				i+1, m.Root, m.MountPoint, m.Source, m.Options, m.SuperOpts, w.root, w.mp, w.src, w.opts)
		}
	}
}

// `mount -t tmpfs "" /mnt` makes the kernel print an empty source: "tmpfs  rw" with two
// spaces. The source is empty; the super options are still "rw".
func TestParseMountInfoEmptySource(t *testing.T) {
	m := mustParseMountInfo(t, "63 43 0:39 / /tmp/ovt/m rw,relatime - tmpfs  rw\n")[0]
	if m.Source != "" || m.SuperOpts != "rw" || m.FSType != "tmpfs" {
		t.Errorf("got fstype %q source %q super %q, want tmpfs, \"\", rw", m.FSType, m.Source, m.SuperOpts)
	}
}

// seq_show_option does not escape \r, so a super option value may end the line with one.
func TestParseMountInfoCarriageReturnAtEndOfLine(t *testing.T) {
	m := mustParseMountInfo(t, "66 43 0:39 / /m rw - overlay ov rw,lowerdir=/l,upperdir=/u,workdir=/w\r\n")[0]
	if m.SuperOpts != "rw,lowerdir=/l,upperdir=/u,workdir=/w\r" {
		t.Errorf("SuperOpts = %q, want the final \\r kept", m.SuperOpts)
	}
}

func TestParseMountInfoMissingSuperOptions(t *testing.T) {
	m := mustParseMountInfo(t, "36 35 98:0 / /mnt rw - ext3 /dev/root\n")[0]
	if m.Source != "/dev/root" || m.SuperOpts != "" {
		t.Errorf("got source %q super %q", m.Source, m.SuperOpts)
	}
}

func TestParseMountInfoBlankLinesSkipped(t *testing.T) {
	mounts := mustParseMountInfo(t, "\n36 35 98:0 / /mnt rw - ext3 /dev/root rw\n\n   \n37 35 98:1 / /mnt2 rw - ext3 /dev/root2 rw")
	if len(mounts) != 2 || mounts[1].MountPoint != "/mnt2" {
		t.Errorf("got %+v", mounts)
	}
}

func TestParseMountInfoMalformed(t *testing.T) {
	good := "36 35 98:0 / /mnt rw - ext3 /dev/root rw\n"
	tests := []struct{ name, bad, errSub string }{
		{"garbage", "garbage line", "malformed"},
		{"no separator", "36 35 98:0 / /mnt rw ext3 /dev/root rw", "malformed"},
		{"separator too early", "36 35 98:0 / - ext3 /dev/root rw", "malformed"},
		{"no source after separator", "36 35 98:0 / /mnt rw - ext3", "malformed"},
		{"bad mount id", "x 35 98:0 / /mnt rw - ext3 /dev/root rw", "mount id"},
		{"bad parent id", "36 y 98:0 / /mnt rw - ext3 /dev/root rw", "parent id"},
		{"bad device", "36 35 98-0 / /mnt rw - ext3 /dev/root rw", "device"},
		{"device not decimal", "36 35 fd:1 / /mnt rw - ext3 /dev/root rw", "device"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			mounts, err := ParseMountInfo(strings.NewReader(good + good + tt.bad + "\n" + good))
			if err == nil {
				t.Fatalf("no error for %q", tt.bad)
			}
			if !strings.Contains(err.Error(), "line 3") || !strings.Contains(err.Error(), tt.errSub) {
				t.Errorf("error %q does not name line 3 and %q", err, tt.errSub)
			}
			if len(mounts) != 2 {
				t.Errorf("got %d mounts before the bad line, want 2", len(mounts))
			}
		})
	}
}

func TestParseMountInfoLongLines(t *testing.T) {
	// An overlay with 2000 long layers: ~240 KB, far beyond bufio's default 64 KiB token.
	// Anything up to 1 MiB must parse; beyond that the error names the line.
	var layers []string
	for i := range 2000 {
		layers = append(layers, "/var/lib/containerd/io.containerd.snapshotter.v1.overlayfs/snapshots/"+strings.Repeat("x", 40)+string(rune('a'+i%26))+"/fs")
	}
	opts := "rw,lowerdir=" + strings.Join(layers, ":") + ",upperdir=/u,workdir=/w"
	line := "900 28 0:99 / /run/c/rootfs rw,relatime - overlay overlay " + opts
	if len(line) < 200_000 {
		t.Fatalf("test line only %d bytes", len(line))
	}
	m := mustParseMountInfo(t, mountinfoUbuntu+line+"\n")
	if got := m[len(m)-1]; got.SuperOpts != opts || got.MountPoint != "/run/c/rootfs" {
		t.Errorf("long line parsed wrongly (super options %d bytes)", len(got.SuperOpts))
	}

	huge := "901 28 0:99 / /x rw - overlay overlay rw,lowerdir=" + strings.Repeat("/y", 600_000) + "\n"
	_, err := ParseMountInfo(strings.NewReader(mountinfoUbuntu + huge))
	if err == nil {
		t.Fatal("a 1.2 MB line parsed; want an error")
	}
	if !strings.Contains(err.Error(), "line 14") {
		t.Errorf("error %q does not name line 14", err)
	}
}

func TestUnescape(t *testing.T) {
	tests := []struct{ in, want string }{
		{"", ""},
		{"/plain/path", "/plain/path"},
		{`/a\040b`, "/a b"},
		{`/a\011b\012c`, "/a\tb\nc"},
		{`/a\134b`, `/a\b`},
		{`\040\040`, "  "},
		{`\377`, "\xff"},
		{`\000`, "\x00"},
		{`/a\9`, `/a\9`},                    // not octal
		{`/a\4`, `/a\4`},                    // truncated at the end
		{`/a\04`, `/a\04`},                  // truncated at the end
		{`/a\400`, `/a\400`},                // > 0377
		{`/a\08x`, `/a\08x`},                // 8 is not octal
		{`\`, `\`},                          // lone backslash
		{`a\\040`, `a\ `},                   // the first backslash is literal
		{`\1341`, `\1`},                     // exactly three digits
		{`/x\040(deleted)`, "/x (deleted)"}, // swap file that was deleted
	}
	for _, tt := range tests {
		if got := Unescape(tt.in); got != tt.want {
			t.Errorf("Unescape(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

func TestParseDev(t *testing.T) {
	good := map[string]Dev{"8:1": {8, 1}, "0:0": {0, 0}, "259:3": {259, 3}, "253:1048575": {253, 1048575}, "4294967295:1": {4294967295, 1}}
	for in, want := range good {
		got, err := ParseDev(in)
		if err != nil || got != want {
			t.Errorf("ParseDev(%q) = %v, %v; want %v", in, got, err, want)
		}
		if got.String() != in {
			t.Errorf("Dev(%q).String() = %q", in, got.String())
		}
	}
	for _, in := range []string{"", "8", "8:", ":1", "8:1:2", "fd:01", "-1:0", "8: 1", "4294967296:0", " 8:1"} {
		if d, err := ParseDev(in); err == nil {
			t.Errorf("ParseDev(%q) = %v, want an error", in, d)
		}
	}
}

func TestDevFromStat(t *testing.T) {
	tests := []struct {
		maj, min uint32
	}{{8, 1}, {0, 0}, {259, 0}, {253, 300}, {4095, 255}, {4096, 256}, {65535, 1048575}, {0xffffffff, 0xffffffff}}
	for _, tt := range tests {
		dev := unix.Mkdev(tt.maj, tt.min)
		if got := DevFromStat(dev); got != (Dev{tt.maj, tt.min}) {
			t.Errorf("DevFromStat(Mkdev(%d, %d) = %#x) = %v", tt.maj, tt.min, dev, got)
		}
	}
	r := rand.New(rand.NewPCG(1, 2))
	for range 10000 {
		dev := r.Uint64()
		got := DevFromStat(dev)
		if want := (Dev{unix.Major(dev), unix.Minor(dev)}); got != want {
			t.Fatalf("DevFromStat(%#x) = %v, unix says %v", dev, got, want)
		}
	}
	// The real thing: this test binary's own st_dev.
	var st unix.Stat_t
	if err := unix.Stat(os.Args[0], &st); err != nil {
		t.Fatal(err)
	}
	var stx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, os.Args[0], 0, unix.STATX_BASIC_STATS, &stx); err != nil {
		t.Skipf("statx: %v", err)
	}
	if got := DevFromStat(st.Dev); got != (Dev{stx.Dev_major, stx.Dev_minor}) {
		t.Errorf("DevFromStat(st_dev) = %v, statx says %d:%d", got, stx.Dev_major, stx.Dev_minor)
	}
}

func TestMountFor(t *testing.T) {
	table := mustParseMountInfo(t, mountinfoUbuntu+
		"200 104 8:49 / /data/nested rw - ext4 /dev/sdd1 rw\n"+
		"201 28 8:50 / /data2 rw - ext4 /dev/sdd2 rw\n"+
		// two mounts stacked on /srv: the later one hides the first
		"202 28 0:70 / /srv rw - tmpfs first rw\n"+
		"203 202 0:71 / /srv rw - tmpfs second rw\n")
	tests := []struct{ path, wantMP, wantSrc string }{
		{"/", "/", "/dev/sda1"},
		{"/etc/passwd", "/", "/dev/sda1"},
		{"/boot", "/boot", "/dev/sda16"},
		{"/boot/grub/grub.cfg", "/boot", "/dev/sda16"},
		{"/boot/efi/EFI/ubuntu", "/boot/efi", "/dev/sda15"},
		{"/bootx", "/", "/dev/sda1"},
		{"/data", "/data", "/dev/sdc1"},
		{"/data/", "/data", "/dev/sdc1"},
		{"/data/x", "/data", "/dev/sdc1"},
		{"/data2", "/data2", "/dev/sdd2"},
		{"/data2/x", "/data2", "/dev/sdd2"},
		{"/data20", "/", "/dev/sda1"},
		{"/data/nested/deep/file", "/data/nested", "/dev/sdd1"},
		{"/data/nestedx", "/data", "/dev/sdc1"},
		{"/srv/www", "/srv", "second"},
		{"/sys/fs/cgroup/x", "/sys/fs/cgroup", "cgroup2"},
	}
	for _, tt := range tests {
		m, ok := MountFor(table, tt.path)
		if !ok || m.MountPoint != tt.wantMP || m.Source != tt.wantSrc {
			t.Errorf("MountFor(%q) = %q from %q (%v), want %q from %q", tt.path, m.MountPoint, m.Source, ok, tt.wantMP, tt.wantSrc)
		}
	}
	if m, ok := MountFor(table, "relative/path"); ok {
		t.Errorf("MountFor(relative) = %q, want none", m.MountPoint)
	}
	noRoot := mustParseMountInfo(t, "1 0 8:33 / /data rw - xfs /dev/sdc1 rw\n")
	if m, ok := MountFor(noRoot, "/etc"); ok {
		t.Errorf("MountFor without a root mount = %q, want none", m.MountPoint)
	}
	if _, ok := MountFor(nil, "/"); ok {
		t.Error("MountFor(nil) found a mount")
	}
}

func TestReadMountInfo(t *testing.T) {
	dir := t.TempDir()
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadMountInfo(root); err == nil {
		t.Error("no mountinfo in the fixture, but no error")
	}
	// Only proc/1 (a fixture copied from another machine): used as the fallback.
	fxWriteFile(t, filepath.Join(dir, "proc/1/mountinfo"), "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n")
	m, err := ReadMountInfo(root)
	if err != nil || len(m) != 1 || m[0].Source != "/dev/sda1" {
		t.Fatalf("proc/1 fallback: %v, %+v", err, m)
	}
	// proc/self wins over proc/1.
	fxWriteFile(t, filepath.Join(dir, "proc/self/mountinfo"), "1 0 8:2 / / rw - ext4 /dev/sda2 rw\n")
	m, err = ReadMountInfo(root)
	if err != nil || len(m) != 1 || m[0].Source != "/dev/sda2" {
		t.Fatalf("proc/self: %v, %+v", err, m)
	}
	fxWriteFile(t, filepath.Join(dir, "proc/self/mountinfo"), "garbage\n")
	if _, err := ReadMountInfo(root); err == nil || !strings.Contains(err.Error(), "line 1") {
		t.Errorf("corrupt proc/self/mountinfo: err = %v", err)
	}
}

func fxWriteFile(t testing.TB, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}
