package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// toolsProbe checks that the programs and kernel modules ADE needs are present, looking
// only through the root (never exec.LookPath on the host).
//
// Facts (research ade_extension.md §1.2 prereq, §2, appendix 6; services_selinux.md §7):
// ADE's install_extras installs, and fails mid-flight without package repositories:
//   - Ubuntu: at cryptsetup-bin grub-pc-bin lsscsi python(3)-parted python(3)-six procps
//     psmisc nvme-cli;
//   - RHEL/CentOS 7/8: cryptsetup lsscsi psmisc lvm2 uuid at patch procps-ng util-linux
//     (plus cryptsetup-reencrypt on an isolated network);
//   - SLES (data only): lsscsi cryptsetup.
//
// psmisc gives fuser, procps pkill, at/atd restart the agent; grub-pc-bin removed by
// "apt autoremove" left VMs unbootable (issue #1240). The vfat module must load
// ("modprobe vfat", a fatal precheck: the BEK volume is vfat) and dm-crypt must be present.
type toolsProbe struct{}

func (toolsProbe) Name() string { return "tools" }

// toolsPath is where programs are looked up, under the root.
var toolsPath = []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"}

// toolNeed is one requirement: any of its paths (or programs on toolsPath) satisfies it.
type toolNeed struct {
	What     string   // what is needed, for people ("fuser")
	Programs []string // program names looked up on toolsPath
	Paths    []string // host paths (files or directories) that satisfy it
	Package  string
}

func toolNeeds(d Distro) []toolNeed {
	fam := pkgFamily(d)
	pkg := func(deb, rhel, suse string) string {
		switch fam {
		case "debian":
			return deb
		case "suse":
			return suse
		}
		return rhel
	}
	needs := []toolNeed{
		{What: "cryptsetup", Programs: []string{"cryptsetup"}, Package: pkg("cryptsetup-bin", "cryptsetup", "cryptsetup")},
		{What: "lsscsi", Programs: []string{"lsscsi"}, Package: "lsscsi"},
	}
	if fam == "suse" {
		return needs
	}
	needs = append(needs,
		toolNeed{What: "fuser", Programs: []string{"fuser"}, Package: "psmisc"},
		toolNeed{What: "pkill", Programs: []string{"pkill"}, Package: pkg("procps", "procps-ng", "procps")},
		toolNeed{What: "at", Programs: []string{"at"}, Package: "at"},
		toolNeed{What: "atd", Programs: []string{"atd"}, Package: "at"},
	)
	switch fam {
	case "debian":
		py, pyPkg := "/usr/lib/python3/dist-packages", "python3"
		if major, minor := versionMajorMinor(d.VersionID); d.ID == "ubuntu" && (major < 20 || (major == 20 && minor < 4)) {
			// ADE's shim prefers "python" (2.7) before Ubuntu 20.04.
			py, pyPkg = "/usr/lib/python2.7/dist-packages", "python"
		}
		needs = append(needs,
			toolNeed{What: pyPkg + " parted bindings", Paths: []string{py + "/parted"}, Package: pyPkg + "-parted"},
			toolNeed{What: pyPkg + " six", Paths: []string{py + "/six.py"}, Package: pyPkg + "-six"},
			toolNeed{What: "GRUB BIOS modules (grub-pc-bin)", Paths: []string{"/usr/lib/grub/i386-pc/normal.mod"}, Package: "grub-pc-bin"},
			toolNeed{What: "nvme", Programs: []string{"nvme"}, Package: "nvme-cli"},
		)
	case "rhel", "mariner":
		needs = append(needs,
			toolNeed{What: "lvm", Programs: []string{"lvm"}, Package: "lvm2"},
			toolNeed{What: "lsblk", Programs: []string{"lsblk"}, Package: "util-linux"},
		)
		if fam == "rhel" {
			needs = append(needs,
				toolNeed{What: "uuid", Programs: []string{"uuid"}, Package: "uuid"},
				toolNeed{What: "patch", Programs: []string{"patch"}, Package: "patch"},
			)
			if major, _ := versionMajorMinor(d.VersionID); major == 7 || major == 8 {
				needs = append(needs, toolNeed{What: "cryptsetup-reencrypt", Programs: []string{"cryptsetup-reencrypt"}, Package: "cryptsetup-reencrypt"})
			}
		}
	}
	return needs
}

