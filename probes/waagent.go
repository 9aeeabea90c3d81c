package probes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// waagentMinVersion is the oldest WALinuxAgent ADE supports (Microsoft's ADE
// troubleshooting page: "Waagent ≥ 2.2.38"; research ade_extension.md §2,
// services_selinux.md §7). The extension's own code does not check it.
var waagentMinVersion = waVersion{2, 2, 38}

// azureAssetTag is the DMI chassis asset tag of every Azure VM.
const azureAssetTag = "7783-7084-3265-9085-8269-3286-77"

// waagentProbe checks that WALinuxAgent, which runs the ADE extension, is installed and
// at least 2.2.38.
//
// WALinuxAgent has two parts (WALinuxAgent wiki, FAQ "Goal state agent"): the daemon,
// installed by the package manager, and the extension handler ("goal state agent"), which
// updates itself into /var/lib/waagent/WALinuxAgent-<version>/ unless AutoUpdate is off.
// Extensions, ADE included, are run by the extension handler, so its version decides.
type waagentProbe struct{}

func (waagentProbe) Name() string { return "waagent" }

// waVersion is a dotted numeric version ("2.2.38", "2.9.1.1").
type waVersion []int

var waVersionRe = regexp.MustCompile(`^\d+(\.\d+)+`)

// parseWAVersion reads the leading dotted number of s ("2.2.45-0ubuntu1" → 2.2.45).
func parseWAVersion(s string) (waVersion, bool) {
	m := waVersionRe.FindString(strings.TrimSpace(s))
	if m == "" {
		return nil, false
	}
	var v waVersion
	for part := range strings.SplitSeq(m, ".") {
		n, err := strconv.Atoi(part)
		if err != nil {
			return nil, false
		}
		v = append(v, n)
	}
	return v, true
}

// compare orders versions numerically; missing components count as 0; nil is lowest.
func (v waVersion) compare(o waVersion) int {
	if v == nil || o == nil {
		switch {
		case v == nil && o == nil:
			return 0
		case v == nil:
			return -1
		}
		return 1
	}
	for i := 0; i < max(len(v), len(o)); i++ {
		a, b := 0, 0
		if i < len(v) {
			a = v[i]
		}
		if i < len(o) {
			b = o[i]
		}
		if a != b {
			if a < b {
				return -1
			}
			return 1
		}
	}
	return 0
}

func (v waVersion) String() string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.Itoa(n)
	}
	return strings.Join(parts, ".")
}

// waSource is one place a version was read from.
type waSource struct {
	Version waVersion
	From    string // host path (or "pid N") it was read from
}

// waState is everything the probe learnt about the agent.
type waState struct {
	Installed   *waSource   // the package (daemon) version
	Script      string      // host path of the waagent script, if found
	GoalAgents  []waGoal    // auto-updated agents under /var/lib/waagent
	AutoUpdate  bool        // auto-update of the extension handler is on
	AutoUpdSrc  string      // where AutoUpdate was decided ("" = default)
	Running     *waSource   // the extension handler seen running
	Unreadable  []string    // sources that exist but could not be read
	ExtHandlers int         // number of extension handler directories
	Effective   *waSource   // the version that runs extensions
	EffectiveOf string      // how Effective was chosen
	lib         fs.FileInfo // /var/lib/waagent, if present
}

// waGoal is one /var/lib/waagent/WALinuxAgent-<version> directory.
type waGoal struct {
	Version     waVersion
	Dir         string
	Manifest    bool // HandlerManifest.json present (the agent's "downloaded")
	Blacklisted bool // error.json says fatal or ≥ 3 failures
}

func (g waGoal) usable() bool { return g.Manifest && !g.Blacklisted }

var (
	// Python package: azurelinuxagent/common/version.py
	waAgentVersionRe = regexp.MustCompile(`(?m)^AGENT_VERSION\s*=\s*['"]([^'"]+)['"]`)
	// The single-file 2.0 agent: GuestAgentVersion = "WALinuxAgent-2.0.16"
	waGuestAgentVersionRe = regexp.MustCompile(`(?m)^GuestAgentVersion\s*=\s*['"]WALinuxAgent-([^'"]+)['"]`)
	// The extension handler's command line (WALinuxAgent version.py EXT_HANDLER_PATTERN).
	waExtHandlerRe = regexp.MustCompile(`WALinuxAgent-(\d+\.\d+\.\d+(?:\.\d+)*)[^ ]*\s.*-run-exthandlers`)
)

