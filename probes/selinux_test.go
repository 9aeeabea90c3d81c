package probes

import (
	"strings"
	"testing"
)

func TestSELinuxProbe(t *testing.T) {
	tests := []struct {
		dir, want, mention string
		wantErr            bool
	}{
		{dir: "enforcing", want: "selinux.enforcing!", mention: "/sys/fs/selinux/enforce"},
		{dir: "permissive"},
		{dir: "disabled"},        // no selinuxfs in the mount table
		{dir: "no-enforce-file"}, // selinuxfs without a policy
		{dir: "online-enforcing", want: "selinux.enforcing"},
		{dir: "old-mountpoint", want: "selinux.enforcing!", mention: "/selinux/enforce"},
		{dir: "no-mountinfo-sysfs", want: "selinux.enforcing!"},
		{dir: "malformed", wantErr: true},
		{dir: "no-mountinfo", wantErr: true},
		{dir: "bad-mountinfo", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.dir, func(t *testing.T) {
			keys, fs, err := runProbe(t, selinuxProbe{}, fixtureEnv(t, "selinux", tt.dir))
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v, wantErr %v", err, tt.wantErr)
			}
			if keys != tt.want {
				t.Fatalf("keys %q, want %q", keys, tt.want)
			}
			if len(fs) == 0 {
				return
			}
			if fs[0].Blocker && (len(fs[0].Remediation.Commands) == 0 || strings.Join(fs[0].Remediation.Commands[0], " ") != "setenforce 0") {
				t.Errorf("blocker without setenforce 0: %+v", fs[0].Remediation)
			}
			if fs[0].Blocker && !strings.Contains(fs[0].Remediation.Hint, "prepare") {
				t.Errorf("hint does not mention prepare: %q", fs[0].Remediation.Hint)
			}
			if tt.mention != "" && !strings.Contains(fs[0].Summary, tt.mention) {
				t.Errorf("summary lacks %q: %s", tt.mention, fs[0].Summary)
			}
		})
	}
}
