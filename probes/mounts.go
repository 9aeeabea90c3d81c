package probes

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// mountsProbe reports data drives mounted under /mnt or inside each other (mounts.nested).
//
// ADE's own precheck (check_util.py is_unsupported_mount_scheme) flags any two mount points
// of /proc/mounts where one string-prefixes the other ("data disks mounted under /mnt and
// … /data3 + /data3/data4"), ignoring /, /dev, /proc, /run, /sys and /sys/fs/cgroup; it only
// warns, but its unmount of the old root and its per-drive unmount for data encryption then
// fail on the busy parent, and Microsoft lists nested mount points as unsupported
// (research: ade_extension.md §2, services_selinux.md §7). This probe looks at real data
// drives only: block-device filesystems that are not on the OS drive (unmount.OSDrive),
// not pseudo or network filesystems, not /boot and /boot/efi, and not ADE's own BEK volume.
type mountsProbe struct{}

func (mountsProbe) Name() string { return "mounts" }

// mntPseudoFS are filesystem types that are never data drives.
var mntPseudoFS = map[string]bool{
	"proc": true, "sysfs": true, "cgroup": true, "cgroup2": true, "tmpfs": true, "devtmpfs": true,
	"devpts": true, "overlay": true, "aufs": true, "squashfs": true, "mqueue": true, "hugetlbfs": true,
	"debugfs": true, "tracefs": true, "securityfs": true, "pstore": true, "bpf": true, "configfs": true,
	"fusectl": true, "autofs": true, "binfmt_misc": true, "rpc_pipefs": true, "nfsd": true,
	"efivarfs": true, "selinuxfs": true, "ramfs": true, "nsfs": true, "iso9660": true,
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "ceph": true, "glusterfs": true, "9p": true,
	"virtiofs": true,
}

// mntOsFolders are the trees ADE's stripdown copies into RAM, plus /boot: a data drive mounted
// on one of them is "a data drive mounted on top of an OS folder" (unsupported).
var mntOsFolders = []string{"/bin", "/boot", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/root", "/sbin", "/usr", "/var"}

// mntTopLevelReserved are names a moved data drive must not take.
var mntTopLevelReserved = map[string]bool{
	"bin": true, "boot": true, "dev": true, "etc": true, "home": true, "lib": true, "lib32": true,
	"lib64": true, "libx32": true, "lost+found": true, "media": true, "mnt": true, "opt": true,
	"proc": true, "root": true, "run": true, "sbin": true, "snap": true, "srv": true, "sys": true,
	"tmp": true, "usr": true, "var": true, "oldroot": true,
}

// mntBekMount is where ADE mounts its key volume (BEK VOLUME); it belongs there.
const mntBekMount = "/mnt/azure_bek_disk"

type mntMountIssue struct {
	Kind   string // "nested", "under-mnt", "os-folder"
	Child  unmount.Mount
	Parent string // the mount point it sits in ("/mnt" for under-mnt, the OS folder)
}

func (mountsProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	mounts, err := unmount.ReadMountInfo(env.Root)
	if err != nil {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	osDevs := map[unmount.Dev]bool{}
	if topo, err := unmount.OSDrive(env.Root, mounts); err == nil {
		for _, d := range topo.Devices {
			osDevs[d] = true
		}
	} else {
		return nil, fmt.Errorf("mounts: %w", err)
	}
	resource := mntResourceDiskMount(env)
	drives := mntDataDrives(mounts, osDevs, resource)
	issues := mntFindMountIssues(drives, resource)
	if len(issues) == 0 {
		return nil, nil
	}
	fstab, fstabErr := mntReadFstab(env)
	return []api.Finding{mntMountsFinding(resource, issues, drives, fstab, fstabErr)}, nil
}

// mntResourceDiskMount is the Azure resource disk's mount point: waagent.conf's
// ResourceDisk.MountPoint when set, else /mnt (Ubuntu's default; RHEL images use
// /mnt/resource, which is under /mnt either way).
func mntResourceDiskMount(env *Env) string {
	data, err := env.Root.ReadFile("/etc/waagent.conf")
	if err == nil {
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := strings.TrimSpace(sc.Text())
			if v, ok := strings.CutPrefix(line, "ResourceDisk.MountPoint="); ok {
				if v = strings.TrimSpace(v); strings.HasPrefix(v, "/") {
					return path.Clean(v)
				}
			}
		}
	}
	return "/mnt"
}

// mntDataDrives returns the mounts that are data drives (and the resource disk), one per
// filesystem, sorted by mount point.
func mntDataDrives(mounts []unmount.Mount, osDevs map[unmount.Dev]bool, resource string) []unmount.Mount {
	seen := map[unmount.Dev]bool{}
	var out []unmount.Mount
	for _, m := range mounts {
		mp := m.MountPoint
		switch {
		case mp == "/" || mp == "/boot" || mp == "/boot/efi" || mp == mntBekMount:
			continue
		case mntPseudoFS[m.FSType] || strings.HasPrefix(m.FSType, "fuse"):
			continue
		case !strings.HasPrefix(m.Source, "/dev/") || strings.HasPrefix(m.Source, "/dev/loop"):
			continue
		case m.Root != "/":
			continue // a bind mount of a directory, not a drive
		case osDevs[m.Dev] && mp != resource:
			continue // on the OS drive (/var, /usr, /home LVs, …)
		case seen[m.Dev]:
			continue // the same filesystem mounted again
		}
		seen[m.Dev] = true
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].MountPoint < out[j].MountPoint })
	return out
}

