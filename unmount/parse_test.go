package unmount

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseMapsLine(t *testing.T) {
	tests := []struct {
		name, line string
		ok         bool
		dev        Dev
		inode      uint64
		path       string
	}{
		{"file", "55f725597000-55f725599000 r--p 00000000 fe:00 247278                     /usr/bin/head",
			true, Dev{254, 0}, 247278, "/usr/bin/head"},
		{"anonymous", "7f1704000000-7f1704021000 rw-p 00000000 00:00 0 ",
			true, Dev{0, 0}, 0, ""},
		{"anonymous without trailing space", "7f1704000000-7f1704021000 rw-p 00000000 00:00 0",
			true, Dev{0, 0}, 0, ""},
		{"heap", "55f7267a4000-55f7267c5000 rw-p 00000000 00:00 0                          [heap]",
			true, Dev{0, 0}, 0, "[heap]"},
		{"vdso", "7ffd5e7f2000-7ffd5e7f4000 r-xp 00000000 00:00 0                          [vdso]",
			true, Dev{0, 0}, 0, "[vdso]"},
		{"space in path, newline escaped, deleted", // captured from this machine's kernel
			`7f1704021000-7f1704022000 r--s 00000000 fe:00 9978499                    /tmp/ovt/sp ace\012nl (deleted)`,
			true, Dev{254, 0}, 9978499, `/tmp/ovt/sp ace\012nl (deleted)`},
		{"nvme partition", "7f00 r--p 00000000 103:02 12 /x", true, Dev{0x103, 2}, 12, "/x"},
		{"dm minor > 255", "7f00 r--p 00000000 fd:1a0 12 /x", true, Dev{253, 416}, 12, "/x"},
		{"upper-case hex", "7f00 r--p 00000000 FD:0A 12 /x", true, Dev{253, 10}, 12, "/x"},
		{"large inode", "7f00 r--p 00000000 08:01 18446744073709551615 /x", true, Dev{8, 1}, 18446744073709551615, "/x"},
		{"empty", "", false, Dev{}, 0, ""},
		{"garbage", "garbage", false, Dev{}, 0, ""},
		{"no device", "7f00 r--p 00000000", false, Dev{}, 0, ""},
		{"device without colon", "7f00 r--p 00000000 0801 12 /x", false, Dev{}, 0, ""},
		{"device not hex", "7f00 r--p 00000000 0g:01 12 /x", false, Dev{}, 0, ""},
		{"empty major", "7f00 r--p 00000000 :01 12 /x", false, Dev{}, 0, ""},
		{"empty minor", "7f00 r--p 00000000 08: 12 /x", false, Dev{}, 0, ""},
		{"major too long", "7f00 r--p 00000000 123456789:01 12 /x", false, Dev{}, 0, ""},
		{"no inode", "7f00 r--p 00000000 08:01 ", false, Dev{}, 0, ""},
		{"inode not a number", "7f00 r--p 00000000 08:01 12a /x", false, Dev{}, 0, ""},
		{"double space before perms", "7f00  r--p 00000000 08:01 12 /x", false, Dev{}, 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ok := ParseMapsLine([]byte(tt.line))
			if ok != tt.ok {
				t.Fatalf("ok = %v, want %v (%+v)", ok, tt.ok, e)
			}
			if !ok {
				return
			}
			if e.Dev != tt.dev || e.Inode != tt.inode || string(e.Path) != tt.path {
				t.Errorf("got dev %v inode %d path %q, want %v %d %q", e.Dev, e.Inode, e.Path, tt.dev, tt.inode, tt.path)
			}
		})
	}
}

// fdinfoIOUring is an io_uring fdinfo as kernels since 6.14 print it: UserFiles lists full
// paths (seq_file_path, escaping " \t\n\\"), empty slots are left out, and the UserBufs
// section that follows uses the same "%5u: " prefix.
const fdinfoIOUring = "pos:\t0\nflags:\t02000002\nmnt_id:\t16\nino:\t1064\n" +
	"SqMask:\t0x3\nSqHead:\t0\nSqTail:\t0\nCachedSqHead:\t0\nCqMask:\t0x7\nCqHead:\t0\nCqTail:\t0\nCachedCqTail:\t0\n" +
	"SQEs:\t0\nCQEs:\t0\nSqThread:\t-1\nSqThreadCpu:\t-1\nSqTotalTime:\t0\nSqWorkTime:\t0\n" +
	"UserFiles:\t5\n" +
	"    0: /var/lib/mysql/ibdata1\n" +
	"    2: /data/my\\040file\\011tab\n" +
	"    3: socket:[12345]\n" +
	"    4: /var/log/x.log (deleted)\n" +
	"UserBufs:\t2\n" +
	"    0: 0x7f2c4c000000/4096\n" +
	"    1: 0x7f2c4c001000/4096\n" +
	"PollList:\nCqOverflowList:\n"

