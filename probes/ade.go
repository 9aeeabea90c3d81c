package probes

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// adeProbe reports (as info, never a blocker) that ADE is running on this VM or has run,
// with its current progress message. Sources (research ade_extension.md §3, §4, appendix
// 13–14): the handler's highest N.status, ADE's config directory
// /var/lib/azure_disk_encryption_config (the request/decrypt markers and
// os_encryption_markers/<State>), ADE's processes (handle.py -daemon, dd into
// /dev/mapper/osencrypt, cryptsetup reencrypt) and the stripdown's mounts (/oldroot,
// /tmp/tmproot).
type adeProbe struct{}

func (adeProbe) Name() string { return "ade" }

// adeStates is the order of ADE's OS encryption states (their marker file names).
var adeStates = []string{"PrereqState", "SelinuxState", "StripdownState", "UnmountOldrootState",
	"SplitRootPartitionState", "EncryptBlockDeviceState", "PatchBootSystemState", "ResumeEncryptionState"}

// adeView is what the probe learnt of ADE; the encryption probe uses it too.
type adeView struct {
	Handler      *extHandlerDir
	Status       *extStatus
	StatusErr    error
	OSState      string // substatus "os": NotEncrypted, EncryptionInProgress, VMRestartPending, Encrypted, …
	DataState    string // substatus "data"
	ConfigDir    bool
	Config       map[string]string // azure_crypt_config.ini
	Request      map[string]string // azure_crypt_request_queue.ini, nil when absent
	Decrypt      map[string]string // azure_decrypt_request_queue.ini, nil when absent
	Markers      []string          // os_encryption_markers present, in state order
	Processes    []string          // "pid N: cmdline"
	PIDs         []int
	Stripdown    []string // stripdown evidence in the mount table
	Unreadable   []string
	ConfigMarker string // host path of azure_crypt_request_queue.ini
}

// active reports whether ADE is working right now.
func (v *adeView) active() bool {
	return len(v.Processes) > 0 || len(v.Stripdown) > 0 || v.Request != nil || v.Decrypt != nil ||
		(v.Status != nil && v.Status.Status == "transitioning")
}

// any reports whether there is any trace of ADE.
func (v *adeView) any() bool {
	return v.Handler != nil || v.ConfigDir || v.active()
}

func (p adeProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	v, err := inspectADE(ctx, env)
	if err != nil {
		return nil, err
	}
	if !v.any() {
		return nil, nil
	}
	return stampProbe(p.Name(), []api.Finding{adeFinding(v)}), nil
}

func inspectADE(ctx context.Context, env *Env) (*adeView, error) {
	root := env.Root
	v := &adeView{}
	dirs, err := listExtHandlerDirs(root)
	if err != nil {
		return nil, err
	}
	for _, d := range latestHandlerDirs(dirs) {
		if d.Name == adeHandler {
			hd := d
			v.Handler = &hd
		}
	}
	if v.Handler != nil {
		v.Status, v.StatusErr = readLatestStatus(root, v.Handler.Dir)
		if v.Status != nil {
			for _, s := range v.Status.Sub {
				var states struct {
					OS   string `json:"os"`
					Data string `json:"data"`
				}
				if json.Unmarshal([]byte(s.Message), &states) == nil {
					v.OSState, v.DataState = states.OS, states.Data
					break
				}
			}
		}
	}

	if fi, err := os.Stat(root.Path(adeConfigDir)); err == nil && fi.IsDir() {
		v.ConfigDir = true
		v.Config = adeReadINI(root, v, path.Join(adeConfigDir, "azure_crypt_config.ini"))
		v.ConfigMarker = path.Join(adeConfigDir, "azure_crypt_request_queue.ini")
		v.Request = adeReadINI(root, v, v.ConfigMarker)
		v.Decrypt = adeReadINI(root, v, path.Join(adeConfigDir, "azure_decrypt_request_queue.ini"))
		mdir := path.Join(adeConfigDir, "os_encryption_markers")
		if entries, err := os.ReadDir(root.Path(mdir)); err == nil {
			have := map[string]bool{}
			for _, e := range entries {
				have[e.Name()] = true
			}
			for _, s := range adeStates {
				if have[s] {
					v.Markers = append(v.Markers, s)
				}
			}
		} else if !errors.Is(err, fs.ErrNotExist) {
			v.Unreadable = append(v.Unreadable, fmt.Sprintf("%s (%v)", mdir, err))
		}
	}

	if err := ctx.Err(); err != nil {
		return nil, err
	}
	procs, err := waListProcesses(ctx, env)
	if err != nil {
		return nil, err
	}
	for _, pr := range procs {
		if adeProcess(pr, v.Handler) {
			v.Processes = append(v.Processes, fmt.Sprintf("pid %d: %s", pr.PID, pr.Cmdline))
			v.PIDs = append(v.PIDs, pr.PID)
		}
	}

	if mounts, err := unmount.ReadMountInfo(root); err == nil {
		for _, m := range mounts {
			switch {
			case m.MountPoint == "/oldroot":
				v.Stripdown = append(v.Stripdown, "/oldroot is mounted (the old root after ADE's pivot)")
			case (m.MountPoint == "/tmp/tmproot" || m.MountPoint == "/usr/tmproot") && m.FSType == "tmpfs":
				v.Stripdown = append(v.Stripdown, "a tmpfs is mounted at "+m.MountPoint+" (ADE's RAM root)")
			case m.MountPoint == "/" && m.FSType == "tmpfs":
				v.Stripdown = append(v.Stripdown, "/ is a tmpfs (ADE's stripped-down root)")
			}
		}
	}
	return v, nil
}