func mntWithin(p, dir string) bool {
	return dir != "/" && strings.HasPrefix(p, dir+"/")
}

// mntFindMountIssues finds data drives inside another drive, under /mnt, or on an OS folder.
// Each drive is reported once, against its innermost parent.
func mntFindMountIssues(drives []unmount.Mount, resource string) []mntMountIssue {
	var issues []mntMountIssue
	for _, c := range drives {
		parent := ""
		for _, p := range drives {
			if mntWithin(c.MountPoint, p.MountPoint) && len(p.MountPoint) > len(parent) {
				parent = p.MountPoint
			}
		}
		switch {
		case parent != "":
			issues = append(issues, mntMountIssue{Kind: "nested", Child: c, Parent: parent})
		case mntWithin(c.MountPoint, "/mnt") && c.MountPoint != resource:
			issues = append(issues, mntMountIssue{Kind: "under-mnt", Child: c, Parent: "/mnt"})
		default:
			for _, dir := range mntOsFolders {
				if c.MountPoint == dir || mntWithin(c.MountPoint, dir) {
					issues = append(issues, mntMountIssue{Kind: "os-folder", Child: c, Parent: dir})
					break
				}
			}
		}
	}
	return issues
}

// mntFstabEntry is one line of /etc/fstab.
type mntFstabEntry struct {
	Line       int
	Text       string
	Spec       string
	MountPoint string
}

func mntReadFstab(env *Env) ([]mntFstabEntry, error) {
	data, err := env.Root.ReadFile("/etc/fstab")
	if err != nil {
		return nil, err
	}
	var out []mntFstabEntry
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 0
	for sc.Scan() {
		n++
		text := sc.Text()
		fields := strings.Fields(text)
		if len(fields) < 2 || strings.HasPrefix(fields[0], "#") {
			continue
		}
		out = append(out, mntFstabEntry{Line: n, Text: text, Spec: fields[0], MountPoint: unmount.Unescape(fields[1])})
	}
	if err := sc.Err(); err != nil {
		return out, fmt.Errorf("read /etc/fstab: %w", err)
	}
	return out, nil
}

