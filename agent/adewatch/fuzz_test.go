package adewatch

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// FuzzStatus feeds arbitrary N.status contents (and request markers) through the whole
// read → transition path: no panic, and a malformed status never yields a final outcome.
func FuzzStatus(f *testing.F) {
	f.Add([]byte(`[{"version":"1.4.0.12","timestampUTC":"2026-11-28T07:00:00Z","status":{"name":"Microsoft.Azure.Security.AzureDiskEncryptionForLinux","operation":"EnableEncryptionOSVolume","status":"error","code":"22","formattedMessage":{"lang":"en-US","message":"Attempt #3 to unmount /oldroot failed with error: umount: /oldroot: target is busy"},"substatus":[{"formattedMessage":{"message":"{\"os\": \"EncryptionInProgress\", \"data\": \"NotMounted\"}"}}]}}]`),
		[]byte("[encryption_request_queue]\nvolumetype = OS\n"))
	f.Add([]byte(`{"status":{"status":"success","code":0,"formattedMessage":{"message":"Encryption succeeded for all volumes"}}}`), []byte(""))
	f.Add([]byte(`[{"status":{"status":"error","code":19,"substatus":[{"formattedMessage":{"message":"{\"os\":\"VMRestartPending\"}"}}]}}]`), []byte("volumetype: All"))
	f.Add([]byte(`[{"version": "1.4.0.12", "timestampUTC": "2026-`), []byte("["))
	f.Add([]byte(""), []byte(""))
	f.Fuzz(func(t *testing.T, status, request []byte) {
		dir := t.TempDir()
		root, err := hostroot.New(dir)
		if err != nil {
			t.Fatal(err)
		}
		put := func(hostPath string, data []byte) {
			p := root.Path(hostPath)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		put("/proc/1/mountinfo", []byte(normalMounts))
		put(handlerDir+"/status/0.status", status)
		put("/var/lib/azure_disk_encryption_config/azure_crypt_request_queue.ini", request)
		w := New(root, nil)
		evs := w.Scan()
		cur := w.Current()
		if cur.Request == nil {
			t.Fatal("request marker present but not reported")
		}
		if len(cur.Unreadable) > 0 {
			for _, e := range evs {
				if e.Kind == Succeeded || e.Kind == Failed || e.Kind == Progress {
					t.Fatalf("unreadable status %v gave %+v", cur.Unreadable, e)
				}
			}
		}
		for _, e := range evs {
			if e.Kind == "" || e.At.IsZero() || !e.Initial {
				t.Fatalf("bad event %+v", e)
			}
		}
		if len(w.Scan()) != 0 {
			t.Fatal("a second read of the same files gave events")
		}
		_, _ = ParseUnmountFailure(string(status))
	})
}
