package hostroot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestPathMapping(t *testing.T) {
	dir := t.TempDir()
	r, err := New(dir)
	if err != nil {
		t.Fatal(err)
	}
	if r.IsHost() {
		t.Fatal("fixture root claims to be the host")
	}
	if got, want := r.Proc("1", "mountinfo"), filepath.Join(dir, "proc/1/mountinfo"); got != want {
		t.Errorf("Proc = %q, want %q", got, want)
	}
	if got, want := r.PID(42, "fd"), filepath.Join(dir, "proc/42/fd"); got != want {
		t.Errorf("PID = %q, want %q", got, want)
	}
	if got, want := r.Sys("block"), filepath.Join(dir, "sys/block"); got != want {
		t.Errorf("Sys = %q, want %q", got, want)
	}
	if got := r.HostPath(filepath.Join(dir, "etc/os-release")); got != "/etc/os-release" {
		t.Errorf("HostPath = %q", got)
	}
	if got := r.HostPath("/elsewhere"); got != "/elsewhere" {
		t.Errorf("HostPath outside root = %q", got)
	}
	if Host.Proc("self", "mountinfo") != "/proc/self/mountinfo" || !Host.IsHost() {
		t.Errorf("host root maps wrongly: %q", Host.Proc("self", "mountinfo"))
	}
	var zero Root
	if !zero.IsHost() || zero.Path("/etc") != "/etc" {
		t.Error("zero Root is not the host")
	}
}

func TestNewRejectsMissingAndFiles(t *testing.T) {
	if _, err := New(filepath.Join(t.TempDir(), "nope")); err == nil {
		t.Error("missing root accepted")
	}
	f := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(f, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := New(f); err == nil {
		t.Error("file accepted as root")
	}
}
