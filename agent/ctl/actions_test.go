package ctl

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/server"
)

func TestPrepareAndRestore(t *testing.T) {
	b := newBackend(readyReport())
	sock := serve(t, b)

	code, stdout, stderr := run(t, nil, "--socket", sock, "prepare", "--dry-run")
	if code != ExitOK || !strings.Contains(stdout, "nothing has been changed") || !strings.Contains(stdout, "mongod.service") {
		t.Errorf("prepare --dry-run: %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, stderr = run(t, nil, "--socket", sock, "prepare")
	if code != ExitOK || !strings.Contains(stdout, "prepare: READY") {
		t.Errorf("prepare (ready): %d\n%s%s", code, stdout, stderr)
	}
	code, stdout, _ = run(t, nil, "--socket", sock, "prepare", "--json")
	var res api.QuiesceResult
	if code != ExitOK || json.Unmarshal([]byte(stdout), &res) != nil || res.SchemaVersion != 1 || res.Outcome != api.OutcomeReady {
		t.Errorf("prepare --json: %d %q", code, stdout)
	}

	// A blocked prepare exits 1 and names what is left.
	b.PrepareResult = &api.QuiesceResult{SchemaVersion: 1, Action: "prepare", Outcome: api.OutcomeBlocked,
		Findings: []api.Finding{{Key: "os-drive.holders", Title: "Processes still hold the OS drive after the stops", Blocker: true, Summary: "pid 42 sleep (session-3.scope)"}}}
	code, stdout, stderr = run(t, nil, "--socket", sock, "prepare")
	if code != ExitNotReady || !strings.Contains(stdout, "BLOCKED") || !strings.Contains(stdout, "pid 42 sleep") {
		t.Errorf("prepare (blocked): %d\n%s%s", code, stdout, stderr)
	}

	code, stdout, stderr = run(t, nil, "--socket", sock, "restore")
	if code != ExitOK || !strings.Contains(stdout, "restore: RESTORED") {
		t.Errorf("restore: %d\n%s%s", code, stdout, stderr)
	}
	b.RestoreResult = &api.QuiesceResult{SchemaVersion: 1, Action: "restore", Outcome: api.OutcomeFailed}
	if code, stdout, _ := run(t, nil, "--socket", sock, "restore"); code != ExitNotReady || !strings.Contains(stdout, "FAILED") {
		t.Errorf("restore (failed): %d\n%s", code, stdout)
	}
}

func TestPrepareRefusedOrBusy(t *testing.T) {
	// A refusal (403) and a conflict (409) come back as exit 1 with a hint.
	for _, tc := range []struct {
		code int
		hint string
	}{{403, "run them as root"}, {409, "adeagentctl status"}} {
		b := newBackend(readyReport())
		b.ActionErr = statusErr(tc.code)
		sock := serve(t, b)
		code, _, stderr := run(t, nil, "--socket", sock, "prepare")
		if code != ExitNotReady || !strings.Contains(stderr, tc.hint) {
			t.Errorf("%d: exit %d, stderr %q", tc.code, code, stderr)
		}
	}
}

type statusErr int

func (e statusErr) Error() string   { return "refused by test" }
func (e statusErr) HTTPStatus() int { return int(e) }

var _ server.Actions = (*backend)(nil)