// Where the Python package lives on the distributions ADE supports.
var waSitePackages = []string{
	"/usr/lib/python3/dist-packages",
	"/usr/lib/python3*/site-packages",
	"/usr/lib/python3*/dist-packages",
	"/usr/lib64/python3*/site-packages",
	"/usr/lib/python2*/site-packages",
	"/usr/lib/python2*/dist-packages",
	"/usr/local/lib/python*/site-packages",
	"/usr/local/lib/python*/dist-packages",
}

func (p waagentProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	st, err := inspectWAAgent(ctx, env)
	if err != nil {
		return nil, err
	}
	return stampProbe(p.Name(), waFindings(env, st)), nil
}

// stampProbe sets the probe name on findings.
func stampProbe(name string, fs []api.Finding) []api.Finding {
	for i := range fs {
		fs[i].Probe = name
	}
	return fs
}

func inspectWAAgent(ctx context.Context, env *Env) (*waState, error) {
	root := env.Root
	st := &waState{AutoUpdate: true}
	if fi, err := os.Stat(root.Path(waagentLibDir)); err == nil && fi.IsDir() {
		st.lib = fi
	}

	// 1. The installed package.
	if err := waFromDpkg(root, st); err != nil {
		return nil, err
	}
	for _, pat := range waSitePackages {
		if st.Installed != nil {
			break
		}
		for _, file := range waGlob(root, pat+"/azurelinuxagent/common/version.py") {
			data, err := root.ReadFile(file)
			if err != nil {
				st.Unreadable = append(st.Unreadable, fmt.Sprintf("%s (%v)", file, err))
				continue
			}
			if m := waAgentVersionRe.FindSubmatch(data); m != nil {
				if v, ok := parseWAVersion(string(m[1])); ok {
					st.Installed = &waSource{v, file}
					break
				}
			}
			st.Unreadable = append(st.Unreadable, file+" (no AGENT_VERSION)")
		}
		for _, d := range waGlob(root, pat+"/WALinuxAgent-*.egg-info") {
			if st.Installed != nil {
				break
			}
			if v, ok := parseWAVersion(strings.TrimPrefix(path.Base(d), "WALinuxAgent-")); ok {
				st.Installed = &waSource{v, d}
			}
		}
	}
	for _, s := range []string{"/usr/sbin/waagent", "/usr/bin/waagent", "/usr/local/sbin/waagent"} {
		if fi, err := os.Stat(root.Path(s)); err == nil && !fi.IsDir() {
			st.Script = s
			break
		}
	}
	if st.Installed == nil && st.Script != "" {
		// The 2.0 agent is one script carrying its version.
		if data, err := waReadHead(root.Path(st.Script), 4<<20); err == nil {
			if m := waGuestAgentVersionRe.FindSubmatch(data); m != nil {
				if v, ok := parseWAVersion(string(m[1])); ok {
					st.Installed = &waSource{v, st.Script}
				}
			}
		} else {
			st.Unreadable = append(st.Unreadable, fmt.Sprintf("%s (%v)", st.Script, err))
		}
	}

	// 2. Auto-updated agents and the auto-update setting.
	if st.lib != nil {
		entries, err := os.ReadDir(root.Path(waagentLibDir))
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", waagentLibDir, err)
		}
		for _, e := range entries {
			vs, ok := strings.CutPrefix(e.Name(), "WALinuxAgent-")
			if !ok || !isDirEntryDir(root, waagentLibDir, e) {
				continue
			}
			v, ok := parseWAVersion(vs)
			if !ok {
				continue
			}
			dir := path.Join(waagentLibDir, e.Name())
			g := waGoal{Version: v, Dir: dir}
			if _, err := os.Stat(root.Path(path.Join(dir, "HandlerManifest.json"))); err == nil {
				g.Manifest = true
			}
			g.Blacklisted = waBlacklisted(root, path.Join(dir, "error.json"))
			st.GoalAgents = append(st.GoalAgents, g)
		}
		sort.Slice(st.GoalAgents, func(i, j int) bool {
			return st.GoalAgents[i].Version.compare(st.GoalAgents[j].Version) > 0
		})
		dirs, err := listExtHandlerDirs(root)
		if err != nil {
			return nil, err
		}
		st.ExtHandlers = len(dirs)
	}
	waAutoUpdate(root, st)

	// 3. The extension handler actually running.
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	procs, err := waListProcesses(ctx, env)
	if err != nil {
		return nil, err
	}
	for _, pr := range procs {
		if !strings.Contains(pr.Cmdline, "-run-exthandlers") {
			continue
		}
		if m := waExtHandlerRe.FindStringSubmatch(pr.Cmdline); m != nil {
			if v, ok := parseWAVersion(m[1]); ok {
				st.Running = &waSource{v, fmt.Sprintf("pid %d: %s", pr.PID, pr.Cmdline)}
				break
			}
		}
		if strings.Contains(pr.Cmdline, "waagent") && st.Installed != nil {
			// The installed agent runs its own extension handler.
			st.Running = &waSource{st.Installed.Version, fmt.Sprintf("pid %d: %s", pr.PID, pr.Cmdline)}
			break
		}
	}

	// 4. Which version runs extensions.
	switch {
	case st.Running != nil:
		st.Effective, st.EffectiveOf = st.Running, "the running extension handler"
	default:
		st.Effective, st.EffectiveOf = st.Installed, "the installed package"
		if st.AutoUpdate {
			// The daemon starts the newest usable agent when it is newer than itself.
			for _, g := range st.GoalAgents {
				if !g.usable() {
					continue
				}
				if st.Effective == nil || g.Version.compare(st.Effective.Version) > 0 {
					st.Effective = &waSource{g.Version, g.Dir}
					st.EffectiveOf = "the newest auto-updated agent (not seen running)"
				}
				break
			}
		}
	}
	return st, nil
}

