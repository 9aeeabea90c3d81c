package api

import "time"

// Event types streamed by GET /v1/events (one JSON object per line).
const (
	EventPhase   = "phase"   // the daemon's phase changed
	EventReport  = "report"  // a new evaluation finished (readiness or blockers may have changed)
	EventHolders = "holders" // the OS drive's holder set changed (live watch)
)

// Event is one line of GET /v1/events and `adeagentctl events`.
type Event struct {
	SchemaVersion int       `json:"schema_version"`
	Time          time.Time `json:"time"`
	Type          string    `json:"type"`
	Phase         string    `json:"phase"`
	Ready         bool      `json:"ready"`
	// Blockers are the keys of the blocking findings at the time of the event.
	Blockers []string `json:"blockers"`
	// Holders is the number of OS-drive holders, for holders events.
	Holders int `json:"holders,omitempty"`
	// Message says why, for phase events ("prepare requested by socket uid=0 …").
	Message string `json:"message,omitempty"`
}

// Error is the body of every non-2xx answer of the socket API.
type Error struct {
	Error string `json:"error"`
}

// VersionHeader carries the sender's version on every request and response.
const VersionHeader = "Adeagent-Version"
