package packaging

import (
	"bytes"
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The packages, built by packaging/build.sh and inspected with the real dpkg-deb, dpkg,
// rpm and systemd-analyze.

const (
	version1 = "1.2.3"
	version2 = "1.2.4" // the upgrade
)

// files is what both packages install, with the modes they carry.
var files = map[string]string{
	"/usr/sbin/adeagent":                               "-rwxr-xr-x",
	"/usr/bin/adeagentctl":                             "-rwxr-xr-x",
	"/usr/lib/systemd/system/adeagent.service":         "-rw-r--r--",
	"/usr/lib/systemd/system/adeagent-restore.service": "-rw-r--r--",
	"/usr/lib/sysusers.d/adeagent.conf":                "-rw-r--r--",
	"/etc/adeagent/adeagent.yaml":                      "-rw-r--r--",
	"/usr/share/doc/adeagent/README.md":                "-rw-r--r--",
	"/usr/share/doc/adeagent/config.md":                "-rw-r--r--",
	"/usr/share/doc/adeagent/packaging.md":             "-rw-r--r--",
}

// sources maps installed files to the repository files they are copies of.
var sources = map[string]string{
	"/usr/lib/systemd/system/adeagent.service":         "systemd/adeagent.service",
	"/usr/lib/systemd/system/adeagent-restore.service": "systemd/adeagent-restore.service",
	"/usr/lib/sysusers.d/adeagent.conf":                "systemd/adeagent.sysusers",
	"/etc/adeagent/adeagent.yaml":                      "packaging/adeagent.yaml",
	"/usr/share/doc/adeagent/README.md":                "README.md",
	"/usr/share/doc/adeagent/config.md":                "docs/config.md",
	"/usr/share/doc/adeagent/packaging.md":             "docs/packaging.md",
}

const conffile = "/etc/adeagent/adeagent.yaml"

// scripts maps each package format's script names to the repository's scripts.
var debScripts = map[string]string{
	"preinst": "preinstall.sh", "postinst": "postinstall.sh", "prerm": "preremove.sh", "postrm": "postremove.sh",
}
var rpmScripts = map[string]string{
	"preinstall": "preinstall.sh", "postinstall": "postinstall.sh",
	"preuninstall": "preremove.sh", "postuninstall": "postremove.sh",
}

type cmdResult struct {
	stdout, stderr string
	code           int
}

func run(t *testing.T, dir string, env []string, name string, args ...string) cmdResult {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := cmdResult{stdout.String(), stderr.String(), 0}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.code = ee.ExitCode()
	case err != nil:
		t.Fatalf("%s %q: %v", name, args, err)
	}
	return r
}

// must runs a command that has to succeed and returns its stdout.
func must(t *testing.T, name string, args ...string) string {
	t.Helper()
	r := run(t, "", nil, name, args...)
	if r.code != 0 {
		t.Fatalf("%s %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, strings.Join(args, " "), r.code, r.stdout, r.stderr)
	}
	return r.stdout
}

func readRepo(t *testing.T, rel string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot, rel))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// buildPackages runs packaging/build.sh VERSION OUTDIR and returns the .deb and .rpm it
// names on its last two stdout lines.
func buildPackages(t *testing.T, version, out string) (deb, rpm string) {
	t.Helper()
	start := time.Now()
	r := run(t, repoRoot, nil, "bash", "packaging/build.sh", version, out)
	if r.code != 0 {
		t.Fatalf("build.sh %s: exit %d\n%s", version, r.code, r.stderr)
	}
	lines := strings.Split(strings.TrimRight(r.stdout, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("build.sh stdout: want exactly the two package paths, got %q", r.stdout)
	}
	deb, rpm = lines[0], lines[1]
	if want := filepath.Join(out, "adeagent_"+version+"_amd64.deb"); deb != want {
		t.Errorf("deb path %s, want %s", deb, want)
	}
	if want := filepath.Join(out, "adeagent-"+version+"-1.x86_64.rpm"); rpm != want {
		t.Errorf("rpm path %s, want %s", rpm, want)
	}
	for _, p := range []string{deb, rpm} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d bytes", filepath.Base(p), fi.Size())
	}
	t.Logf("build.sh %s took %v", version, time.Since(start).Round(100*time.Millisecond))
	return deb, rpm
}

