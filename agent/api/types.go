// Package api holds the wire types shared by the daemon, the one-shot commands and
// adeagentctl (DESIGN.md §3). Every JSON document adeagent prints or serves carries
// SchemaVersion; field names here are part of the contract.
package api

import "time"

// SchemaVersion is the version of every JSON document in this package.
const SchemaVersion = 1

// Severity of a finding, lowest to highest.
type Severity string

const (
	SeverityInfo   Severity = "info"
	SeverityLow    Severity = "low"
	SeverityMedium Severity = "medium"
	SeverityHigh   Severity = "high"
)

// Rank orders severities: info 0 … high 3; unknown values rank below info.
func (s Severity) Rank() int {
	switch s {
	case SeverityInfo:
		return 0
	case SeverityLow:
		return 1
	case SeverityMedium:
		return 2
	case SeverityHigh:
		return 3
	}
	return -1
}

// Finding is one readiness result: something that is wrong, or worth knowing, on this VM.
type Finding struct {
	Key         string      `json:"key"`
	Probe       string      `json:"probe"`
	Title       string      `json:"title"`
	Summary     string      `json:"summary"`
	Severity    Severity    `json:"severity"`
	Blocker     bool        `json:"blocker"`
	Remediation Remediation `json:"remediation"`
	Related     []Related   `json:"related,omitempty"`
}

// Remediation says how to fix a finding: a hint for people and argv commands for scripts.
type Remediation struct {
	Hint     string     `json:"hint"`
	Commands [][]string `json:"commands,omitempty"`
}

// Related names a resource a finding is about.
type Related struct {
	Kind string `json:"kind"` // unit|pid|path|mount|device|package
	ID   string `json:"id"`
}

// Holder kinds.
const (
	KindProcess   = "process"
	KindThread    = "thread"
	KindSwap      = "swap"
	KindLoop      = "loop"
	KindMount     = "mount"
	KindNamespace = "namespace"
	KindOverlay   = "overlay"
	KindNFSExport = "nfs-export"
	KindDM        = "dm"
)

// Uses of a process or thread holder.
const (
	UseFD      = "fd"
	UseCwd     = "cwd"
	UseRoot    = "root"
	UseExe     = "exe"
	UseMmap    = "mmap"
	UseIOUring = "io_uring"
)

// Holder is one thing that keeps a target filesystem busy.
type Holder struct {
	Kind      string   `json:"kind"`
	PID       int      `json:"pid,omitempty"`
	TID       int      `json:"tid,omitempty"`
	Comm      string   `json:"comm,omitempty"`
	Cmdline   string   `json:"cmdline,omitempty"`
	Unit      string   `json:"unit,omitempty"`
	Container string   `json:"container,omitempty"`
	Uses      []string `json:"uses,omitempty"`
	Paths     []string `json:"paths,omitempty"`
	// FDs counts the open file descriptors on the target; Paths lists only a few of them.
	FDs    int    `json:"fds,omitempty"`
	Mount  string `json:"mount,omitempty"`
	Detail string `json:"detail,omitempty"`
}

// Incomplete records something that could not be inspected. It is never treated as clean.
type Incomplete struct {
	PID    int    `json:"pid,omitempty"`
	What   string `json:"what"`
	Reason string `json:"reason"`
}

// Target describes the filesystems a holder scan looked at.
type Target struct {
	Mounts  []string `json:"mounts"`
	Devices []string `json:"devices"`
	Disks   []string `json:"disks,omitempty"`
}

// HoldersReport is the answer of `adeagent holders --json` and GET /v1/holders.
type HoldersReport struct {
	SchemaVersion int          `json:"schema_version"`
	GeneratedAt   time.Time    `json:"generated_at"`
	Target        Target       `json:"target"`
	Holders       []Holder     `json:"holders"`
	Incomplete    []Incomplete `json:"incomplete"`
	Stats         ScanStats    `json:"stats"`
}

// ScanStats says how much a scan looked at and how long it took.
type ScanStats struct {
	Processes  int     `json:"processes"`
	Threads    int     `json:"threads"`
	FDs        int     `json:"fds"`
	DurationMS float64 `json:"duration_ms"`
	// FDSource is where the open files came from: "bpf" (the kernel's task_file iterator)
	// or "proc" (a statx through /proc/PID/fd/N each); FDSourceNote says why not "bpf".
	FDSource     string `json:"fd_source,omitempty"`
	FDSourceNote string `json:"fd_source_note,omitempty"`
}