func TestParseIOUringFiles(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"full", fdinfoIOUring, []string{"/var/lib/mysql/ibdata1", "/data/my file\ttab", "/var/log/x.log (deleted)"}},
		{"no registered files", "SqThread:\t-1\nUserFiles:\t0\nUserBufs:\t0\nPollList:\n", nil},
		{"no UserFiles section (not an io_uring)", "pos:\t0\nflags:\t02\nmnt_id:\t15\n    0: /etc/passwd\n", nil},
		{"index column at five digits", "UserFiles:\t100001\n100000: /big/index\nUserBufs:\t0\n", []string{"/big/index"}},
		{"path containing colon-space", "UserFiles:\t1\n    0: /srv/a: b\nUserBufs:\t0\n", []string{"/srv/a: b"}},
		{"section at end of input", "UserFiles:\t1\n    7: /last", []string{"/last"}},
		{"path ending in a raw carriage return", "UserFiles:\t1\n    0: /x\r\nUserBufs:\t0\n", []string{"/x\r"}},
		{"empty", "", nil},
		// Before 6.14 the kernel printed only the dentry's inline name and "<none>" for
		// empty slots; there is no path to return.
		{"old kernel basenames", "UserFiles:\t3\n    0: ibdata1\n    1: <none>\n    2: x.log\nUserBufs:\t0\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseIOUringFiles([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseSwaps(t *testing.T) {
	const header = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
	in := header +
		"/dev/sda3                               partition\t8388604\t\t0\t\t-2\n" +
		"/swapfile                               file\t\t2097148\t\t1024\t\t-3\n" +
		"/mnt/swap\\040dir/swap\\011file             file\t\t1048572\t\t0\t\t-4\n" +
		"/var/swap\\040(deleted)                  file\t\t1048572\t\t0\t\t-5\n" +
		"/dev/dm-3                               partition\t4194300\t\t0\t\t-6\n" +
		// the kernel escapes only " \t\n\\": a non-breaking space or CR is written raw
		"/srv/no\u00a0break\rswap                    file\t\t1048572\t\t0\t\t-7\n"
	want := []Swap{
		{"/dev/sda3", "partition"},
		{"/swapfile", "file"},
		{"/mnt/swap dir/swap\tfile", "file"},
		{"/var/swap (deleted)", "file"},
		{"/dev/dm-3", "partition"},
		{"/srv/no\u00a0break\rswap", "file"},
	}
	if got := ParseSwaps([]byte(in)); !reflect.DeepEqual(got, want) {
		t.Errorf("got %q\nwant %q", got, want)
	}
	for _, empty := range []string{"", header, "\n\n", "garbage\n"} {
		if got := ParseSwaps([]byte(empty)); len(got) != 0 {
			t.Errorf("ParseSwaps(%q) = %q, want none", empty, got)
		}
	}
}

