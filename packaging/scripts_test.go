package packaging

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// The maintainer scripts, run the way dpkg and rpm run them (every dpkg word, every rpm
// count), with fake systemctl, getent, systemd-sysusers, groupadd and addgroup on a PATH
// that has nothing else but grep, mkdir and rm. Each run happens in a private mount
// namespace whose /run (with or without /run/systemd/system: systemd running or not) and
// /var/lib are fresh tmpfs mounts, so the real scripts run unchanged and the test sees
// exactly which systemctl calls they make and what they do to /var/lib/adeagent.

const fakeTool = `#!/bin/sh
printf '%s\n' "${0##*/} $*" >>"$FAKE_LOG"
case "${0##*/}" in
getent) [ -e "$FAKE_STATE/group" ] ;;
systemd-sysusers)
	while read -r line; do printf 'stdin: %s\n' "$line" >>"$FAKE_LOG"; done
	[ -z "$FAKE_SYSUSERS_FAIL" ] || exit 1
	: >"$FAKE_STATE/group" ;;
groupadd | addgroup) : >"$FAKE_STATE/group" ;;
systemctl)
	case "$1" in is-enabled) exit "${FAKE_IS_ENABLED:-1}" ;; esac ;;
esac
`

var allFakes = []string{"systemctl", "getent", "systemd-sysusers", "groupadd", "addgroup", "adeagent"}

type scriptRun struct {
	script string   // file name in packaging/scripts
	args   []string // as dpkg or rpm pass them
	live   bool     // systemd runs (/run/systemd/system exists)
	absent []string // fakes left out (the tool is not installed)
	env    []string // FAKE_* settings, DPKG_ROOT
	group  bool     // the group adeagent exists already
	seed   []string // files created before the run (absolute; /var/lib/… is the tmpfs)
	check  []string // files whose existence is reported after the run
}

type scriptResult struct {
	calls  []string        // the fakes' log lines
	exists map[string]bool // check → exists
	stderr string
}

// unshareArgs is how this process gets a private mount namespace: as root directly,
// otherwise inside a user namespace.
func unshareArgs(t *testing.T) []string {
	t.Helper()
	if _, err := exec.LookPath("unshare"); err != nil {
		t.Skip("unshare(1) is missing (util-linux); the maintainer-script tests need a private mount namespace")
	}
	args := []string{"unshare", "--mount"}
	if os.Geteuid() != 0 {
		args = []string{"unshare", "--map-root-user", "--mount"}
	}
	if out, err := exec.Command(args[0], append(args[1:], "true")...).CombinedOutput(); err != nil {
		t.Skipf("cannot create a mount namespace (%v: %s); run as root", err, out)
	}
	return args
}

// The harness run inside the namespace; the script under test and its arguments follow.
const harness = `set -e
mount -t tmpfs tmpfs /run
if [ "$LIVE" = 1 ]; then mkdir -p /run/systemd/system; fi
mount -t tmpfs tmpfs /var/lib
for f in $SEED; do mkdir -p "${f%/*}"; : >"$f"; done
set +e
env PATH="$FAKEPATH" "$@"
rc=$?
for f in $CHECK; do if [ -e "$f" ]; then echo "EXISTS $f"; else echo "ABSENT $f"; fi; done
exit $rc
`

