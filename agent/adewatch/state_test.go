package adewatch

import (
	"slices"
	"testing"
)

func TestClassifyStatus(t *testing.T) {
	cases := []struct {
		status, msg, vt string
		want            Outcome
	}{
		{"transitioning", "", "OS", OutcomeNone},
		{"success", "", "OS", OutcomeNone}, // "Provisioning succeeded"
		{"success", MsgOSEncryptionStarted, "OS", OutcomeNone},
		{"success", "Encryption succeeded for all volumes", "All", OutcomeSucceeded},
		{"success", "Encryption succeeded for OS volume", "OS", OutcomeSucceeded},
		{"success", "Encryption succeeded for data volumes", "All", OutcomeNone},
		{"success", "Encryption succeeded for data volumes", "OS", OutcomeNone},
		{"success", "Encryption succeeded for data volumes", "Data", OutcomeSucceeded},
		{"success", "Encryption succeeded for data volumes", "", OutcomeSucceeded},
		{"success", MsgRestartedStripped, "OS", OutcomeNone}, // RHEL
		{"error", MsgRestartedStripped, "OS", OutcomeNone},   // Ubuntu
		{"error", msgAttempt1, "OS", OutcomeNone},
		{"error", msgGaveUp, "OS", OutcomeFailed},
		{"error", "Failed to encrypt data volumes with error: boom", "Data", OutcomeFailed},
		{"error", "Not enough memory for enabling encryption on OS volume. 8 GB memory is recommended.", "OS", OutcomeFailed},
		{"Error", "Failed to encrypt OS volume with error: x", "", OutcomeFailed},
	}
	for _, c := range cases {
		if got := ClassifyStatus(c.status, c.msg, c.vt); got != c.want {
			t.Errorf("ClassifyStatus(%q, %.40q, %q) = %d, want %d", c.status, c.msg, c.vt, got, c.want)
		}
	}
}

func TestParseUnmountFailure(t *testing.T) {
	cases := []struct {
		msg  string
		ok   bool
		want UnmountFailure
	}{
		{msgAttempt1, true, UnmountFailure{Attempt: 1, TargetBusy: true}},
		{msgGaveUp, true, UnmountFailure{Attempt: 11, GaveUp: true}},
		{"Could not unmount /oldroot in 10 attempts", true, UnmountFailure{GaveUp: true}},
		{"The encryption failed to unmount after 10 attempts", true, UnmountFailure{}},
		{"Block device /dev/sda1 did not appear in 10 restart attempts", false, UnmountFailure{}},
		{MsgOSEncryptionStarted, false, UnmountFailure{}},
	}
	for _, c := range cases {
		got, ok := ParseUnmountFailure(c.msg)
		if ok != c.ok || got != c.want {
			t.Errorf("ParseUnmountFailure(%.50q) = %+v, %v; want %+v, %v", c.msg, got, ok, c.want, c.ok)
		}
	}
}