func TestParseCgroup(t *testing.T) {
	const id = "3f2a9c0d5e7b41a6b2c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"
	tests := []struct {
		name, in              string
		path, unit, container string
	}{
		{"v2 service", "0::/system.slice/docker.service\n", "/system.slice/docker.service", "docker.service", ""},
		{"v2 init.scope", "0::/init.scope\n", "/init.scope", "init.scope", ""},
		{"v2 user session", "0::/user.slice/user-1000.slice/session-3.scope\n",
			"/user.slice/user-1000.slice/session-3.scope", "session-3.scope", ""},
		{"v2 user manager service", "0::/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service\n",
			"/user.slice/user-1000.slice/user@1000.service/app.slice/dbus.service", "dbus.service", ""},
		{"v2 root (kernel thread)", "0::/\n", "/", "", ""},
		{"hybrid prefers name=systemd",
			"12:pids:/system.slice/mongod.service\n1:name=systemd:/system.slice/mongod.service\n0::/system.slice/mongod.service\n",
			"/system.slice/mongod.service", "mongod.service", ""},
		{"hybrid, this machine", "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/ad3e5dfd38b437e210e03da5e18d7ff9\n1:cpu:/\n0::/\n",
			"/", "", ""},
		{"pure v1 without name=systemd uses the first line",
			"11:memory:/system.slice/cassandra.service\n10:cpu,cpuacct:/system.slice/cassandra.service\n",
			"/system.slice/cassandra.service", "cassandra.service", ""},
		{"docker systemd driver", "0::/system.slice/docker-" + id + ".scope\n",
			"/system.slice/docker-" + id + ".scope", "docker-" + id + ".scope", "docker:" + id},
		{"docker cgroupfs driver", "0::/docker/" + id + "\n", "/docker/" + id, "", "docker:" + id},
		{"docker v1 cgroupfs driver", "12:pids:/docker/" + id + "\n1:name=systemd:/docker/" + id + "\n",
			"/docker/" + id, "", "docker:" + id},
		{"cri-containerd", "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-" + id + ".scope\n",
			"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1b2c3d4e_5f60_7182_93a4_b5c6d7e8f901.slice/cri-containerd-" + id + ".scope",
			"cri-containerd-" + id + ".scope", "containerd:" + id},
		{"cri-o", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-" + id + ".scope\n",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-" + id + ".scope",
			"crio-" + id + ".scope", "cri-o:" + id},
		{"cri-o conmon is not the container", "0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-conmon-" + id + ".scope\n",
			"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-podabc.slice/crio-conmon-" + id + ".scope",
			"crio-conmon-" + id + ".scope", ""},
		{"podman", "0::/machine.slice/libpod-" + id + ".scope/container\n",
			"/machine.slice/libpod-" + id + ".scope/container", "libpod-" + id + ".scope", "podman:" + id},
		{"podman conmon", "0::/machine.slice/libpod-conmon-" + id + ".scope\n",
			"/machine.slice/libpod-conmon-" + id + ".scope", "libpod-conmon-" + id + ".scope", ""},
		{"kubepods cgroupfs driver", "0::/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id + "\n",
			"/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id, "", "kubernetes:" + id},
		{"kubepods guaranteed cgroupfs driver", "0::/kubepods/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id + "\n",
			"/kubepods/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id, "", "kubernetes:" + id},
		{"lxc", "0::/lxc/web01\n", "/lxc/web01", "", "lxc:web01"},
		{"lxc 4 payload", "0::/lxc.payload.web01\n", "/lxc.payload.web01", "", "lxc:web01"},
		{"lxc monitor is not the container", "0::/lxc.monitor.web01\n", "/lxc.monitor.web01", "", ""},
		{"systemd-nspawn machine", "0::/machine.slice/machine-web01.scope\n",
			"/machine.slice/machine-web01.scope", "machine-web01.scope", "machine:web01"},
		{"libvirt qemu machine", "0::/machine.slice/machine-qemu\\x2d1\\x2dvm01.scope/libvirt/emulator\n",
			"/machine.slice/machine-qemu\\x2d1\\x2dvm01.scope/libvirt/emulator", "machine-qemu\\x2d1\\x2dvm01.scope", "machine:qemu\\x2d1\\x2dvm01"},
		{"short hex is not a container id", "0::/docker/abc123\n", "/docker/abc123", "", ""},
		{"upper-case hex is not a container id", "0::/docker/" + strings.ToUpper(id) + "\n", "/docker/" + strings.ToUpper(id), "", ""},
		{"path with colon", "0::/system.slice/foo:bar.service\n", "/system.slice/foo:bar.service", "foo:bar.service", ""},
		{"empty", "", "", "", ""},
		{"garbage", "garbage\n::\n1:x\n0::relative\n", "", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseCgroup([]byte(tt.in))
			want := CgroupOwner{Path: tt.path, Unit: tt.unit, Container: tt.container}
			if got != want {
				t.Errorf("got  %+v\nwant %+v", got, want)
			}
		})
	}
}

// A unit below a container's cgroup is the container's own systemd unit, not one of the
// host: reporting it would point the operator (and quiesce) at a host unit of that name.
// The owner is the container, and the unit is the host's scope around it, if any.
func TestParseCgroupUnitInsideContainer(t *testing.T) {
	const id = "3f2a9c0d5e7b41a6b2c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"
	tests := []struct{ name, in, unit, container string }{
		{"systemd in a docker container", "0::/system.slice/docker-" + id + ".scope/system.slice/nginx.service\n",
			"docker-" + id + ".scope", "docker:" + id},
		{"systemd in an lxc container", "0::/lxc.payload.web01/system.slice/ssh.service\n", "", "lxc:web01"},
		{"systemd in an nspawn machine", "0::/machine.slice/machine-web01.scope/payload/system.slice/cron.service\n",
			"machine-web01.scope", "machine:web01"},
		{"cgroupfs docker with systemd inside", "0::/docker/" + id + "/init.scope\n", "", "docker:" + id},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseCgroup([]byte(tt.in))
			if got.Unit != tt.unit || got.Container != tt.container {
				t.Errorf("got unit %q container %q, want %q %q", got.Unit, got.Container, tt.unit, tt.container)
			}
		})
	}
}

