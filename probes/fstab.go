package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// fstabProbe checks the data disks against /etc/fstab. Microsoft's ADE overview
// (research services_selinux.md §7, ade_extension.md §2 "fstab and data disks"): data
// disks must be listed in /etc/fstab with "nofail" and a persistent name (UUID), and
// "mount -a" must work; ADE moves those entries into its own configuration.
//
// A data disk is a mounted block-device filesystem that is not on the OS disk (the disk
// under /, through LVM/dm-crypt slaves) and is not the resource disk (/mnt, /mnt/resource
// or waagent.conf's ResourceDisk.MountPoint) or ADE's BEK volume.
type fstabProbe struct{}

func (fstabProbe) Name() string { return "fstab" }

const fstabFile = "/etc/fstab"

// fstabEntry is one line of /etc/fstab (fstab(5)), fields unescaped.
type fstabEntry struct {
	Spec, File, Type, Opts string
	Line                   int
}

// parseFstab parses fstab text: comments and blank lines are skipped, fields are split
// on spaces and tabs, octal escapes (\040) are undone. Lines with fewer than two fields
// are returned as malformed.
func parseFstab(data string) (entries []fstabEntry, malformed []int) {
	for i, line := range strings.Split(data, "\n") {
		t := strings.TrimSpace(line)
		if t == "" || t[0] == '#' {
			continue
		}
		f := strings.Fields(t)
		if len(f) < 2 {
			malformed = append(malformed, i+1)
			continue
		}
		e := fstabEntry{Spec: unmount.Unescape(f[0]), File: unmount.Unescape(f[1]), Opts: "defaults", Line: i + 1}
		if len(f) > 2 {
			e.Type = f[2]
		}
		if len(f) > 3 {
			e.Opts = f[3]
		}
		if e.File != "/" && e.File != "none" {
			e.File = strings.TrimRight(e.File, "/")
		}
		entries = append(entries, e)
	}
	return entries, malformed
}

func (e fstabEntry) hasOpt(names ...string) bool {
	for o := range strings.SplitSeq(e.Opts, ",") {
		for _, n := range names {
			if o == n {
				return true
			}
		}
	}
	return false
}

// fstabUnstable matches kernel names that can change between boots.
var fstabUnstable = regexp.MustCompile(`^/dev/(sd[a-z]+|vd[a-z]+|xvd[a-z]+|hd[a-z]+|nvme\d+n\d+)(p?\d+)?$`)

// fstabDiskMap maps maj:min of every disk, partition and dm device to the disks under it.
type fstabDiskMap struct {
	disksOf map[string][]string // maj:min → disks
	nameOf  map[string]string   // maj:min → kernel name
}

func readFstabDiskMap(root hostroot.Root) fstabDiskMap {
	m := fstabDiskMap{disksOf: map[string][]string{}, nameOf: map[string]string{}}
	entries, err := os.ReadDir(root.Sys("block"))
	if err != nil {
		return m
	}
	slaves := map[string][]string{} // dm kernel name → slaves
	devOf := map[string]string{}    // kernel name → maj:min
	for _, e := range entries {
		name := e.Name()
		dev := encReadTrim(root.Sys("block", name, "dev"))
		if dev == "" {
			continue
		}
		devOf[name] = dev
		m.nameOf[dev] = name
		if sl, err := os.ReadDir(root.Sys("block", name, "slaves")); err == nil && len(sl) > 0 {
			for _, s := range sl {
				slaves[name] = append(slaves[name], s.Name())
			}
			continue
		}
		m.disksOf[dev] = []string{name}
		parts, _ := os.ReadDir(root.Sys("block", name))
		for _, p := range parts {
			if !strings.HasPrefix(p.Name(), name) {
				continue
			}
			if pdev := encReadTrim(root.Sys("block", name, p.Name(), "dev")); pdev != "" {
				m.disksOf[pdev] = []string{name}
				m.nameOf[pdev] = p.Name()
				devOf[p.Name()] = pdev
			}
		}
	}
	// Resolve dm devices through their slaves to disks.
	var resolve func(name string, depth int) []string
	resolve = func(name string, depth int) []string {
		if depth > 16 {
			return nil
		}
		if sl, ok := slaves[name]; ok {
			var out []string
			for _, s := range sl {
				out = append(out, resolve(s, depth+1)...)
			}
			return out
		}
		return m.disksOf[devOf[name]]
	}
	for name := range slaves {
		m.disksOf[devOf[name]] = resolve(name, 0)
	}
	return m
}

// fstabDiskGuess derives a disk name from a device path when sysfs does not know it.
var fstabPartRe = regexp.MustCompile(`^/dev/((?:sd|vd|xvd|hd)[a-z]+|nvme\d+n\d+)(?:p?\d+)?$`)

func (dm fstabDiskMap) disks(m unmount.Mount) []string {
	if d, ok := dm.disksOf[m.Dev.String()]; ok && len(d) > 0 {
		return d
	}
	if g := fstabPartRe.FindStringSubmatch(m.Source); g != nil {
		return []string{g[1]}
	}
	return nil
}

