package render

import (
	"bytes"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestPlanShowsTheOrderAndWhatIsLeft(t *testing.T) {
	p := &api.QuiescePlan{
		Path: "unmount", PathReason: "config ade.path: unmount",
		Reactivators: []api.PlannedUnit{{Unit: "docker.socket", Family: "docker", ActiveState: "active", StopTimeoutS: 120}},
		PreStop:      []api.PlannedStep{{Family: "docker", Hint: "record running containers", Action: "docker-containers", Run: true}},
		Units: []api.PlannedUnit{
			{Unit: "mongod.service", Family: "mongodb", ActiveState: "active", SubState: "running", StopTimeoutS: 300},
			{Unit: "docker.service", Family: "docker", ActiveState: "active", StopTimeoutS: 120},
		},
		NotStopping: []api.SkippedUnit{{Unit: "ssh.service", Reason: "never-stop"}},
		SELinux:     api.PlannedSELinux{Mode: "enforcing", Config: "enforcing", Runtime: "set-permissive", ConfigFile: "none", Reason: "unmount path"},
	}
	var b bytes.Buffer
	Plan(&b, p, false)
	out := b.String()
	order := []string{"docker.socket", "docker-containers", "mongod.service", "docker.service", "Rescan", "enforcing → permissive now", "ssh.service"}
	last := -1
	for _, s := range order {
		i := strings.Index(out, s)
		if i < 0 || i < last {
			t.Fatalf("%q missing or out of order in:\n%s", s, out)
		}
		last = i
	}
	for _, want := range []string{"nothing has been changed", "5m", "2m", "never-stop"} {
		if !strings.Contains(out, want) {
			t.Errorf("plan lacks %q:\n%s", want, out)
		}
	}
}

func TestQuiesceResultNamesBlockers(t *testing.T) {
	r := &api.QuiesceResult{
		Action: "prepare", Outcome: api.OutcomeBlocked, Path: "unmount", DurationMS: 1234, Journal: "/var/lib/adeagent/quiesce.json",
		Steps: []api.QuiesceStep{{Kind: "stop-unit", Target: "mongod.service", Before: "active", Result: "done"}},
		Findings: []api.Finding{{Key: "os-drive.holders", Title: "Processes still hold the OS drive after the stops", Blocker: true,
			Summary: "pid 42 sleep (session-3.scope) /var/tmp/x", Remediation: api.Remediation{Hint: "Stop them cleanly"}}},
		SELinux: &api.SELinuxState{Mode: "permissive", Previous: "enforcing"},
	}
	var b bytes.Buffer
	QuiesceResult(&b, r, false)
	out := b.String()
	for _, want := range []string{"prepare: BLOCKED", "Nothing was killed", "mongod.service", "done", "pid 42 sleep", "Stop them cleanly",
		"permissive (was enforcing before prepare)", "/var/lib/adeagent/quiesce.json"} {
		if !strings.Contains(out, want) {
			t.Errorf("result lacks %q:\n%s", want, out)
		}
	}
}