func mntMountsFinding(resource string, issues []mntMountIssue, drives []unmount.Mount, fstab []mntFstabEntry, fstabErr error) api.Finding {
	f := api.Finding{Key: "mounts.nested", Probe: "mounts"}
	taken := map[string]bool{}
	for _, d := range drives {
		taken[d.MountPoint] = true
	}
	// Move the deepest drives first, so that unmounting a parent is never needed.
	sort.SliceStable(issues, func(i, j int) bool {
		return strings.Count(issues[i].Child.MountPoint, "/") > strings.Count(issues[j].Child.MountPoint, "/")
	})
	var lines, hints []string
	var cmds [][]string
	blocking := false
	for _, is := range issues {
		c := is.Child
		f.Related = append(f.Related,
			api.Related{Kind: "mount", ID: c.MountPoint},
			api.Related{Kind: "device", ID: c.Source})
		switch is.Kind {
		case "os-folder":
			lines = append(lines, fmt.Sprintf("%s (%s, %s) is mounted on the OS folder %s", c.MountPoint, c.Source, c.FSType, is.Parent))
			hints = append(hints, fmt.Sprintf("Mount %s at a top-level path (e.g. /%s) and point its users there; Microsoft does not support a data drive on top of an OS folder", c.Source, mntSuggestName(c.MountPoint, taken)))
			continue
		case "nested":
			what := "inside the data drive " + is.Parent
			if is.Parent == resource {
				what = "inside " + is.Parent + " (the resource disk, whose contents are lost on redeploy)"
			}
			lines = append(lines, fmt.Sprintf("%s (%s, %s) is mounted %s", c.MountPoint, c.Source, c.FSType, what))
		case "under-mnt":
			lines = append(lines, fmt.Sprintf("%s (%s, %s) is mounted under /mnt, which ADE unmounts recursively with the resource disk", c.MountPoint, c.Source, c.FSType))
		}
		blocking = true
		newMP := "/" + mntSuggestName(c.MountPoint, taken)
		taken[newMP] = true
		cmds = append(cmds, []string{"umount", c.MountPoint})
		entry, found := mntFstabFor(fstab, c.MountPoint)
		if found && !strings.ContainsAny(c.MountPoint+newMP, "#\\ \t") {
			cmds = append(cmds,
				[]string{"sed", "-i", "-E", fmt.Sprintf(`%ds#^(\S+\s+)%s(\s)#\1%s\2#`, entry.Line, regexp.QuoteMeta(c.MountPoint), newMP), "/etc/fstab"},
				[]string{"systemctl", "daemon-reload"},
				[]string{"mkdir", "-p", newMP},
				[]string{"mount", newMP})
			hints = append(hints, fmt.Sprintf("Move %s to %s: /etc/fstab line %d %q becomes %q", c.MountPoint, newMP, entry.Line, strings.TrimSpace(entry.Text),
				strings.Replace(strings.TrimSpace(entry.Text), c.MountPoint, newMP, 1)))
		} else {
			cmds = append(cmds, []string{"mkdir", "-p", newMP}, []string{"mount", c.Source, newMP})
			switch {
			case found:
				hints = append(hints, fmt.Sprintf("Move %s to %s and change its mount point in /etc/fstab line %d", c.MountPoint, newMP, entry.Line))
			case fstabErr != nil && !errors.Is(fstabErr, fs.ErrNotExist):
				hints = append(hints, fmt.Sprintf("Move %s to %s and change its /etc/fstab entry (/etc/fstab could not be read: %v)", c.MountPoint, newMP, fstabErr))
			default:
				hints = append(hints, fmt.Sprintf("Move %s to %s; it has no /etc/fstab entry, so add one with its UUID and nofail, as ADE requires for data drives", c.MountPoint, newMP))
			}
		}
	}
	f.Related = mntUniqueRelated(f.Related)
	f.Summary = strings.Join(lines, "; ") + "."
	switch {
	case blocking:
		f.Severity, f.Blocker = api.SeverityHigh, true
		f.Title = "Data drives are mounted inside other drives or under /mnt"
		f.Summary += " Microsoft lists nested mount points and data drives under /mnt as unsupported: ADE's unmount of a drive (the old root on " +
			"the unmount path, each data drive it encrypts on every path) fails while another drive is mounted inside it, and ADE unmounts /mnt recursively."
		f.Remediation.Hint = "Stop what uses these drives, then mount each at its own top-level path. " + strings.Join(hints, ". ") + "."
		f.Remediation.Commands = cmds
	default:
		f.Severity, f.Blocker = api.SeverityMedium, false
		f.Title = "A data drive is mounted on an OS folder"
		f.Summary += " Microsoft lists a data drive mounted on top of an OS folder as unsupported; ADE's stripdown copies these folders into RAM without what is mounted on them."
		f.Remediation.Hint = strings.Join(hints, ". ") + "."
	}
	return f
}

// mntSuggestName proposes a free top-level name for a drive now mounted at mp.
func mntSuggestName(mp string, taken map[string]bool) string {
	base := strings.Trim(path.Base(path.Clean(mp)), ".")
	if base == "" || base == "/" {
		base = "data"
	}
	if mntTopLevelReserved[base] {
		base = "data-" + base
	}
	name := base
	for i := 2; taken["/"+name]; i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

func mntFstabFor(entries []mntFstabEntry, mp string) (mntFstabEntry, bool) {
	for _, e := range entries {
		if path.Clean(e.MountPoint) == mp {
			return e, true
		}
	}
	return mntFstabEntry{}, false
}

func mntUniqueRelated(rs []api.Related) []api.Related {
	seen := map[api.Related]bool{}
	var out []api.Related
	for _, r := range rs {
		if !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	return out
}