func (p fstabProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	root := env.Root
	mounts, err := unmount.ReadMountInfo(root)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // no mount table in this root: nothing to compare
		}
		return nil, err
	}
	var entries []fstabEntry
	var malformed []int
	fstabMissing := false
	if data, err := root.ReadFile(fstabFile); err == nil {
		entries, malformed = parseFstab(string(data))
	} else if errors.Is(err, fs.ErrNotExist) {
		fstabMissing = true
	} else {
		return nil, fmt.Errorf("read %s: %w", fstabFile, err)
	}

	dm := readFstabDiskMap(root)
	osDisks := map[string]bool{}
	if rm, ok := unmount.MountFor(mounts, "/"); ok {
		for _, d := range dm.disks(rm) {
			osDisks[d] = true
		}
	}
	skipMP := map[string]bool{"/mnt": true, "/mnt/resource": true, "/mnt/azure_bek_disk": true}
	if mp := fstabResourceMountPoint(root); mp != "" {
		skipMP[mp] = true
	}

	byFile := map[string]fstabEntry{}
	for _, e := range entries {
		byFile[e.File] = e // the last line for a mount point wins, as with mount -a
	}
	seenDev := map[string]bool{}
	mounted := map[string]bool{}
	var out []api.Finding
	for _, m := range mounts {
		mounted[m.MountPoint] = true
		if !fstabIsDataMount(m, skipMP) || seenDev[m.Dev.String()] {
			continue
		}
		disks := dm.disks(m)
		onOS := len(disks) == 0 && len(osDisks) == 0 // unknown layout: only / itself is the OS
		for _, d := range disks {
			if osDisks[d] {
				onOS = true
			}
		}
		if onOS || m.MountPoint == "/" {
			continue
		}
		seenDev[m.Dev.String()] = true
		if f, ok := fstabCheckMount(root, m, byFile, dm, fstabMissing); ok {
			out = append(out, f)
		}
	}

	// fstab entries that are not mounted: "mount -a" has to work.
	var unmounted []string
	var rel []api.Related
	for _, e := range entries {
		if mounted[e.File] || e.File == "none" || e.Type == "swap" || e.hasOpt("noauto") || skipMP[e.File] {
			continue
		}
		if !strings.HasPrefix(e.Spec, "/dev/") && !strings.Contains(e.Spec, "=") {
			continue // network or virtual filesystems
		}
		if strings.HasPrefix(e.Spec, "/dev/") && fstabIsVirtualType(e.Type) {
			continue
		}
		unmounted = append(unmounted, fmt.Sprintf("%s on %s (line %d)", e.Spec, e.File, e.Line))
		rel = append(rel, api.Related{Kind: "path", ID: e.File})
	}
	if len(unmounted) > 0 {
		out = append(out, api.Finding{
			Key:   "fstab.data-disks",
			Title: fmt.Sprintf("%d /etc/fstab entr(y/ies) not mounted", len(unmounted)),
			Summary: fmt.Sprintf("/etc/fstab lists filesystems that are not mounted now: %s. ADE requires that 'mount -a' works; an entry without nofail "+
				"whose disk is missing stops the boot in emergency mode.", strings.Join(unmounted, "; ")),
			Severity: api.SeverityLow,
			Remediation: api.Remediation{
				Hint:     "Mount them, add noauto/nofail, or remove stale lines; then verify the table.",
				Commands: [][]string{{"findmnt", "--verify", "--tab-file", fstabFile}, {"mount", "-a"}},
			},
			Related: rel,
		})
	}
	if len(malformed) > 0 {
		lines := make([]string, len(malformed))
		for i, n := range malformed {
			lines[i] = fmt.Sprint(n)
		}
		out = append(out, api.Finding{
			Key:      "fstab.data-disks",
			Title:    "/etc/fstab has malformed lines",
			Summary:  fmt.Sprintf("Lines %s of /etc/fstab have fewer than two fields; mount and systemd-fstab-generator ignore or reject them.", strings.Join(lines, ", ")),
			Severity: api.SeverityLow,
			Remediation: api.Remediation{
				Hint:     "Fix or remove those lines.",
				Commands: [][]string{{"findmnt", "--verify", "--tab-file", fstabFile}},
			},
			Related: []api.Related{{Kind: "path", ID: fstabFile}},
		})
	}
	return stampProbe(p.Name(), out), nil
}

func fstabIsVirtualType(t string) bool {
	switch t {
	case "proc", "sysfs", "tmpfs", "devpts", "none", "bind":
		return true
	}
	return false
}

// fstabIsDataMount keeps real block-device filesystems other than the skipped ones.
func fstabIsDataMount(m unmount.Mount, skip map[string]bool) bool {
	if !strings.HasPrefix(m.Source, "/dev/") || m.Root != "/" || skip[m.MountPoint] {
		return false
	}
	if m.Dev.Major == 7 || strings.HasPrefix(m.Source, "/dev/loop") || strings.HasPrefix(m.Source, "/dev/sr") {
		return false // loop images (snaps) and optical drives
	}
	switch m.FSType {
	case "squashfs", "iso9660", "udf", "swap", "tmpfs", "devtmpfs", "overlay":
		return false
	}
	return true
}

