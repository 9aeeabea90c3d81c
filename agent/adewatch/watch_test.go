package adewatch

import (
	"context"
	"os"
	"testing"
	"time"
)

// runner runs a Watcher in the background and collects its events.
type runner struct {
	t      *testing.T
	w      *Watcher
	ch     chan Event
	cancel context.CancelFunc
	done   chan error
}

func startWatcher(t *testing.T, f *fixture, opts ...Option) *runner {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	r := &runner{t: t, w: New(f.root, nil, opts...), ch: make(chan Event, 64), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- r.w.Run(ctx, r.ch) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-r.done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(5 * time.Second):
			t.Error("Run did not return after cancel")
		}
	})
	r.waitScanned()
	return r
}

// waitScanned waits for the first read and its watches.
func (r *runner) waitScanned() {
	r.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		r.w.mu.Lock()
		n := r.w.scans
		r.w.mu.Unlock()
		if n > 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	r.t.Fatal("the watcher never read the host")
}

func (r *runner) watches() int {
	r.w.mu.Lock()
	defer r.w.mu.Unlock()
	return r.w.wds
}

// expect waits for an event of kind (skipping others) and returns it.
func (r *runner) expect(kind Kind, within time.Duration) Event {
	r.t.Helper()
	timer := time.NewTimer(within)
	defer timer.Stop()
	var seen []Kind
	for {
		select {
		case e := <-r.ch:
			if e.Kind == kind {
				return e
			}
			seen = append(seen, e.Kind)
		case <-timer.C:
			r.t.Fatalf("no %s event within %v (saw %v); state %+v", kind, within, seen, r.w.Current())
		}
	}
}

// quiet asserts that no event arrives for d.
func (r *runner) quiet(d time.Duration) {
	r.t.Helper()
	select {
	case e := <-r.ch:
		r.t.Fatalf("unexpected event %+v", e)
	case <-time.After(d):
	}
}

// TestWatchLateDirectories: nothing of ADE exists (not even /var/lib) when the watch
// starts; the directories appear later and every step is seen through inotify alone (the
// periodic re-read is an hour away).
func TestWatchLateDirectories(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	r := startWatcher(t, f, WithInterval(time.Hour), WithDebounce(20*time.Millisecond))
	if r.watches() == 0 {
		t.Fatal("no watch on the nearest existing ancestor")
	}
	const wait = 5 * time.Second

	// WALinuxAgent installs the handler: /var/lib, /var/lib/waagent, the versioned dir.
	if err := os.MkdirAll(f.path(handlerDir), 0o755); err != nil {
		t.Fatal(err)
	}
	f.settings("0")
	// ADE's enable: its config dir and the request marker (research "Overall flow").
	f.write("/var/lib/azure_disk_encryption_config/azure_crypt_config.ini", "[azure_crypt_config]\nvolumetype = OS\n")
	f.request("OS")
	e := r.expect(RequestSeen, wait)
	if e.Initial || e.Source != "/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini" {
		t.Errorf("RequestSeen = %+v", e)
	}

	// The status is created, then rewritten in place (do_status_report: open "w+", write).
	f.status("0", "Enable", "transitioning", "0", "", "EncryptionInProgress", "NotMounted")
	if e := r.expect(Progress, wait); e.Message != "Transitioning" || e.Source != handlerDir+"/status/0.status" {
		t.Errorf("Progress = %+v", e)
	}
	f.marker("PrereqState")
	r.expect(EncryptionStarted, wait)
	f.status("0", "EnableEncryptionOSVolume", "error", "22", msgAttempt1, "EncryptionInProgress", "NotMounted")
	if e := r.expect(Progress, wait); e.Unmount == nil || e.Unmount.Attempt != 1 {
		t.Errorf("attempt progress = %+v", e)
	}
	f.status("0", "EnableEncryption", "success", "0", "Encryption succeeded for OS volume", "Encrypted", "NotMounted")
	if e := r.expect(Succeeded, wait); e.Message != "Encryption succeeded for OS volume" {
		t.Errorf("Succeeded = %+v", e)
	}
	// An unrelated write beside ADE's files triggers nothing.
	f.write("/var/lib/waagent/waagent_status.json", "{}")
	f.write("/var/lib/azure_disk_encryption_config/status_lock_file.lck", "")
	r.quiet(300 * time.Millisecond)
	if cur := r.w.Current(); cur.Phase != PhaseSucceeded || cur.StatusFile != handlerDir+"/status/0.status" {
		t.Errorf("Current = %+v", cur)
	}
}

