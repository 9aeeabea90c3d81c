package quiesce

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/selinux"
)

// JournalFile is the journal's name in the state directory.
const JournalFile = "quiesce.json"

// JournalSchema is the journal's schema_version.
const JournalSchema = 1

// Step kinds. Prepare runs them in this order of kinds (slice order within a kind);
// restore undoes them in its own order (docs/quiesce.md).
const (
	KindStopReactivator  = "stop-reactivator"
	KindDockerContainers = "docker-containers"
	KindPreStop          = "prestop"
	KindStopUnit         = "stop-unit"
	KindMask             = "mask"
	KindSELinuxRuntime   = "selinux-runtime"
	KindSELinuxConfig    = "selinux-config"
)

// Origins of a request in Who.Origin.
const (
	OriginSocket  = "socket"   // POST /v1/prepare or /v1/restore (UID/PID/Comm from SO_PEERCRED)
	OriginADEAuto = "ade-auto" // ADE's request marker with ade.auto_prepare on, or ADE finished
	OriginBoot    = "boot"     // adeagent restore --owed from the boot unit
	OriginStart   = "start"    // the daemon at start, settling a journal a previous run left
	OriginCLI     = "cli"      // a one-shot command run by hand
)

// ErrCorrupt is returned when the journal cannot be parsed.
var ErrCorrupt = errors.New("quiesce journal is corrupt")

// Who asked for a change.
type Who struct {
	Origin string `json:"origin"`
	UID    int    `json:"uid"`
	PID    int    `json:"pid,omitempty"`
	Comm   string `json:"comm,omitempty"`
}

// String is "socket uid=0 pid=812 comm=adeagentctl".
func (w Who) String() string {
	s := w.Origin
	if s == "" {
		s = "unknown"
	}
	s += " uid=" + strconv.Itoa(w.UID)
	if w.PID > 0 {
		s += " pid=" + strconv.Itoa(w.PID)
	}
	if w.Comm != "" {
		s += " comm=" + w.Comm
	}
	return s
}

// Journal is everything prepare changed and restore must undo. It is rewritten
// atomically after every intent and every result.
type Journal struct {
	SchemaVersion int       `json:"schema_version"`
	ID            string    `json:"id"`
	BootID        string    `json:"boot_id"`
	Created       time.Time `json:"created"`
	Updated       time.Time `json:"updated"`
	Who           Who       `json:"who"`
	Path          string    `json:"path"`
	PathReason    string    `json:"path_reason"`
	// SELinux is SELinux's state before the first prepare.
	SELinux  *SELinuxBefore `json:"selinux,omitempty"`
	Steps    []*Step        `json:"steps"`
	Prepared *Prepared      `json:"prepared,omitempty"`
	Restore  *Restore       `json:"restore,omitempty"`
}

// SELinuxBefore is SELinux before prepare.
type SELinuxBefore struct {
	Mount   string `json:"mount"`
	Enforce int    `json:"enforce"` // 1 enforcing, 0 permissive, -1 disabled
	Config  string `json:"config"`  // SELINUX= value, "" when missing
}

// Prepared marks the end of a prepare (the latest, when it ran more than once).
type Prepared struct {
	At      time.Time `json:"at"`
	Who     Who       `json:"who"`
	Outcome string    `json:"outcome"`
}

// Restore records the restore of this journal.
type Restore struct {
	Who     Who        `json:"who"`
	BootID  string     `json:"boot_id"`
	Started time.Time  `json:"started"`
	Done    *time.Time `json:"done,omitempty"`
}

// Step is one change. Intent is written before the change is made and Done after it
// succeeded; Result says how it went. Undo is the same for restore.
type Step struct {
	N      int        `json:"n"`
	Kind   string     `json:"kind"`
	Target string     `json:"target"`
	Family string     `json:"family,omitempty"`
	Before Before     `json:"before"`
	Intent *time.Time `json:"intent,omitempty"`
	Done   *time.Time `json:"done,omitempty"`
	Result string     `json:"result,omitempty"`
	Undo   *Undo      `json:"undo,omitempty"`
}

// Before is the state a step found.
type Before struct {
	ActiveState       string      `json:"active_state,omitempty"`
	SubState          string      `json:"sub_state,omitempty"`
	UnitFileState     string      `json:"unit_file_state,omitempty"`
	RequiresMountsFor []string    `json:"requires_mounts_for,omitempty"`
	ControlGroup      string      `json:"control_group,omitempty"` // the unit's cgroup while it ran
	Units             []string    `json:"units,omitempty"`         // mask: the units masked
	Argv              []string    `json:"argv,omitempty"`          // prestop
	Timeout           string      `json:"timeout,omitempty"`
	Containers        []Container `json:"containers,omitempty"`
	LiveRestore       bool        `json:"live_restore,omitempty"`
	Enforce           *int        `json:"enforce,omitempty"`
	Config            string      `json:"config,omitempty"`
}

// Undo is restore's record of undoing a step.
type Undo struct {
	Intent *time.Time `json:"intent,omitempty"`
	Done   *time.Time `json:"done,omitempty"`
	Result string     `json:"result,omitempty"`
}

// Container is a Docker container as prepare found it.
type Container struct {
	ID            string `json:"id"`
	Name          string `json:"name,omitempty"`
	Image         string `json:"image,omitempty"`
	RestartPolicy string `json:"restart_policy,omitempty"`
	Running       bool   `json:"running"`
}

// Owed reports whether the journal still owes a restore.
func (j *Journal) Owed() bool {
	return j != nil && (j.Restore == nil || j.Restore.Done == nil)
}

// store reads and writes the journal file.
type store struct {
	dir string
}

func (s store) path() string { return filepath.Join(s.dir, JournalFile) }

// load returns the journal, nil when there is none, or an error wrapping ErrCorrupt.
func (s store) load() (*Journal, error) {
	b, err := os.ReadFile(s.path())
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read quiesce journal: %w", err)
	}
	var j Journal
	dec := json.NewDecoder(strings.NewReader(string(b)))
	if err := dec.Decode(&j); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, s.path(), err)
	}
	if j.SchemaVersion != JournalSchema {
		return nil, fmt.Errorf("%w: %s: schema_version %d, want %d", ErrCorrupt, s.path(), j.SchemaVersion, JournalSchema)
	}
	for i, st := range j.Steps {
		if st == nil {
			return nil, fmt.Errorf("%w: %s: step #%d is null", ErrCorrupt, s.path(), i+1)
		}
	}
	return &j, nil
}

// save writes j: temp file + fsync + rename + fsync(dir), mode 0600.
func (s store) save(j *Journal) error {
	if err := os.MkdirAll(s.dir, 0o700); err != nil {
		return fmt.Errorf("write quiesce journal: %w", err)
	}
	b, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return fmt.Errorf("write quiesce journal: %w", err)
	}
	if err := selinux.WriteFileAtomic(s.path(), append(b, '\n')); err != nil {
		return fmt.Errorf("write quiesce journal: %w", err)
	}
	return nil
}

// quarantine renames a corrupt journal aside (never deletes it) and returns the new path.
func (s store) quarantine(now time.Time) (string, error) {
	dst := fmt.Sprintf("%s.corrupt-%s", s.path(), now.UTC().Format("20060102T150405Z"))
	if err := os.Rename(s.path(), dst); err != nil {
		return "", fmt.Errorf("move corrupt quiesce journal aside: %w", err)
	}
	if d, err := os.Open(s.dir); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return dst, nil
}