// versionMajorMinor parses "20.04" → 20, 4; missing parts are 0.
func versionMajorMinor(s string) (int, int) {
	v, _ := parseWAVersion(s + ".0")
	if len(v) < 2 {
		return 0, 0
	}
	return v[0], v[1]
}

func (p toolsProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	root := env.Root
	var out []api.Finding

	var missing []string
	var pkgs []string
	var related []api.Related
	for _, n := range toolNeeds(env.Distro) {
		if toolsHave(root, n) {
			continue
		}
		where := strings.Join(toolsPath, ", ")
		if len(n.Paths) > 0 {
			where = strings.Join(n.Paths, ", ")
		}
		missing = append(missing, fmt.Sprintf("%s (package %s; not found in %s)", n.What, n.Package, where))
		if !toolsHasString(pkgs, n.Package) {
			pkgs = append(pkgs, n.Package)
			related = append(related, api.Related{Kind: "package", ID: n.Package})
		}
	}
	if len(missing) > 0 {
		cmd := pkgInstallArgv(pkgFamily(env.Distro), pkgs)
		hint := "Install the missing packages now, while the package repositories are reachable: ADE installs them itself mid-flight " +
			"and fails (\"failed to unmount\", or a VM that no longer boots) when it cannot. Do not let 'apt autoremove' remove them afterwards."
		var cmds [][]string
		if cmd != nil {
			cmds = append(cmds, cmd)
		} else {
			hint = "Install these packages with the distribution's package manager: " + strings.Join(pkgs, " ") + ". " + hint
		}
		if toolsHasString(pkgs, "at") {
			cmds = append(cmds, []string{"systemctl", "enable", "--now", "atd.service"})
		}
		out = append(out, api.Finding{
			Key:         "tools.missing",
			Title:       fmt.Sprintf("Tools ADE needs are missing: %s", strings.Join(pkgs, ", ")),
			Summary:     fmt.Sprintf("Missing: %s.", strings.Join(missing, "; ")),
			Severity:    api.SeverityMedium,
			Blocker:     true,
			Remediation: api.Remediation{Hint: hint, Commands: cmds},
			Related:     related,
		})
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if f, ok := toolsModules(env); ok {
		out = append(out, f)
	}
	return stampProbe(p.Name(), out), nil
}

// toolsHave reports whether a need is met.
func toolsHave(root hostroot.Root, n toolNeed) bool {
	for _, p := range n.Paths {
		if _, err := toolsStat(root, p); err == nil {
			return true
		}
	}
	for _, prog := range n.Programs {
		for _, dir := range toolsPath {
			fi, err := toolsStat(root, path.Join(dir, prog))
			if err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
				return true
			}
		}
	}
	return false
}