// TestScanUnmountPath walks ADE's unmount-path run (Ubuntu 20.04) through Scan.
func TestScanUnmountPath(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	w := New(f.root, nil)

	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("empty host: %v", evs)
	}
	if p := w.Current().Phase; p != PhaseNone {
		t.Fatalf("phase = %s, want none", p)
	}

	// enable: settings, config, the request marker, "transitioning" with an empty message.
	f.settings("0")
	f.write("/var/lib/azure_disk_encryption_config/azure_crypt_config.ini", "[azure_crypt_config]\nvolumetype = OS\n")
	f.request("OS")
	f.status("0", "Enable", "transitioning", "0", "", "EncryptionInProgress", "NotMounted")
	evs := w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{RequestSeen, Progress}) {
		t.Fatalf("after the request: %v", evs)
	}
	if evs[0].Source != "/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini" || evs[0].Initial {
		t.Errorf("RequestSeen = %+v", evs[0])
	}
	if evs[1].Message != "Transitioning" {
		t.Errorf("progress message = %q, want Transitioning", evs[1].Message)
	}
	cur := w.Current()
	if cur.Phase != PhaseRequested || !cur.Request.CoversOS() || cur.RequestSeenAt.IsZero() {
		t.Errorf("state = %+v", cur)
	}
	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("nothing changed, yet %v", evs)
	}

	// prereq done: the first marker → EncryptionStarted.
	f.marker("PrereqState")
	if got := kinds(w.Scan()); !slices.Equal(got, []Kind{EncryptionStarted}) {
		t.Fatalf("after PrereqState: %v", got)
	}
	if p := w.Current().Phase; p != PhaseEncrypting {
		t.Errorf("phase = %s", p)
	}

	// stripdown: a tmpfs at /tmp/tmproot first (no event), then the pivot.
	f.mounts(tmprootMounts)
	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("tmproot: %v", evs)
	}
	if w.Current().StripdownSoon == "" {
		t.Error("StripdownSoon not set")
	}
	f.mounts(stripdownMounts)
	evs = w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{Stripdown}) || evs[0].Source != "/proc/1/mountinfo" {
		t.Fatalf("after the pivot: %+v", evs)
	}
	// While stripped, nothing on the old root is read: a change there is not seen.
	f.status("0", "EnableEncryption", "error", "19", MsgRestartedStripped, "EncryptionInProgress", "NotMounted")
	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("files were read during the stripdown: %v", evs)
	}
	if cur := w.Current(); cur.Phase != PhaseStripdown || cur.Message != "Transitioning" {
		t.Errorf("state during stripdown = %s %q", cur.Phase, cur.Message)
	}

	// Back to a readable table (as if the daemon outlived it): the interim unmount errors
	// are progress, not failure.
	f.mounts(normalMounts)
	f.status("0", "EnableEncryptionOSVolume", "error", "22", msgAttempt1, "EncryptionInProgress", "NotMounted")
	evs = w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{Progress}) {
		t.Fatalf("attempt #1: %+v", evs)
	}
	if u := evs[0].Unmount; u == nil || u.Attempt != 1 || !u.TargetBusy {
		t.Errorf("attempt #1 unmount = %+v", u)
	}
	f.status("0", "EnableEncryptionOSVolume", "error", "19", msgGaveUp, "EncryptionInProgress", "NotMounted")
	evs = w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{Progress, Failed}) {
		t.Fatalf("give-up: %+v", evs)
	}
	if u := evs[1].Unmount; u == nil || !u.GaveUp || u.Attempt != 11 {
		t.Errorf("failed unmount = %+v", u)
	}
	if cur := w.Current(); cur.Phase != PhaseFailed || cur.FinishedAt.IsZero() || cur.Unmount == nil {
		t.Errorf("state = %+v", cur)
	}
	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("repeated failure re-sent: %v", evs)
	}

	// The operator retries: a new N.settings with the marker still present renews the
	// request (ADE's new daemon sleeps ~60 s again).
	f.settings("1")
	f.status("1", "Enable", "transitioning", "0", "", "EncryptionInProgress", "NotMounted")
	evs = w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{RequestSeen, Progress}) {
		t.Fatalf("retry: %+v", evs)
	}
}

