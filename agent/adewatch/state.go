package adewatch

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Kind is the kind of an Event.
type Kind string

const (
	// RequestSeen: ADE's encryption marker azure_crypt_request_queue.ini appeared (research
	// §4; written by mark_encryption() right before start_daemon, whose daemon sleeps about
	// 60 s before it starts and later kill -9s whatever holds the old root — research
	// "Overall flow" and §1.2 unmount_oldroot). Also sent when, with the marker present, a
	// new N.settings arrives (a retried enable starts a new daemon with the same sleep) or
	// the marker is rewritten.
	RequestSeen Kind = "request-seen"
	// EncryptionStarted: ADE's OS encryption state machine is running: its
	// os_encryption_markers appear while a request is present, or the status says
	// "OS disk encryption started" (research §1.1, §1.2).
	EncryptionStarted Kind = "encryption-started"
	// Progress: ADE's progress message changed (Message is the new one).
	Progress Kind = "progress"
	// Stripdown: ADE has pivoted into its RAM root (tmpfs root, /oldroot mounted). The
	// daemon must not pin the old root: persist and exit.
	Stripdown Kind = "stripdown"
	// Succeeded: ADE reported a final success ("Encryption succeeded for …").
	Succeeded Kind = "succeeded"
	// Failed: ADE reported a final failure; Unmount is set when it could not unmount
	// /oldroot.
	Failed Kind = "failed"
)

// Event is one state transition of ADE as seen by the Watcher.
type Event struct {
	Kind    Kind      `json:"kind"`
	Message string    `json:"message,omitempty"`
	At      time.Time `json:"at"`
	// Source is the host path the transition was read from (the marker, the N.status,
	// the markers directory or the mount table).
	Source string `json:"source,omitempty"`
	// Initial is set on events of the Watcher's first read: the condition already held
	// when the watch started (e.g. the daemon restarted mid-encryption).
	Initial bool `json:"initial,omitempty"`
	// Unmount is set on Progress and Failed events whose message is one of ADE's
	// "unmount /oldroot failed" strings.
	Unmount *UnmountFailure `json:"unmount,omitempty"`
}

// Phase is the Watcher's summary of where ADE is, for status output.
type Phase string

const (
	PhaseNone       Phase = "none"       // no trace of ADE on this VM
	PhaseIdle       Phase = "idle"       // ADE is installed or has run, nothing in progress
	PhaseRequested  Phase = "requested"  // the encryption marker is present
	PhaseEncrypting Phase = "encrypting" // the OS state machine runs
	PhaseStripdown  Phase = "stripdown"  // pivoted into the RAM root
	PhaseSucceeded  Phase = "succeeded"
	PhaseFailed     Phase = "failed"
)

// Request is ADE's encryption marker (azure_crypt_request_queue.ini, section
// encryption_request_queue).
type Request struct {
	Operation  string    `json:"operation,omitempty"`
	VolumeType string    `json:"volume_type,omitempty"`
	Mode       string    `json:"mode,omitempty"`  // EncryptionMode (Online)
	Phase      string    `json:"phase,omitempty"` // EncryptionPhase (Resume)
	ModTime    time.Time `json:"mod_time"`
}

// CoversOS reports whether the request includes the OS volume (VolumeType OS or All).
func (r *Request) CoversOS() bool {
	if r == nil {
		return false
	}
	v := strings.ToLower(r.VolumeType)
	return v == "os" || v == "all"
}

