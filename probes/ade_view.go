package probes

// Exported wrappers over the ADE parsing the ade probe already does (ade.go,
// extension_status.go), for agent/adewatch: it watches the same files with inotify and
// must read them exactly as the ade.in-progress finding does. Nothing here changes the
// probe's behaviour.

import (
	"encoding/json"
	"path"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

const (
	// ADEConfigDir is ADE's own state directory (research ade_extension.md §4).
	ADEConfigDir = adeConfigDir
	// ADERequestMarker is ADE's encryption marker (research §4: azure_crypt_request_queue.ini,
	// section encryption_request_queue), written by mark_encryption() just before the
	// daemon starts and sleeps about 60 s (research "Overall flow").
	ADERequestMarker = adeConfigDir + "/azure_crypt_request_queue.ini"
	// ADEDecryptMarker is ADE's decryption marker (research §4).
	ADEDecryptMarker = adeConfigDir + "/azure_decrypt_request_queue.ini"
	// ADEConfigFile is azure_crypt_config.ini, written before the request marker (research
	// "Overall flow", step 2).
	ADEConfigFile = adeConfigDir + "/azure_crypt_config.ini"
	// ADEMarkersDir holds one empty file per finished OS encryption state (research §1.1).
	ADEMarkersDir = adeConfigDir + "/os_encryption_markers"
	// WAAgentLibDir is WALinuxAgent's library directory holding the handler directories.
	WAAgentLibDir = waagentLibDir
	// ADEHandlerName is the current ADE extension's handler name; its directories are
	// WAAgentLibDir/ADEHandlerName-<version>.
	ADEHandlerName = adeHandler
)

// ADEStates returns ADE's OS encryption states (their marker file names) in order.
func ADEStates() []string { return append([]string(nil), adeStates...) }

// ADEStatus is the ADE handler's current status file (the highest N.status).
type ADEStatus struct {
	HandlerDir     string // host path of the newest ADE handler directory
	HandlerVersion string
	File           string // host path of the N.status read ("" when none yet)
	Seq            int
	Timestamp      string // timestampUTC as written
	Operation      string
	Status         string // transitioning|success|error (lower-cased)
	Code           string
	Message        string // status.formattedMessage.message, as written
	OSState        string // substatus "os": NotEncrypted, EncryptionInProgress, VMRestartPending, …
	DataState      string // substatus "data"
}

// ReadADEStatus reads the newest ADE handler's current status as the ade probe does. It
// returns nil and no error when no ADE handler is installed; a status that has not been
// written yet gives an ADEStatus with an empty File. A malformed status file is an error
// naming the file (handlers rewrite it in place, so a reader can catch it half-written).
func ReadADEStatus(root hostroot.Root) (*ADEStatus, error) {
	dirs, err := listExtHandlerDirs(root)
	if err != nil {
		return nil, err
	}
	var h *extHandlerDir
	for _, d := range latestHandlerDirs(dirs) {
		if d.Name == adeHandler {
			hd := d
			h = &hd
		}
	}
	if h == nil {
		return nil, nil
	}
	out := &ADEStatus{HandlerDir: h.Dir, HandlerVersion: h.Version}
	st, err := readLatestStatus(root, h.Dir)
	if err != nil {
		return out, err
	}
	if st == nil {
		return out, nil
	}
	out.File, out.Seq, out.Timestamp = st.File, st.Seq, st.Timestamp
	out.Operation, out.Status, out.Code, out.Message = st.Operation, st.Status, st.Code, st.Message
	for _, s := range st.Sub {
		var states struct {
			OS   string `json:"os"`
			Data string `json:"data"`
		}
		if json.Unmarshal([]byte(s.Message), &states) == nil {
			out.OSState, out.DataState = states.OS, states.Data
			break
		}
	}
	return out, nil
}

// ADEProgressMessage is ADE's progress message as Get-AzVMDiskEncryptionStatus shows it
// (research §3): the status message, the display status when it is empty, and "OS disk
// successfully encrypted, please reboot the VM" when the OS volume is VMRestartPending.
func ADEProgressMessage(st *ADEStatus) string {
	if st == nil || st.File == "" {
		return ""
	}
	return adeMessage(&extStatus{Status: st.Status, Message: st.Message}, st.OSState)
}

// ADEHandlerDirs lists the host paths of every installed ADE handler directory (all
// versions, oldest first). A missing /var/lib/waagent gives none and no error.
func ADEHandlerDirs(root hostroot.Root) ([]string, error) {
	dirs, err := listExtHandlerDirs(root)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, d := range dirs {
		if d.Name == adeHandler {
			out = append(out, d.Dir)
		}
	}
	return out, nil
}

// ADEHandlerDirName reports whether a directory name under /var/lib/waagent is an ADE
// handler directory (ADEHandlerName-<version>).
func ADEHandlerDirName(name string) bool {
	n, _, ok := splitHandlerDirName(name)
	return ok && n == adeHandler
}

// ParseADEINI parses one of ADE's ConfigParser files into "section.key" (key lower-cased)
// → value, as the ade probe does.
func ParseADEINI(data []byte) map[string]string { return readADEINI(data) }

// ADESettingsDir is the config directory (N.settings) of a handler directory.
func ADESettingsDir(handlerDir string) string { return path.Join(handlerDir, "config") }

// ADEStatusDir is the status directory (N.status) of a handler directory.
func ADEStatusDir(handlerDir string) string { return path.Join(handlerDir, "status") }