// adeReadINI reads one of ADE's ConfigParser files; nil when it does not exist.
func adeReadINI(root hostroot.Root, v *adeView, file string) map[string]string {
	data, err := root.ReadFile(file)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			v.Unreadable = append(v.Unreadable, fmt.Sprintf("%s (%v)", file, err))
		}
		return nil
	}
	return readADEINI(data)
}

// adeProcess reports whether a process is ADE at work: its handler's daemon or enable,
// the dd that copies the root into /dev/mapper/osencrypt, or an online re-encryption.
func adeProcess(pr waProc, h *extHandlerDir) bool {
	if h != nil && extProcessOf(pr, h.Dir) {
		return true
	}
	if strings.Contains(pr.Cmdline, "/"+adeHandler+"-") {
		return true
	}
	base := path.Base(pr.Argv[0])
	switch base {
	case "dd":
		return strings.Contains(pr.Cmdline, "of=/dev/mapper/osencrypt")
	case "cryptsetup":
		return strings.Contains(pr.Cmdline, "reencrypt") && strings.Contains(pr.Cmdline, "osencrypt")
	}
	return false
}

// adeMessage is ADE's progress message as Get-AzVMDiskEncryptionStatus shows it
// (research §3): the status message, or the display status when it is empty.
func adeMessage(st *extStatus, osState string) string {
	if st == nil {
		return ""
	}
	msg := strings.TrimSpace(st.Message)
	if osState == "VMRestartPending" {
		return "OS disk successfully encrypted, please reboot the VM"
	}
	if msg == "" {
		switch st.Status {
		case "transitioning":
			return "Transitioning"
		case "success":
			return "Provisioning succeeded"
		}
	}
	return msg
}