// waFromDpkg reads the walinuxagent package version from dpkg's status database.
func waFromDpkg(root hostroot.Root, st *waState) error {
	const file = "/var/lib/dpkg/status"
	data, err := root.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil
		}
		st.Unreadable = append(st.Unreadable, fmt.Sprintf("%s (%v)", file, err))
		return nil
	}
	for stanza := range strings.SplitSeq(string(data), "\n\n") {
		var pkg, status, version string
		for line := range strings.SplitSeq(stanza, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok {
				continue
			}
			switch k {
			case "Package":
				pkg = strings.TrimSpace(v)
			case "Status":
				status = strings.TrimSpace(v)
			case "Version":
				version = strings.TrimSpace(v)
			}
		}
		if pkg != "walinuxagent" || !strings.HasSuffix(status, " installed") {
			continue
		}
		if _, after, ok := strings.Cut(version, ":"); ok { // epoch
			version = after
		}
		if v, ok := parseWAVersion(version); ok {
			st.Installed = &waSource{v, file + " (package walinuxagent " + version + ")"}
		}
	}
	return nil
}

// waBlacklisted reads an agent's error.json (WALinuxAgent guestagent.py: blacklisted when
// was_fatal or failure_count ≥ 3). A missing or malformed file means not blacklisted, as
// the agent itself treats it.
func waBlacklisted(root hostroot.Root, file string) bool {
	data, err := root.ReadFile(file)
	if err != nil {
		return false
	}
	var e struct {
		WasFatal     bool    `json:"was_fatal"`
		FailureCount float64 `json:"failure_count"`
	}
	if json.Unmarshal(data, &e) != nil {
		return false
	}
	return e.WasFatal || e.FailureCount >= 3
}

// waAutoUpdate reads AutoUpdate.Enabled (and the newer AutoUpdate.UpdateToLatestVersion,
// which wins when set) from /etc/waagent.conf; both default to on.
func waAutoUpdate(root hostroot.Root, st *waState) {
	const file = "/etc/waagent.conf"
	data, err := root.ReadFile(file)
	if err != nil {
		return
	}
	var enabled, latest string
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		v = strings.ToLower(strings.TrimSpace(strings.SplitN(v, "#", 2)[0]))
		switch strings.TrimSpace(k) {
		case "AutoUpdate.Enabled":
			enabled = v
		case "AutoUpdate.UpdateToLatestVersion":
			latest = v
		}
	}
	switch {
	case latest != "":
		st.AutoUpdate, st.AutoUpdSrc = latest == "y", file+": AutoUpdate.UpdateToLatestVersion="+latest
	case enabled != "":
		st.AutoUpdate, st.AutoUpdSrc = enabled == "y", file+": AutoUpdate.Enabled="+enabled
	}
}

