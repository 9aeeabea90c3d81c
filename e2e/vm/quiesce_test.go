package vm

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// The quiesce scenarios (docs/vm-acceptance.md): stand-ins under the real unit names of
// MongoDB (native unit), Cassandra (LSB init script → sysv generator) and Docker
// (docker.io with a locally imported image), then prepare, restore, kill -9 of the daemon
// at several journal writes, and a reboot between prepare and restore.

// standinVersion is the package version the quiesce and acceptance scenarios install.
const standinVersion = "1.0.0"

var (
	debOnce    sync.Once
	debPath    string
	debErr     error
	holderOnce sync.Once
	holderBin  []byte
	holderErr  error
)

// buildDeb builds the .deb once per test process (packaging/build.sh, or $ADEAGENT_VM_BUILD).
func buildDeb(t *testing.T) string {
	t.Helper()
	debOnce.Do(func() {
		start := time.Now()
		root, err := filepath.Abs("../..")
		if err != nil {
			debErr = err
			return
		}
		script := os.Getenv(EnvBuild)
		if script == "" {
			script = filepath.Join(root, "packaging", "build.sh")
		}
		out, err := os.MkdirTemp("", "adeagent-e2e-deb-")
		if err != nil {
			debErr = err
			return
		}
		cmd := exec.Command(script, standinVersion, out)
		cmd.Dir = root
		var stderr strings.Builder
		cmd.Stderr = &stderr
		b, err := cmd.Output()
		if err != nil {
			debErr = fmt.Errorf("%s %s: %v\n%s\n%s", script, standinVersion, err, b, stderr.String())
			return
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if len(lines) < 2 || !strings.HasSuffix(lines[len(lines)-2], ".deb") {
			debErr = fmt.Errorf("%s: want the .deb and .rpm paths as the last two lines, got:\n%s", script, b)
			return
		}
		debPath = strings.TrimSpace(lines[len(lines)-2])
		if !filepath.IsAbs(debPath) {
			debPath = filepath.Join(root, debPath)
		}
		Report(t, "package %s built in %.1fs", standinVersion, time.Since(start).Seconds())
	})
	if debErr != nil {
		t.Fatal(debErr)
	}
	return debPath
}

// buildHolder builds testdata/holder, the stand-in workload, as a static binary.
func buildHolder(t *testing.T) []byte {
	t.Helper()
	holderOnce.Do(func() {
		dir, err := os.MkdirTemp("", "adeagent-e2e-holder-")
		if err != nil {
			holderErr = err
			return
		}
		defer os.RemoveAll(dir)
		out := filepath.Join(dir, "holder")
		cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./testdata/holder")
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
		if b, err := cmd.CombinedOutput(); err != nil {
			holderErr = fmt.Errorf("build testdata/holder: %v\n%s", err, b)
			return
		}
		holderBin, holderErr = os.ReadFile(out)
	})
	if holderErr != nil {
		t.Fatal(holderErr)
	}
	return holderBin
}

// holderImageTar is a root filesystem with only /holder: `docker import` makes an image of it.
func holderImageTar(t *testing.T, bin []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	hdr := &tar.Header{Name: "holder", Mode: 0o755, Size: int64(len(bin)), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
	if err := tw.WriteHeader(hdr); err != nil {
		t.Fatal(err)
	}
	if _, err := tw.Write(bin); err != nil {
		t.Fatal(err)
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func testdata(t *testing.T, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func push(t *testing.T, m *Machine, path string, data []byte, mode os.FileMode) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if err := m.Push(ctx, path, data, mode); err != nil {
		t.Fatalf("push %s: %v", path, err)
	}
}

// relabel gives files written by the guest agent their policy labels (SELinux boots).
const relabel = `if [ -e /sys/fs/selinux/enforce ] && command -v restorecon >/dev/null; then restorecon -RF "$@"; fi`

// installAdeagent installs the .deb and writes the config's e2e part: ADE's unmount path
// (the Debian guest is not in ADE's table), the allowlist, and extra lines.
func installAdeagent(t *testing.T, m *Machine, allow []string, extra string) {
	t.Helper()
	start := time.Now()
	push(t, m, "/root/adeagent.deb", mustRead(t, buildDeb(t)), 0o644)
	cfg := "\n# e2e (quiesce/acceptance)\nade:\n  path: unmount\n"
	if len(allow) > 0 {
		cfg += "quiesce:\n  allow: [" + strings.Join(allow, ", ") + "]\n"
	}
	m.MustRun(t, `dpkg -i /root/adeagent.deb </dev/null >/root/dpkg.log 2>&1 || { cat /root/dpkg.log; exit 1; }
		cat >>/etc/adeagent/adeagent.yaml <<'EOF'`+cfg+extra+`
EOF
		systemctl restart adeagent
		test "$(systemctl is-active adeagent)" = active`)
	Report(t, "adeagent %s installed and configured in %.1fs", standinVersion, time.Since(start).Seconds())
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// Stand-in units of TestQuiesce and the acceptance test's database situation.
var (
	dbUnits     = []string{"mongod.service", "cassandra.service"}
	dockerUnits = []string{"docker.socket", "docker.service", "containerd.service"}
)

// installHolder puts the holder binary at /usr/local/sbin/e2e-holder.
func installHolder(t *testing.T, m *Machine) {
	t.Helper()
	push(t, m, "/usr/local/sbin/e2e-holder", buildHolder(t), 0o755)
}

// installDatabases installs and starts the MongoDB and Cassandra stand-ins. mongod.service
// goes where MongoDB's package puts it (/lib/systemd/system); neither is enabled, so that
// after a reboot only a restore starts them.
func installDatabases(t *testing.T, m *Machine) {
	t.Helper()
	installHolder(t, m)
	push(t, m, "/lib/systemd/system/mongod.service", testdata(t, "mongod.service"), 0o644)
	push(t, m, "/etc/init.d/cassandra", testdata(t, "cassandra.init"), 0o755)
	push(t, m, "/usr/local/bin/nodetool", testdata(t, "nodetool"), 0o755)
	m.MustRun(t, `cp /usr/local/sbin/e2e-holder /usr/local/sbin/mongod
		cp /usr/local/sbin/e2e-holder /usr/local/sbin/cassandra-holder
		set -- /usr/local/sbin /usr/local/bin /lib/systemd/system/mongod.service /etc/init.d/cassandra; `+relabel+`
		systemctl daemon-reload
		systemctl start mongod.service cassandra.service
		test "$(systemctl is-active mongod.service cassandra.service | sort -u)" = active
		for f in /var/lib/mongodb/x.wt /var/lib/cassandra/commitlog/x.log; do
			for i in $(seq 50); do [ -s $f ] && break; sleep 0.2; done; test -s $f
		done`)
}

// setupDocker starts docker.io (disabled in the image) with a container of a locally
// imported image: the static holder writing to a bind mount of /var/lib/app, restart
// policy unless-stopped (dockerd restarts it by itself only when it did not stop it by
// hand). AppArmor is the plain guest's LSM but the image has no apparmor_parser, which
// dockerd needs for its default profile: the container runs apparmor=unconfined.
// liveRestore sets "live-restore": true in /etc/docker/daemon.json.
func setupDocker(t *testing.T, m *Machine, liveRestore bool) {
	t.Helper()
	start := time.Now()
	push(t, m, "/root/holder-image.tar", holderImageTar(t, buildHolder(t)), 0o644)
	cfg := "{}"
	if liveRestore {
		cfg = `{"live-restore": true}`
	}
	push(t, m, "/etc/docker/daemon.json", []byte(cfg+"\n"), 0o644)
	m.MustRun(t, `systemctl start docker.socket docker.service
		docker import --change 'CMD ["/holder","/app/data.log","container"]' /root/holder-image.tar e2e/holder:1 >/dev/null
		docker run -d --name app --restart unless-stopped --network none --security-opt apparmor=unconfined \
			-v /var/lib/app:/app e2e/holder:1 >/dev/null
		for i in $(seq 100); do [ -s /var/lib/app/data.log ] && break; sleep 0.3; done
		test -s /var/lib/app/data.log
		test "$(docker inspect -f '{{.State.Running}}' app)" = true
		test "$(docker info -f '{{.LiveRestoreEnabled}}')" = `+strconv.FormatBool(liveRestore))
	Report(t, "docker (live-restore %v) with a running container in %.1fs", liveRestore, time.Since(start).Seconds())
}

// unitState is what systemctl show says of a unit.
type unitState struct {
	Active, Sub, FileState string
	MainPID                int
}

func (u unitState) String() string {
	return fmt.Sprintf("%s/%s %s pid %d", u.Active, u.Sub, u.FileState, u.MainPID)
}

func showUnits(t *testing.T, m *Machine, units ...string) map[string]unitState {
	t.Helper()
	r := m.MustRun(t, "systemctl show -p Id,ActiveState,SubState,UnitFileState,MainPID "+strings.Join(units, " ")+" 2>/dev/null")
	out := map[string]unitState{}
	for _, block := range strings.Split(strings.TrimSpace(r.Stdout), "\n\n") {
		kv := map[string]string{}
		for _, line := range strings.Split(block, "\n") {
			k, v, _ := strings.Cut(line, "=")
			kv[k] = v
		}
		pid, _ := strconv.Atoi(kv["MainPID"])
		out[kv["Id"]] = unitState{Active: kv["ActiveState"], Sub: kv["SubState"], FileState: kv["UnitFileState"], MainPID: pid}
	}
	for _, u := range units {
		if _, ok := out[u]; !ok {
			t.Fatalf("systemctl show: no %s in:\n%s", u, r.Stdout)
		}
	}
	return out
}

// qJournal is the part of /var/lib/adeagent/quiesce.json the tests read (docs/quiesce.md).
type qJournal struct {
	ID     string `json:"id"`
	BootID string `json:"boot_id"`
	Steps  []struct {
		N      int     `json:"n"`
		Kind   string  `json:"kind"`
		Target string  `json:"target"`
		Intent *string `json:"intent"`
		Done   *string `json:"done"`
		Result string  `json:"result"`
		Undo   *struct {
			Intent *string `json:"intent"`
			Done   *string `json:"done"`
			Result string  `json:"result"`
		} `json:"undo"`
	} `json:"steps"`
	Prepared *struct {
		Outcome string `json:"outcome"`
	} `json:"prepared"`
	Restore *struct {
		Who struct {
			Origin string `json:"origin"`
			PID    int    `json:"pid"`
			Comm   string `json:"comm"`
		} `json:"who"`
		BootID string  `json:"boot_id"`
		Done   *string `json:"done"`
	} `json:"restore"`
}

func (j *qJournal) restored() bool { return j != nil && j.Restore != nil && j.Restore.Done != nil }

// stepTrace is the journal's steps as "kind target: result [undo]" lines.
func (j *qJournal) stepTrace() string {
	var b strings.Builder
	for _, s := range j.Steps {
		state := "no intent"
		if s.Intent != nil {
			state = "intent"
		}
		if s.Done != nil {
			state = "done"
		}
		fmt.Fprintf(&b, "  %2d %-17s %-40s %-9s %s", s.N, s.Kind, s.Target, state, s.Result)
		if s.Undo != nil {
			fmt.Fprintf(&b, " | undo: %s", s.Undo.Result)
		}
		b.WriteString("\n")
	}
	return b.String()
}

const journalPath = "/var/lib/adeagent/quiesce.json"

func readJournal(t *testing.T, m *Machine) *qJournal {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	b, err := m.Fetch(ctx, journalPath)
	if err != nil {
		if strings.Contains(err.Error(), "no such file") {
			return nil
		}
		t.Fatalf("fetch %s: %v", journalPath, err)
	}
	var j qJournal
	if err := json.Unmarshal(b, &j); err != nil {
		t.Fatalf("%s: %v\n%s", journalPath, err, b)
	}
	return &j
}

// waitRestored waits until the journal says restored and the daemon is active.
func waitRestored(t *testing.T, m *Machine, timeout time.Duration) *qJournal {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		j := readJournal(t, m)
		if j.restored() {
			r := m.MustRunAny(t, "systemctl is-active adeagent")
			if strings.TrimSpace(r.Stdout) == "active" {
				return j
			}
		}
		if time.Now().After(deadline) {
			r := m.MustRunAny(t, "systemctl status adeagent adeagent-restore --no-pager; journalctl -b -u adeagent -u adeagent-restore --no-pager -o cat | grep -v '^\\s' | tail -n 40")
			trace := ""
			if j != nil {
				trace = j.stepTrace()
			}
			t.Fatalf("no finished restore within %v; journal:\n%s\n%s", timeout, trace, r.Stdout)
		}
		time.Sleep(2 * time.Second)
	}
}

// prepareJSON runs adeagentctl prepare --json and parses its answer.
func prepareJSON(t *testing.T, m *Machine) (*api.QuiesceResult, Result) {
	t.Helper()
	r := m.MustRunAny(t, "adeagentctl prepare --json")
	var res api.QuiesceResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil {
		t.Fatalf("adeagentctl prepare --json: %v\n%s", err, r)
	}
	return &res, r
}

// findingsText is the findings, one per line, for logs and failure messages.
func findingsText(fs []api.Finding) string {
	var b strings.Builder
	for _, f := range fs {
		var rel []string
		for _, r := range f.Related {
			rel = append(rel, r.Kind+":"+r.ID)
		}
		fmt.Fprintf(&b, "  [%s blocker=%v] %s: %s {%s}\n", f.Key, f.Blocker, f.Title, f.Summary, strings.Join(rel, " "))
	}
	return b.String()
}

// quiesceBed is the TestQuiesce guest and its before-state.
type quiesceBed struct {
	m       *Machine
	units   []string // the stand-ins, all running before prepare
	enforce string   // /sys/fs/selinux/enforce before prepare ("" without SELinux)
}

func (q *quiesceBed) enforceNow(t *testing.T) string {
	return strings.TrimSpace(q.m.MustRun(t, "cat /sys/fs/selinux/enforce 2>/dev/null || true").Stdout)
}

// checkRunning asserts every stand-in is active and unmasked, the container runs, and
// SELinux is as before prepare.
func (q *quiesceBed) checkRunning(t *testing.T) {
	t.Helper()
	for u, s := range showUnits(t, q.m, q.units...) {
		if s.Active != "active" {
			t.Errorf("%s: %s, want active", u, s)
		}
		if strings.HasPrefix(s.FileState, "masked") {
			t.Errorf("%s: still %s", u, s.FileState)
		}
	}
	r := q.m.MustRunAny(t, "docker inspect -f '{{.State.Running}} {{.State.Pid}}' app")
	if !strings.HasPrefix(r.Stdout, "true ") {
		t.Errorf("container app not running: %s", r)
	}
	if got := q.enforceNow(t); got != q.enforce {
		t.Errorf("SELinux enforce = %q, want %q (as before prepare)", got, q.enforce)
	}
}

// prepareReady runs prepare and asserts ready: every stand-in inactive and runtime-masked,
// its processes gone, SELinux permissive, status phase ready with the quiesced list.
func (q *quiesceBed) prepareReady(t *testing.T) *api.QuiesceResult {
	t.Helper()
	res, r := prepareJSON(t, q.m)
	if res.Outcome != api.OutcomeReady || r.ExitCode != 0 {
		t.Fatalf("prepare: outcome %q (exit %d), want ready; findings:\n%s\nstderr: %s", res.Outcome, r.ExitCode, findingsText(res.Findings), r.Stderr)
	}
	for u, s := range showUnits(t, q.m, q.units...) {
		if s.Active != "inactive" && s.Active != "failed" {
			t.Errorf("%s after prepare: %s, want inactive", u, s)
		}
		if s.FileState != "masked-runtime" {
			t.Errorf("%s after prepare: unit file state %q, want masked-runtime", u, s.FileState)
		}
	}
	r = q.m.MustRunAny(t, "pgrep -a -x 'mongod|cassandra-holde|holder|dockerd|containerd|containerd-shim.*'")
	if strings.TrimSpace(r.Stdout) != "" {
		t.Errorf("stand-in processes left after prepare:\n%s", r.Stdout)
	}
	if q.enforce != "" {
		if got := q.enforceNow(t); got != "0" {
			t.Errorf("SELinux enforce after prepare = %q, want 0 (permissive)", got)
		}
	}
	var st api.Report
	out := q.m.MustRunAny(t, "adeagentctl status --json").Stdout // exit 1: not ready (the Debian guest has readiness blockers)
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	if st.Phase != api.PhaseReady {
		t.Errorf("status phase %q after prepare, want %q", st.Phase, api.PhaseReady)
	}
	quiesced := map[string]bool{}
	for _, u := range st.Quiesced {
		quiesced[u.Unit] = true
	}
	for _, u := range q.units {
		if !quiesced[u] {
			t.Errorf("status: %s not in quiesced %v", u, st.Quiesced)
		}
	}
	if q.enforce == "1" && (st.SELinux == nil || st.SELinux.Mode != "permissive" || st.SELinux.Previous != "enforcing") {
		t.Errorf("status selinux = %+v, want permissive (previous enforcing)", st.SELinux)
	}
	return res
}

// restore runs adeagentctl restore and asserts everything is back.
func (q *quiesceBed) restore(t *testing.T) {
	t.Helper()
	r := q.m.MustRunAny(t, "adeagentctl restore --json")
	var res api.QuiesceResult
	if err := json.Unmarshal([]byte(r.Stdout), &res); err != nil || res.Outcome != api.OutcomeRestored || r.ExitCode != 0 {
		t.Fatalf("restore: %v, outcome %q; findings:\n%s\n%s", err, res.Outcome, findingsText(res.Findings), r)
	}
	q.checkRunning(t)
	var st api.Report
	if err := json.Unmarshal([]byte(q.m.MustRunAny(t, "adeagentctl status --json").Stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Phase != api.PhaseRestored && st.Phase != api.PhaseObserving {
		t.Errorf("status phase %q after restore, want restored", st.Phase)
	}
	if j := readJournal(t, q.m); !j.restored() {
		t.Errorf("journal does not say restored:\n%s", j.stepTrace())
	}
}

// ensureRestored brings the bed back to "everything running" when a scenario runs alone
// or after a failed one.
func (q *quiesceBed) ensureRestored(t *testing.T) {
	t.Helper()
	if j := readJournal(t, q.m); j != nil && !j.restored() {
		q.m.MustRunAny(t, "adeagentctl restore")
	}
}

// crashDropIn turns on the daemon's test-only crash switch.
const crashDropIn = `[Service]
Environment=ADEAGENT_TEST_CRASH_FILE=/run/adeagent-crash
`

// TestQuiesce: prepare/restore with real systemd, Docker and SELinux enforcing, kill -9 of
// the daemon at journal writes of prepare and restore, and a reboot in between.
func TestQuiesce(t *testing.T) {
	t.Parallel() // VM tests run two at a time (go test -parallel = GOMAXPROCS): the CI budget
	Require(t)
	buildDeb(t)
	buildHolder(t)
	total := time.Now()
	m := Boot(t, Options{SELinux: SELinuxEnforcing})
	defer m.Shutdown()
	q := &quiesceBed{m: m, units: append(append([]string{}, dbUnits...), dockerUnits...)}

	setup := time.Now()
	installAdeagent(t, m, []string{"e2e-etc.service"}, "")
	push(t, m, "/etc/systemd/system/adeagent.service.d/test.conf", []byte(crashDropIn), 0o644)
	installDatabases(t, m)
	setupDocker(t, m, false)
	// e2e-etc.service: an allowlisted unit whose file is in /etc/systemd/system (see the
	// mask-etc-unit scenario).
	m.MustRun(t, `printf '[Service]\nExecStart=/usr/local/sbin/e2e-holder /var/lib/e2e-etc/x.log\n' >/etc/systemd/system/e2e-etc.service
		set -- /etc/systemd/system; `+relabel+`
		systemctl daemon-reload
		systemctl restart adeagent
		systemctl start e2e-etc.service`)
	q.enforce = q.enforceNow(t)
	Report(t, "setup (package, stand-ins, docker) in %.1fs; SELinux enforce=%q", time.Since(setup).Seconds(), q.enforce)
	if q.enforce != "1" {
		t.Errorf("the guest booted with SELinuxEnforcing has enforce=%q", q.enforce)
	}

	step(t, "dry-run", func(t *testing.T) {
		q.ensureRestored(t)
		before := showUnits(t, m, q.units...)
		r := m.MustRun(t, "adeagentctl prepare --dry-run --json")
		var plan api.QuiescePlan
		if err := json.Unmarshal([]byte(r.Stdout), &plan); err != nil {
			t.Fatalf("dry run: %v\n%s", err, r.Stdout)
		}
		planned := map[string]bool{}
		for _, u := range append(plan.Reactivators, plan.Units...) {
			planned[u.Unit] = true
		}
		for _, u := range append(append([]string{}, q.units...), "e2e-etc.service") {
			if !planned[u] {
				t.Errorf("dry run does not plan to stop %s: %s", u, r.Stdout)
			}
		}
		if plan.Path != "unmount" {
			t.Errorf("plan path %q, want unmount (config ade.path)", plan.Path)
		}
		t.Logf("adeagentctl prepare --dry-run:\n%s", m.MustRun(t, "adeagentctl prepare --dry-run").Stdout)
		after := showUnits(t, m, q.units...)
		for u := range before {
			if before[u] != after[u] {
				t.Errorf("dry run changed %s: %s → %s", u, before[u], after[u])
			}
		}
		if got := q.enforceNow(t); got != q.enforce {
			t.Errorf("dry run changed SELinux enforce to %q", got)
		}
		if r := m.MustRunAny(t, "test -e "+journalPath); r.ExitCode == 0 {
			t.Errorf("dry run wrote the journal")
		}
	})

	step(t, "prepare", func(t *testing.T) {
		q.ensureRestored(t)
		res := q.prepareReady(t)
		var steps []string
		for _, s := range res.Steps {
			steps = append(steps, s.Kind+" "+s.Target+": "+s.Result)
		}
		t.Logf("prepare steps:\n  %s\nfindings:\n%s", strings.Join(steps, "\n  "), findingsText(res.Findings))
		Report(t, "prepare: %s in %.1fs (%d steps)", res.Outcome, res.DurationMS/1000, len(res.Steps))
		r := m.MustRun(t, "cat /var/lib/cassandra/nodetool.log")
		if !strings.Contains(r.Stdout, "nodetool drain") {
			t.Errorf("pre-stop nodetool drain did not run: %q", r.Stdout)
		}
	})

	step(t, "mask-etc-unit", func(t *testing.T) {
		// A runtime mask (/run/systemd/system) does not shadow a unit file in
		// /etc/systemd/system (measured here: UnitFileState stays "static" and a start
		// succeeds), so prepare adds a runtime drop-in whose start condition never holds
		// (docs/quiesce.md). Checked after the prepare above: a start must not start it.
		j := readJournal(t, m)
		if j == nil || j.restored() {
			t.Skip("needs the prepare scenario's prepared state")
		}
		s := showUnits(t, m, "e2e-etc.service")["e2e-etc.service"]
		if s.Active != "inactive" {
			t.Fatalf("e2e-etc.service (quiesce.allow) after prepare: %s", s)
		}
		r := m.MustRunAny(t, "ls /run/systemd/system/e2e-etc.service.d/; systemctl start e2e-etc.service; echo start rc=$?; "+
			"echo active=$(systemctl is-active e2e-etc.service); systemctl show -p ConditionResult e2e-etc.service")
		if !strings.Contains(r.Stdout, "zz-adeagent-quiesce.conf") || !strings.Contains(r.Stdout, "active=inactive") ||
			!strings.Contains(r.Stdout, "ConditionResult=no") {
			t.Errorf("a start of the /etc unit after prepare was not held back:\n%s", r.Stdout)
		}
	})

	step(t, "restore", func(t *testing.T) {
		if j := readJournal(t, m); j == nil || j.restored() {
			q.prepareReady(t)
		}
		start := time.Now()
		q.restore(t)
		Report(t, "restore: restored in %.1fs", time.Since(start).Seconds())
		if s := showUnits(t, m, "e2e-etc.service")["e2e-etc.service"]; s.Active != "active" {
			t.Errorf("e2e-etc.service after restore: %s", s)
		}
	})

	step(t, "crash-points", func(t *testing.T) {
		q.ensureRestored(t)
		// Prepare's journal writes in this bed (agent/quiesce/prepare.go): 1 the plan;
		// 2-4 docker-containers (intent, record, done); 5-6 docker.socket; 7-8 nodetool
		// drain; then two each for e2e-etc (allowlisted units come first), cassandra, mongod,
		// docker.service, containerd; mask 19-20; SELinux 21-22; 23 prepared. A kill after
		// write 1 changed nothing; after 4 Docker is recorded but nothing stopped; after 12
		// docker.socket (and with it docker.service), e2e-etc and cassandra are stopped but
		// not mongod or containerd; after 22 everything is stopped, masked and SELinux is
		// permissive, but "prepared" is not written. For the last two the restore the
		// restarted daemon runs is killed too (after its write 3, 9), and the next restart
		// finishes it.
		points := []struct{ prepare, restore int }{{1, 0}, {4, 0}, {12, 3}, {22, 9}}
		for _, p := range points {
			name := fmt.Sprintf("prepare-%d", p.prepare)
			if p.restore > 0 {
				name += fmt.Sprintf("+restore-%d", p.restore)
			}
			step(t, name, func(t *testing.T) { q.crashPoint(t, p.prepare, p.restore) })
		}
	})

	step(t, "reboot", func(t *testing.T) {
		q.ensureRestored(t)
		q.prepareReady(t)
		j0 := readJournal(t, m)
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		start := time.Now()
		if err := m.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		j := waitRestored(t, m, 5*time.Minute)
		Report(t, "reboot between prepare and restore: restored %.1fs after the reboot began", time.Since(start).Seconds())
		if j.ID != j0.ID {
			t.Errorf("journal id %s after the reboot, want %s", j.ID, j0.ID)
		}
		if j.Restore.BootID == j0.BootID {
			t.Errorf("restore boot id %s = prepare's: not restored after the reboot", j.Restore.BootID)
		}
		// SELinux as configured: the kernel command line says enforcing.
		q.checkRunning(t)
		who := m.MustRun(t, `echo "adeagent-restore ExecMainPID $(systemctl show -P ExecMainPID adeagent-restore) result $(systemctl show -P Result adeagent-restore); adeagent MainPID $(systemctl show -P MainPID adeagent)"
			journalctl -b -u adeagent-restore -u adeagent --no-pager -o short | grep -i -E 'restor|owed' | cut -c1-400`).Stdout
		// The journal's restore.who says origin "boot" for both the daemon's restore at
		// start and adeagent-restore.service (and carries no pid for them): the units'
		// own journal lines tell which one restored.
		by := "unknown"
		var mainPID, execPID int
		fmt.Sscanf(who, "adeagent-restore ExecMainPID %d", &execPID)
		if i := strings.Index(who, "adeagent MainPID "); i >= 0 {
			fmt.Sscanf(who[i:], "adeagent MainPID %d", &mainPID)
		}
		switch {
		case strings.Contains(who, fmt.Sprintf("adeagent[%d]: restore: restored", execPID)):
			by = "adeagent-restore.service (adeagent restore --owed)"
		case strings.Contains(who, fmt.Sprintf("adeagent[%d]: ", mainPID)) && strings.Contains(who, `"msg":"restore finished"`):
			by = "adeagent.service (the daemon at start)"
		}
		Report(t, "restore after the reboot by %s (journal: who %s pid %d comm %s)", by, j.Restore.Who.Origin, j.Restore.Who.PID, j.Restore.Who.Comm)
		t.Logf("journalctl -b -u adeagent-restore -u adeagent:\n%s", who)
	})
	Report(t, "TestQuiesce total %.1fs", time.Since(total).Seconds())
}

// crashPoint kills the daemon (test crash switch) after prepare's journal write
// prepareN and, when restoreN > 0, the restarted daemon's restore after its write
// restoreN; systemd restarts it and it restores. Then everything must be back, and no
// unit started twice.
func (q *quiesceBed) crashPoint(t *testing.T, prepareN, restoreN int) {
	m := q.m
	all := append(append([]string{}, q.units...), "e2e-etc.service")
	start := time.Now()
	before := unitPIDs(t, m, all...)
	r0 := m.MustRun(t, `systemctl reset-failed adeagent
		journalctl -n0 --show-cursor -o cat | sed -n 's/^-- cursor: //p' >/root/crash.cursor
		systemctl show -P NRestarts adeagent`)
	restarts0, _ := strconv.Atoi(strings.TrimSpace(r0.Stdout))
	chain := ""
	if restoreN > 0 {
		// The prepare's kill removed the switch; set it again for the restore the
		// restarted daemon runs (RestartSec=5s later).
		chain = fmt.Sprintf("echo %d >/run/adeagent-crash", restoreN)
	}
	r := m.MustRunAny(t, fmt.Sprintf(`echo %d >/run/adeagent-crash
		adeagentctl prepare --json >/root/crash-prepare.json 2>/root/crash-prepare.err; rc=$?
		%s
		echo "prepare exit $rc: $(cat /root/crash-prepare.err)"`, prepareN, chain))
	t.Logf("%s", strings.TrimSpace(r.Stdout))
	if strings.Contains(r.Stdout, "prepare exit 0") {
		t.Fatalf("prepare finished although the daemon should have been killed after journal write %d", prepareN)
	}
	j := waitRestored(t, m, 6*time.Minute)
	took := time.Since(start)
	t.Logf("journal after the crash and the restore at restart:\n%s", j.stepTrace())
	r = m.MustRun(t, `systemctl show -P NRestarts adeagent
		journalctl -b -u adeagent --after-cursor="$(cat /root/crash.cursor)" --no-pager -o cat | grep -E 'Main process exited|a restore is owed|restore finished|test crash' | cut -c1-300 || true`)
	lines := strings.SplitN(r.Stdout, "\n", 2)
	restarts, _ := strconv.Atoi(strings.TrimSpace(lines[0]))
	want := 1
	if restoreN > 0 {
		want = 2
	}
	if restarts-restarts0 != want {
		t.Errorf("systemd restarted the daemon %d times, want %d (kill in prepare%s):\n%s", restarts-restarts0, want,
			map[bool]string{true: " and in its restore", false: ""}[restoreN > 0], r.Stdout)
	}
	if len(lines) > 1 {
		t.Logf("daemon journal:\n%s", lines[1])
	}
	q.checkRunning(t)
	if s := showUnits(t, m, "e2e-etc.service")["e2e-etc.service"]; s.Active != "active" {
		t.Errorf("e2e-etc.service: %s, want active", s)
	}
	// No unit started twice: a unit whose MainPID is unchanged never stopped and must
	// not have been started; one that was stopped is started exactly once.
	after := unitPIDs(t, m, all...)
	intent := map[string]bool{}
	for _, s := range j.Steps {
		if s.Intent != nil {
			intent[s.Target] = true
		}
	}
	var table []string
	for _, u := range all {
		starts := strings.TrimSpace(m.MustRun(t, `journalctl -b -u `+u+` --after-cursor="$(cat /root/crash.cursor)" --no-pager -o cat | grep -c -E '^(Started|Listening on) ' || true`).Stdout)
		n, _ := strconv.Atoi(starts)
		same := before[u] == after[u]
		table = append(table, fmt.Sprintf("%s: pid %d→%d, starts %d, stop intent %v", u, before[u], after[u], n, intent[u]))
		if n > 1 {
			t.Errorf("%s started %d times after the crash", u, n)
		}
		if u == "docker.socket" {
			continue // no MainPID
		}
		if same && n != 0 {
			t.Errorf("%s kept its MainPID %d but was started %d time(s)", u, after[u], n)
		}
		if !same && n != 1 {
			t.Errorf("%s has a new MainPID (%d→%d) but was started %d times", u, before[u], after[u], n)
		}
		// A database whose stop was never begun must not have been touched.
		if (u == "mongod.service" || u == "cassandra.service") && !intent[u] && !same {
			t.Errorf("%s: no stop intent in the journal, yet its MainPID changed %d→%d", u, before[u], after[u])
		}
	}
	sort.Strings(table)
	t.Logf("units:\n  %s", strings.Join(table, "\n  "))
	Report(t, "crash after prepare write %d (restore write %d): consistent again after %.1fs", prepareN, restoreN, took.Seconds())
}

// unitPIDs is each unit's MainPID, or, without one (cassandra's generated SysV unit is
// Type=forking without a PID file), the first process of its cgroup; 0 when none.
func unitPIDs(t *testing.T, m *Machine, units ...string) map[string]int {
	t.Helper()
	r := m.MustRun(t, `for u in `+strings.Join(units, " ")+`; do
			p=$(systemctl show -P MainPID "$u")
			if [ "${p:-0}" = 0 ]; then
				cg=$(systemctl show -P ControlGroup "$u")
				if [ -n "$cg" ]; then p=$(head -n1 "/sys/fs/cgroup$cg/cgroup.procs" 2>/dev/null); fi
			fi
			echo "$u ${p:-0}"
		done`)
	out := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(r.Stdout), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 {
			out[f[0]], _ = strconv.Atoi(f[1])
		}
	}
	return out
}
