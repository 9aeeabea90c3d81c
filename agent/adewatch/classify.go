package adewatch

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/unmount"
)

// ADE's progress strings this package acts on, verbatim from the research
// (shared/research/ade_extension.md §3 "Progress message sequence", §1.2 and appendix 13).
const (
	// MsgOSEncryptionStarted is written by EncryptBlockDeviceState before the long dd
	// (research §1.2 encrypt_block_device, step 5).
	MsgOSEncryptionStarted = "OS disk encryption started"
	// MsgRestartedStripped is the stripdown's exit message (research §1.2 stripdown,
	// should_exit): status "error" code 19 on Ubuntu, "success" on RHEL/CentOS 7. It is
	// progress, never a failure.
	MsgRestartedStripped = "Restarted extension from stripped down OS"
	// MsgRebootPending replaces the message when the OS volume is VMRestartPending
	// (research §3): the OS disk is encrypted, ADE's final status follows the reboot.
	MsgRebootPending = "OS disk successfully encrypted, please reboot the VM"
	// MsgSucceededPrefix starts ADE's final success messages (research §3, item 7):
	// "Encryption succeeded for all volumes", "…for OS volume", "…for data volumes".
	MsgSucceededPrefix = "Encryption succeeded for "
	// MsgSucceededData is intermediate when the request also covers the OS volume
	// (VolumeType All: data volumes go first, research "Overall flow").
	MsgSucceededData = "Encryption succeeded for data volumes"
	// MsgFailedPrefix starts ADE's final failure messages (code 19): "Failed to encrypt OS
	// volume with error: …" and "Failed to encrypt data volumes with error: …".
	MsgFailedPrefix = "Failed to encrypt "
	// MsgUnmountAttempt is the interim status of each failed unmount of the old root
	// (research §1.2 "Retry loop": status error, code 22):
	// "Attempt #N to unmount /oldroot failed with error: <e>, stack trace: <tb>".
	MsgUnmountAttempt = "to unmount /oldroot failed"
	// MsgUnmountGiveUp is raised after the 10th failure: "Could not unmount /oldroot in 10
	// attempts"; the final status is "Failed to encrypt OS volume with error: Attempt #11
	// to unmount /oldroot failed with error: Could not unmount /oldroot in 10 attempts, …".
	MsgUnmountGiveUp = "Could not unmount /oldroot"
	// MsgTargetBusy is umount's own text inside <e>: "umount: /oldroot: target is busy".
	MsgTargetBusy = "target is busy"
	// MsgAlreadyInProgress is reject_settings' message (an enable arrived while ADE runs).
	MsgAlreadyInProgress = "An operation is already in progress"
)

var unmountAttemptRE = regexp.MustCompile(`Attempt #(\d+) to unmount /oldroot failed`)

// UnmountFailure describes an "unmount /oldroot failed" message: ADE could not unmount the
// old root after its stripdown, so something still held it (research §1.2
// unmount_oldroot, appendix 11).
type UnmountFailure struct {
	Attempt    int  // N of "Attempt #N …" (11 is the give-up); 0 when the text has none
	GaveUp     bool // "Could not unmount /oldroot in 10 attempts"
	TargetBusy bool // umount said "target is busy"
}

// ParseUnmountFailure recognises ADE's "unmount /oldroot" failure strings: the interim
// "Attempt #N to unmount /oldroot failed with error: …", the final "Failed to encrypt OS
// volume with error: Attempt #11 to unmount /oldroot failed with error: Could not unmount
// /oldroot in 10 attempts, …" and the docs' wording "failed to unmount after …".
func ParseUnmountFailure(msg string) (UnmountFailure, bool) {
	var f UnmountFailure
	ok := false
	if m := unmountAttemptRE.FindStringSubmatch(msg); m != nil {
		f.Attempt, _ = strconv.Atoi(m[1])
		ok = true
	}
	if strings.Contains(msg, MsgUnmountGiveUp) {
		f.GaveUp, ok = true, true
	}
	if strings.Contains(strings.ToLower(msg), "failed to unmount after") {
		ok = true
	}
	if ok && strings.Contains(msg, MsgTargetBusy) {
		f.TargetBusy = true
	}
	return f, ok
}

// Outcome is what one status says about the end of ADE's run.
type Outcome int

const (
	// OutcomeNone: the status is progress (or there is none).
	OutcomeNone Outcome = iota
	// OutcomeSucceeded: a final success message.
	OutcomeSucceeded
	// OutcomeFailed: a final failure (status error that is not one of the interim errors).
	OutcomeFailed
)

// ClassifyStatus decides whether ADE's status (lower-cased status, its message as
// written) is final. requestVolumeType is the request marker's VolumeType ("" when the
// marker is absent): "Encryption succeeded for data volumes" is only final when the
// request does not also cover the OS volume.
func ClassifyStatus(status, message, requestVolumeType string) Outcome {
	msg := strings.TrimSpace(message)
	switch strings.ToLower(status) {
	case "success":
		if !strings.HasPrefix(msg, MsgSucceededPrefix) {
			return OutcomeNone
		}
		if msg == MsgSucceededData {
			switch strings.ToLower(requestVolumeType) {
			case "os", "all":
				return OutcomeNone // the OS volume is next
			}
		}
		return OutcomeSucceeded
	case "error":
		switch {
		case msg == MsgRestartedStripped:
			return OutcomeNone // Ubuntu reports the stripdown's restart as an error
		case strings.HasPrefix(msg, "Attempt #") && strings.Contains(msg, MsgUnmountAttempt):
			return OutcomeNone // interim, code 22; ADE retries up to 10 times
		}
		return OutcomeFailed
	}
	return OutcomeNone
}

// StripdownFromMounts says why the mount table shows ADE's stripdown ("" when it does
// not): the root filesystem is a tmpfs and /oldroot is a mount point (research §1.2
// stripdown: pivot_root into a tmpfs with the old root at /oldroot). This is the same rule
// as agent.Daemon's stripdown check; the daemon can call this instead.
func StripdownFromMounts(mounts []unmount.Mount) string {
	rootMount, ok := unmount.MountFor(mounts, "/")
	if !ok || rootMount.FSType != "tmpfs" {
		return ""
	}
	for _, m := range mounts {
		if m.MountPoint == "/oldroot" {
			return fmt.Sprintf("the root filesystem is %s and /oldroot is mounted (%s from %s)", rootMount.FSType, m.FSType, m.Source)
		}
	}
	return ""
}

// StripdownStarting reports the step before the pivot: a tmpfs at /tmp/tmproot (LVM:
// /usr/tmproot) into which ADE copies the OS (research §1.2 stripdown, enter step 2).
func StripdownStarting(mounts []unmount.Mount) string {
	for _, m := range mounts {
		if (m.MountPoint == "/tmp/tmproot" || m.MountPoint == "/usr/tmproot") && m.FSType == "tmpfs" {
			return "a tmpfs is mounted at " + m.MountPoint + " (ADE is copying the OS into RAM)"
		}
	}
	return ""
}
