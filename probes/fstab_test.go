package probes

import (
	"context"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestFstabProbe(t *testing.T) {
	const key = "fstab.data-disks"
	med, low := api.SeverityMedium, api.SeverityLow
	tests := []struct {
		name string
		want []wantFinding
	}{
		// OS disk, resource disk, BEK volume, loop snaps, bind mounts and LVM data disk by /dev/vg/lv: all fine.
		{"ok", nil},
		{"problems", []wantFinding{
			{key: key, blocker: true, severity: med, title: "Data disk /data is not in /etc/fstab",
				summary: []string{"/data is mounted from /dev/sdc1 (ext4, device 8:33)", "mounted by hand"},
				hint:    []string{`"UUID=1111aaaa-2222-4333-8444-555566667777 /data ext4 defaults,nofail 0 2"`},
				command: "blkid -s UUID -o value /dev/sdc1", related: "mount:/data"},
			{key: key, blocker: true, severity: med, title: "Data disk /data 2 is in /etc/fstab without nofail",
				summary: []string{"line 2 (/dev/sdd1 /data 2 xfs defaults) has no nofail option", "line 2 names it /dev/sdd1, a kernel name"},
				hint:    []string{`Replace line 2 with this line in /etc/fstab: "UUID=<uuid of /dev/sdd1> /data\\0402 xfs defaults,nofail 0 2"`}},
			{key: key, blocker: true, title: "Data disk /data3 is in /etc/fstab without nofail",
				hint: []string{"defaults,noatime,nofail"}},
			{key: key, blocker: false, severity: low, title: "1 /etc/fstab entr(y/ies) not mounted",
				summary: []string{"UUID=dead-beef on /old (line 4)"}, command: "mount -a"},
			{key: key, blocker: false, severity: low, title: "/etc/fstab has malformed lines", summary: []string{"Lines 5 "}},
		}},
		{"unstable", []wantFinding{{key: key, blocker: true, title: "by the unstable name /dev/nvme0n1p1",
			hint: []string{"UUID=5e5e5e5e-0000-4000-8000-000000000005 /scratch ext4 defaults,nofail 0 2"}}}},
		{"no-fstab", []wantFinding{{key: key, blocker: true, title: "Data disk /data is not in /etc/fstab",
			summary: []string{"/etc/fstab does not exist"}}}},
		{"no-mountinfo", nil},
		{"no-sysfs", []wantFinding{{key: key, blocker: true, title: "Data disk /data is not in /etc/fstab"}}},
		{"lvm-root", []wantFinding{{key: key, blocker: true, title: "Data disk /srv/data is not in /etc/fstab",
			summary: []string{"/dev/mapper/datavg-data"}}}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			env := waFixtureEnv(t, "fstab", tc.name, Distro{ID: "ubuntu", VersionID: "22.04"})
			got, err := fstabProbe{}.Run(context.Background(), env)
			if err != nil {
				t.Fatal(err)
			}
			checkFindings(t, "fstab", got, tc.want)
		})
	}
}

func TestParseFstab(t *testing.T) {
	es, bad := parseFstab("# c\n\tLABEL=BEK\\040VOLUME\t/mnt/my\\040disk  auto defaults,nofail 0 0\n/dev/sdb1 /x\nbroken\n")
	if len(es) != 2 || len(bad) != 1 || bad[0] != 4 {
		t.Fatalf("entries %+v malformed %v", es, bad)
	}
	if es[0].Spec != "LABEL=BEK VOLUME" || es[0].File != "/mnt/my disk" || !es[0].hasOpt("nofail") || es[0].Line != 2 {
		t.Errorf("entry 0: %+v", es[0])
	}
	if es[1].Opts != "defaults" || es[1].Type != "" {
		t.Errorf("entry 1 defaults: %+v", es[1])
	}
}