func waFindings(env *Env, st *waState) []api.Finding {
	fam := pkgFamily(env.Distro)
	pkg, unit := "WALinuxAgent", "waagent.service"
	if fam == "debian" {
		pkg, unit = "walinuxagent", "walinuxagent.service"
	} else if fam == "suse" {
		pkg = "python-azure-agent"
	}
	related := []api.Related{{Kind: "package", ID: pkg}, {Kind: "unit", ID: unit}}
	if st.lib != nil {
		related = append(related, api.Related{Kind: "path", ID: waagentLibDir})
	}

	installed := st.Installed != nil || st.Script != "" || st.Running != nil || len(st.GoalAgents) > 0
	if !installed {
		where := "This machine does not identify itself as an Azure VM (its DMI chassis asset tag is not Azure's)"
		if tag, err := env.Root.ReadFile("/sys/class/dmi/id/chassis_asset_tag"); err == nil && strings.TrimSpace(string(tag)) == azureAssetTag {
			where = "This machine is an Azure VM (DMI chassis asset tag " + azureAssetTag + ")"
		}
		summary := "No WALinuxAgent was found: no walinuxagent package in dpkg's database, no azurelinuxagent Python package, " +
			"no waagent script in /usr/sbin or /usr/bin, and no agent under " + waagentLibDir + ". " +
			"ADE is a VM extension that only WALinuxAgent can run, so on an Azure VM the agent is required (version " +
			waagentMinVersion.String() + " or newer). " + where + "."
		cmds := waInstallCommands(fam, pkg, unit, false)
		hint := "Install the Azure Linux Agent from the distribution's repositories and enable " + unit + "."
		if cmds == nil {
			hint = "Install the Azure Linux Agent (" + pkg + ") with the distribution's package manager, or from https://github.com/Azure/WALinuxAgent, and enable " + unit + "."
		}
		return []api.Finding{{
			Key: "waagent.version", Title: "WALinuxAgent not installed", Summary: summary,
			Severity: api.SeverityHigh, Blocker: true,
			Remediation: api.Remediation{Hint: hint, Commands: cmds},
			Related:     related,
		}}
	}

	if st.Effective == nil {
		var seen []string
		if st.Script != "" {
			seen = append(seen, "the script "+st.Script)
		}
		if st.lib != nil {
			seen = append(seen, waagentLibDir)
		}
		summary := fmt.Sprintf("WALinuxAgent is present (%s) but its version could not be read from dpkg's database, "+
			"the azurelinuxagent Python package, the waagent script or a running extension handler. "+
			"ADE needs version %s or newer.", strings.Join(seen, ", "), waagentMinVersion)
		if len(st.Unreadable) > 0 {
			summary += " Unreadable: " + strings.Join(st.Unreadable, "; ") + "."
		}
		return []api.Finding{{
			Key: "waagent.version", Title: "WALinuxAgent version unknown", Summary: summary,
			Severity: api.SeverityMedium,
			Remediation: api.Remediation{
				Hint:     fmt.Sprintf("Check the version with 'waagent --version' (both the agent and the \"Goal state agent\" line must be %s or newer).", waagentMinVersion),
				Commands: [][]string{{"waagent", "--version"}},
			},
			Related: related,
		}}
	}

	eff := st.Effective
	details := waDetails(st)
	if eff.Version.compare(waagentMinVersion) < 0 {
		summary := fmt.Sprintf("The WALinuxAgent that runs extensions is %s (%s, from %s); ADE requires %s or newer. %s",
			eff.Version, st.EffectiveOf, eff.From, waagentMinVersion, details)
		hint := fmt.Sprintf("Upgrade the %s package to %s or newer and restart %s.", pkg, waagentMinVersion, unit)
		if !st.AutoUpdate {
			hint += " Auto-update of the extension handler is off (" + st.AutoUpdSrc + "); turning it on lets the agent update itself: set AutoUpdate.Enabled=y."
		}
		return []api.Finding{{
			Key: "waagent.version", Title: fmt.Sprintf("WALinuxAgent %s is older than %s", eff.Version, waagentMinVersion),
			Summary: summary, Severity: api.SeverityHigh, Blocker: true,
			Remediation: api.Remediation{Hint: hint, Commands: waInstallCommands(fam, pkg, unit, true)},
			Related:     related,
		}}
	}
	if st.Installed != nil && st.Installed.Version.compare(waagentMinVersion) < 0 {
		summary := fmt.Sprintf("Extensions run on WALinuxAgent %s (%s), which is new enough, but the installed package (the daemon) is %s (%s). "+
			"If the auto-updated agent is removed or blacklisted, the daemon falls back to its own version, which ADE does not support. %s",
			eff.Version, st.EffectiveOf, st.Installed.Version, st.Installed.From, details)
		return []api.Finding{{
			Key: "waagent.version", Title: fmt.Sprintf("WALinuxAgent package %s is older than %s", st.Installed.Version, waagentMinVersion),
			Summary: summary, Severity: api.SeverityLow,
			Remediation: api.Remediation{
				Hint:     fmt.Sprintf("Upgrade the %s package to %s or newer when convenient.", pkg, waagentMinVersion),
				Commands: waInstallCommands(fam, pkg, unit, true),
			},
			Related: related,
		}}
	}
	return nil
}

