package api

import "time"

// Quiesce outcomes in QuiesceResult.Outcome.
const (
	OutcomeReady    = "ready"    // prepare: everything stopped, nothing left on the OS drive
	OutcomeBlocked  = "blocked"  // prepare: something is left; Findings say what and why
	OutcomeRestored = "restored" // restore: everything put back
	OutcomeFailed   = "failed"   // restore: some steps could not be undone; still owed
	OutcomeNothing  = "nothing"  // restore: nothing was owed
)

// QuiescePlan is what prepare would do (`adeagentctl prepare --dry-run`, POST
// /v1/prepare?dry_run=1). Computing it changes nothing.
type QuiescePlan struct {
	SchemaVersion int       `json:"schema_version"`
	GeneratedAt   time.Time `json:"generated_at"`
	// Path is ADE's path the plan is for: unmount or online; PathReason says why.
	Path       string `json:"path"`
	PathReason string `json:"path_reason"`
	// Resume is true when a prepare is already journaled: the plan continues it and the
	// units it stopped keep the state they had before the first prepare.
	Resume bool `json:"resume"`
	// Reactivators are stopped first, then PreStop runs, then Units stop in this order.
	Reactivators []PlannedUnit `json:"reactivators"`
	PreStop      []PlannedStep `json:"prestop"`
	Units        []PlannedUnit `json:"units"`
	// NotStopping lists units prepare leaves running, and why.
	NotStopping []SkippedUnit  `json:"not_stopping"`
	SELinux     PlannedSELinux `json:"selinux"`
}

// PlannedUnit is one unit prepare stops and masks.
type PlannedUnit struct {
	Unit        string `json:"unit"`
	Family      string `json:"family"` // catalog family, or "allow" for quiesce.allow
	ActiveState string `json:"active_state"`
	SubState    string `json:"sub_state,omitempty"`
	// StopTimeoutS bounds the stop job (the family's stop_timeout), in seconds.
	StopTimeoutS float64 `json:"stop_timeout_s"`
	// Journaled is true when a previous prepare already recorded the unit.
	Journaled bool `json:"journaled,omitempty"`
}

// PlannedStep is one pre-stop step.
type PlannedStep struct {
	Family string   `json:"family"`
	Hint   string   `json:"hint"`
	Argv   []string `json:"argv,omitempty"`
	Action string   `json:"action,omitempty"`
	// Run is false for a step that is only advice (no argv and no action).
	Run bool `json:"run"`
}

// SkippedUnit is a unit prepare does not stop.
type SkippedUnit struct {
	Unit   string `json:"unit"`
	Family string `json:"family,omitempty"`
	// Reason: never-stop, not-allowed (outside catalog and quiesce.allow), online-path.
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
}

// PlannedSELinux is what prepare does with SELinux.
type PlannedSELinux struct {
	Mode   string `json:"mode"`             // enforcing|permissive|disabled now
	Config string `json:"config,omitempty"` // SELINUX= of /etc/selinux/config now
	// Runtime is "set-permissive" or "none"; ConfigFile likewise for the boot mode.
	Runtime    string `json:"runtime"`
	ConfigFile string `json:"config_file"`
	Reason     string `json:"reason"`
}

// QuiesceResult is the answer of prepare and restore.
type QuiesceResult struct {
	SchemaVersion int       `json:"schema_version"`
	GeneratedAt   time.Time `json:"generated_at"`
	Action        string    `json:"action"`  // prepare|restore
	Outcome       string    `json:"outcome"` // ready|blocked (prepare); restored|failed|nothing (restore)
	Path          string    `json:"path,omitempty"`
	// Steps are the journal's steps this call ran or found done, in the order they ran.
	Steps    []QuiesceStep  `json:"steps"`
	Findings []Finding      `json:"findings"`
	Quiesced []QuiescedUnit `json:"quiesced"`
	SELinux  *SELinuxState  `json:"selinux,omitempty"`
	// Journal is the journal file's path.
	Journal    string  `json:"journal"`
	DurationMS float64 `json:"duration_ms"`
}

// QuiesceStep is one journaled step as a result shows it.
type QuiesceStep struct {
	Kind   string `json:"kind"` // stop-reactivator|prestop|docker-containers|stop-unit|mask|selinux-runtime|selinux-config
	Target string `json:"target"`
	Family string `json:"family,omitempty"`
	Before string `json:"before,omitempty"`
	// Result is "done", "skipped: …" or "failed: …"; for restore the undo's result.
	Result string `json:"result"`
}
