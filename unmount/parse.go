package unmount

import (
	"bufio"
	"bytes"
	"strconv"
	"strings"
)

// MapsEntry is the part of a /proc/PID/maps line the scanner needs.
type MapsEntry struct {
	Dev   Dev
	Inode uint64
	Path  []byte // aliases the input line
}

// ParseMapsLine parses one maps line:
//
//	7f2c4c000000-7f2c4c021000 r--p 00000000 fd:01 1234   /usr/lib/x.so (deleted)
//
// The device field is hex major:minor; the path may contain spaces and is kept whole.
func ParseMapsLine(line []byte) (MapsEntry, bool) {
	var e MapsEntry
	rest := line
	for range 3 { // address, perms, offset
		sp := bytes.IndexByte(rest, ' ')
		if sp <= 0 {
			return e, false
		}
		rest = rest[sp+1:]
	}
	sp := bytes.IndexByte(rest, ' ')
	if sp <= 0 {
		return e, false
	}
	colon := bytes.IndexByte(rest[:sp], ':')
	if colon <= 0 {
		return e, false
	}
	major, ok1 := parseHex(rest[:colon])
	minor, ok2 := parseHex(rest[colon+1 : sp])
	if !ok1 || !ok2 {
		return e, false
	}
	e.Dev = Dev{major, minor}
	rest = rest[sp+1:]
	i := 0
	for i < len(rest) && rest[i] >= '0' && rest[i] <= '9' {
		e.Inode = e.Inode*10 + uint64(rest[i]-'0')
		i++
	}
	if i == 0 || (i < len(rest) && rest[i] != ' ') {
		return e, false
	}
	e.Path = bytes.TrimLeft(rest[i:], " ")
	return e, true
}

func parseHex(b []byte) (uint32, bool) {
	if len(b) == 0 || len(b) > 8 {
		return 0, false
	}
	var v uint32
	for _, c := range b {
		switch {
		case c >= '0' && c <= '9':
			v = v<<4 | uint32(c-'0')
		case c >= 'a' && c <= 'f':
			v = v<<4 | uint32(c-'a'+10)
		case c >= 'A' && c <= 'F':
			v = v<<4 | uint32(c-'A'+10)
		default:
			return 0, false
		}
	}
	return v, true
}

// IOUringFiles is what an io_uring instance's fdinfo says about its registered files.
type IOUringFiles struct {
	Count int      // the "UserFiles:" count (slots, including empty ones)
	Paths []string // full paths the kernel printed (kernels since ~6.x print d_path)
	Named int      // entries shown without a full path: older kernels print only the file's name
}

// ParseIOUring reads the "UserFiles:" section of an io_uring fdinfo ("    0: /path", paths
// octal-escaped like mountinfo).
func ParseIOUring(fdinfo []byte) IOUringFiles {
	var out IOUringFiles
	in := false
	sc := bufio.NewScanner(bytes.NewReader(fdinfo))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	sc.Split(scanLines) // keeps a path's final \r
	for sc.Scan() {
		line := sc.Text()
		if n, ok := strings.CutPrefix(line, "UserFiles:"); ok {
			in = true
			out.Count, _ = strconv.Atoi(strings.TrimSpace(n))
			continue
		}
		if !in {
			continue
		}
		idx, path, ok := strings.Cut(strings.TrimLeft(line, " \t"), ": ")
		if !ok || idx == "" || strings.Trim(idx, "0123456789") != "" {
			break // the next section
		}
		if path = Unescape(path); strings.HasPrefix(path, "/") {
			out.Paths = append(out.Paths, path)
		} else if path != "" && path != "<none>" {
			out.Named++
		}
	}
	return out
}

// ParseIOUringFiles returns the registered file paths from an io_uring instance's fdinfo.
func ParseIOUringFiles(fdinfo []byte) []string { return ParseIOUring(fdinfo).Paths }

// Swap is one active swap area from /proc/swaps.
type Swap struct {
	Path string // unescaped file or device path
	Type string // "partition" or "file"
}

// ParseSwaps parses /proc/swaps. The header line is skipped; paths are octal-escaped.
func ParseSwaps(data []byte) []Swap {
	var out []Swap
	for i, line := range strings.Split(string(data), "\n") {
		f := kernelFields(line)
		if i == 0 && len(f) > 0 && f[0] == "Filename" {
			continue
		}
		if len(f) < 2 {
			continue
		}
		out = append(out, Swap{Path: Unescape(f[0]), Type: f[1]})
	}
	return out
}

// CgroupOwner is who a process belongs to, from its cgroup path.
type CgroupOwner struct {
	Path      string // the cgroup path used (v2 "0::" line, or v1 name=systemd)
	Unit      string // innermost systemd unit: x.service or x.scope
	Container string // runtime:id, e.g. "docker:3f2a…", when the cgroup is a container's
}