// State is the last known state of ADE.
type State struct {
	Phase          Phase           `json:"phase"`
	Message        string          `json:"message,omitempty"` // ADE's progress message
	Status         string          `json:"status,omitempty"`  // transitioning|success|error
	Code           string          `json:"code,omitempty"`
	Operation      string          `json:"operation,omitempty"`
	StatusFile     string          `json:"status_file,omitempty"`
	StatusTime     string          `json:"status_time,omitempty"` // ADE's timestampUTC
	OSState        string          `json:"os_state,omitempty"`
	DataState      string          `json:"data_state,omitempty"`
	HandlerVersion string          `json:"handler_version,omitempty"`
	Request        *Request        `json:"request,omitempty"`
	Markers        []string        `json:"markers,omitempty"`
	Stripdown      string          `json:"stripdown,omitempty"`          // why, "" when not
	StripdownSoon  string          `json:"stripdown_starting,omitempty"` // the tmpfs copy before the pivot
	Unmount        *UnmountFailure `json:"unmount,omitempty"`            // the last "unmount /oldroot failed"
	RequestSeenAt  time.Time       `json:"request_seen_at,omitzero"`
	StartedAt      time.Time       `json:"started_at,omitzero"`
	StripdownAt    time.Time       `json:"stripdown_at,omitzero"`
	FinishedAt     time.Time       `json:"finished_at,omitzero"`
	ChangedAt      time.Time       `json:"changed_at,omitzero"` // last event
	CheckedAt      time.Time       `json:"checked_at,omitzero"` // last read
	Unreadable     []string        `json:"unreadable,omitempty"`
}

func (s State) clone() State {
	s.Markers = slices.Clone(s.Markers)
	s.Unreadable = slices.Clone(s.Unreadable)
	if s.Request != nil {
		r := *s.Request
		s.Request = &r
	}
	if s.Unmount != nil {
		u := *s.Unmount
		s.Unmount = &u
	}
	return s
}

// snapshot is what one read of the host found.
type snapshot struct {
	mountsOK      bool
	mountSrc      string // host path of the mount table read
	stripdown     string
	stripdownSoon string
	skippedFiles  bool // stripdown: nothing on the old root was read

	handler     bool
	configDir   bool
	request     *Request
	requestRaw  string
	markers     []string
	status      *probes.ADEStatus
	statusErr   error
	settingsSeq int // highest N.settings of the newest handler, -1 when none
	unreadable  []string
}

// readMounts reads the host's mount table: PID 1's (the host's namespace even when the
// daemon runs in a private one), else the root's own view (fixture roots).
func readMounts(root hostroot.Root) ([]unmount.Mount, string, error) {
	f, err := os.Open(root.Proc("1", "mountinfo"))
	if err != nil {
		mounts, err2 := unmount.ReadMountInfo(root)
		if err2 != nil {
			return nil, "", fmt.Errorf("mount table: %w", err)
		}
		return mounts, root.Proc("self", "mountinfo"), nil
	}
	defer f.Close()
	mounts, err := unmount.ParseMountInfo(f)
	if err != nil {
		return nil, "", fmt.Errorf("mount table %s: %w", f.Name(), err)
	}
	return mounts, f.Name(), nil
}

// readMountFacts fills the mount-table part of a snapshot.
func readMountFacts(root hostroot.Root, s *snapshot) {
	mounts, src, err := readMounts(root)
	if err != nil {
		s.unreadable = append(s.unreadable, err.Error())
		return
	}
	s.mountsOK, s.mountSrc = true, root.HostPath(src)
	s.stripdown = StripdownFromMounts(mounts)
	s.stripdownSoon = StripdownStarting(mounts)
}