func TestBuildScriptRejectsBadVersions(t *testing.T) {
	for _, v := range []string{"v1.2.3", "1.2", "1.2.3.4", "01.2.3", "1.2.3-", "1.2.3+meta", "1.2.3-rc_1", "latest", ""} {
		r := run(t, repoRoot, nil, "bash", "packaging/build.sh", v, t.TempDir())
		if r.code != 2 || !strings.Contains(r.stderr, "is not MAJOR.MINOR.PATCH") {
			t.Errorf("build.sh %q: exit %d, stderr %q; want exit 2 naming the expected form", v, r.code, r.stderr)
		}
		if r.stdout != "" {
			t.Errorf("build.sh %q wrote to stdout: %q", v, r.stdout)
		}
	}
	if r := run(t, repoRoot, nil, "bash", "packaging/build.sh"); r.code != 2 || !strings.Contains(r.stderr, "usage") {
		t.Errorf("build.sh without arguments: exit %d, stderr %q", r.code, r.stderr)
	}
}

// checkStaticBinary asserts that path is a static ELF executable (no interpreter, no
// shared libraries) and that `path version` names version.
func checkStaticBinary(t *testing.T, path, name, version string) {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Errorf("%s has an ELF interpreter (PT_INTERP): not a static binary", path)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("%s needs shared libraries %v", path, libs)
	}
	if runtime.GOARCH != "amd64" {
		return
	}
	r := run(t, "", nil, path, "--socket", "/nonexistent/adeagent.sock", "version")
	if name == "adeagent" {
		r = run(t, "", nil, path, "version")
	}
	want := regexp.MustCompile(`^` + name + ` ` + regexp.QuoteMeta(version) + ` \(commit ([0-9a-f]{12}|unknown), go`)
	if !want.MatchString(r.stdout) {
		t.Errorf("%s version printed %q, want %s", path, r.stdout, want)
	}
}

