package probes

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// ADEPath is how ADE encrypts the OS drive on a distribution (research: ade_extension.md §1).
type ADEPath string

const (
	// PathUnmount: ADE strips the system down, pivots to a tmpfs root and unmounts the old
	// root (Ubuntu 14.04–22.04, RHEL/CentOS 7).
	PathUnmount ADEPath = "unmount"
	// PathOnline: ADE re-encrypts the root online after a reboot (RHEL 8.1+/9, Ubuntu
	// 23.10/24.04, Oracle 8.5+, Mariner 2/Azure Linux 3); nothing is unmounted.
	PathOnline ADEPath = "online"
	// PathNone: ADE cannot encrypt this distribution's OS drive (data-only or unknown).
	PathNone ADEPath = "none"
)

// Support is what ADE supports on a distribution.
type Support string

const (
	SupportOS       Support = "os"        // OS and data drives
	SupportDataOnly Support = "data-only" // data drives only
	// SupportNone: the distribution is in ADE's table, but not this version.
	SupportNone    Support = "none"
	SupportUnknown Support = "unknown" // not in ADE's table
)

// Distro is this machine's distribution as /etc/os-release describes it, and what ADE
// does with it.
type Distro struct {
	ID         string   // os-release ID, e.g. "ubuntu", "rhel"
	IDLike     []string // os-release ID_LIKE
	VersionID  string   // os-release VERSION_ID, e.g. "22.04"; CentOS: refined from centos-release
	PrettyName string   // os-release PRETTY_NAME
	Support    Support
	Path       ADEPath
	// PathFromConfig is true when ade.path in the configuration chose Path.
	PathFromConfig bool
	// Supported lists the versions of this distribution ADE encrypts the OS drive of
	// (for remediation text); empty for data-only and unknown distributions.
	Supported string
	// MinKernel is the oldest kernel ADE accepts on this version ("4.15" on Ubuntu 14.04).
	MinKernel string
}

// Name is a short human name: "Ubuntu 22.04.4 LTS", or "ubuntu 22.04" without PRETTY_NAME.
func (d Distro) Name() string {
	if d.PrettyName != "" {
		return d.PrettyName
	}
	if d.ID == "" {
		return "unknown distribution"
	}
	return strings.TrimSpace(d.ID + " " + d.VersionID)
}

// supportRow is one line of ADE's support table. Versions match ADE's way: the row's
// prefix is a prefix of VERSION_ID (at a dot boundary) and VERSION_ID ≥ min.
type supportRow struct {
	ids       []string // os-release IDs
	prefix    string
	min       string
	support   Support
	path      ADEPath
	minKernel string
}

// supportTable is SupportedOS.json of ADE 1.4.0.12 with the docs' "data disk only" column
// applied on top (research: ade_extension.md §2, services_selinux.md §7). RHEL 6.7/6.8 and
// CentOS 6.x have OS state machines in the extension but Microsoft supports them for data
// disks only; SLES and openSUSE have no OS path at all.
var supportTable = []supportRow{
	{ids: []string{"ubuntu"}, prefix: "14.04", support: SupportOS, path: PathUnmount, minKernel: "4.15"},
	{ids: []string{"ubuntu"}, prefix: "16.04", support: SupportOS, path: PathUnmount},
	{ids: []string{"ubuntu"}, prefix: "18.04", support: SupportOS, path: PathUnmount},
	{ids: []string{"ubuntu"}, prefix: "20.04", support: SupportOS, path: PathUnmount},
	{ids: []string{"ubuntu"}, prefix: "22.04", support: SupportOS, path: PathUnmount},
	{ids: []string{"ubuntu"}, prefix: "23.10", support: SupportOS, path: PathOnline},
	{ids: []string{"ubuntu"}, prefix: "24.04", support: SupportOS, path: PathOnline},
	{ids: []string{"rhel"}, prefix: "6", min: "6.7", support: SupportDataOnly, path: PathNone},
	{ids: []string{"rhel"}, prefix: "7", min: "7.2", support: SupportOS, path: PathUnmount},
	{ids: []string{"rhel"}, prefix: "8", min: "8.1", support: SupportOS, path: PathOnline},
	{ids: []string{"rhel"}, prefix: "9", min: "9.0", support: SupportOS, path: PathOnline},
	{ids: []string{"centos"}, prefix: "6", min: "6.8", support: SupportDataOnly, path: PathNone},
	{ids: []string{"centos"}, prefix: "7", min: "7.2", support: SupportOS, path: PathUnmount},
	{ids: []string{"centos"}, prefix: "8", min: "8.1", support: SupportOS, path: PathOnline},
	{ids: []string{"ol"}, prefix: "8", min: "8.5", support: SupportOS, path: PathOnline},
	{ids: []string{"mariner"}, prefix: "2", support: SupportOS, path: PathOnline},
	{ids: []string{"azurelinux"}, prefix: "3", support: SupportOS, path: PathOnline},
}