// fstabResourceMountPoint reads ResourceDisk.MountPoint from /etc/waagent.conf.
func fstabResourceMountPoint(root hostroot.Root) string {
	data, err := root.ReadFile("/etc/waagent.conf")
	if err != nil {
		return ""
	}
	for line := range strings.SplitSeq(string(data), "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), "=")
		if ok && strings.TrimSpace(k) == "ResourceDisk.MountPoint" {
			return strings.TrimRight(strings.TrimSpace(strings.SplitN(v, "#", 2)[0]), "/")
		}
	}
	return ""
}

// fstabUUID finds the filesystem UUID of a device from /dev/disk/by-uuid.
func fstabUUID(root hostroot.Root, kernelName string) string {
	if kernelName == "" {
		return ""
	}
	dir := "/dev/disk/by-uuid"
	entries, err := os.ReadDir(root.Path(dir))
	if err != nil {
		return ""
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	sort.Strings(names)
	for _, n := range names {
		if t, err := os.Readlink(root.Path(path.Join(dir, n))); err == nil && path.Base(t) == kernelName {
			return n
		}
	}
	return ""
}

// fstabEscape escapes a mount point for fstab.
func fstabEscape(s string) string {
	r := strings.NewReplacer(`\`, `\134`, " ", `\040`, "\t", `\011`, "\n", `\012`)
	return r.Replace(s)
}

func fstabCheckMount(root hostroot.Root, m unmount.Mount, byFile map[string]fstabEntry, dm fstabDiskMap, fstabMissing bool) (api.Finding, bool) {
	e, listed := byFile[m.MountPoint]
	var problems []string
	title := ""
	switch {
	case !listed && fstabMissing:
		title = fmt.Sprintf("Data disk %s is not in /etc/fstab", m.MountPoint)
		problems = append(problems, "/etc/fstab does not exist")
	case !listed:
		title = fmt.Sprintf("Data disk %s is not in /etc/fstab", m.MountPoint)
		problems = append(problems, "no /etc/fstab line mounts it (it was mounted by hand, by a unit or by a script)")
	default:
		if !e.hasOpt("nofail", "nobootwait") {
			title = fmt.Sprintf("Data disk %s is in /etc/fstab without nofail", m.MountPoint)
			problems = append(problems, fmt.Sprintf("line %d (%s %s %s %s) has no nofail option", e.Line, e.Spec, e.File, e.Type, e.Opts))
		}
		if fstabUnstable.MatchString(e.Spec) {
			if title == "" {
				title = fmt.Sprintf("Data disk %s is in /etc/fstab by the unstable name %s", m.MountPoint, e.Spec)
			}
			problems = append(problems, fmt.Sprintf("line %d names it %s, a kernel name that can change between boots", e.Line, e.Spec))
		}
	}
	if len(problems) == 0 {
		return api.Finding{}, false
	}

	kname := dm.nameOf[m.Dev.String()]
	if kname == "" {
		kname = path.Base(m.Source)
	}
	uuid := fstabUUID(root, kname)
	spec := "UUID=" + uuid
	if uuid == "" {
		spec = "UUID=<uuid of " + m.Source + ">"
	}
	opts := "defaults,nofail"
	if listed {
		opts = e.Opts
		if !e.hasOpt("nofail", "nobootwait") {
			opts += ",nofail"
		}
	}
	line := fmt.Sprintf("%s %s %s %s 0 2", spec, fstabEscape(m.MountPoint), m.FSType, opts)
	verb := "Add"
	if listed {
		verb = fmt.Sprintf("Replace line %d with", e.Line)
	}
	return api.Finding{
		Key:   "fstab.data-disks",
		Title: title,
		Summary: fmt.Sprintf("%s is mounted from %s (%s, device %s), a data disk: %s. ADE requires data disks in /etc/fstab with nofail and a persistent name "+
			"(UUID), and moves those lines into its own configuration when it encrypts them; without nofail a missing or still-locked disk stops the boot.",
			m.MountPoint, m.Source, m.FSType, m.Dev, strings.Join(problems, "; ")),
		Severity: api.SeverityMedium,
		Blocker:  true,
		Remediation: api.Remediation{
			Hint: fmt.Sprintf("%s this line in /etc/fstab: %q, then check the table (findmnt --verify) and that 'mount -a' succeeds.", verb, line),
			Commands: [][]string{
				{"blkid", "-s", "UUID", "-o", "value", m.Source},
				{"findmnt", "--verify", "--tab-file", fstabFile},
			},
		},
		Related: []api.Related{{Kind: "mount", ID: m.MountPoint}, {Kind: "device", ID: m.Source}, {Kind: "path", ID: fstabFile}},
	}, true
}