func TestPackages(t *testing.T) {
	if testing.Short() {
		t.Skip("-short: the package build takes a while")
	}
	if _, err := exec.LookPath("go"); err != nil {
		t.Skip("no go command on PATH for packaging/build.sh")
	}
	for _, tool := range []string{"dpkg-deb", "rpm", "git"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing (apt-get install dpkg rpm git; .ci/run installs rpm): cannot check the packages", tool)
		}
	}
	if runtime.GOARCH != "amd64" {
		t.Skip("the packages are amd64 and the checks run their binaries")
	}
	out := t.TempDir()
	deb, rpm := buildPackages(t, version1, out)

	t.Run("deb/control", func(t *testing.T) {
		fields := map[string]string{}
		ctl := must(t, "dpkg-deb", "-f", deb)
		var last string
		for _, l := range strings.Split(ctl, "\n") {
			if k, v, ok := strings.Cut(l, ": "); ok && !strings.HasPrefix(l, " ") {
				fields[k], last = v, k
			} else if strings.HasPrefix(l, " ") && last != "" {
				fields[last] += "\n" + l
			}
		}
		want := map[string]string{
			"Package": "adeagent", "Version": version1, "Architecture": "amd64",
			"Recommends": "systemd", "Section": "admin", "Priority": "optional",
			"Homepage": "https://github.com/adeagent/adeagent",
		}
		for k, v := range want {
			if fields[k] != v {
				t.Errorf("control %s: %q, want %q", k, fields[k], v)
			}
		}
		for _, k := range []string{"Depends", "Pre-Depends"} {
			if v, ok := fields[k]; ok {
				t.Errorf("control %s: %q; the binaries are static and need nothing", k, v)
			}
		}
		if !strings.Contains(fields["Maintainer"], "@") || !strings.HasPrefix(fields["Description"], "Readiness agent for Azure Disk Encryption") {
			t.Errorf("Maintainer %q / Description %q", fields["Maintainer"], fields["Description"])
		}
	})

	t.Run("deb/contents", func(t *testing.T) {
		got := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(must(t, "dpkg-deb", "-c", deb)), "\n") {
			f := strings.Fields(l)
			if len(f) < 6 || strings.HasPrefix(f[0], "d") {
				continue
			}
			if f[1] != "root/root" {
				t.Errorf("%s is owned by %s", f[5], f[1])
			}
			got[strings.TrimPrefix(f[5], ".")] = f[0]
		}
		if !mapsEqual(got, files) {
			t.Errorf("deb files:\n%v\nwant:\n%v", got, files)
		}
		if c := strings.TrimSpace(must(t, "dpkg-deb", "-I", deb, "conffiles")); c != conffile {
			t.Errorf("conffiles: %q, want %q", c, conffile)
		}
		for name, src := range debScripts {
			if got, want := must(t, "dpkg-deb", "-I", deb, name), readRepo(t, "packaging/scripts/"+src); got != want {
				t.Errorf("deb %s differs from packaging/scripts/%s", name, src)
			}
		}
	})

	t.Run("deb/extracted", func(t *testing.T) {
		root := t.TempDir()
		must(t, "dpkg-deb", "-x", deb, root)
		checkInstalled(t, root, true)
		checkStaticBinary(t, filepath.Join(root, "usr/sbin/adeagent"), "adeagent", version1)
		checkStaticBinary(t, filepath.Join(root, "usr/bin/adeagentctl"), "adeagentctl", version1)
		// The shipped configuration is accepted by the shipped binary.
		r := run(t, "", nil, filepath.Join(root, "usr/sbin/adeagent"), "config", "--config", filepath.Join(root, conffile))
		if r.code != 0 || !strings.Contains(r.stdout, "log_level: info") {
			t.Errorf("adeagent config --config %s: exit %d\n%s%s", conffile, r.code, r.stdout, r.stderr)
		}
	})

	t.Run("rpm/metadata", func(t *testing.T) {
		if got, want := must(t, "rpm", "-qp", "--qf", "%{NAME}|%{VERSION}|%{RELEASE}|%{ARCH}|%{OS}", rpm),
			"adeagent|"+version1+"|1|x86_64|linux"; got != want {
			t.Errorf("rpm NAME|VERSION|RELEASE|ARCH|OS: %q, want %q", got, want)
		}
		if got := must(t, "rpm", "-qp", "--qf", "%{VERSION}", rpm); got != version1 {
			t.Errorf("rpm VERSION %q, want %q", got, version1)
		}
		if req := strings.Fields(must(t, "rpm", "-qpR", rpm)); !slices.Equal(req, []string{"/bin/sh"}) {
			t.Errorf("rpm requires %v, want only /bin/sh (for the scriptlets)", req)
		}
		if rec := strings.TrimSpace(must(t, "rpm", "-qp", "--recommends", rpm)); rec != "systemd" {
			t.Errorf("rpm recommends %q, want systemd", rec)
		}
	})

	t.Run("rpm/contents", func(t *testing.T) {
		got := map[string]string{}
		flags := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(must(t, "rpm", "-qp", "--qf",
			"[%{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME} %{FILEFLAGS:fflags}. %{FILENAMES}\n]", rpm)), "\n") {
			f := strings.Fields(l)
			if len(f) != 4 {
				t.Fatalf("rpm file line %q", l)
			}
			if f[1] != "root:root" {
				t.Errorf("%s is owned by %s", f[3], f[1])
			}
			flags[f[3]] = strings.TrimSuffix(f[2], ".")
			if !strings.HasPrefix(f[0], "d") {
				got[f[3]] = f[0]
			}
		}
		if !mapsEqual(got, files) {
			t.Errorf("rpm files:\n%v\nwant:\n%v", got, files)
		}
		if c := strings.TrimSpace(must(t, "rpm", "-qpc", rpm)); c != conffile {
			t.Errorf("rpm -qpc: %q, want %q", c, conffile)
		}
		if flags[conffile] != "cn" {
			t.Errorf("%s flags %q, want cn: %%config(noreplace)", conffile, flags[conffile])
		}
		for p := range files {
			if strings.HasPrefix(p, "/usr/share/doc/") && flags[p] != "d" {
				t.Errorf("%s flags %q, want d: %%doc", p, flags[p])
			}
		}
		// The package owns /etc/adeagent but no system directory.
		list := strings.Fields(must(t, "rpm", "-qpl", rpm))
		for _, p := range list {
			if _, ok := files[p]; !ok && p != "/etc/adeagent" {
				t.Errorf("rpm -qpl lists %s", p)
			}
		}
		scripts := must(t, "rpm", "-qp", "--scripts", rpm)
		for name, src := range rpmScripts {
			body := strings.TrimRight(readRepo(t, "packaging/scripts/"+src), "\n")
			if !strings.Contains(scripts, name+" scriptlet (using /bin/sh):\n"+body) {
				t.Errorf("rpm %s scriptlet is not packaging/scripts/%s", name, src)
			}
		}
	})

	t.Run("systemd-analyze", func(t *testing.T) { checkSystemdAnalyze(t, deb) })

	// The scratch installs change only a temporary root, but dpkg and rpm want root for
	// file ownership; and the upgrade needs a second build.
	if os.Geteuid() != 0 {
		t.Log("not root: skipping the scratch installs with dpkg --root and rpm --root")
		return
	}
	deb2, rpm2 := buildPackages(t, version2, out)
	t.Run("rpm/scratch-install", func(t *testing.T) { scratchRPM(t, rpm, rpm2) })
	t.Run("deb/scratch-install", func(t *testing.T) { scratchDeb(t, deb, deb2) })
}