// dataOnlyIDs are distributions ADE supports for data drives only, whatever the version.
var dataOnlyIDs = map[string]bool{
	"sles": true, "sles_sap": true, "sle_hpc": true, "opensuse": true, "opensuse-leap": true,
}

// supportedList is the remediation text per ID: which versions ADE encrypts the OS of.
var supportedList = map[string]string{
	"ubuntu":     "Ubuntu 16.04, 18.04, 20.04, 22.04 (unmount path) or 23.10, 24.04 (online path)",
	"rhel":       "RHEL 7.2–7.9 (unmount path) or 8.1+ and 9.x (online path)",
	"centos":     "CentOS 7.2–7.9 (unmount path) or 8.1+ (online path)",
	"ol":         "Oracle Linux 8.5+ (online path)",
	"mariner":    "CBL-Mariner 2.0 (online path)",
	"azurelinux": "Azure Linux 3.0 (online path)",
}

// SupportedDistros is the human list of every distribution ADE encrypts the OS drive of.
const SupportedDistros = "Ubuntu 16.04–24.04 LTS, RHEL 7.2+/8.1+/9, CentOS 7.2+/8, Oracle Linux 8.5+, CBL-Mariner 2 and Azure Linux 3"

// LoadDistro reads etc/os-release (falling back to usr/lib/os-release) under root and
// classifies the distribution against ADE's support table. On error the returned Distro is
// still usable: Support unknown, Path none.
func LoadDistro(root hostroot.Root) (Distro, error) {
	unknown := Distro{Support: SupportUnknown, Path: PathNone}
	var data []byte
	var err error
	for _, p := range []string{"/etc/os-release", "/usr/lib/os-release"} {
		data, err = root.ReadFile(p)
		if err == nil {
			break
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return unknown, fmt.Errorf("read os-release: %w", err)
		}
	}
	if err != nil {
		return unknown, fmt.Errorf("no /etc/os-release or /usr/lib/os-release under %s", root.Dir())
	}
	kv := ParseOSRelease(data)
	d := Distro{
		ID:         strings.ToLower(kv["ID"]),
		IDLike:     strings.Fields(strings.ToLower(kv["ID_LIKE"])),
		VersionID:  kv["VERSION_ID"],
		PrettyName: kv["PRETTY_NAME"],
	}
	if d.ID == "" {
		d.ID = "linux" // os-release(5): the default when ID is absent
	}
	// CentOS 7's os-release says VERSION_ID="7"; ADE matches on the full release
	// ("7.9.2009") from /etc/centos-release, so refine from there when it is present.
	if d.ID == "centos" && !strings.Contains(d.VersionID, ".") {
		if b, err := root.ReadFile("/etc/centos-release"); err == nil {
			if v := releaseVersion(string(b)); strings.HasPrefix(v, d.VersionID+".") {
				d.VersionID = v
			}
		}
	}
	d.classify()
	return d, nil
}

