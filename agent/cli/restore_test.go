package cli

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/quiesce"
)

// restoreRoot is a fixture root with selinuxfs (permissive now) and a state dir.
func restoreRoot(t *testing.T) (root, state string) {
	t.Helper()
	root = t.TempDir()
	for rel, content := range map[string]string{
		"proc/self/mountinfo":            "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n24 22 0:22 / /sys/fs/selinux rw - selinuxfs selinuxfs rw\n",
		"sys/fs/selinux/enforce":         "0",
		"etc/selinux/config":             "SELINUX=enforcing\n",
		"etc/os-release":                 "ID=debian\nVERSION_ID=12\n",
		"proc/sys/kernel/random/boot_id": "b1\n",
	} {
		p := filepath.Join(root, rel)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	state = filepath.Join(t.TempDir(), "state")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	return root, state
}

func writeJournal(t *testing.T, state string, j string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(state, quiesce.JournalFile), []byte(j), 0o600); err != nil {
		t.Fatal(err)
	}
}

func restoreArgs(root, state string, extra ...string) []string {
	return append([]string{"restore", "--config", "/nonexistent/adeagent.yaml", "--root", root, "--state-dir", state}, extra...)
}

func TestRestoreNeedsOwed(t *testing.T) {
	code, _, stderr := runMain("restore")
	if code != ExitUsage || !strings.Contains(stderr, "adeagentctl restore") {
		t.Fatalf("exit %d stderr %q", code, stderr)
	}
	if code, _, _ := runMain("restore", "--owed", "extra"); code != ExitUsage {
		t.Fatalf("exit %d", code)
	}
}

func TestRestoreNothingOwed(t *testing.T) {
	root, state := restoreRoot(t)
	code, stdout, stderr := runMain(restoreArgs(root, state, "--owed")...)
	if code != ExitOK || !strings.Contains(stdout, "nothing to restore") {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	// A finished journal owes nothing either.
	writeJournal(t, state, `{"schema_version":1,"id":"q","steps":[],"restore":{"who":{"origin":"cli","uid":0},"started":"2026-01-01T00:00:00Z","done":"2026-01-01T00:00:01Z"}}`)
	code, stdout, _ = runMain(restoreArgs(root, state, "--owed", "--json")...)
	var res api.QuiesceResult
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != ExitOK || res.Outcome != api.OutcomeNothing || res.SchemaVersion != 1 {
		t.Fatalf("exit %d res %+v err %v", code, res, err)
	}
}

func TestRestoreOwedSELinux(t *testing.T) {
	root, state := restoreRoot(t)
	// Prepare switched SELinux to permissive and was killed before it finished.
	writeJournal(t, state, `{"schema_version":1,"id":"q","boot_id":"b1","path":"unmount","who":{"origin":"socket","uid":0},
	 "selinux":{"mount":"/sys/fs/selinux","enforce":1,"config":"enforcing"},
	 "steps":[{"n":1,"kind":"selinux-runtime","target":"enforce","before":{"enforce":1},"intent":"2026-01-01T00:00:00Z"}]}`)
	code, stdout, stderr := runMain(restoreArgs(root, state, "--owed")...)
	if code != ExitOK || !strings.Contains(stdout, "restore: restored") {
		t.Fatalf("exit %d stdout %q stderr %q", code, stdout, stderr)
	}
	if b, _ := os.ReadFile(filepath.Join(root, "sys/fs/selinux/enforce")); string(b) != "1" {
		t.Fatalf("enforce = %q", b)
	}
	if !strings.Contains(stderr, `"who":"boot uid=`) {
		t.Errorf("change not logged with who: %q", stderr)
	}
	// Twice: nothing owed.
	if code, stdout, _ := runMain(restoreArgs(root, state, "--owed")...); code != ExitOK || !strings.Contains(stdout, "nothing to restore") {
		t.Fatalf("second run exit %d %q", code, stdout)
	}
}

func TestRestoreOwedFails(t *testing.T) {
	root, state := restoreRoot(t)
	// A stopped unit on a root without systemd: restore fails and stays owed.
	writeJournal(t, state, `{"schema_version":1,"id":"q","boot_id":"b1","path":"unmount","who":{"origin":"socket","uid":0},
	 "steps":[{"n":1,"kind":"stop-unit","target":"mongod.service","family":"mongodb","before":{"active_state":"active"},"intent":"2026-01-01T00:00:00Z","done":"2026-01-01T00:00:01Z"}]}`)
	code, stdout, _ := runMain(restoreArgs(root, state, "--owed")...)
	if code != ExitNotReady || !strings.Contains(stdout, "quiesce.start-failed") || !strings.Contains(stdout, "mongod.service") {
		t.Fatalf("exit %d stdout %q", code, stdout)
	}
	if owed, _ := quiesce.JournalOwed(state); !owed {
		t.Fatal("a failed restore must stay owed")
	}
}

func TestRestoreCorruptJournal(t *testing.T) {
	root, state := restoreRoot(t)
	writeJournal(t, state, "{not json")
	code, stdout, _ := runMain(restoreArgs(root, state, "--owed")...)
	if code != ExitNotReady || !strings.Contains(stdout, "quiesce.journal-corrupt") {
		t.Fatalf("exit %d stdout %q", code, stdout)
	}
	if m, _ := filepath.Glob(filepath.Join(state, quiesce.JournalFile+".corrupt-*")); len(m) != 1 {
		t.Fatalf("corrupt journal not kept: %v", m)
	}
}
