package adewatch

import (
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// The layouts below reproduce ADE's (research ade_extension.md §3, §4):
//
//	/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini   [encryption_request_queue]
//	/var/lib/azure_disk_encryption_config/os_encryption_markers/<State>   empty files
//	/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-<ver>/{config/N.settings,status/N.status}

const handlerDir = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12"

// Mount tables: a normal VM and ADE's stripdown (tmpfs root, the old root at /oldroot).
const (
	normalMounts = "22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n" +
		"23 22 0:5 / /proc rw shared:2 - proc proc rw\n"
	tmprootMounts = normalMounts +
		"40 22 0:50 / /tmp/tmproot rw shared:20 - tmpfs none rw\n"
	stripdownMounts = "40 1 0:50 / / rw,relatime shared:20 - tmpfs none rw\n" +
		"41 40 8:1 / /oldroot rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
)

type fixture struct {
	t    *testing.T
	dir  string
	root hostroot.Root
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	dir := t.TempDir()
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, dir: dir, root: root}
}

func (f *fixture) path(hostPath string) string { return f.root.Path(hostPath) }

// write writes a file in place (truncate + write + close), as ADE's do_status_report and
// ConfigParser do.
func (f *fixture) write(hostPath, content string) {
	f.t.Helper()
	p := f.path(hostPath)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		f.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) remove(hostPath string) {
	f.t.Helper()
	if err := os.RemoveAll(f.path(hostPath)); err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) mounts(table string) { f.write("/proc/1/mountinfo", table) }

// request writes ADE's encryption marker as mark_encryption() does.
func (f *fixture) request(volumeType string) {
	f.write("/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini",
		"[encryption_request_queue]\nencryptionoperation = EnableEncryption\nvolumetype = "+volumeType+
			"\ndiskformatquery = \nencryptionmode = \nencryptionphase = \n\n")
}

func (f *fixture) marker(state string) {
	f.write("/var/lib/azure_disk_encryption_config/os_encryption_markers/"+state, "")
}

func (f *fixture) settings(seq string) {
	f.write(handlerDir+"/config/"+seq+".settings", `{"runtimeSettings":[{"handlerSettings":{"publicSettings":{"EncryptionOperation":"EnableEncryption","VolumeType":"OS"}}}]}`)
}

// status writes N.status in do_status_report's shape (research §3).
func (f *fixture) status(seq, op, status, code, message, osState, dataState string) {
	f.t.Helper()
	sub, _ := json.Marshal(map[string]string{"os": osState, "data": dataState})
	doc := []map[string]any{{
		"version":      "1.4.0.12",
		"timestampUTC": "2026-11-28T07:00:00Z",
		"status": map[string]any{
			"name": "Microsoft.Azure.Security.AzureDiskEncryptionForLinux", "operation": op,
			"status": status, "code": code,
			"formattedMessage": map[string]string{"lang": "en-US", "message": message},
			"substatus": []map[string]any{{
				"name": "Microsoft.Azure.Security.AzureDiskEncryptionForLinux", "operation": op,
				"status": status, "code": code,
				"formattedMessage": map[string]string{"lang": "en-US", "message": string(sub)},
			}},
		},
	}}
	b, err := json.Marshal(doc)
	if err != nil {
		f.t.Fatal(err)
	}
	f.write(handlerDir+"/status/"+seq+".status", string(b))
}

// ADE's messages verbatim (research §1.2 "Retry loop", §3).
const (
	msgAttempt1 = "Attempt #1 to unmount /oldroot failed with error: Command umount /oldroot failed with return code 32\n" +
		"stdout:\n\nstderr:\numount: /oldroot: target is busy ..., stack trace: Traceback (most recent call last): ..."
	msgGaveUp = "Failed to encrypt OS volume with error: Attempt #11 to unmount /oldroot failed with error: " +
		"Could not unmount /oldroot in 10 attempts, stack trace: Traceback ..., machine state: unmount_oldroot"
)

func kinds(evs []Event) []Kind {
	var out []Kind
	for _, e := range evs {
		out = append(out, e.Kind)
	}
	return out
}
