// Package vm is the VM test bed: a Debian bookworm guest under QEMU with real systemd (and
// SELinux when asked), driven from Go tests through a guest agent on a virtio-serial port.
// See docs/vm-tests.md.
//
//	m := vm.Boot(t, vm.Options{SELinux: vm.SELinuxPermissive})
//	r := m.MustRun(t, "systemctl is-system-running")
//
// Tests that boot guests call vm.Require first: without ADEAGENT_VM=1 they skip; with it
// and no root, qemu or mmdebstrap they fail.
package vm

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// Environment variables of the test bed.
const (
	// EnvEnable turns the VM tests on ("1").
	EnvEnable = "ADEAGENT_VM"
	// EnvCache is the image cache directory (default DefaultCache).
	EnvCache = "ADEAGENT_VM_CACHE"
	// EnvReport names a file the timings are appended to.
	EnvReport = "ADEAGENT_VM_REPORT"
	// EnvKeep keeps every machine's directory (console log, overlay) after the test.
	EnvKeep = "ADEAGENT_VM_KEEP"
)

// DefaultCache is where images are cached without EnvCache.
const DefaultCache = "/var/cache/adeagent-e2e"

// tools the bed needs on the host.
var tools = []string{"qemu-system-x86_64", "qemu-img", "mmdebstrap", "mkfs.ext4", "debugfs", "go"}

// Require skips t unless ADEAGENT_VM=1, and fails it when the bed cannot run although
// asked to (not root, a tool missing).
func Require(t testing.TB) {
	t.Helper()
	if os.Getenv(EnvEnable) != "1" {
		t.Skipf("VM scenarios are off: set %s=1 to boot QEMU guests (root, qemu-system-x86, qemu-utils, mmdebstrap; docs/vm-tests.md)", EnvEnable)
	}
	if os.Geteuid() != 0 {
		t.Fatalf("%s=1 but not root: the image build (mmdebstrap --mode=root) needs root", EnvEnable)
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		t.Fatalf("%s=1 but missing on the host: %s (apt-get install qemu-system-x86 qemu-utils mmdebstrap e2fsprogs)",
			EnvEnable, strings.Join(missing, ", "))
	}
}

var reportMu sync.Mutex

// Report logs a timing or result line and appends it to $ADEAGENT_VM_REPORT when set.
func Report(t testing.TB, format string, args ...any) {
	t.Helper()
	line := fmt.Sprintf(format, args...)
	t.Log(line)
	file := os.Getenv(EnvReport)
	if file == "" {
		return
	}
	reportMu.Lock()
	defer reportMu.Unlock()
	f, err := os.OpenFile(file, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
	if err != nil {
		t.Logf("report file: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "vm: %-40s %s\n", t.Name(), line)
}

// useKVM says whether KVM can run a stock kernel here: /dev/kvm writable and the CPU
// advertising vmx or svm. (A /dev/kvm without them, such as kvm_pvm, runs a stock Debian
// kernel into "KVM internal error"; TCG is used then.)
func useKVM() bool {
	if unix.Access("/dev/kvm", unix.W_OK) != nil {
		return false
	}
	info, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(info, []byte("\n")) {
		if !bytes.HasPrefix(line, []byte("flags")) {
			continue
		}
		for _, f := range bytes.Fields(line) {
			if string(f) == "vmx" || string(f) == "svm" {
				return true
			}
		}
		return false
	}
	return false
}
