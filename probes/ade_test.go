package probes

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestADEProbe(t *testing.T) {
	const dir = "/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12"
	info := api.SeverityInfo
	tests := []struct {
		name string
		want []wantFinding
	}{
		{"none", nil},
		{"installed", []wantFinding{{key: "ade.in-progress", severity: info, title: "The ADE extension is installed",
			summary: []string{"has written no status yet"}}}},
		{"encrypting", []wantFinding{{
			key: "ade.in-progress", severity: info, title: "ADE is running: OS disk encryption started",
			summary: []string{
				dir + "/status/2.status: success, operation EnableEncryptionDataVolumes",
				"volumes: OS EncryptionInProgress, data NotMounted",
				"azure_crypt_request_queue.ini is present (EncryptionOperation=EnableEncryption, VolumeType=OS)",
				"records VolumeType=OS, SecretSeqNum=0",
				"OS encryption states done: PrereqState, StripdownState, UnmountOldrootState",
				"pid 3100: python3 main/handle.py -daemon", "pid 3300: dd if=/dev/sda1 of=/dev/mapper/osencrypt",
				"/oldroot is mounted", "/ is a tmpfs",
			},
			hint: []string{"do not interrupt"}, command: "cat " + dir + "/status/2.status", related: "pid:3300",
		}}},
		{"unmount-retry", []wantFinding{{key: "ade.in-progress", severity: info,
			title: "ADE is running: Attempt #3 to unmount /oldroot failed", summary: []string{"error, operation EnableEncryptionOSVolume, code 22", "VolumeType=All"}}}},
		{"restart-pending", []wantFinding{{key: "ade.in-progress", severity: info,
			title: "ADE has run: OS disk successfully encrypted, please reboot the VM", hint: []string{"reboot the VM"}}}},
		{"succeeded", []wantFinding{{key: "ade.in-progress", severity: info,
			title: "ADE has run: Encryption succeeded for all volumes", summary: []string{"ADE 1.4.0.12", "OS Encrypted, data Encrypted"},
			hint: []string{"Nothing to do"}, command: "tail -n 50 " + adeLogFile}}},
		{"failed", []wantFinding{{key: "ade.in-progress", severity: info,
			title: "ADE's last run failed: Failed to encrypt OS volume", hint: []string{"snapshot"}}}},
		{"transitioning", []wantFinding{{key: "ade.in-progress", severity: info, title: "ADE is running: Transitioning"}}},
		{"malformed", []wantFinding{{key: "ade.in-progress", severity: info, title: "ADE has run on this VM",
			summary: []string{"status could not be read: parse " + dir + "/status/0.status", "records no recognised settings"}}}},
		{"config-only", []wantFinding{{key: "ade.in-progress", severity: info, title: "ADE has run on this VM",
			summary: []string{"VolumeType=Data"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "ade", tc.name, Distro{ID: "ubuntu", VersionID: "20.04"})
			got, err := adeProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "ade", got, tc.want)
		})
	}
}