// TestScanSuccessAll: VolumeType All, data first (intermediate success), then the OS.
func TestScanSuccessAll(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	f.settings("3")
	f.request("All")
	w := New(f.root, nil)
	evs := w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{RequestSeen}) || !evs[0].Initial {
		t.Fatalf("initial: %+v", evs)
	}
	f.status("3", "EnableEncryptionDataVolumes", "success", "0", "Encryption succeeded for data volumes", "EncryptionInProgress", "Encrypted")
	if got := kinds(w.Scan()); !slices.Equal(got, []Kind{Progress}) {
		t.Fatalf("data done: %v", got)
	}
	f.status("3", "EnableEncryptionDataVolumes", "success", "0", MsgOSEncryptionStarted, "EncryptionInProgress", "Encrypted")
	if got := kinds(w.Scan()); !slices.Equal(got, []Kind{EncryptionStarted, Progress}) {
		t.Fatalf("OS started: %v", got)
	}
	f.status("3", "EnableEncryption", "success", "0", "", "VMRestartPending", "Encrypted")
	evs = w.Scan()
	if len(evs) != 1 || evs[0].Kind != Progress || evs[0].Message != MsgRebootPending {
		t.Fatalf("restart pending: %+v", evs)
	}
	if p := w.Current().Phase; p != PhaseEncrypting {
		t.Errorf("phase = %s", p)
	}
	f.remove("/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini")
	f.status("3", "EnableEncryption", "success", "0", "Encryption succeeded for all volumes", "Encrypted", "Encrypted")
	evs = w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{Progress, Succeeded}) {
		t.Fatalf("final: %+v", evs)
	}
	if cur := w.Current(); cur.Phase != PhaseSucceeded || cur.OSState != "Encrypted" || cur.HandlerVersion != "1.4.0.12" {
		t.Errorf("state = %+v", cur)
	}
}

// TestScanStripdownFallback: without a readable mount table ADE's own traces say stripdown.
func TestScanStripdownFallback(t *testing.T) {
	f := newFixture(t)
	f.request("OS")
	f.marker("PrereqState")
	w := New(f.root, nil)
	if got := kinds(w.Scan()); !slices.Equal(got, []Kind{RequestSeen, EncryptionStarted}) {
		t.Fatalf("initial: %v", got)
	}
	f.marker("StripdownState")
	evs := w.Scan()
	if got := kinds(evs); !slices.Equal(got, []Kind{Stripdown}) || evs[0].Source != "/var/lib/azure_disk_encryption_config/os_encryption_markers" {
		t.Fatalf("marker: %+v", evs)
	}
	// With a readable mount table that shows no stripdown, a stale marker means nothing.
	f2 := newFixture(t)
	f2.mounts(normalMounts)
	f2.request("OS")
	f2.marker("StripdownState")
	w2 := New(f2.root, nil)
	if got := kinds(w2.Scan()); slices.Contains(got, Stripdown) {
		t.Fatalf("stale marker gave %v", got)
	}
}

// TestScanHalfWrittenStatus: a status caught mid-rewrite keeps the last good one.
func TestScanHalfWrittenStatus(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	f.settings("0")
	f.status("0", "Enable", "success", "0", MsgOSEncryptionStarted, "EncryptionInProgress", "NotMounted")
	w := New(f.root, nil)
	w.Scan()
	f.write(handlerDir+"/status/0.status", `[{"version": "1.4.0.12", "timestampUTC": "2026-`)
	if evs := w.Scan(); len(evs) != 0 {
		t.Fatalf("half-written status gave %v", evs)
	}
	cur := w.Current()
	if cur.Message != MsgOSEncryptionStarted || len(cur.Unreadable) == 0 {
		t.Errorf("state = %q %v", cur.Message, cur.Unreadable)
	}
}

func TestRelevantOverflow(t *testing.T) {
	w := New(newFixture(t).root, nil)
	if !w.relevant(nil, specs{}, []rawEvent{{mask: 0x4000 /* IN_Q_OVERFLOW */}}) {
		t.Error("overflow does not trigger a re-read")
	}
	ss := specs{}
	ss.get("/var/lib/waagent").handlers = true
	if w.relevant(nil, ss, []rawEvent{{dir: "/var/lib/waagent", name: "waagent_status.json", mask: 0x100}}) {
		t.Error("an unrelated file in /var/lib/waagent triggers a re-read")
	}
	if !w.relevant(nil, ss, []rawEvent{{dir: "/var/lib/waagent", name: "Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.1.0.3", mask: 0x100}}) {
		t.Error("a new ADE handler directory does not trigger a re-read")
	}
}
