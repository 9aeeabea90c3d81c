// Package probes holds adeagent's readiness probes: the Finding model (agent/api), one probe
// per file behind the Probe interface, the sorted registry table and the runner.
//
// Probes only observe. Every file they read comes through Env.Root, so each outcome is
// testable on a fixture tree under testdata/.
package probes

import (
	"context"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Probe checks one prerequisite of ADE's OS-drive encryption.
type Probe interface {
	// Name is the probe's stable id: the part of its finding keys before the dot
	// ("memory" for memory.insufficient and memory.tmpfs-copy).
	Name() string
	// Run returns the findings for this machine; none means the prerequisite is met.
	// An error means the probe could not decide; the runner turns it into a finding.
	Run(ctx context.Context, env *Env) ([]api.Finding, error)
}

// Env is what probes may look at.
type Env struct {
	// Root is the host root every file is read through.
	Root hostroot.Root
	// Distro is this machine's distribution and the ADE path that applies to it.
	Distro Distro
	// Endpoints are the network endpoints network.endpoint dials.
	Endpoints []Endpoint
	// ConnectTimeout bounds each endpoint dial.
	ConnectTimeout time.Duration
	// Units answers questions about systemd units. Nil unless Root is the host and
	// systemd is reachable; probes then fall back to what /proc shows.
	Units Units
	// OSDrive is the OS drive's holder scan, run once and shared.
	OSDrive *OSDriveScan
	// Procs is the process list, walked once and shared (nil: each Processes call walks).
	Procs *ProcessList
}

// Endpoint is a TCP endpoint ADE needs to reach.
type Endpoint struct {
	Name string `yaml:"name" json:"name"`
	Addr string `yaml:"addr" json:"addr"` // host:port
}

// UnitState is what probes need to know of one systemd unit.
type UnitState struct {
	Name        string
	ActiveState string // active, inactive, failed, activating, …
	SubState    string
	MainPID     int
}

// Units lists systemd units by glob pattern (ListUnitsByPatterns semantics).
type Units interface {
	ListUnits(ctx context.Context, patterns []string) ([]UnitState, error)
}