func runScript(t *testing.T, unshare []string, shell []string, r scriptRun) scriptResult {
	t.Helper()
	dir := t.TempDir()
	bin, tools, state := filepath.Join(dir, "bin"), filepath.Join(dir, "tools"), filepath.Join(dir, "state")
	for _, d := range []string{bin, tools, state} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range allFakes {
		if slices.Contains(r.absent, f) {
			continue
		}
		if err := os.WriteFile(filepath.Join(bin, f), []byte(fakeTool), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, tool := range []string{"grep", "mkdir", "rm"} {
		p, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(p, filepath.Join(tools, tool)); err != nil {
			t.Fatal(err)
		}
	}
	if r.group {
		if err := os.WriteFile(filepath.Join(state, "group"), nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	log := filepath.Join(dir, "log")
	script, err := filepath.Abs(filepath.Join(repoRoot, "packaging", "scripts", r.script))
	if err != nil {
		t.Fatal(err)
	}
	args := append(append([]string{}, unshare...), "sh", "-c", harness, "harness")
	args = append(append(args, shell...), script)
	args = append(args, r.args...)
	cmd := exec.Command(args[0], args[1:]...)
	live := "0"
	if r.live {
		live = "1"
	}
	cmd.Env = append(os.Environ(),
		"LIVE="+live, "SEED="+strings.Join(r.seed, " "), "CHECK="+strings.Join(r.check, " "),
		"FAKEPATH="+bin+":"+tools, "FAKE_LOG="+log, "FAKE_STATE="+state, "FAKE_SYSUSERS_FAIL=")
	cmd.Env = append(cmd.Env, r.env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("%s %q: %v\nstdout:\n%s\nstderr:\n%s", r.script, r.args, err, &stdout, &stderr)
	}
	res := scriptResult{exists: map[string]bool{}, stderr: stderr.String()}
	for _, l := range strings.Split(strings.TrimSpace(stdout.String()), "\n") {
		if p, ok := strings.CutPrefix(l, "EXISTS "); ok {
			res.exists[p] = true
		} else if p, ok := strings.CutPrefix(l, "ABSENT "); ok {
			res.exists[p] = false
		}
	}
	if data, err := os.ReadFile(log); err == nil {
		res.calls = strings.Split(strings.TrimSpace(string(data)), "\n")
	}
	return res
}

// shells are the /bin/sh flavours the scripts meet: dash (Debian, Ubuntu) and bash in
// POSIX mode (RHEL and the like).
func shells(t *testing.T) map[string][]string {
	t.Helper()
	out := map[string][]string{}
	if p, err := exec.LookPath("dash"); err == nil {
		out["dash"] = []string{p}
	}
	if p, err := exec.LookPath("bash"); err == nil {
		out["bash"] = []string{p, "--posix"}
	}
	if len(out) == 0 {
		out["sh"] = []string{"/bin/sh"}
	}
	return out
}

const (
	stateFile = "/var/lib/adeagent/quiesce.json"
	marker    = "/var/lib/adeagent/.pkg-reinstall"
)

var (
	reload      = "systemctl daemon-reload"
	enable      = "systemctl enable adeagent.service adeagent-restore.service"
	start       = "systemctl start adeagent.service"
	tryRestart  = "systemctl try-restart adeagent.service"
	stop        = "systemctl stop adeagent.service adeagent-restore.service"
	disable     = "systemctl --no-reload disable adeagent.service adeagent-restore.service"
	isEnabled   = "systemctl is-enabled --quiet adeagent.service"
	restoreOwed = "adeagent restore --owed"
	hasGroup    = "getent group adeagent"
	sysusers    = []string{"systemd-sysusers --replace=/usr/lib/sysusers.d/adeagent.conf -", "stdin: g adeagent -"}
)

func TestMaintainerScripts(t *testing.T) {
	unshare := unshareArgs(t)
	type tc struct {
		name   string
		run    scriptRun
		calls  []string
		exists map[string]bool
	}
	cat := func(parts ...any) []string {
		var out []string
		for _, p := range parts {
			switch v := p.(type) {
			case string:
				out = append(out, v)
			case []string:
				out = append(out, v...)
			}
		}
		return out
	}
	root := t.TempDir() // a DPKG_ROOT for the chrootless cases
	cases := []tc{
		// preinstall: the group, however it can be made.
		{"pre/deb-install/sysusers", scriptRun{script: "preinstall.sh", args: []string{"install"}},
			cat(hasGroup, sysusers, hasGroup), nil},
		{"pre/rpm-1/sysusers", scriptRun{script: "preinstall.sh", args: []string{"1"}},
			cat(hasGroup, sysusers, hasGroup), nil},
		{"pre/deb-upgrade/group-exists", scriptRun{script: "preinstall.sh", args: []string{"upgrade", "1.0.0"}, group: true},
			cat(hasGroup), nil},
		{"pre/rpm-2/group-exists", scriptRun{script: "preinstall.sh", args: []string{"2"}, group: true},
			cat(hasGroup), nil},
		{"pre/no-sysusers/groupadd", scriptRun{script: "preinstall.sh", args: []string{"install"}, absent: []string{"systemd-sysusers"}},
			cat(hasGroup, "groupadd -r adeagent"), nil},
		{"pre/old-sysusers/groupadd", scriptRun{script: "preinstall.sh", args: []string{"1"}, env: []string{"FAKE_SYSUSERS_FAIL=1"}},
			cat(hasGroup, sysusers, "groupadd -r adeagent"), nil},
		{"pre/only-addgroup", scriptRun{script: "preinstall.sh", args: []string{"install"}, absent: []string{"systemd-sysusers", "groupadd"}},
			cat(hasGroup, "addgroup --system adeagent"), nil},
		{"pre/deb-abort-upgrade", scriptRun{script: "preinstall.sh", args: []string{"abort-upgrade", "1.0.1"}},
			nil, nil},
		{"pre/deb-reinstall-from-config-files", scriptRun{script: "preinstall.sh", args: []string{"install", "1.0.0"}, group: true, check: []string{marker}},
			cat(hasGroup), map[string]bool{marker: true}},
		{"pre/deb-fresh-leaves-no-marker", scriptRun{script: "preinstall.sh", args: []string{"install"}, group: true, check: []string{marker}},
			cat(hasGroup), map[string]bool{marker: false}},

		// postinstall: enable + start on a first install, try-restart on an upgrade.
		{"post/deb-configure-fresh", scriptRun{script: "postinstall.sh", args: []string{"configure", ""}, live: true},
			cat(reload, enable, start), nil},
		{"post/deb-configure-fresh-no-version-arg", scriptRun{script: "postinstall.sh", args: []string{"configure"}, live: true},
			cat(reload, enable, start), nil},
		{"post/rpm-1", scriptRun{script: "postinstall.sh", args: []string{"1"}, live: true},
			cat(reload, enable, start), nil},
		{"post/deb-configure-upgrade", scriptRun{script: "postinstall.sh", args: []string{"configure", "1.0.0"}, live: true},
			cat(reload, tryRestart), nil},
		{"post/rpm-2", scriptRun{script: "postinstall.sh", args: []string{"2"}, live: true},
			cat(reload, tryRestart), nil},
		{"post/deb-reinstall-from-config-files", scriptRun{script: "postinstall.sh", args: []string{"configure", "1.0.0"}, live: true,
			seed: []string{marker}, check: []string{marker}},
			cat(reload, enable, start), map[string]bool{marker: false}},
		{"post/no-systemd-running/fresh", scriptRun{script: "postinstall.sh", args: []string{"configure", ""}},
			cat(enable), nil},
		{"post/no-systemd-running/upgrade", scriptRun{script: "postinstall.sh", args: []string{"2"}},
			nil, nil},
		{"post/no-systemctl", scriptRun{script: "postinstall.sh", args: []string{"1"}, live: true, absent: []string{"systemctl"}},
			nil, nil},
		{"post/deb-abort-upgrade/enabled", scriptRun{script: "postinstall.sh", args: []string{"abort-upgrade", "1.0.1"}, live: true,
			env: []string{"FAKE_IS_ENABLED=0"}},
			cat(reload, isEnabled, start), nil},
		{"post/deb-abort-remove/disabled", scriptRun{script: "postinstall.sh", args: []string{"abort-remove"}, live: true},
			cat(reload, isEnabled), nil},
		{"post/dpkg-root", scriptRun{script: "postinstall.sh", args: []string{"configure", ""}, live: true,
			env: []string{"DPKG_ROOT=" + root}},
			cat("systemctl --root=" + root + " enable adeagent.service adeagent-restore.service"), nil},

		// preremove: stop + disable only on the final removal.
		{"prerm/deb-remove", scriptRun{script: "preremove.sh", args: []string{"remove"}, live: true},
			cat(stop, disable), nil},
		{"prerm/rpm-0", scriptRun{script: "preremove.sh", args: []string{"0"}, live: true},
			cat(stop, disable), nil},
		{"prerm/deb-upgrade", scriptRun{script: "preremove.sh", args: []string{"upgrade", "1.0.1"}, live: true},
			nil, nil},
		// A restore the journal owes is made before the final removal, never on an upgrade.
		{"prerm/deb-remove-restores-owed", scriptRun{script: "preremove.sh", args: []string{"remove"}, live: true, seed: []string{stateFile}},
			cat(restoreOwed, stop, disable), nil},
		{"prerm/rpm-0-restores-owed", scriptRun{script: "preremove.sh", args: []string{"0"}, live: true, seed: []string{stateFile}},
			cat(restoreOwed, stop, disable), nil},
		{"prerm/deb-upgrade-keeps-prepared", scriptRun{script: "preremove.sh", args: []string{"upgrade", "1.0.1"}, live: true, seed: []string{stateFile}},
			nil, nil},
		{"prerm/rpm-1", scriptRun{script: "preremove.sh", args: []string{"1"}, live: true},
			nil, nil},
		{"prerm/deb-deconfigure", scriptRun{script: "preremove.sh", args: []string{"deconfigure", "in-favour", "x", "1"}, live: true},
			nil, nil},
		{"prerm/deb-failed-upgrade", scriptRun{script: "preremove.sh", args: []string{"failed-upgrade", "1.0.0"}, live: true},
			nil, nil},
		{"prerm/no-systemd-running/remove", scriptRun{script: "preremove.sh", args: []string{"remove"}},
			cat(disable), nil},
		{"prerm/dpkg-root", scriptRun{script: "preremove.sh", args: []string{"remove"}, live: true, env: []string{"DPKG_ROOT=" + root}},
			cat("systemctl --root=" + root + " --no-reload disable adeagent.service adeagent-restore.service"), nil},

		// postremove: reload; the state goes only with dpkg's purge.
		{"postrm/deb-remove-keeps-state", scriptRun{script: "postremove.sh", args: []string{"remove"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile}},
			cat(reload), map[string]bool{stateFile: true}},
		{"postrm/deb-purge-removes-state", scriptRun{script: "postremove.sh", args: []string{"purge"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile, "/var/lib/adeagent"}},
			cat(reload), map[string]bool{stateFile: false, "/var/lib/adeagent": false}},
		{"postrm/deb-upgrade-keeps-state", scriptRun{script: "postremove.sh", args: []string{"upgrade", "1.0.1"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile}},
			cat(reload), map[string]bool{stateFile: true}},
		{"postrm/rpm-0-keeps-state", scriptRun{script: "postremove.sh", args: []string{"0"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile}},
			cat(reload), map[string]bool{stateFile: true}},
		{"postrm/rpm-1-keeps-state", scriptRun{script: "postremove.sh", args: []string{"1"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile}},
			cat(reload), map[string]bool{stateFile: true}},
		{"postrm/no-systemd-running/purge", scriptRun{script: "postremove.sh", args: []string{"purge"},
			seed: []string{stateFile}, check: []string{stateFile}},
			nil, map[string]bool{stateFile: false}},
		{"postrm/deb-abort-install", scriptRun{script: "postremove.sh", args: []string{"abort-install"}, live: true,
			seed: []string{stateFile}, check: []string{stateFile}},
			cat(reload), map[string]bool{stateFile: true}},
	}
	for shName, shell := range shells(t) {
		for _, c := range cases {
			t.Run(shName+"/"+c.name, func(t *testing.T) {
				res := runScript(t, unshare, shell, c.run)
				if !slices.Equal(res.calls, c.calls) {
					t.Errorf("%s %q (systemd running: %v) called:\n  %s\nwant:\n  %s\nstderr: %s", c.run.script, c.run.args, c.run.live,
						strings.Join(res.calls, "\n  "), strings.Join(c.calls, "\n  "), res.stderr)
				}
				for p, want := range c.exists {
					if got, ok := res.exists[p]; !ok || got != want {
						t.Errorf("%s exists: %v, want %v", p, got, want)
					}
				}
				if strings.Contains(res.stderr, "unknown argument") {
					t.Errorf("stderr: %s", res.stderr)
				}
			})
		}
	}
}

// Each script meets an unknown word (a future dpkg or rpm) without failing and without
// touching the service (a daemon-reload is harmless).
func TestMaintainerScriptsTolerateUnknownArguments(t *testing.T) {
	unshare := unshareArgs(t)
	for _, s := range []string{"preinstall.sh", "postinstall.sh", "preremove.sh", "postremove.sh"} {
		res := runScript(t, unshare, []string{"/bin/sh"}, scriptRun{script: s, args: []string{"frobnicate"}, live: true, group: true})
		if !strings.Contains(res.stderr, "unknown argument 'frobnicate'") {
			t.Errorf("%s frobnicate: stderr %q, want a note about the unknown argument", s, res.stderr)
		}
		for _, c := range res.calls {
			if strings.HasPrefix(c, "systemctl") && c != reload {
				t.Errorf("%s frobnicate: called %s", s, c)
			}
		}
	}
}
