package cli

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/looptest"
)

func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, &out, &errb)
	return code, out.String(), errb.String()
}

func TestHoldersUsageErrors(t *testing.T) {
	cases := [][]string{
		{"holders", "--mount", "/no/such/path"},
		{"holders", "--bogus"},
		{"holders", "extra-arg"},
		{"holders", "--root", "/no/such/root"},
		{"holders", "--workers", "0"},
		{"no-such-command"},
	}
	for _, args := range cases {
		code, _, stderr := runMain(args...)
		if code != ExitUsage {
			t.Errorf("%v: exit %d, want %d (stderr %q)", args, code, ExitUsage, stderr)
		}
		if strings.Contains(stderr, "goroutine") || strings.Contains(stderr, "panic") {
			t.Errorf("%v: stack trace on a usage error: %q", args, stderr)
		}
	}
	_, _, stderr := runMain("holders", "--mount", "/no/such/path")
	if want := "adeagent holders: --mount /no/such/path: no such file or directory\n"; stderr != want {
		t.Errorf("missing path: stderr %q, want %q", stderr, want)
	}
}

func TestHoldersExitCodesAndJSON(t *testing.T) {
	m := looptest.New(t)
	code, stdout, stderr := runMain("holders", "--mount", m.Path, "--json")
	if code != ExitOK {
		t.Fatalf("nothing holds %s: exit %d, stderr %q, out %s", m.Path, code, stderr, stdout)
	}
	var rep api.HoldersReport
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatalf("JSON: %v\n%s", err, stdout)
	}
	if rep.SchemaVersion != 1 || len(rep.Target.Mounts) != 1 || rep.Target.Mounts[0] != m.Path || rep.Holders == nil || rep.Incomplete == nil {
		t.Errorf("JSON document %+v does not follow the schema", rep)
	}
	for _, key := range []string{`"schema_version"`, `"target"`, `"holders"`, `"incomplete"`, `"devices"`} {
		if !strings.Contains(stdout, key) {
			t.Errorf("JSON lacks %s", key)
		}
	}

	f, err := os.Open(m.At("dir/f0"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	cmd := exec.Command("sleep", "30")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Dir = "/"
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	code, stdout, _ = runMain("holders", "--mount", m.At("dir"))
	if code != ExitNotReady {
		t.Fatalf("held: exit %d, want %d\n%s", code, ExitNotReady, stdout)
	}
	if !strings.Contains(stdout, "KIND") || !strings.Contains(stdout, "sleep") || !strings.Contains(stdout, "dir/f0") {
		t.Errorf("table does not show the sleep holder:\n%s", stdout)
	}
}