func adeFinding(v *adeView) api.Finding {
	msg := adeMessage(v.Status, v.OSState)
	var title string
	switch {
	case v.active() && msg != "":
		title = fmt.Sprintf("ADE is running: %s", msg)
	case v.active():
		title = "ADE is running"
	case v.Status != nil && v.Status.Status == "error":
		title = fmt.Sprintf("ADE's last run failed: %s", msg)
	case msg != "":
		title = fmt.Sprintf("ADE has run: %s", msg)
	case v.Status == nil && v.StatusErr == nil && !v.ConfigDir:
		title = "The ADE extension is installed"
	default:
		title = "ADE has run on this VM"
	}
	const maxTitle = 160
	if len(title) > maxTitle {
		title = title[:maxTitle-1] + "…"
	}

	var facts []string
	var related []api.Related
	var cmds [][]string
	if h := v.Handler; h != nil {
		related = append(related, api.Related{Kind: "path", ID: h.Dir})
		switch {
		case v.StatusErr != nil:
			facts = append(facts, fmt.Sprintf("ADE %s's status could not be read: %v", h.Version, v.StatusErr))
		case v.Status == nil:
			facts = append(facts, fmt.Sprintf("ADE %s is installed (%s) and has written no status yet", h.Version, h.Dir))
		default:
			s := fmt.Sprintf("ADE %s status %s: %s", h.Version, v.Status.File, adeOrDash(v.Status.Status))
			if v.Status.Operation != "" {
				s += ", operation " + v.Status.Operation
			}
			if v.Status.Code != "" && v.Status.Code != "0" {
				s += ", code " + v.Status.Code
			}
			if v.Status.Timestamp != "" {
				s += ", at " + v.Status.Timestamp
			}
			if msg != "" {
				s += fmt.Sprintf(", message %q", msg)
			}
			facts = append(facts, s)
			if v.OSState != "" || v.DataState != "" {
				facts = append(facts, fmt.Sprintf("volumes: OS %s, data %s", adeOrDash(v.OSState), adeOrDash(v.DataState)))
			}
			cmds = append(cmds, []string{"cat", v.Status.File})
		}
	}
	if v.Request != nil {
		facts = append(facts, fmt.Sprintf("encryption request marker %s is present (%s)", v.ConfigMarker,
			iniSummary(v.Request, "encryption_request_queue", "EncryptionOperation", "VolumeType", "EncryptionMode", "EncryptionPhase")))
		related = append(related, api.Related{Kind: "path", ID: v.ConfigMarker})
	}
	if v.Decrypt != nil {
		facts = append(facts, fmt.Sprintf("decryption request marker %s is present (%s)", path.Join(adeConfigDir, "azure_decrypt_request_queue.ini"),
			iniSummary(v.Decrypt, "decryption_request_queue", "EncryptionOperation", "VolumeType")))
	}
	if v.Config != nil {
		facts = append(facts, fmt.Sprintf("%s/azure_crypt_config.ini records %s", adeConfigDir,
			iniSummary(v.Config, "azure_crypt_config", "VolumeType", "SecretSeqNum")))
	} else if v.ConfigDir && v.Request == nil {
		facts = append(facts, fmt.Sprintf("ADE's config directory %s exists", adeConfigDir))
	}
	if len(v.Markers) > 0 {
		facts = append(facts, "OS encryption states done: "+strings.Join(v.Markers, ", "))
	}
	if len(v.Processes) > 0 {
		facts = append(facts, "ADE processes: "+strings.Join(v.Processes, "; "))
		for _, pid := range v.PIDs {
			related = append(related, api.Related{Kind: "pid", ID: strconv.Itoa(pid)})
		}
	}
	facts = append(facts, v.Stripdown...)
	if len(v.Unreadable) > 0 {
		facts = append(facts, "unreadable: "+strings.Join(v.Unreadable, "; "))
	}

	hint := "Nothing to fix for readiness. Follow ADE's progress in its log (" + adeLogFile + ") or with " +
		"'az vm encryption show' / Get-AzVMDiskEncryptionStatus. OS encryption takes hours and ends with a reboot; do not interrupt it."
	switch {
	case v.OSState == "VMRestartPending":
		hint = "ADE has encrypted the OS disk and waits for a reboot: reboot the VM when convenient (ADE's final status follows after the boot)."
	case !v.active() && v.Status != nil && v.Status.Status == "error":
		hint = "Read ADE's log (" + adeLogFile + ") for the failure, fix its cause (the other findings of this report name the usual ones), " +
			"and restore from the snapshot taken before encryption if the OS disk was left half-done, before retrying."
	case !v.active():
		hint = "Nothing to do. ADE is not working right now; its last status is shown for reference."
	}
	cmds = append(cmds, []string{"tail", "-n", "50", adeLogFile})
	return api.Finding{
		Key:         "ade.in-progress",
		Title:       title,
		Summary:     strings.Join(facts, "; ") + ".",
		Severity:    api.SeverityInfo,
		Remediation: api.Remediation{Hint: hint, Commands: cmds},
		Related:     related,
	}
}

// iniSummary renders chosen keys of an ADE ini section as "K=V, …".
func iniSummary(ini map[string]string, section string, keys ...string) string {
	var parts []string
	for _, k := range keys {
		if val, ok := ini[section+"."+strings.ToLower(k)]; ok && val != "" {
			parts = append(parts, k+"="+val)
		}
	}
	if len(parts) == 0 {
		return "no recognised settings"
	}
	return strings.Join(parts, ", ")
}

func adeOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