func TestOverlayLayers(t *testing.T) {
	tests := []struct {
		name, opts string
		want       []string
	}{
		{"docker overlay2", "rw,lowerdir=/var/lib/docker/overlay2/l/ABC:/var/lib/docker/overlay2/l/DEF:/var/lib/docker/overlay2/l/GHI," +
			"upperdir=/var/lib/docker/overlay2/0a1b/diff,workdir=/var/lib/docker/overlay2/0a1b/work,nouserxattr",
			[]string{"/var/lib/docker/overlay2/l/ABC", "/var/lib/docker/overlay2/l/DEF", "/var/lib/docker/overlay2/l/GHI",
				"/var/lib/docker/overlay2/0a1b/diff", "/var/lib/docker/overlay2/0a1b/work"}},
		{"read-only, one layer", "ro,lowerdir=/lower", []string{"/lower"}},
		{"data-only layers after ::", "ro,lowerdir=/l1:/l2::/data1::/data2,metacopy=on", []string{"/l1", "/l2", "/data1", "/data2"}},
		// Captured from this machine's kernel (6.18): mount -o 'lowerdir=/tmp/ovt/l a\:b:/tmp/ovt/l\,c,...'.
		// seq_show_option octal-escapes ", \t\n\\" in the value, so the user's "\:" shows as
		// "\134:" and "\," as "\134\054".
		{"kernel-escaped colon and comma", `rw,lowerdir=/tmp/ovt/l\040a\134:b:/tmp/ovt/l\134\054c,upperdir=/tmp/ovt/up,workdir=/tmp/ovt/work,uuid=on`,
			[]string{"/tmp/ovt/l a:b", "/tmp/ovt/l,c", "/tmp/ovt/up", "/tmp/ovt/work"}},
		// lowerdir+ and datadir+ are taken literally by the kernel (ovl_mount_dir_noesc): a
		// backslash in them is part of the path. Captured: lowerdir+=/tmp/ovt/back\sl and
		// lowerdir+=/tmp/ovt/l a:b.
		{"lowerdir+ literal", `rw,lowerdir+=/tmp/ovt/back\134sl,lowerdir+=/tmp/ovt/l\040a:b,upperdir=/tmp/ovt/up,workdir=/tmp/ovt/work`,
			[]string{`/tmp/ovt/back\sl`, "/tmp/ovt/l a:b", "/tmp/ovt/up", "/tmp/ovt/work"}},
		{"datadir+", "ro,lowerdir+=/l1,datadir+=/d1,metacopy=on,redirect_dir=follow", []string{"/l1", "/d1"}},
		// Escapes already undone (not the kernel's form, but what a config or a test writes).
		{"pre-unescaped backslash escapes", `rw,lowerdir=/a\:b:/c\,d:/e\\f,upperdir=/u\:1,workdir=/w`,
			[]string{"/a:b", "/c,d", `/e\f`, "/u:1", "/w"}},
		{"upperdir with escaped backslash", `rw,lowerdir=/l,upperdir=/u\134\134x,workdir=/w`, []string{"/l", `/u\x`, "/w"}},
		{"no overlay options", "rw,relatime,errors=remount-ro", nil},
		{"empty", "", nil},
		{"empty values", "rw,lowerdir=,upperdir=,workdir=", nil},
		{"key without value", "rw,lowerdir,upperdir", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := OverlayLayers(tt.opts); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("OverlayLayers(%q)\n got %q\nwant %q", tt.opts, got, tt.want)
			}
		})
	}
}