// TestWatchNewHandlerVersion: an updated handler directory (another version) is picked up.
func TestWatchNewHandlerVersion(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	f.settings("0")
	f.status("0", "Enable", "success", "0", "Encryption succeeded for data volumes", "NotEncrypted", "Encrypted")
	r := startWatcher(t, f, WithInterval(time.Hour), WithDebounce(20*time.Millisecond))
	if e := r.expect(Succeeded, time.Second); !e.Initial {
		t.Errorf("initial Succeeded = %+v", e)
	}
	newer := "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.13"
	f.write(newer+"/config/0.settings", "{}")
	f.write(newer+"/status/0.status", `[{"version":"1.4.0.13","timestampUTC":"2026-11-28T07:10:00Z","status":{"name":"Microsoft.Azure.Security.AzureDiskEncryptionForLinux","operation":"Enable","status":"transitioning","code":0,"formattedMessage":{"lang":"en-US","message":""}}}]`)
	if e := r.expect(Progress, 5*time.Second); e.Source != newer+"/status/0.status" {
		t.Errorf("Progress = %+v", e)
	}
}

// TestWatchPeriodicSafetyNet: with no inotify at all (as after a lost event or an
// overflow), the periodic full re-read still finds every change.
func TestWatchPeriodicSafetyNet(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	r := startWatcher(t, f, WithoutInotify(), WithInterval(100*time.Millisecond))
	if r.watches() != 0 {
		t.Fatalf("watches = %d without inotify", r.watches())
	}
	f.request("OS")
	r.expect(RequestSeen, 3*time.Second)
	f.settings("0")
	f.status("0", "EnableEncryptionOSVolume", "error", "19", msgGaveUp, "EncryptionInProgress", "NotMounted")
	if e := r.expect(Failed, 3*time.Second); e.Unmount == nil || !e.Unmount.GaveUp {
		t.Errorf("Failed = %+v", e)
	}
}

// TestWatchStripdownDropsWatches: once the mount table shows the stripdown the watcher
// holds no watch and reads nothing but the mount table; when it ends, watches return.
func TestWatchStripdownDropsWatches(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	f.request("OS")
	f.settings("0")
	f.status("0", "Enable", "transitioning", "0", "", "EncryptionInProgress", "NotMounted")
	// A fixture mount table is a regular file (no POLLPRI): the periodic re-read sees it.
	r := startWatcher(t, f, WithInterval(100*time.Millisecond), WithDebounce(20*time.Millisecond))
	if r.watches() < 4 {
		t.Fatalf("watches = %d, want the config dir, waagent, the handler dir and its status/config", r.watches())
	}
	f.mounts(stripdownMounts)
	e := r.expect(Stripdown, 3*time.Second)
	if e.Source != "/proc/1/mountinfo" || e.Message == "" {
		t.Errorf("Stripdown = %+v", e)
	}
	time.Sleep(50 * time.Millisecond)
	if n := r.watches(); n != 0 {
		t.Fatalf("%d watches held during the stripdown", n)
	}
	if cur := r.w.Current(); cur.Phase != PhaseStripdown || cur.StripdownAt.IsZero() {
		t.Errorf("Current = %+v", cur)
	}
	f.mounts(normalMounts)
	deadline := time.Now().Add(3 * time.Second)
	for r.watches() == 0 && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	if r.watches() == 0 {
		t.Fatal("watches not restored after the stripdown ended")
	}
}

// TestWatchRenameAndRecreate: a marker written by temp file + rename is seen as well as
// an in-place write, and a marker removed and written again is a new request.
func TestWatchRenameAndRecreate(t *testing.T) {
	f := newFixture(t)
	f.mounts(normalMounts)
	f.write("/var/lib/azure_disk_encryption_config/azure_crypt_config.ini", "[azure_crypt_config]\n")
	r := startWatcher(t, f, WithInterval(time.Hour), WithDebounce(20*time.Millisecond))
	marker := "/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini"
	f.write(marker+".tmp", "[encryption_request_queue]\nvolumetype = All\n")
	if err := os.Rename(f.path(marker+".tmp"), f.path(marker)); err != nil {
		t.Fatal(err)
	}
	if e := r.expect(RequestSeen, 5*time.Second); e.Initial {
		t.Errorf("RequestSeen = %+v", e)
	}
	if cur := r.w.Current(); cur.Request == nil || cur.Request.VolumeType != "All" || !cur.Request.CoversOS() {
		t.Errorf("request = %+v", cur.Request)
	}
	f.remove(marker)
	deadline := time.Now().Add(5 * time.Second)
	for r.w.Current().Request != nil && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if cur := r.w.Current(); cur.Request != nil || cur.Phase != PhaseIdle {
		t.Fatalf("after removal: %+v", cur)
	}
	f.request("OS")
	r.expect(RequestSeen, 5*time.Second)
}
