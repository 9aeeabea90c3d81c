package probes

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestToolsProbe(t *testing.T) {
	const key = "tools.missing"
	u2204 := Distro{ID: "ubuntu", VersionID: "22.04", Path: PathUnmount}
	u1804 := Distro{ID: "ubuntu", VersionID: "18.04", Path: PathUnmount}
	rhel7 := Distro{ID: "rhel", IDLike: []string{"fedora"}, VersionID: "7.9", Path: PathUnmount}
	tests := []struct {
		name   string
		distro Distro
		want   []wantFinding
	}{
		{"ubuntu-ok", u2204, nil},
		{"ubuntu-links", u2204, nil},
		{"ubuntu-missing", u1804, []wantFinding{{
			key: key, blocker: true, severity: api.SeverityMedium,
			title:   "Tools ADE needs are missing: lsscsi, psmisc, procps, at, python-parted, python-six, grub-pc-bin, nvme-cli",
			summary: []string{"fuser (package psmisc; not found in /usr/local/sbin, /usr/local/bin, /usr/sbin, /usr/bin, /sbin, /bin)", "/usr/lib/python2.7/dist-packages/parted", "/usr/lib/grub/i386-pc/normal.mod"},
			command: "apt-get install -y lsscsi psmisc procps at python-parted python-six grub-pc-bin nvme-cli", related: "package:grub-pc-bin",
		}}},
		{"rhel-ok", rhel7, nil},
		{"rhel-missing", rhel7, []wantFinding{{
			key: key, blocker: true, title: "missing: uuid, patch, cryptsetup-reencrypt",
			command: "yum install -y uuid patch cryptsetup-reencrypt",
		}}},
		{"vfat-disabled", u2204, []wantFinding{{
			key: key, blocker: true, severity: api.SeverityHigh, title: "Kernel modules ADE needs are unavailable",
			summary: []string{"vfat is disabled by /etc/modprobe.d/CIS.conf:3 (install vfat /bin/true)"},
			hint:    []string{"Remove the 'install"}, related: "path:/etc/modprobe.d/CIS.conf", command: "modprobe -n -v vfat",
		}}},
		{"no-dm-crypt", u2204, []wantFinding{{
			key: key, blocker: true, severity: api.SeverityHigh,
			summary: []string{"dm-crypt is neither built into kernel 5.15.0-1057-azure nor listed in its modules.dep"},
			command: "apt-get install -y linux-modules-5.15.0-1057-azure",
		}}},
		{"no-osrelease", u2204, []wantFinding{{
			key: key, blocker: false, severity: api.SeverityLow, title: "could not be checked",
			summary: []string{"/proc/sys/kernel/osrelease"},
		}}},
		{"no-moddir", u2204, []wantFinding{{
			key: key, blocker: false, severity: api.SeverityLow, summary: []string{"/lib/modules/5.15.0-1057-azure"},
		}}},
		{"mariner", Distro{ID: "mariner", VersionID: "2.0"}, []wantFinding{{
			key: key, blocker: true, command: "tdnf install -y lsscsi psmisc procps-ng at lvm2 util-linux",
		}}},
		{"unknown-distro", Distro{ID: "plan9"}, []wantFinding{{
			key: key, blocker: true, hint: []string{"with the distribution's package manager: lsscsi psmisc procps-ng at"},
		}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "tools", tc.name, tc.distro)
			got, err := toolsProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "tools", got, tc.want)
		})
	}
}