// classify fills Support, Path, Supported and MinKernel from the support table.
func (d *Distro) classify() {
	d.Support, d.Path = SupportUnknown, PathNone
	d.Supported = supportedList[d.ID]
	if dataOnlyIDs[d.ID] || strings.HasPrefix(d.ID, "opensuse") {
		d.Support = SupportDataOnly
		return
	}
	known := false
	for _, r := range supportTable {
		if !contains(r.ids, d.ID) {
			continue
		}
		known = true
		if !versionHasPrefix(d.VersionID, r.prefix) {
			continue
		}
		if r.min != "" && compareVersions(d.VersionID, r.min) < 0 {
			continue
		}
		d.Support, d.Path, d.MinKernel = r.support, r.path, r.minKernel
		return
	}
	if known {
		d.Support = SupportNone
	}
}

// WithPathOverride applies the configuration's ade.path: "auto" (or "") keeps the table's
// path, "unmount" and "online" force it (for a distribution ADE's table does not know yet,
// or to check a VM against the other path).
func (d Distro) WithPathOverride(path string) (Distro, error) {
	switch path {
	case "", "auto":
		return d, nil
	case string(PathUnmount), string(PathOnline):
		d.Path = ADEPath(path)
		d.PathFromConfig = true
		return d, nil
	}
	return d, fmt.Errorf("ade.path %q: want auto, unmount or online", path)
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// versionHasPrefix reports whether v is prefix or starts with prefix followed by a dot.
func versionHasPrefix(v, prefix string) bool {
	return v == prefix || strings.HasPrefix(v, prefix+".")
}

// compareVersions compares dotted numeric versions ("7.10" > "7.9"); a missing component
// counts as 0 and a non-numeric one compares as text.
func compareVersions(a, b string) int {
	as, bs := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(as) || i < len(bs); i++ {
		x, y := "0", "0"
		if i < len(as) {
			x = as[i]
		}
		if i < len(bs) {
			y = bs[i]
		}
		xi, errx := strconv.Atoi(x)
		yi, erry := strconv.Atoi(y)
		switch {
		case errx == nil && erry == nil:
			if xi != yi {
				if xi < yi {
					return -1
				}
				return 1
			}
		case x != y:
			if x < y {
				return -1
			}
			return 1
		}
	}
	return 0
}

// releaseVersion finds the first dotted version in a *-release line
// ("CentOS Linux release 7.9.2009 (Core)" → "7.9.2009").
func releaseVersion(s string) string {
	for _, f := range strings.Fields(s) {
		if f != "" && f[0] >= '0' && f[0] <= '9' && strings.Contains(f, ".") {
			return f
		}
	}
	return ""
}

// ParseOSRelease parses os-release(5) text: KEY=VALUE lines, comments, and values quoted
// in shell style ("…" with \" \\ \$ \` escapes, '…' literal, or unquoted with backslash
// escapes). Lines that do not parse are skipped, as systemd does.
func ParseOSRelease(data []byte) map[string]string {
	kv := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok || !validKey(k) {
			continue
		}
		val, ok := unquoteShell(v)
		if !ok {
			continue
		}
		kv[k] = val
	}
	return kv
}

func validKey(k string) bool {
	if k == "" {
		return false
	}
	for i, c := range k {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquoteShell undoes the quoting os-release(5) allows. It reports false for unterminated
// quotes.
func unquoteShell(s string) (string, bool) {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch c {
		case '\'':
			end := strings.IndexByte(s[i+1:], '\'')
			if end < 0 {
				return "", false
			}
			b.WriteString(s[i+1 : i+1+end])
			i += end + 1
		case '"':
			i++
			closed := false
			for ; i < len(s); i++ {
				if s[i] == '"' {
					closed = true
					break
				}
				if s[i] == '\\' && i+1 < len(s) && strings.IndexByte("\"\\$`", s[i+1]) >= 0 {
					i++
				}
				b.WriteByte(s[i])
			}
			if !closed {
				return "", false
			}
		case '\\':
			if i+1 < len(s) {
				i++
				b.WriteByte(s[i])
			}
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), true
}