// waDetails lists what was seen, for summaries.
func waDetails(st *waState) string {
	var parts []string
	if st.Installed != nil {
		parts = append(parts, fmt.Sprintf("installed package %s (%s)", st.Installed.Version, st.Installed.From))
	}
	for _, g := range st.GoalAgents {
		state := "usable"
		switch {
		case g.Blacklisted:
			state = "blacklisted by the agent (error.json)"
		case !g.Manifest:
			state = "incomplete (no HandlerManifest.json)"
		}
		parts = append(parts, fmt.Sprintf("auto-updated agent %s in %s, %s", g.Version, g.Dir, state))
	}
	if !st.AutoUpdate {
		parts = append(parts, "auto-update off ("+st.AutoUpdSrc+")")
	}
	if len(parts) == 0 {
		return ""
	}
	return "Seen: " + strings.Join(parts, "; ") + "."
}

// waInstallCommands installs (or upgrades) the agent and (re)starts its unit.
func waInstallCommands(fam, pkg, unit string, upgrade bool) [][]string {
	var install []string
	switch fam {
	case "debian":
		if upgrade {
			install = []string{"apt-get", "install", "-y", "--only-upgrade", pkg}
		} else {
			install = []string{"apt-get", "install", "-y", pkg}
		}
	case "rhel":
		if upgrade {
			install = []string{"yum", "update", "-y", pkg}
		} else {
			install = []string{"yum", "install", "-y", pkg}
		}
	case "mariner":
		install = []string{"tdnf", "install", "-y", pkg}
	case "suse":
		install = []string{"zypper", "--non-interactive", "install", pkg}
	default:
		return nil
	}
	if upgrade {
		return [][]string{install, {"systemctl", "restart", unit}}
	}
	return [][]string{install, {"systemctl", "enable", "--now", unit}}
}

// pkgFamily is the package-manager family of a distribution: debian, rhel, mariner,
// suse or "" (unknown).
func pkgFamily(d Distro) string {
	ids := append([]string{strings.ToLower(d.ID)}, d.IDLike...)
	for _, id := range ids {
		switch strings.ToLower(id) {
		case "ubuntu", "debian":
			return "debian"
		case "rhel", "centos", "ol", "oracle", "almalinux", "rocky", "fedora":
			return "rhel"
		case "mariner", "azurelinux":
			return "mariner"
		case "sles", "opensuse", "opensuse-leap", "suse":
			return "suse"
		}
	}
	return ""
}

// waGlob expands a host-path glob pattern under the root and returns host paths.
func waGlob(root hostroot.Root, pattern string) []string {
	dir := root.Dir()
	if root.IsHost() {
		dir = ""
	}
	matches, _ := filepath.Glob(waEscapeGlob(dir) + pattern)
	sort.Strings(matches)
	out := make([]string, 0, len(matches))
	for _, m := range matches {
		out = append(out, root.HostPath(m))
	}
	return out
}

func waEscapeGlob(s string) string {
	var b strings.Builder
	for _, c := range s {
		if strings.ContainsRune(`*?[\`, c) {
			b.WriteByte('\\')
		}
		b.WriteRune(c)
	}
	return b.String()
}

// waReadHead reads at most limit bytes of a file.
func waReadHead(file string, limit int64) ([]byte, error) {
	f, err := os.Open(file)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, limit))
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	return data, nil
}