// toolsModules checks the vfat and dm-crypt kernel modules of the running kernel.
func toolsModules(env *Env) (api.Finding, bool) {
	root := env.Root
	relFile := root.Proc("sys", "kernel", "osrelease")
	rel := encReadTrim(relFile)
	unknown := func(why string) (api.Finding, bool) {
		return api.Finding{
			Key:      "tools.missing",
			Title:    "Kernel modules vfat and dm-crypt could not be checked",
			Summary:  fmt.Sprintf("Whether the vfat and dm-crypt modules are available is unknown: %s. ADE fails at once without vfat (\"prerequisite vfat module was not found\").", why),
			Severity: api.SeverityLow,
			Remediation: api.Remediation{
				Hint:     "Check by hand that both modules load.",
				Commands: [][]string{{"modprobe", "-n", "-v", "vfat"}, {"modprobe", "-n", "-v", "dm-crypt"}},
			},
		}, true
	}
	if rel == "" {
		return unknown("the kernel release (" + root.HostPath(relFile) + ") is unreadable")
	}
	have := map[string]string{} // module → where found
	var read []string
	for _, base := range []string{"/lib/modules/" + rel, "/usr/lib/modules/" + rel} {
		for _, name := range []string{"modules.builtin", "modules.dep"} {
			file := path.Join(base, name)
			data, err := toolsRead(root, file)
			if err != nil {
				continue
			}
			read = append(read, file)
			for line := range strings.SplitSeq(string(data), "\n") {
				mod, _, _ := strings.Cut(line, ":")
				mod = strings.TrimSpace(mod)
				if mod == "" {
					continue
				}
				m := toolsModuleName(mod)
				if _, ok := have[m]; !ok {
					if name == "modules.builtin" {
						have[m] = "built into the kernel"
					} else {
						have[m] = "module " + mod
					}
				}
			}
		}
		if len(read) > 0 {
			break
		}
	}
	if len(read) == 0 {
		return unknown(fmt.Sprintf("neither modules.builtin nor modules.dep exists in /lib/modules/%s or /usr/lib/modules/%s", rel, rel))
	}
	disabled := modprobeDisabled(root)

	var problems []string
	var related []api.Related
	var cmds [][]string
	for _, m := range []struct{ name, display string }{{"vfat", "vfat"}, {"dm_crypt", "dm-crypt"}} {
		if where, ok := disabled[m.name]; ok {
			problems = append(problems, fmt.Sprintf("%s is disabled by %s", m.display, where))
			file, _, _ := strings.Cut(where, ":")
			related = append(related, api.Related{Kind: "path", ID: file})
			continue
		}
		if _, ok := have[m.name]; !ok {
			problems = append(problems, fmt.Sprintf("%s is neither built into kernel %s nor listed in its modules.dep", m.display, rel))
		}
	}
	if len(problems) == 0 {
		return api.Finding{}, false
	}
	hint := "ADE reads its key from the vfat BEK volume and encrypts with dm-crypt; both modules must load. "
	if len(related) > 0 {
		hint += "Remove the 'install … /bin/true' (or /bin/false) lines that disable them — hardening baselines add them for vfat, which ADE does not support. "
	}
	switch pkgFamily(env.Distro) {
	case "debian":
		cmds = append(cmds, []string{"apt-get", "install", "-y", "linux-modules-" + rel})
		hint += "Modules of an Ubuntu kernel ship in linux-modules-" + rel + "."
	case "rhel":
		cmds = append(cmds, []string{"yum", "install", "-y", "kernel-core-" + rel})
		hint += "Modules of a RHEL 8/9 kernel ship in kernel-core-" + rel + " (RHEL 7: kernel-" + rel + ")."
	default:
		hint += "Install the kernel modules package for " + rel + "."
	}
	cmds = append(cmds, []string{"modprobe", "-n", "-v", "vfat"}, []string{"modprobe", "-n", "-v", "dm-crypt"})
	return api.Finding{
		Key:         "tools.missing",
		Title:       "Kernel modules ADE needs are unavailable",
		Summary:     fmt.Sprintf("Kernel %s (read %s): %s. ADE's precheck fails without vfat (\"prerequisite vfat module was not found\").", rel, strings.Join(read, ", "), strings.Join(problems, "; ")),
		Severity:    api.SeverityHigh,
		Blocker:     true,
		Remediation: api.Remediation{Hint: hint, Commands: cmds},
		Related:     related,
	}, true
}

// toolsModuleName turns "kernel/drivers/md/dm-crypt.ko.zst" into "dm_crypt".
func toolsModuleName(p string) string {
	b := path.Base(p)
	if i := strings.Index(b, ".ko"); i >= 0 {
		b = b[:i]
	}
	return strings.ReplaceAll(b, "-", "_")
}