func TestParseNFSExports(t *testing.T) {
	tests := []struct {
		name, in string
		want     []string
	}{
		{"proc/fs/nfsd/exports", "# Version 1.1\n# Path Client(Flags) # IPs\n" +
			"/srv/nfs\t10.0.0.0/8(rw,root_squash,sync,wdelay,no_subtree_check,uuid=1c9b2f3a:4d5e6f70:8192a3b4:c5d6e7f8,sec=1)\n" +
			"/srv/nfs\t192.168.1.0/24(ro,root_squash,sync,wdelay,no_subtree_check,sec=1)\n" +
			"/export/my\\040share\t*(rw,insecure,no_root_squash,async,wdelay,no_subtree_check,sec=1)\n",
			[]string{"/srv/nfs", "/export/my share"}},
		{"etab", "/srv/nfs\t10.0.0.0/8(rw,sync,wdelay,hide,nocrossmnt,secure,root_squash,no_all_squash,no_subtree_check,secure_locks,acl,no_pnfs,anonuid=65534,anongid=65534,sec=sys,rw,secure,root_squash,no_all_squash)\n" +
			"/data/a\\011tab\t*(ro)\n",
			[]string{"/srv/nfs", "/data/a\ttab"}},
		{"raw non-breaking space and vertical tab in a path", "/srv/no\u00a0break\v1\t*(rw)\n", []string{"/srv/no\u00a0break\v1"}},
		{"header only", "# Version 1.1\n# Path Client(Flags) # IPs\n", nil},
		{"empty", "", nil},
		{"indented and blank lines", "\n   /srv/x\t*(rw)\n\t\n", []string{"/srv/x"}},
		{"not a path", "garbage here\n-\n", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := ParseNFSExports([]byte(tt.in)); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %q, want %q", got, tt.want)
			}
		})
	}
}

func TestParseLoopBacking(t *testing.T) {
	tests := []struct {
		in      string
		path    string
		deleted bool
	}{
		{"/var/lib/images/disk.img\n", "/var/lib/images/disk.img", false},
		{"/var/lib/images/disk.img", "/var/lib/images/disk.img", false},
		{"/var/lib/images/old.img (deleted)\n", "/var/lib/images/old.img", true},
		{"/srv/my disk.img\n", "/srv/my disk.img", false}, // sysfs does not escape
		{"/srv/(deleted)\n", "/srv/(deleted)", false},
		// The kernel appends exactly one newline; a name that ends in one keeps it.
		{"/srv/nl\n\n", "/srv/nl\n", false},
		{"", "", false},
	}
	for _, tt := range tests {
		p, d := ParseLoopBacking(tt.in)
		if p != tt.path || d != tt.deleted {
			t.Errorf("ParseLoopBacking(%q) = %q, %v; want %q, %v", tt.in, p, d, tt.path, tt.deleted)
		}
	}
}

func TestParseIOUringShortNames(t *testing.T) {
	// Kernels before d_path in io_uring's fdinfo print only the dentry name.
	old := []byte("SqMask:\t0x3\nUserFiles:\t2\n    0: f0\n    1: data.db\nUserBufs:\t0\n")
	got := ParseIOUring(old)
	if got.Count != 2 || got.Named != 2 || len(got.Paths) != 0 {
		t.Errorf("short names: %+v, want count 2, named 2, no paths", got)
	}
	cur := []byte("UserFiles:\t3\n    0: /mnt/x/f0\n    2: /srv/b\\040c\nUserBufs:\t0\n")
	got = ParseIOUring(cur)
	if got.Count != 3 || got.Named != 0 || len(got.Paths) != 2 || got.Paths[1] != "/srv/b c" {
		t.Errorf("full paths: %+v", got)
	}
}