// readFileFacts fills the ADE files part of a snapshot: the config directory, its
// markers and the handler's status and settings.
func readFileFacts(root hostroot.Root, s *snapshot) {
	s.settingsSeq = -1
	if fi, err := os.Stat(root.Path(probes.ADEConfigDir)); err == nil && fi.IsDir() {
		s.configDir = true
	}
	if s.configDir {
		if fi, err := os.Stat(root.Path(probes.ADERequestMarker)); err == nil {
			data, err := root.ReadFile(probes.ADERequestMarker)
			switch {
			case err == nil:
				ini := probes.ParseADEINI(data)
				s.requestRaw = string(data)
				s.request = &Request{
					Operation:  ini["encryption_request_queue.encryptionoperation"],
					VolumeType: ini["encryption_request_queue.volumetype"],
					Mode:       ini["encryption_request_queue.encryptionmode"],
					Phase:      ini["encryption_request_queue.encryptionphase"],
					ModTime:    fi.ModTime().UTC(),
				}
			case !errors.Is(err, fs.ErrNotExist):
				s.unreadable = append(s.unreadable, fmt.Sprintf("%s: %v", probes.ADERequestMarker, err))
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.unreadable = append(s.unreadable, fmt.Sprintf("%s: %v", probes.ADERequestMarker, err))
		}
		if entries, err := os.ReadDir(root.Path(probes.ADEMarkersDir)); err == nil {
			have := map[string]bool{}
			for _, e := range entries {
				have[e.Name()] = true
			}
			for _, st := range probes.ADEStates() {
				if have[st] {
					s.markers = append(s.markers, st)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			s.unreadable = append(s.unreadable, fmt.Sprintf("%s: %v", probes.ADEMarkersDir, err))
		}
	}
	s.status, s.statusErr = probes.ReadADEStatus(root)
	if s.status != nil {
		s.handler = true
		s.settingsSeq = highestSettings(root, probes.ADESettingsDir(s.status.HandlerDir))
	}
	if s.statusErr != nil {
		s.unreadable = append(s.unreadable, s.statusErr.Error())
	}
}

// highestSettings is the highest N of dir/N.settings, -1 when there is none.
func highestSettings(root hostroot.Root, dir string) int {
	entries, err := os.ReadDir(root.Path(dir))
	if err != nil {
		return -1
	}
	best := -1
	for _, e := range entries {
		num, ok := strings.CutSuffix(e.Name(), ".settings")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(num); err == nil && n > best {
			best = n
		}
	}
	return best
}

// tracker turns successive snapshots into deduplicated events and the current State.
type tracker struct {
	started  bool // a snapshot has been applied
	prev     snapshot
	state    State
	request  bool
	reqKey   string
	running  bool // EncryptionStarted condition
	stripped bool
	msgKey   string
	outcome  string
}

// apply folds a snapshot into the state and returns the transitions it shows.
func (t *tracker) apply(s snapshot, now time.Time) []Event {
	initial := !t.started
	if s.skippedFiles || (s.statusErr != nil && t.started) {
		// Keep what was last read: during the stripdown nothing on the old root is read,
		// and a status caught half-written (ADE rewrites it in place) is read again at
		// its close.
		keep := t.prev
		if !s.skippedFiles {
			keep.request, keep.requestRaw, keep.markers, keep.configDir = s.request, s.requestRaw, s.markers, s.configDir
			keep.settingsSeq = s.settingsSeq
		}
		keep.mountsOK, keep.mountSrc, keep.stripdown, keep.stripdownSoon = s.mountsOK, s.mountSrc, s.stripdown, s.stripdownSoon
		keep.unreadable, keep.skippedFiles, keep.statusErr = s.unreadable, s.skippedFiles, s.statusErr
		s = keep
	}
	t.started = true
	t.prev = s

	var evs []Event
	emit := func(e Event) {
		e.At, e.Initial = now, initial
		evs = append(evs, e)
	}

	st := &t.state
	st.CheckedAt = now
	st.Unreadable = s.unreadable
	st.Markers = s.markers
	st.Stripdown, st.StripdownSoon = s.stripdown, s.stripdownSoon
	st.Request = s.request
	msg := ""
	if s.status != nil {
		msg = probes.ADEProgressMessage(s.status)
		st.HandlerVersion = s.status.HandlerVersion
		st.StatusFile, st.Status, st.Code = s.status.File, s.status.Status, s.status.Code
		st.Operation, st.StatusTime = s.status.Operation, s.status.Timestamp
		st.OSState, st.DataState = s.status.OSState, s.status.DataState
	} else {
		st.HandlerVersion, st.StatusFile, st.Status, st.Code, st.Operation, st.StatusTime = "", "", "", "", "", ""
		st.OSState, st.DataState = "", ""
	}
	st.Message = msg
	statusSrc := st.StatusFile

	// RequestSeen: the marker's rising edge, a new settings sequence or a rewritten marker.
	if s.request != nil {
		key := fmt.Sprintf("%d\x00%s", s.settingsSeq, s.requestRaw)
		if !t.request || key != t.reqKey {
			emit(Event{Kind: RequestSeen, Source: probes.ADERequestMarker,
				Message: requestMessage(s.request, t.request)})
			st.RequestSeenAt = now
			st.Unmount = nil // a new run; an earlier unmount failure is history
		}
		t.reqKey = key
	}
	t.request = s.request != nil

	// EncryptionStarted.
	running := msg == MsgOSEncryptionStarted ||
		(len(s.markers) > 0 && (s.request != nil || st.Status == "transitioning"))
	if running && !t.running {
		src, why := probes.ADEMarkersDir, "ADE's OS encryption states done: "+strings.Join(s.markers, ", ")
		if len(s.markers) == 0 {
			src, why = statusSrc, msg
		}
		emit(Event{Kind: EncryptionStarted, Source: src, Message: why})
		st.StartedAt = now
	}
	t.running = running

	// Stripdown: the mount table decides; ADE's own traces only when it cannot be read.
	stripped, why, src := s.stripdown != "", s.stripdown, s.mountSrc
	if !s.mountsOK {
		switch {
		case slices.Contains(s.markers, "StripdownState"):
			stripped, why, src = true, "ADE's StripdownState marker is present", probes.ADEMarkersDir
		case msg == MsgRestartedStripped:
			stripped, why, src = true, "ADE reports: "+msg, statusSrc
		}
	}
	if stripped && !t.stripped {
		emit(Event{Kind: Stripdown, Source: src, Message: why})
		st.StripdownAt = now
		if st.Stripdown == "" {
			st.Stripdown = why
		}
	}
	t.stripped = stripped

	// Progress.
	var um *UnmountFailure
	if f, ok := ParseUnmountFailure(msg); ok {
		um = &f
		st.Unmount = um
	}
	if msg != "" && msg != t.msgKey {
		emit(Event{Kind: Progress, Source: statusSrc, Message: msg, Unmount: um})
	}
	t.msgKey = msg

	// Succeeded / Failed.
	outcome, okey := OutcomeNone, ""
	if s.status != nil {
		vt := ""
		if s.request != nil {
			vt = s.request.VolumeType
		}
		outcome = ClassifyStatus(s.status.Status, s.status.Message, vt)
		if outcome != OutcomeNone {
			okey = fmt.Sprintf("%d\x00%s\x00%s", outcome, statusSrc, msg)
		}
	}
	if okey != "" && okey != t.outcome {
		kind := Succeeded
		if outcome == OutcomeFailed {
			kind = Failed
		}
		emit(Event{Kind: kind, Source: statusSrc, Message: msg, Unmount: um})
		st.FinishedAt = now
	}
	t.outcome = okey

	switch {
	case stripped:
		st.Phase = PhaseStripdown
	case outcome == OutcomeFailed:
		st.Phase = PhaseFailed
	case outcome == OutcomeSucceeded:
		st.Phase = PhaseSucceeded
	case running || st.OSState == "VMRestartPending":
		st.Phase = PhaseEncrypting
	case s.request != nil:
		st.Phase = PhaseRequested
	case s.handler || s.configDir:
		st.Phase = PhaseIdle
	default:
		st.Phase = PhaseNone
	}
	if len(evs) > 0 {
		st.ChangedAt = now
	}
	return evs
}

func requestMessage(r *Request, again bool) string {
	var parts []string
	for _, kv := range [][2]string{{"EncryptionOperation", r.Operation}, {"VolumeType", r.VolumeType},
		{"EncryptionMode", r.Mode}, {"EncryptionPhase", r.Phase}} {
		if kv[1] != "" {
			parts = append(parts, kv[0]+"="+kv[1])
		}
	}
	what := "ADE's encryption request marker appeared"
	if again {
		what = "ADE's encryption request was renewed (new settings or a rewritten marker)"
	}
	if len(parts) == 0 {
		return what
	}
	return what + " (" + strings.Join(parts, ", ") + ")"
}
