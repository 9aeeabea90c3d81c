package probes

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestEncryptionProbe(t *testing.T) {
	const key = "encryption.state-mismatch"
	tests := []struct {
		name string
		want []wantFinding
	}{
		{"none", nil},
		{"aligned", nil},
		{"aligned-lvm", nil},
		{"recorded-not-real", []wantFinding{{key: key, blocker: true, severity: api.SeverityHigh,
			title:   "ADE says the OS disk is encrypted, but / is not on dm-crypt",
			summary: []string{"last status (/var/lib/waagent/Microsoft.Azure.Security.AzureDiskEncryptionForLinux-1.4.0.12/status/3.status) says the OS volume is Encrypted", "/ is mounted from /dev/sda1 (device 8:1, ext4)"},
			hint:    []string{"Do not run ADE again"}, command: "findmnt /", related: "device:/dev/sda1"}}},
		{"reboot-missed", []wantFinding{{key: key, blocker: true,
			summary: []string{"/etc/crypttab maps osencrypt onto /dev/disk/by-partuuid/0f3a-01", "osencrypt is open (dm-0) but / is not on it"}}}},
		{"real-not-recorded", []wantFinding{{key: key, blocker: true, severity: api.SeverityHigh,
			title:   "/ is on dm-crypt, but ADE says the OS volume is not encrypted",
			summary: []string{"dm-crypt mapping luks-7d1e (dm-0, uuid CRYPT-LUKS2-7d1e7d1e7d1e-luks-7d1e)", "NotEncrypted"},
			command: "cryptsetup status luks-7d1e"}}},
		{"foreign", []wantFinding{{key: key, blocker: true, title: "/ is on dm-crypt that ADE did not set up",
			summary: []string{"cryptroot (dm-0, LUKS2)", "no trace of ADE"}}}},
		{"restart-stale", []wantFinding{{key: key, blocker: false, severity: api.SeverityMedium,
			title: "ADE waits for a reboot, but there is no osencrypt mapping"}}},
		{"data-locked", []wantFinding{{key: key, blocker: false, severity: api.SeverityMedium,
			title:   "1 data volume(s) ADE encrypted are not unlocked",
			summary: []string{"b5e2 on /dev/disk/azure/scsi1/lun0-part1 (from /etc/crypttab)", "Open dm-crypt mappings: f00d (dm-3, LUKS1)"},
			command: "cryptsetup status b5e2", related: "device:/dev/disk/azure/scsi1/lun0-part1"}}},
		{"data-status-only", []wantFinding{{key: key, blocker: false, severity: api.SeverityMedium,
			title: "ADE says data volumes are encrypted, but none is open", hint: []string{"az vm encryption disable --volume-type DATA"}}}},
		{"active", nil},
		{"no-sys", nil},
		{"malformed", nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "encryption", tc.name, Distro{ID: "ubuntu", VersionID: "20.04"})
			got, err := encryptionProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "encryption", got, tc.want)
		})
	}
}
