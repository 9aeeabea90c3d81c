package packaging

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent"
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
)

// repoRoot is the repository root, seen from this package's directory (go test's cwd).
const repoRoot = ".."

// unitLine is one key=value line of a unit file.
type unitLine struct {
	section, key, value string
	line                int // 0-based index into unitFile.lines
}

type unitFile struct {
	path    string
	lines   []string
	entries []unitLine
}

func readUnit(t *testing.T, name string) *unitFile {
	t.Helper()
	path := filepath.Join(repoRoot, "systemd", name)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	u := &unitFile{path: path, lines: strings.Split(string(data), "\n")}
	section := ""
	for i, l := range u.lines {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok {
				t.Fatalf("%s:%d: not key=value: %q", path, i+1, l)
			}
			if strings.HasSuffix(v, `\`) {
				t.Fatalf("%s:%d: continuation lines are not used in these units", path, i+1)
			}
			u.entries = append(u.entries, unitLine{section, strings.TrimSpace(k), strings.TrimSpace(v), i})
		}
	}
	return u
}

// values is every value of key in section, in order.
func (u *unitFile) values(section, key string) []string {
	var out []string
	for _, e := range u.entries {
		if e.section == section && e.key == key {
			out = append(out, e.value)
		}
	}
	return out
}

// one is the single value of key in section; the test fails when there is not exactly one.
func (u *unitFile) one(t *testing.T, section, key string) string {
	t.Helper()
	v := u.values(section, key)
	if len(v) != 1 {
		t.Fatalf("%s: [%s] %s: want exactly one value, have %q", u.path, section, key, v)
		return ""
	}
	return v[0]
}

// words is every space-separated word of every value of key in section.
func (u *unitFile) words(section, key string) []string {
	var out []string
	for _, v := range u.values(section, key) {
		out = append(out, strings.Fields(v)...)
	}
	return out
}

// parseTimespan parses the systemd time spans these units use ("30s", "5min", "1min 30s").
func parseTimespan(s string) (time.Duration, error) {
	units := map[string]time.Duration{
		"ms": time.Millisecond, "s": time.Second, "sec": time.Second,
		"m": time.Minute, "min": time.Minute, "h": time.Hour, "hr": time.Hour,
	}
	re := regexp.MustCompile(`^(\d+)\s*([a-z]*)$`)
	var total time.Duration
	for _, f := range strings.Fields(s) {
		m := re.FindStringSubmatch(f)
		if m == nil {
			return 0, fmt.Errorf("time span %q: cannot parse %q", s, f)
		}
		n, _ := strconv.Atoi(m[1])
		u := time.Second
		if m[2] != "" {
			var ok bool
			if u, ok = units[m[2]]; !ok {
				return 0, fmt.Errorf("time span %q: unit %q", s, m[2])
			}
		}
		total += time.Duration(n) * u
	}
	if total == 0 {
		return 0, fmt.Errorf("time span %q: empty", s)
	}
	return total, nil
}

func (u *unitFile) timespan(t *testing.T, section, key string) time.Duration {
	t.Helper()
	d, err := parseTimespan(u.one(t, section, key))
	if err != nil {
		t.Fatalf("%s: %s: %v", u.path, key, err)
	}
	return d
}

// rejected lists the options neither unit may set, with the reason (docs/packaging.md).
var rejected = map[string]string{
	// Each of these makes systemd create a private mount namespace for the service, whose
	// copy of the OS drive's mounts pins the old root ADE's stripdown must unmount
	// (research/ade_extension.md, facts 12; systemd's exec_needs_mount_namespace()).
	"ProtectSystem": "mount namespace", "ProtectHome": "mount namespace",
	"PrivateTmp": "mount namespace", "PrivateDevices": "mount namespace",
	"PrivateMounts": "mount namespace", "ProtectKernelTunables": "mount namespace",
	"ProtectKernelModules": "mount namespace", "ProtectKernelLogs": "mount namespace",
	"ProtectControlGroups": "mount namespace", "ReadWritePaths": "mount namespace",
	"ReadOnlyPaths": "mount namespace", "InaccessiblePaths": "mount namespace",
	"ExecPaths": "mount namespace", "NoExecPaths": "mount namespace",
	"TemporaryFileSystem": "mount namespace", "BindPaths": "mount namespace",
	"BindReadOnlyPaths": "mount namespace", "ProtectProc": "mount namespace (and hides processes)",
	"ProcSubset": "mount namespace (and hides /proc files)", "PrivateNetwork": "mount namespace (and no IMDS)",
	"PrivateIPC": "mount namespace", "NetworkNamespacePath": "mount namespace",
	"IPCNamespacePath": "mount namespace", "MountFlags": "mount namespace",
	"RootDirectory": "mount namespace", "RootImage": "mount namespace",
	"MountImages": "mount namespace", "ExtensionImages": "mount namespace",
	"ExtensionDirectories": "mount namespace", "MountAPIVFS": "mount namespace",
	"DynamicUser": "mount namespace (and no root)", "LogNamespace": "mount namespace",
	"ReadWriteDirectories": "mount namespace", "ReadOnlyDirectories": "mount namespace",
	"InaccessibleDirectories": "mount namespace",
	// Each of these is decided against in systemd/adeagent.service's comments.
	"PrivateUsers":           "no capabilities in the host's user namespace",
	"User":                   "reading every process's fds needs root",
	"NoNewPrivileges":        "SELinux domain transition (the daemon switches SELinux)",
	"MemoryDenyWriteExecute": "pre-stop tools such as nodetool are JVMs with a JIT",
	"ProtectClock":           "implies a device allow-list that closes /dev/loopN on systemd < 253",
	"ProtectHostname":        "freezes the hostname the daemon reports",
	"DevicePolicy":           "device classes are resolved at start; the scan opens /dev/loopN",
	"DeviceAllow":            "device classes are resolved at start; the scan opens /dev/loopN",
	"IPAddressDeny":          "the endpoints are configurable",
}

// hardening are the options every one of which must carry a comment saying why.
var hardening = []string{
	"CapabilityBoundingSet", "RestrictAddressFamilies", "RestrictNamespaces", "RestrictRealtime",
	"RestrictSUIDSGID", "LockPersonality", "SystemCallArchitectures", "SystemCallFilter",
	"SystemCallErrorNumber", "UMask", "OOMScoreAdjust", "WatchdogSec",
	"RestartPreventExitStatus", "SuccessExitStatus", "TimeoutStartSec", "RuntimeDirectory",
	"StateDirectory", "Before",
}

func TestUnitsSetNoRejectedOption(t *testing.T) {
	for _, name := range []string{"adeagent.service", "adeagent-restore.service"} {
		u := readUnit(t, name)
		for _, e := range u.entries {
			if why, bad := rejected[e.key]; bad {
				t.Errorf("%s:%d: %s= must not be set: %s", u.path, e.line+1, e.key, why)
			}
		}
	}
}

func TestUnitHardeningIsCommented(t *testing.T) {
	u := readUnit(t, "adeagent.service")
	for _, e := range u.entries {
		if !slices.Contains(hardening, e.key) {
			continue
		}
		// The directive's block (the non-blank lines around it) starts with a comment.
		i := e.line - 1
		for i >= 0 {
			l := strings.TrimSpace(u.lines[i])
			if l == "" || strings.HasPrefix(l, "#") {
				break
			}
			i--
		}
		if i < 0 || !strings.HasPrefix(strings.TrimSpace(u.lines[i]), "#") {
			t.Errorf("%s:%d: %s= has no comment above it saying why", u.path, e.line+1, e.key)
		}
	}
	// The omitted options are explained in one block.
	text := strings.Join(u.lines, "\n")
	for _, k := range []string{"ProtectSystem=", "PrivateTmp=", "ProtectProc=", "NoNewPrivileges=",
		"MemoryDenyWriteExecute=", "ProtectClock=", "ProtectHostname="} {
		if !strings.Contains(text, "# "+k) && !strings.Contains(text, " "+k) {
			t.Errorf("%s: the comment block on omitted options does not mention %s", u.path, k)
		}
	}
}

// evaluationTimeout reads agent.evaluationTimeout (unexported) from agent/daemon.go, so
// that this test notices when the daemon's evaluations may outlast the watchdog.
func evaluationTimeout(t *testing.T) time.Duration {
	t.Helper()
	src, err := os.ReadFile(filepath.Join(repoRoot, "agent", "daemon.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`evaluationTimeout\s*=\s*(\d+)\s*\*\s*time\.(Minute|Second)`).FindSubmatch(src)
	if m == nil {
		t.Fatal("agent/daemon.go: no `evaluationTimeout = N * time.Minute|Second`; update this test to read the new bound")
	}
	n, _ := strconv.Atoi(string(m[1]))
	if string(m[2]) == "Minute" {
		return time.Duration(n) * time.Minute
	}
	return time.Duration(n) * time.Second
}

func TestDaemonUnit(t *testing.T) {
	u := readUnit(t, "adeagent.service")
	const svc, unit, install = "Service", "Unit", "Install"

	eq := func(section, key, want string) {
		t.Helper()
		if got := u.one(t, section, key); got != want {
			t.Errorf("[%s] %s=%s, want %s", section, key, got, want)
		}
	}
	eq(svc, "Type", "notify")
	eq(svc, "NotifyAccess", "main")
	eq(svc, "ExecStart", "/usr/sbin/adeagent run")
	eq(svc, "Restart", "on-failure")
	eq(svc, "RuntimeDirectory", "adeagent")
	eq(svc, "RuntimeDirectoryMode", fmt.Sprintf("%04o", server.SocketDirMode))
	eq(svc, "StateDirectory", "adeagent")
	eq(svc, "StateDirectoryMode", "0700")
	eq(install, "WantedBy", "multi-user.target")

	stripdown := strconv.Itoa(agent.ExitStripdown)
	if w := u.words(svc, "RestartPreventExitStatus"); !slices.Contains(w, stripdown) || !slices.Contains(w, strconv.Itoa(api.ExitUsage)) {
		t.Errorf("RestartPreventExitStatus=%v: want %s (agent.ExitStripdown) and %d (configuration error)", w, stripdown, api.ExitUsage)
	}
	if w := u.words(svc, "SuccessExitStatus"); !slices.Equal(w, []string{stripdown}) {
		t.Errorf("SuccessExitStatus=%v: want exactly %s (agent.ExitStripdown)", w, stripdown)
	}

	// The daemon pings only when its main loop went round; one evaluation blocks the loop
	// for up to evaluationTimeout, and pings come every WatchdogSec/2.
	wd, et := u.timespan(t, svc, "WatchdogSec"), evaluationTimeout(t)
	if wd/2 <= et {
		t.Errorf("WatchdogSec=%v: the ping period %v must exceed the daemon's evaluation bound %v", wd, wd/2, et)
	}
	if ts := u.timespan(t, svc, "TimeoutStartSec"); ts > time.Minute {
		t.Errorf("TimeoutStartSec=%v: the guest agent waits that long at most; keep it short (≤1m)", ts)
	}
	oom, err := strconv.Atoi(u.one(t, svc, "OOMScoreAdjust"))
	if err != nil || oom >= 0 || oom < -900 {
		t.Errorf("OOMScoreAdjust=%d (%v): want negative and modest (-900 < x < 0)", oom, err)
	}

	// Ordered before the guest agent, and nothing more: it must never hold it back.
	before := u.words(unit, "Before")
	for _, ga := range []string{"walinuxagent.service", "waagent.service"} {
		if !slices.Contains(before, ga) {
			t.Errorf("Before=%v: want %s", before, ga)
		}
		for _, dep := range []string{"Requires", "Wants", "BindsTo", "Requisite", "PartOf", "Upholds", "After"} {
			if slices.Contains(u.words(unit, dep), ga) {
				t.Errorf("%s=%s: only Before= may name the guest agent", dep, ga)
			}
		}
	}

	caps := u.words(svc, "CapabilityBoundingSet")
	for _, c := range []string{"CAP_SYS_PTRACE", "CAP_DAC_READ_SEARCH", "CAP_DAC_OVERRIDE", "CAP_SYS_ADMIN",
		"CAP_NET_ADMIN", "CAP_CHOWN", "CAP_FOWNER"} {
		if !slices.Contains(caps, c) {
			t.Errorf("CapabilityBoundingSet lacks %s, which the daemon needs", c)
		}
	}
	for _, c := range caps {
		if strings.HasPrefix(c, "~") {
			t.Errorf("CapabilityBoundingSet=%v: want an allow-list", caps)
		}
	}
	fams := u.words(svc, "RestrictAddressFamilies")
	for _, f := range []string{"AF_UNIX", "AF_NETLINK", "AF_INET", "AF_INET6"} {
		if !slices.Contains(fams, f) {
			t.Errorf("RestrictAddressFamilies lacks %s", f)
		}
	}
	// The filter is a deny-list, and never denies what the daemon uses.
	for _, v := range u.values(svc, "SystemCallFilter") {
		if !strings.HasPrefix(v, "~") {
			t.Errorf("SystemCallFilter=%s: want deny-lists only (~…)", v)
		}
		for _, used := range []string{"kcmp", "fanotify_init", "fanotify_mark", "statx", "getdents64",
			"inotify_init1", "@file-system", "@privileged", "@process", "@network-io", "@system-service", "@chown", "@resources"} {
			if slices.Contains(strings.Fields(strings.TrimPrefix(v, "~")), used) {
				t.Errorf("SystemCallFilter=%s denies %s, which the daemon uses", v, used)
			}
		}
	}
	eq(svc, "SystemCallErrorNumber", "EPERM")
}

func TestRestoreUnit(t *testing.T) {
	u := readUnit(t, "adeagent-restore.service")
	checks := []struct{ section, key, want string }{
		{"Service", "Type", "oneshot"},
		{"Service", "ExecStart", "/usr/sbin/adeagent restore --owed"},
		{"Unit", "ConditionPathExists", "/var/lib/adeagent/quiesce.json"},
		{"Install", "WantedBy", "multi-user.target"},
	}
	for _, c := range checks {
		if got := u.one(t, c.section, c.key); got != c.want {
			t.Errorf("[%s] %s=%s, want %s", c.section, c.key, got, c.want)
		}
	}
	// Never before anything: its start jobs would deadlock with units ordered after the
	// guest agent, which is ordered after the daemon.
	if b := u.words("Unit", "Before"); len(b) > 0 {
		t.Errorf("Before=%v: want none", b)
	}
	after := u.words("Unit", "After")
	for _, a := range []string{"local-fs.target", "remote-fs.target", "multi-user.target"} {
		if !slices.Contains(after, a) {
			t.Errorf("After=%v: want %s", after, a)
		}
	}
	if ts := u.timespan(t, "Service", "TimeoutStartSec"); ts < 2*time.Minute || ts > 10*time.Minute {
		t.Errorf("TimeoutStartSec=%v: want about 5 minutes", ts)
	}
}

func TestSysusers(t *testing.T) {
	f, err := os.Open(filepath.Join(repoRoot, "systemd", "adeagent.sysusers"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var entries [][]string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		entries = append(entries, strings.Fields(l))
	}
	want := [][]string{{"g", agent.SocketGroup, "-"}}
	if fmt.Sprint(entries) != fmt.Sprint(want) {
		t.Errorf("sysusers entries %v, want %v (the socket's group, agent.SocketGroup)", entries, want)
	}
}
