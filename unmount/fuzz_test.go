package unmount

import (
	"bytes"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// Fuzz tests: never panic, and the invariants the kernel formats give. The round-trip
// fuzzers write input the way the kernel does (octal escapes from seq_escape/mangle, the
// same separators) and check the parser returns what was written.

// kernelEscape octal-escapes every byte of s that is in chars, like the kernel's
// seq_escape / mangle (" \t\n\\" for paths).
func kernelEscape(s, chars string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if strings.IndexByte(chars, s[i]) >= 0 {
			fmt.Fprintf(&b, "\\%03o", s[i])
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

const pathEscapes = " \t\n\\"

// splitList turns one fuzz string into a list (NUL-separated): paths never contain NUL.
func splitList(s string) []string { return strings.Split(s, "\x00") }

func FuzzUnescape(f *testing.F) {
	for _, s := range []string{"", "/plain", `/a\040b`, `\134`, `/a\9`, `/a\4`, `\400`, `\0`, `\377\000`, "/x\\040(deleted)"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u := Unescape(s)
		if len(u) > len(s) {
			t.Errorf("Unescape(%q) = %q is longer", s, u)
		}
		if !strings.Contains(s, `\`) && u != s {
			t.Errorf("Unescape(%q) = %q, want identity without backslashes", s, u)
		}
		if got := Unescape(kernelEscape(s, pathEscapes)); got != s {
			t.Errorf("Unescape(escape(%q)) = %q", s, got)
		}
	})
}

func formatMount(m Mount) string {
	fields := []string{fmt.Sprint(m.ID), fmt.Sprint(m.ParentID), m.Dev.String(),
		kernelEscape(m.Root, pathEscapes), kernelEscape(m.MountPoint, pathEscapes), m.Options}
	fields = append(fields, m.Optional...)
	fields = append(fields, "-", m.FSType, kernelEscape(m.Source, pathEscapes), m.SuperOpts)
	return strings.Join(fields, " ")
}

func FuzzParseMountInfo(f *testing.F) {
	for _, s := range []string{mountinfoUbuntu, fxPlain.mountinfo, fxLVM.mountinfo, fxBtrfs.mountinfo, fxKernel.mountinfo,
		"63 43 0:39 / /tmp/ovt/m rw,relatime - tmpfs  rw\n",
		"46 28 0:56 / /mnt/nb\u00a0sp rw,relatime - tmpfs src\\040with\\040space rw\n",
		"36 35 98:0 /mnt1 /mnt2 rw,noatime shared:4 master:1 propagate_from:2 unbindable - ext3 /dev/root rw\n",
		"garbage\n", "1 2 3:4 / / rw - x\n"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		mounts, err := ParseMountInfo(strings.NewReader(s))
		if len(mounts) > strings.Count(s, "\n")+1 {
			t.Fatalf("%d mounts from %d lines", len(mounts), strings.Count(s, "\n")+1)
		}
		if err != nil {
			if !strings.Contains(err.Error(), "line ") {
				t.Errorf("error %q names no line", err)
			}
			return
		}
		// What parsed, written back the kernel's way, parses to the same thing.
		var b strings.Builder
		for _, m := range mounts {
			b.WriteString(formatMount(m) + "\n")
		}
		again, err := ParseMountInfo(strings.NewReader(b.String()))
		if err != nil {
			t.Fatalf("reparse of %q: %v", b.String(), err)
		}
		if !reflect.DeepEqual(again, mounts) {
			t.Errorf("reparse differs:\n%+v\n%+v", mounts, again)
		}
	})
}

// FuzzMountInfoRoundTrip writes one mountinfo line the way show_mountinfo does and parses it.
func FuzzMountInfoRoundTrip(f *testing.F) {
	f.Add(uint32(8), uint32(1), "/", "/", "/dev/sda1", "rw,errors=remount-ro", true)
	f.Add(uint32(259), uint32(3), "/a b", "/mnt/my disk\n", "", "rw", false)
	f.Add(uint32(0), uint32(30), "/@home", "/home", "/dev/mapper/x", "rw,lowerdir=/a\\134:b", true)
	f.Add(uint32(4095), uint32(1048575), "/x\u00a0y", "/cr\rx", "src\\x", "rw", false)
	f.Fuzz(func(t *testing.T, maj, min uint32, root, mp, source, superOpts string, shared bool) {
		superOpts = kernelEscape(superOpts, pathEscapes) // seq_show_option escapes these in values
		want := Mount{ID: 42, ParentID: 7, Dev: Dev{maj, min}, Root: root, MountPoint: mp, Options: "rw,relatime",
			FSType: "ext4", Source: source, SuperOpts: superOpts}
		if shared {
			want.Optional = []string{"shared:1", "master:3"}
		}
		line := formatMount(want)
		got, err := ParseMountInfo(strings.NewReader(line + "\n"))
		if err != nil {
			t.Fatalf("ParseMountInfo(%q): %v", line, err)
		}
		if len(got) != 1 || !reflect.DeepEqual(got[0], want) {
			t.Errorf("line %q\n got %+v\nwant %+v", line, got, want)
		}
	})
}

func FuzzParseMapsLine(f *testing.F) {
	for _, s := range []string{
		"55f725597000-55f725599000 r--p 00000000 fe:00 247278                     /usr/bin/head",
		"7f1704000000-7f1704021000 rw-p 00000000 00:00 0 ",
		"55f7267a4000-55f7267c5000 rw-p 00000000 00:00 0                          [heap]",
		`7f1704021000-7f1704022000 r--s 00000000 fe:00 9978499                    /tmp/ovt/sp ace\012nl (deleted)`,
		"7f00 r--p 00000000 fd:1a0 12 /x", "7f00 r--p 00000000 103:02 12 /x", "garbage",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		e, ok := ParseMapsLine(line)
		if !ok {
			return
		}
		if !bytes.HasSuffix(line, e.Path) {
			t.Errorf("Path %q is not the end of the line %q", e.Path, line)
		}
		if len(e.Path) > 0 && e.Path[0] == ' ' {
			t.Errorf("Path %q starts with a space", e.Path)
		}
		again, ok := ParseMapsLine(fmt.Appendf(nil, "0-1 r--p 0 %x:%x %d %s", e.Dev.Major, e.Dev.Minor, e.Inode, e.Path))
		if !ok || again.Dev != e.Dev || again.Inode != e.Inode || !bytes.Equal(again.Path, e.Path) {
			t.Errorf("reformatted line parses to %+v, %v; want %+v", again, ok, e)
		}
	})
}

// FuzzMapsRoundTrip formats a line like show_map_vma and checks dev, inode and path come back.
func FuzzMapsRoundTrip(f *testing.F) {
	f.Add(uint32(8), uint32(1), uint64(1234), "/usr/lib/x.so (deleted)")
	f.Add(uint32(0), uint32(0), uint64(0), "")
	f.Add(uint32(0x103), uint32(0x1a0), uint64(1)<<63, "[vdso]")
	f.Add(uint32(0xfff), uint32(0xfffff), uint64(99), "/a b\\012c")
	f.Fuzz(func(t *testing.T, maj, min uint32, inode uint64, path string) {
		line := fmt.Sprintf("7f2c4c000000-7f2c4c021000 r--p 00000000 %02x:%02x %d ", maj, min, inode)
		if path != "" {
			line += strings.Repeat(" ", max(1, 73-len(line))) + path
		}
		e, ok := ParseMapsLine([]byte(line))
		if !ok {
			t.Fatalf("ParseMapsLine(%q) failed", line)
		}
		if e.Dev != (Dev{maj, min}) || e.Inode != inode || string(e.Path) != strings.TrimLeft(path, " ") {
			t.Errorf("ParseMapsLine(%q) = %v %d %q", line, e.Dev, e.Inode, e.Path)
		}
	})
}

func FuzzParseIOUringFiles(f *testing.F) {
	f.Add([]byte(fdinfoIOUring), "/var/lib/mysql/ibdata1\x00/data/my file\x00relative")
	f.Add([]byte("UserFiles:\t3\n    0: ibdata1\n    1: <none>\nUserBufs:\t0\n"), "/a: b\x00/x\ty\x00/nl\nx")
	f.Add([]byte(""), "")
	f.Fuzz(func(t *testing.T, fdinfo []byte, list string) {
		for _, p := range ParseIOUringFiles(fdinfo) {
			if !strings.HasPrefix(p, "/") {
				t.Errorf("returned %q, not an absolute path", p)
			}
		}
		// Round trip: the kernel's UserFiles section (seq_file_path with " \t\n\\"),
		// followed by UserBufs.
		var want []string
		var b strings.Builder
		b.WriteString("SqThread:\t-1\nSqThreadCpu:\t-1\nUserFiles:\t9\n")
		for i, p := range splitList(list) {
			if !strings.HasPrefix(p, "/") {
				continue
			}
			want = append(want, p)
			fmt.Fprintf(&b, "%5d: %s\n", i, kernelEscape(p, pathEscapes))
		}
		b.WriteString("UserBufs:\t1\n    0: 0x7f2c4c000000/4096\nPollList:\n")
		if got := ParseIOUringFiles([]byte(b.String())); !reflect.DeepEqual(got, want) {
			t.Errorf("fdinfo %q\n got %q\nwant %q", b.String(), got, want)
		}
	})
}

func FuzzParseSwaps(f *testing.F) {
	f.Add([]byte(fxKernel.files["/proc/swaps"]), "/swapfile\x00/dev/sda3")
	f.Add([]byte(""), "/my swap\x00/x\u00a0y")
	f.Add([]byte("Filename\tType\n\n"), "")
	f.Fuzz(func(t *testing.T, data []byte, list string) {
		for _, s := range ParseSwaps(data) {
			if s.Path == "" || s.Type == "" {
				t.Errorf("empty field in %+v", s)
			}
		}
		// Round trip: swap_show writes the escaped path, pads to 40 columns with spaces,
		// then the type and numbers separated by tabs.
		var want []Swap
		var b strings.Builder
		b.WriteString("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n")
		for i, p := range splitList(list) {
			if p == "" {
				continue
			}
			typ := "file"
			if i%2 == 1 {
				typ = "partition"
			}
			want = append(want, Swap{Path: p, Type: typ})
			e := kernelEscape(p, pathEscapes)
			fmt.Fprintf(&b, "%s%s%s\t%d\t%s%d\t%s%d\n", e, strings.Repeat(" ", max(1, 40-len(e))), typ, 1048572, "\t", 0, "\t", -2-i)
		}
		if got := ParseSwaps([]byte(b.String())); !reflect.DeepEqual(got, want) {
			t.Errorf("swaps %q\n got %q\nwant %q", b.String(), got, want)
		}
	})
}

func FuzzParseCgroup(f *testing.F) {
	const id = "3f2a9c0d5e7b41a6b2c8d9e0f1a2b3c4d5e6f708192a3b4c5d6e7f8091a2b3c4"
	for _, s := range []string{"0::/system.slice/docker.service\n",
		"12:pids:/system.slice/mongod.service\n1:name=systemd:/system.slice/mongod.service\n0::/system.slice/mongod.service\n",
		"0::/system.slice/docker-" + id + ".scope/system.slice/nginx.service\n",
		"0::/kubepods/burstable/pod1b2c3d4e-5f60-7182-93a4-b5c6d7e8f901/" + id + "\n",
		"0::/lxc.payload.web01/system.slice/ssh.service\n", "0::/\n", "", "::\n1:x\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		o := ParseCgroup(data)
		if o.Path != "" && !strings.HasPrefix(o.Path, "/") {
			t.Errorf("Path %q is not absolute", o.Path)
		}
		if o.Path != "" && !strings.Contains(string(data), ":"+o.Path) {
			t.Errorf("Path %q is not one of the input's paths", o.Path)
		}
		elems := strings.Split(o.Path, "/")
		if o.Unit != "" {
			if !strings.HasSuffix(o.Unit, ".service") && !strings.HasSuffix(o.Unit, ".scope") {
				t.Errorf("Unit %q is not a service or scope", o.Unit)
			}
			found := false
			for _, e := range elems {
				found = found || e == o.Unit
			}
			if !found {
				t.Errorf("Unit %q is not an element of %q", o.Unit, o.Path)
			}
		}
		if o.Container != "" {
			runtime, cid, ok := strings.Cut(o.Container, ":")
			if !ok || runtime == "" || cid == "" {
				t.Errorf("Container %q is not runtime:id", o.Container)
			}
		}
	})
}

// userEscapeLowerdir escapes a path for overlayfs' lowerdir option the way a user must:
// backslash, colon and comma get a backslash.
func userEscapeLowerdir(p string) string {
	r := strings.NewReplacer(`\`, `\\`, `:`, `\:`, `,`, `\,`)
	return r.Replace(p)
}

const optionEscapes = ", \t\n\\" // seq_show_option's escapes in a value

func FuzzOverlayLayers(f *testing.F) {
	f.Add("rw,lowerdir=/l1:/l2::/d1,upperdir=/u,workdir=/w", "/var/lib/docker/l/A\x00/x:y\x00/c,d", "/up\\per", "/lower plus")
	f.Add(`rw,lowerdir=/tmp/ovt/l\040a\134:b:/tmp/ovt/l\134\054c,upperdir=/tmp/ovt/up,workdir=/tmp/ovt/work,uuid=on`, "/a", "/u", `/back\sl`)
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, opts, lowers, upper, plus string) {
		for _, l := range OverlayLayers(opts) {
			if l == "" {
				t.Errorf("OverlayLayers(%q) returned an empty layer", opts)
			}
		}
		var lower, want []string
		for _, l := range splitList(lowers) {
			if l != "" {
				lower = append(lower, userEscapeLowerdir(l))
				want = append(want, l)
			}
		}
		var b strings.Builder
		b.WriteString("rw")
		if len(lower) > 0 {
			b.WriteString(",lowerdir=" + kernelEscape(strings.Join(lower, ":"), optionEscapes))
		}
		if plus != "" {
			b.WriteString(",lowerdir+=" + kernelEscape(plus, optionEscapes)) // taken literally
			want = append(want, plus)
		}
		if upper != "" {
			// upperdir and workdir are unescaped by the kernel like lowerdir entries
			b.WriteString(",upperdir=" + kernelEscape(userEscapeLowerdir(upper), optionEscapes))
			b.WriteString(",workdir=" + kernelEscape(userEscapeLowerdir(upper+".work"), optionEscapes))
			want = append(want, upper, upper+".work")
		}
		b.WriteString(",index=off")
		if got := OverlayLayers(b.String()); !reflect.DeepEqual(got, want) {
			t.Errorf("OverlayLayers(%q)\n got %q\nwant %q", b.String(), got, want)
		}
	})
}

func FuzzParseNFSExports(f *testing.F) {
	f.Add([]byte(fxKernel.files["/proc/fs/nfsd/exports"]), "/srv/nfs\x00/srv/nfs\x00/my share")
	f.Add([]byte("/srv/nfs\t10.0.0.0/8(rw,sync)\n/data/a\\011tab\t*(ro)\n"), "/x\u00a0y")
	f.Add([]byte(""), "")
	f.Fuzz(func(t *testing.T, data []byte, list string) {
		seen := map[string]bool{}
		for _, p := range ParseNFSExports(data) {
			if !strings.HasPrefix(p, "/") || seen[p] {
				t.Errorf("returned %q: not absolute or a duplicate", p)
			}
			seen[p] = true
		}
		// Round trip: e_show writes the escaped path, a tab, then client(options); a path
		// exported to several clients appears once per client.
		var want []string
		seen = map[string]bool{}
		var b strings.Builder
		b.WriteString("# Version 1.1\n# Path Client(Flags) # IPs\n")
		for _, p := range splitList(list) {
			if !strings.HasPrefix(p, "/") {
				continue
			}
			if !seen[p] {
				seen[p] = true
				want = append(want, p)
			}
			fmt.Fprintf(&b, "%s\t10.0.0.0/8(rw,root_squash,sync,wdelay,no_subtree_check,sec=1)\n", kernelEscape(p, pathEscapes))
		}
		if got := ParseNFSExports([]byte(b.String())); !reflect.DeepEqual(got, want) {
			t.Errorf("exports %q\n got %q\nwant %q", b.String(), got, want)
		}
	})
}

func FuzzParseLoopBacking(f *testing.F) {
	f.Add("/var/lib/images/disk.img", false)
	f.Add("/srv/old.img", true)
	f.Add("/srv/nl\n", false)
	f.Fuzz(func(t *testing.T, path string, deleted bool) {
		if path == "" {
			return
		}
		if strings.HasSuffix(path, " (deleted)") {
			t.Skip("ambiguous: a live file named like a deleted one")
		}
		s := path
		if deleted {
			s += " (deleted)"
		}
		p, d := ParseLoopBacking(s + "\n")
		if p != path || d != deleted {
			t.Errorf("ParseLoopBacking(%q) = %q, %v; want %q, %v", s+"\n", p, d, path, deleted)
		}
	})
}

func FuzzDevFromStat(f *testing.F) {
	f.Add(uint64(0x801))
	f.Add(unix.Mkdev(259, 3))
	f.Add(unix.Mkdev(0xffffffff, 0xffffffff))
	f.Fuzz(func(t *testing.T, dev uint64) {
		if got, want := DevFromStat(dev), (Dev{unix.Major(dev), unix.Minor(dev)}); got != want {
			t.Errorf("DevFromStat(%#x) = %v, unix says %v", dev, got, want)
		}
	})
}