// ParseCgroup parses /proc/PID/cgroup (v1, v2 or hybrid) and attributes the process to a
// systemd unit and container. The systemd hierarchy is preferred: v1 "name=systemd", else
// the v2 "0::" line, else the first v1 line.
func ParseCgroup(data []byte) CgroupOwner {
	var v2, sd, first string
	for _, line := range strings.Split(string(data), "\n") {
		id, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		ctrl, path, ok := strings.Cut(rest, ":")
		if !ok || !strings.HasPrefix(path, "/") {
			continue
		}
		switch {
		case id == "0" && ctrl == "":
			v2 = path
		case ctrl == "name=systemd":
			sd = path
		case first == "":
			first = path
		}
	}
	path := sd
	if path == "" {
		path = v2
	}
	if path == "" {
		path = first
	}
	o := CgroupOwner{Path: path}
	elems := strings.Split(strings.Trim(path, "/"), "/")
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if o.Container == "" {
			if o.Container = containerOf(elems, i); o.Container != "" {
				// A unit below the container's cgroup is the container's own (systemd
				// inside the container), not a unit of the host.
				o.Unit = ""
			}
		}
		if o.Unit == "" && (strings.HasSuffix(e, ".service") || strings.HasSuffix(e, ".scope")) {
			o.Unit = e
		}
	}
	return o
}

// containerOf recognises the cgroup names container runtimes use.
func containerOf(elems []string, i int) string {
	e := elems[i]
	scoped := []struct{ prefix, runtime string }{
		{"docker-", "docker"},
		{"cri-containerd-", "containerd"},
		{"crio-", "cri-o"},
		{"libpod-", "podman"},
	}
	for _, s := range scoped {
		if id, ok := strings.CutPrefix(e, s.prefix); ok {
			if id, ok = strings.CutSuffix(id, ".scope"); ok && isContainerID(id) {
				return s.runtime + ":" + id
			}
		}
	}
	if i > 0 {
		switch parent := elems[i-1]; {
		case parent == "docker" && isContainerID(e):
			return "docker:" + e
		case parent == "lxc" || parent == "lxc.payload":
			return "lxc:" + e
		case strings.HasPrefix(parent, "kubepods") || strings.HasPrefix(parent, "pod"):
			if isContainerID(e) {
				return "kubernetes:" + e
			}
		}
	}
	if strings.HasPrefix(e, "lxc.payload.") {
		return "lxc:" + strings.TrimPrefix(e, "lxc.payload.")
	}
	if name, ok := strings.CutPrefix(e, "machine-"); ok && strings.HasSuffix(name, ".scope") {
		return "machine:" + strings.TrimSuffix(name, ".scope")
	}
	return ""
}

func isContainerID(s string) bool {
	if len(s) < 12 || len(s) > 128 {
		return false
	}
	for _, c := range s {
		if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// OverlayLayers returns the directories an overlay mount uses, from its superblock options:
// lowerdir (colon-separated), upperdir, workdir, and the lowerdir+/datadir+ forms of newer
// kernels.
//
// The kernel shows each value as the user gave it, octal-escaping ", \t\n\\"
// (seq_show_option), so a comma never separates inside a value. Once that is undone,
// lowerdir, upperdir and workdir carry overlayfs' own backslash escapes ("\:" for a colon
// in a lowerdir path, "\," and "\\"), while lowerdir+ and datadir+ are literal paths
// (ovl_mount_dir_noesc).
func OverlayLayers(superOpts string) []string {
	var layers []string
	for _, opt := range splitEscaped(superOpts, ',') {
		key, val, ok := strings.Cut(opt, "=")
		if !ok || val == "" {
			continue
		}
		val = Unescape(val)
		switch key {
		case "lowerdir":
			for _, l := range splitEscaped(val, ':') {
				if l != "" {
					layers = append(layers, unescapeOverlay(l))
				}
			}
		case "upperdir", "workdir":
			layers = append(layers, unescapeOverlay(val))
		case "lowerdir+", "datadir+":
			layers = append(layers, val)
		}
	}
	return layers
}

// splitEscaped splits s at sep, not counting a separator escaped with a backslash.
func splitEscaped(s string, sep byte) []string {
	var out []string
	start := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case sep:
			out = append(out, s[start:i])
			start = i + 1
		}
	}
	return append(out, s[start:])
}

// unescapeOverlay drops each backslash and keeps the byte after it, like the kernel's
// ovl_unescape (a trailing backslash is dropped).
func unescapeOverlay(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' {
			i++
			if i == len(s) {
				break
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// ParseNFSExports returns the exported paths from /proc/fs/nfsd/exports or
// /var/lib/nfs/etab ("path<TAB>client(options)"; comments start with #; paths are
// octal-escaped).
func ParseNFSExports(data []byte) []string {
	var paths []string
	seen := map[string]bool{}
	for _, line := range strings.Split(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		f := kernelFields(line)
		if len(f) == 0 {
			continue
		}
		p := Unescape(f[0])
		if strings.HasPrefix(p, "/") && !seen[p] {
			seen[p] = true
			paths = append(paths, p)
		}
	}
	return paths
}

// kernelFields splits a line of a /proc table at spaces and tabs, the only separators the
// kernel writes. Paths in these tables escape space, tab, newline and backslash but not
// other bytes strings.Fields would split at (\r, \v, \f, U+0085, U+00A0).
func kernelFields(line string) []string {
	return strings.FieldsFunc(line, func(r rune) bool { return r == ' ' || r == '\t' })
}

// ParseLoopBacking parses a loop device's sysfs backing_file ("/path" or "/path (deleted)").
func ParseLoopBacking(s string) (path string, deleted bool) {
	s = strings.TrimSuffix(s, "\n") // the kernel adds exactly one
	if p, ok := strings.CutSuffix(s, " (deleted)"); ok {
		return p, true
	}
	return s, false
}

var _ = strconv.Itoa
