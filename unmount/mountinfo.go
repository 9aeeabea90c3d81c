package unmount

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Dev is a device number as the kernel shows it in mountinfo ("8:1").
type Dev struct{ Major, Minor uint32 }

func (d Dev) String() string { return fmt.Sprintf("%d:%d", d.Major, d.Minor) }

// DevFromStat splits a stat(2) st_dev / st_rdev into major and minor (glibc's encoding).
func DevFromStat(dev uint64) Dev {
	major := uint32((dev>>8)&0xfff) | uint32((dev>>32)&^0xfff)
	minor := uint32(dev&0xff) | uint32((dev>>12)&^0xff)
	return Dev{major, minor}
}

// ParseDev parses "maj:min".
func ParseDev(s string) (Dev, error) {
	maj, min, ok := strings.Cut(s, ":")
	if !ok {
		return Dev{}, fmt.Errorf("device %q: want major:minor", s)
	}
	a, err := strconv.ParseUint(maj, 10, 32)
	if err != nil {
		return Dev{}, fmt.Errorf("device %q: %w", s, err)
	}
	b, err := strconv.ParseUint(min, 10, 32)
	if err != nil {
		return Dev{}, fmt.Errorf("device %q: %w", s, err)
	}
	return Dev{uint32(a), uint32(b)}, nil
}

// Mount is one line of /proc/PID/mountinfo (proc(5)).
type Mount struct {
	ID         int
	ParentID   int
	Dev        Dev
	Root       string // root of the mount within the filesystem
	MountPoint string // unescaped
	Options    string // per-mount options
	Optional   []string
	FSType     string
	Source     string // unescaped
	SuperOpts  string // per-superblock options, still escaped as the kernel wrote them
}

// Shared reports whether the mount has shared propagation ("shared:N").
func (m *Mount) Shared() bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, "shared:") {
			return true
		}
	}
	return false
}

// ParseMountInfo parses a mountinfo file. Lines that do not parse are returned as an
// error naming the line; the kernel never writes them, so they mean a corrupt fixture.
func ParseMountInfo(r io.Reader) ([]Mount, error) {
	var mounts []Mount
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64*1024), 1<<20)
	sc.Split(scanLines)
	line := 0
	for sc.Scan() {
		line++
		text := sc.Bytes()
		if len(bytes.TrimSpace(text)) == 0 {
			continue
		}
		m, err := parseMountLine(string(text))
		if err != nil {
			return mounts, fmt.Errorf("mountinfo line %d: %w", line, err)
		}
		mounts = append(mounts, m)
	}
	if err := sc.Err(); err != nil {
		return mounts, fmt.Errorf("mountinfo line %d: %w", line+1, err)
	}
	return mounts, nil
}

// scanLines is bufio.ScanLines without dropping a carriage return before the newline: the
// kernel writes \r raw inside fields (it escapes only space, tab, newline and backslash),
// so it may end the last field of a line.
func scanLines(data []byte, atEOF bool) (advance int, token []byte, err error) {
	if i := bytes.IndexByte(data, '\n'); i >= 0 {
		return i + 1, data[:i], nil
	}
	if atEOF && len(data) > 0 {
		return len(data), data, nil
	}
	return 0, nil, nil
}

func parseMountLine(s string) (Mount, error) {
	// 36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue
	//
	// The kernel separates fields with exactly one space and escapes only space, tab,
	// newline and backslash inside them, so split at single spaces: other bytes that
	// strings.Fields takes for white space (\r, \v, \f, U+0085, U+00A0) are part of a path,
	// and an empty source ("tmpfs  rw", from mount -t tmpfs "" /mnt) is an empty field.
	fields := strings.Split(s, " ")
	sep := -1
	for i, f := range fields {
		if f == "-" && i >= 6 {
			sep = i
			break
		}
	}
	if sep < 0 || len(fields) < sep+3 {
		return Mount{}, fmt.Errorf("malformed line %q", s)
	}
	var m Mount
	var err error
	if m.ID, err = strconv.Atoi(fields[0]); err != nil {
		return Mount{}, fmt.Errorf("mount id %q: %w", fields[0], err)
	}
	if m.ParentID, err = strconv.Atoi(fields[1]); err != nil {
		return Mount{}, fmt.Errorf("parent id %q: %w", fields[1], err)
	}
	if m.Dev, err = ParseDev(fields[2]); err != nil {
		return Mount{}, err
	}
	m.Root = Unescape(fields[3])
	m.MountPoint = Unescape(fields[4])
	m.Options = fields[5]
	if sep > 6 {
		m.Optional = fields[6:sep]
	}
	m.FSType = fields[sep+1]
	m.Source = Unescape(fields[sep+2])
	if len(fields) > sep+3 {
		m.SuperOpts = fields[sep+3]
	}
	return m, nil
}

// Unescape undoes the kernel's octal escapes in mountinfo fields (`\040` for a space,
// `\011` tab, `\012` newline, `\134` backslash). Malformed escapes are kept literally.
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s))
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && isOctal(s, i+1) {
			v, _ := strconv.ParseUint(s[i+1:i+4], 8, 8)
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

func isOctal(s string, i int) bool {
	if i+3 > len(s) {
		return false
	}
	for _, c := range s[i : i+3] {
		if c < '0' || c > '7' {
			return false
		}
	}
	return s[i] <= '3' // \377 is the largest byte
}

// ReadMountInfo reads the mount table the root shows: proc/self/mountinfo, or
// proc/1/mountinfo where a fixture tree has no self.
func ReadMountInfo(root hostroot.Root) ([]Mount, error) {
	return readMountInfoFile(root, root.Proc("self", "mountinfo"), root.Proc("1", "mountinfo"))
}

func readMountInfoFile(_ hostroot.Root, paths ...string) ([]Mount, error) {
	var firstErr error
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			if firstErr == nil {
				firstErr = err
			}
			continue
		}
		defer f.Close()
		return ParseMountInfo(f)
	}
	return nil, fmt.Errorf("read mount table: %w", firstErr)
}

// MountFor returns the mount whose mount point is the longest prefix of path (an absolute
// path as seen in this mount table), preferring the last (topmost) of stacked mounts.
func MountFor(mounts []Mount, path string) (Mount, bool) {
	best, found := -1, false
	bestLen := -1
	for i := range mounts {
		mp := mounts[i].MountPoint
		if !pathWithin(path, mp) {
			continue
		}
		if len(mp) >= bestLen {
			best, bestLen, found = i, len(mp), true
		}
	}
	if !found {
		return Mount{}, false
	}
	return mounts[best], true
}

// pathWithin reports whether p is dir or below it.
func pathWithin(p, dir string) bool {
	if dir == "/" {
		return strings.HasPrefix(p, "/")
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}