// modprobeDisabled finds "install <module> /bin/true|/bin/false" lines in modprobe.d,
// which make modprobe succeed without loading (a common hardening for vfat).
func modprobeDisabled(root hostroot.Root) map[string]string {
	out := map[string]string{}
	for _, dir := range []string{"/etc/modprobe.d", "/run/modprobe.d", "/usr/lib/modprobe.d", "/lib/modprobe.d"} {
		entries, err := os.ReadDir(root.Path(dir))
		if err != nil {
			continue
		}
		names := make([]string, 0, len(entries))
		for _, e := range entries {
			if strings.HasSuffix(e.Name(), ".conf") {
				names = append(names, e.Name())
			}
		}
		sort.Strings(names)
		for _, n := range names {
			file := path.Join(dir, n)
			data, err := toolsRead(root, file)
			if err != nil {
				continue
			}
			for i, line := range strings.Split(string(data), "\n") {
				f := strings.Fields(line)
				if len(f) < 3 || f[0] != "install" {
					continue
				}
				switch path.Base(f[2]) {
				case "true", "false":
					m := strings.ReplaceAll(f[1], "-", "_")
					if _, ok := out[m]; !ok {
						out[m] = fmt.Sprintf("%s:%d (%s)", file, i+1, strings.TrimSpace(line))
					}
				}
			}
		}
	}
	return out
}

// pkgInstallArgv is the install command for a package-manager family, nil if unknown.
func pkgInstallArgv(fam string, pkgs []string) []string {
	var cmd []string
	switch fam {
	case "debian":
		cmd = []string{"apt-get", "install", "-y"}
	case "rhel":
		cmd = []string{"yum", "install", "-y"}
	case "mariner":
		cmd = []string{"tdnf", "install", "-y"}
	case "suse":
		cmd = []string{"zypper", "--non-interactive", "install"}
	default:
		return nil
	}
	return append(cmd, pkgs...)
}

func toolsHasString(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// toolsStat stats a host path under the root, resolving symbolic links inside the root
// (an absolute link target such as /sbin → /usr/sbin means <root>/usr/sbin, not the host's).
func toolsStat(root hostroot.Root, hostPath string) (fs.FileInfo, error) {
	p, err := toolsResolve(root, hostPath)
	if err != nil {
		return nil, err
	}
	return os.Stat(root.Path(p))
}

// toolsRead reads a host file under the root, resolving links inside the root.
func toolsRead(root hostroot.Root, hostPath string) ([]byte, error) {
	p, err := toolsResolve(root, hostPath)
	if err != nil {
		return nil, err
	}
	return root.ReadFile(p)
}

// toolsResolve resolves every symbolic link of hostPath as if root were "/".
func toolsResolve(root hostroot.Root, hostPath string) (string, error) {
	if root.IsHost() {
		return filepath.Clean(hostPath), nil
	}
	todo := strings.Split(strings.TrimPrefix(filepath.Clean("/"+hostPath), "/"), "/")
	cur := "/"
	for hops := 0; len(todo) > 0; {
		c := todo[0]
		todo = todo[1:]
		if c == "" || c == "." {
			continue
		}
		if c == ".." {
			cur = path.Dir(cur)
			continue
		}
		next := path.Join(cur, c)
		fi, err := os.Lstat(root.Path(next))
		if err != nil {
			return "", err
		}
		if fi.Mode()&fs.ModeSymlink == 0 {
			cur = next
			continue
		}
		if hops++; hops > 40 {
			return "", fmt.Errorf("resolve %s: %w", hostPath, errors.New("too many levels of symbolic links"))
		}
		target, err := os.Readlink(root.Path(next))
		if err != nil {
			return "", fmt.Errorf("resolve %s: %w", hostPath, err)
		}
		if strings.HasPrefix(target, "/") {
			cur = "/"
		}
		todo = append(strings.Split(target, "/"), todo...)
	}
	return cur, nil
}
