package api

import "time"

// Phases of the daemon (DESIGN.md §6). A one-shot `adeagent check` is always PhaseObserving.
const (
	PhaseObserving = "observing"
	PhasePreparing = "preparing"
	PhaseReady     = "ready"
	PhaseBlocked   = "blocked"
	PhaseEncrypt   = "encrypting"
	PhaseRestoring = "restoring"
	PhaseRestored  = "restored"
)

// Probe run statuses in ProbeRun.Status.
const (
	ProbeOK       = "ok"       // the probe ran and returned its findings
	ProbeError    = "error"    // the probe returned an error: its prerequisite is unknown
	ProbeTimeout  = "timeout"  // the probe did not finish within its timeout
	ProbePanic    = "panic"    // the probe panicked (a bug)
	ProbeDisabled = "disabled" // switched off in the configuration
)

// Report is the readiness report: `adeagent check --json`, GET /v1/report and (with the
// same shape) GET /v1/status. Findings are sorted blockers first, then severity high→info,
// then key. Ready is true exactly when no finding is a blocker.
type Report struct {
	SchemaVersion int       `json:"schema_version"`
	GeneratedAt   time.Time `json:"generated_at"` // RFC 3339, UTC, whole seconds
	Hostname      string    `json:"hostname"`
	Ready         bool      `json:"ready"`
	Phase         string    `json:"phase"`
	Findings      []Finding `json:"findings"`
	Holders       []Holder  `json:"holders"`
	// Quiesced lists the units adeagent stopped (daemon only; empty for a one-shot check).
	Quiesced []QuiescedUnit `json:"quiesced"`
	// SELinux is the SELinux state the daemon knows of; omitted by a one-shot check.
	SELinux *SELinuxState `json:"selinux,omitempty"`
	// ADE says what ADE does on this distribution and, in the daemon, its progress.
	ADE *ADEState `json:"ade,omitempty"`
	// Probes records how every probe ran, in name order.
	Probes []ProbeRun `json:"probes"`
	// DurationMS is the wall time of the whole probe run.
	DurationMS float64 `json:"duration_ms"`
}

// ProbeRun is how one probe ran.
type ProbeRun struct {
	Name       string  `json:"name"`
	Status     string  `json:"status"` // ok|error|timeout|panic|disabled
	DurationMS float64 `json:"duration_ms"`
	Error      string  `json:"error,omitempty"`
}

// QuiescedUnit is one unit adeagent stopped for the encryption.
type QuiescedUnit struct {
	Unit  string `json:"unit"`
	State string `json:"state,omitempty"`
}

// SELinuxState is the SELinux mode now and what adeagent changed.
type SELinuxState struct {
	Mode     string `json:"mode"` // enforcing|permissive|disabled
	Previous string `json:"previous,omitempty"`
}

// ADEState is what ADE does with this distribution (research: ade_extension.md §1-§2) and,
// when the daemon watches it, how far it got.
type ADEState struct {
	Distro   string `json:"distro"`             // e.g. "ubuntu 22.04"
	Support  string `json:"support"`            // os|data-only|none|unknown
	Path     string `json:"path"`               // unmount|online|none
	Progress string `json:"progress,omitempty"` // ADE's status message, when known
}

// Blockers counts the findings that block readiness.
func (r *Report) Blockers() int {
	n := 0
	for _, f := range r.Findings {
		if f.Blocker {
			n++
		}
	}
	return n
}