func mapsEqual(a, b map[string]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// checkInstalled asserts that every packaged file is under root (or, with present false,
// that none of the binaries and units is) and that copies equal their sources.
func checkInstalled(t *testing.T, root string, present bool) {
	t.Helper()
	for p := range files {
		_, err := os.Stat(filepath.Join(root, p))
		switch {
		case present && err != nil:
			t.Errorf("%s: %v", p, err)
		case !present && err == nil && p != conffile:
			t.Errorf("%s is still there", p)
		}
	}
	if !present {
		return
	}
	for dst, src := range sources {
		got, err := os.ReadFile(filepath.Join(root, dst))
		if err == nil && string(got) != readRepo(t, src) && dst != conffile {
			t.Errorf("%s differs from %s", dst, src)
		}
	}
}

// checkSystemdAnalyze runs `systemd-analyze verify` on the units as installed by the .deb
// (a root made of the host's unit directory, the extracted package and /bin/kill, so that
// ExecStart= and the targets resolve) and records the `systemd-analyze security` exposure.
func checkSystemdAnalyze(t *testing.T, deb string) {
	sa, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Skip("systemd-analyze is missing (package systemd)")
	}
	hostUnits := "/usr/lib/systemd/system"
	if _, err := os.Stat(filepath.Join(hostUnits, "multi-user.target")); err != nil {
		t.Skipf("no %s/multi-user.target on this host to verify against", hostUnits)
	}
	kill, err := exec.LookPath("kill")
	if err != nil || !filepath.IsAbs(kill) {
		t.Skip("no kill(1) binary for ExecReload=")
	}
	root := t.TempDir()
	for _, d := range []string{"usr/lib/systemd", "usr/bin", "usr/sbin"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	must(t, "cp", "-a", hostUnits, filepath.Join(root, "usr/lib/systemd/"))
	must(t, "dpkg-deb", "-x", deb, root)
	must(t, "cp", kill, filepath.Join(root, "usr/bin/kill"))
	for _, l := range []string{"bin", "sbin", "lib"} {
		if err := os.Symlink("usr/"+l, filepath.Join(root, l)); err != nil {
			t.Fatal(err)
		}
	}
	units := []string{"adeagent.service", "adeagent-restore.service"}
	r := run(t, "", nil, sa, append([]string{"verify", "--root=" + root}, units...)...)
	if r.code != 0 || strings.Contains(r.stderr, "adeagent") {
		t.Errorf("systemd-analyze verify: exit %d\n%s%s", r.code, r.stdout, r.stderr)
	}
	for _, u := range units {
		r := run(t, "", nil, sa, "security", "--offline=true", "--root="+root, u)
		m := regexp.MustCompile(`Overall exposure level for \S+: ([0-9.]+) (\S+)`).FindStringSubmatch(r.stdout + r.stderr)
		if m == nil {
			t.Logf("systemd-analyze security %s: no score (exit %d): %s", u, r.code, r.stderr)
			continue
		}
		t.Logf("systemd-analyze security --offline=true %s: exposure %s %s", u, m[1], m[2])
		if score, _ := strconv.ParseFloat(m[1], 64); score > 6.0 {
			t.Errorf("%s: exposure %s rose above 6.0: was a hardening option dropped?", u, m[1])
		}
	}
}

// scratchRPM installs the .rpm into an empty root with its own database (--noscripts:
// the root has no shell; the scripts are tested in scripts_test.go), upgrades it with a
// changed configuration file in place, and erases it.
func scratchRPM(t *testing.T, rpm1, rpm2 string) {
	root := t.TempDir()
	db := []string{"--root", root, "--dbpath", "/var/lib/rpm"}
	rpmCmd := func(args ...string) string {
		t.Helper()
		return must(t, "rpm", append(append([]string{}, db...), args...)...)
	}
	rpmCmd("--initdb")
	rpmCmd("-i", "--nodeps", "--noscripts", rpm1)
	checkInstalled(t, root, true)
	checkStaticBinary(t, filepath.Join(root, "usr/sbin/adeagent"), "adeagent", version1)
	if got := rpmCmd("-q", "--qf", "%{VERSION}", "adeagent"); got != version1 {
		t.Errorf("installed version %q", got)
	}
	if got := strings.TrimSpace(rpmCmd("-qc", "adeagent")); got != conffile {
		t.Errorf("rpm -qc: %q", got)
	}
	rpmCmd("-V", "--nodeps", "adeagent")

	cfg := filepath.Join(root, conffile)
	local := readRepo(t, "packaging/adeagent.yaml") + "log_level: debug\n"
	if err := os.WriteFile(cfg, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	rpmCmd("-U", "--nodeps", "--noscripts", rpm2)
	if got := rpmCmd("-q", "--qf", "%{VERSION}", "adeagent"); got != version2 {
		t.Errorf("after the upgrade the version is %q, want %s", got, version2)
	}
	checkStaticBinary(t, filepath.Join(root, "usr/sbin/adeagent"), "adeagent", version2)
	if b, _ := os.ReadFile(cfg); string(b) != local {
		t.Errorf("the upgrade replaced the changed %s", conffile)
	}

	rpmCmd("-e", "--nodeps", "--noscripts", "adeagent")
	checkInstalled(t, root, false)
	if b, err := os.ReadFile(cfg + ".rpmsave"); err != nil || string(b) != local {
		t.Errorf("rpm -e: the changed configuration was not kept as .rpmsave (%v)", err)
	}
}

// guard stands in for systemctl, systemd-sysusers and groupadd during the dpkg scratch
// install: it passes calls aimed at the scratch root (--root=, --prefix) to the real tool
// and refuses anything that would touch this host.
const guard = `#!/bin/sh
name=${0##*/}
case " $* " in
*" --root="* | *" --prefix "*) ;;
*)
	echo "$name $*" >>"$GUARD_LOG"
	echo "guard: refusing host-wide $name $*" >&2
	exit 1
	;;
esac
PATH=$REAL_PATH exec "$name" "$@"
`

// scratchDeb installs the .deb into an empty root with dpkg --root and
// --force-script-chrootless, so that the real maintainer scripts run with DPKG_ROOT set
// and the real systemctl --root and systemd-sysusers --root act on that root. It walks
// install → upgrade (changed conffile kept) → remove → reinstall → purge.
func scratchDeb(t *testing.T, deb1, deb2 string) {
	for _, tool := range []string{"dpkg", "systemctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s is missing", tool)
		}
	}
	root := t.TempDir()
	for _, d := range []string{"var/lib/dpkg/info", "var/lib/dpkg/updates", "etc"} {
		if err := os.MkdirAll(filepath.Join(root, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range []string{"var/lib/dpkg/status", "var/lib/dpkg/available", "etc/group", "etc/gshadow", "etc/passwd", "etc/shadow"} {
		if err := os.WriteFile(filepath.Join(root, f), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	guards := t.TempDir()
	for _, g := range []string{"systemctl", "systemd-sysusers", "groupadd", "addgroup", "getent"} {
		if err := os.WriteFile(filepath.Join(guards, g), []byte(guard), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	guardLog := filepath.Join(t.TempDir(), "refused")
	env := []string{
		"PATH=" + guards + string(os.PathListSeparator) + os.Getenv("PATH"),
		"REAL_PATH=" + os.Getenv("PATH"), "GUARD_LOG=" + guardLog,
	}
	dpkg := func(args ...string) {
		t.Helper()
		args = append([]string{"--root=" + root, "--force-script-chrootless", "--log=" + filepath.Join(root, "dpkg.log")}, args...)
		r := run(t, "", env, "dpkg", args...)
		if r.code != 0 {
			t.Fatalf("dpkg %s: exit %d\n%s%s", strings.Join(args, " "), r.code, r.stdout, r.stderr)
		}
	}
	status := func() string {
		r := run(t, "", nil, "dpkg-query", "--admindir="+filepath.Join(root, "var/lib/dpkg"), "-W", "-f", "${Status} ${Version}", "adeagent")
		return strings.TrimSpace(r.stdout)
	}
	wants := filepath.Join(root, "etc/systemd/system/multi-user.target.wants")
	enabled := func() bool {
		n := 0
		for _, u := range []string{"adeagent.service", "adeagent-restore.service"} {
			if _, err := os.Lstat(filepath.Join(wants, u)); err == nil {
				n++
			}
		}
		if n == 1 {
			t.Errorf("only one of the two units is enabled")
		}
		return n == 2
	}
	exists := func(p string) bool {
		_, err := os.Lstat(filepath.Join(root, p))
		return err == nil
	}
	state := "/var/lib/adeagent/quiesce.json"

	// Install: files, the group, both units enabled.
	dpkg("-i", deb1)
	if s := status(); s != "install ok installed "+version1 {
		t.Errorf("after install: %q", s)
	}
	checkInstalled(t, root, true)
	if g, _ := os.ReadFile(filepath.Join(root, "etc/group")); !regexp.MustCompile(`(?m)^adeagent:x:\d+:`).Match(g) {
		t.Errorf("group adeagent was not created in the root's /etc/group: %q", g)
	}
	if !enabled() {
		t.Errorf("after install the units are not enabled (%s)", wants)
	}

	// Upgrade with a changed conffile and some state: both kept, units still enabled.
	cfg := filepath.Join(root, conffile)
	local := readRepo(t, "packaging/adeagent.yaml") + "log_level: debug\n"
	if err := os.WriteFile(cfg, []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(root, "var/lib/adeagent"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, state), []byte("{}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	dpkg("-i", deb2)
	if s := status(); s != "install ok installed "+version2 {
		t.Errorf("after upgrade: %q", s)
	}
	checkStaticBinary(t, filepath.Join(root, "usr/sbin/adeagent"), "adeagent", version2)
	if b, _ := os.ReadFile(cfg); string(b) != local {
		t.Errorf("the upgrade replaced the changed conffile")
	}
	if !exists(state) || !enabled() {
		t.Errorf("after upgrade: state kept %v, units enabled %v", exists(state), enabled())
	}

	// Remove: binaries and units gone, units disabled; conffile and state stay.
	dpkg("-r", "adeagent")
	if s := status(); s != "deinstall ok config-files "+version2 {
		t.Errorf("after remove: %q", s)
	}
	checkInstalled(t, root, false)
	if enabled() || !exists(conffile) || !exists(state) {
		t.Errorf("after remove: enabled %v, conffile kept %v, state kept %v", enabled(), exists(conffile), exists(state))
	}

	// Reinstall over the config-files state (dpkg then calls postinst "configure
	// <old version>"): enabled again like a first install, the marker is gone.
	dpkg("-i", deb2)
	if !enabled() || exists("/var/lib/adeagent/.pkg-reinstall") {
		t.Errorf("after reinstall: enabled %v, marker left %v", enabled(), exists("/var/lib/adeagent/.pkg-reinstall"))
	}
	if b, _ := os.ReadFile(cfg); string(b) != local {
		t.Errorf("the reinstall replaced the changed conffile")
	}

	// Purge: nothing of the package is left, state and configuration included.
	dpkg("-P", "adeagent")
	if s := status(); s != "" && !strings.HasPrefix(s, "unknown ok not-installed") {
		t.Errorf("after purge: %q", s)
	}
	checkInstalled(t, root, false)
	for _, p := range []string{conffile, "/etc/adeagent", "/var/lib/adeagent"} {
		if exists(p) {
			t.Errorf("after purge %s is still there", p)
		}
	}
	if enabled() {
		t.Errorf("after purge the units are still enabled")
	}
	var leftovers []string
	_ = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		rel, _ := filepath.Rel(root, p)
		if err == nil && !d.IsDir() && strings.Contains(p, "adeagent") && !strings.HasPrefix(rel, "var/lib/dpkg") && rel != "dpkg.log" {
			leftovers = append(leftovers, rel)
		}
		return nil
	})
	if len(leftovers) > 0 {
		t.Errorf("after purge: %v", leftovers)
	}
	if b, err := os.ReadFile(guardLog); err == nil {
		t.Errorf("the maintainer scripts tried to act on this host instead of the --root: %s", b)
	}
}
