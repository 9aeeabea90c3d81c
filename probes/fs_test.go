package probes

import (
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestFSProbe(t *testing.T) {
	gib := func(n uint64) *uint64 { v := n << 30; return &v }
	mib := func(n uint64) *uint64 { v := n << 20; return &v }
	cases := []struct {
		name, root string
		distro     Distro
		free       *uint64 // nil: statfs unknown (fixture root)
		want       fxWant
	}{
		{"ubuntu marketplace layout", "ubuntu-ok", fxUbuntu2204, gib(20), fxWant{}},
		{"ubuntu, free space unknown on a fixture", "ubuntu-ok", fxUbuntu2204, nil, fxWant{}},
		{"ubuntu xfs root", "ubuntu-xfs", fxUbuntu2204, gib(20), fxWant{
			key: "fs.layout!", severity: api.SeverityHigh,
			text:    []string{"The root filesystem is xfs on /dev/sda1, not ext4", "Probed root fs is not ext4", "ADE unmount path"},
			related: []string{"mount:/", "device:/dev/sda1", "device:/dev/sda"},
		}},
		{"ubuntu with a separate /boot", "ubuntu-sepboot", fxUbuntu2204, gib(20), fxWant{
			key: "fs.layout!", text: []string{"/boot is already a separate filesystem (ext4 on /dev/sda16)", "Move /boot back onto the root filesystem"},
			related: []string{"mount:/boot"},
		}},
		{"ubuntu root on the whole disk", "ubuntu-wholedisk", fxUbuntu2204, gib(20), fxWant{
			key: "fs.layout!", text: []string{"on the whole disk sda, not a partition"},
		}},
		{"ubuntu MBR with four primaries", "ubuntu-mbr-full", fxUbuntu2204, gib(20), fxWant{
			key: "fs.layout!", text: []string{"The disk sda has an MBR partition table with all 4 primary partitions in use"},
		}},
		{"ubuntu root too full to shrink", "ubuntu-ok", fxUbuntu2204, mib(100), fxWant{
			key: "fs.layout!", text: []string{"has 100 MiB free: ADE shrinks it by 256 MiB", "Free at least 412 MiB"},
		}},
		{"ubuntu root tight", "ubuntu-ok", fxUbuntu2204, mib(400), fxWant{
			key: "fs.layout", severity: api.SeverityMedium, text: []string{"only 400 MiB free"},
		}},
		{"ubuntu LVM root is lvm.os-disk's business", "ubuntu-lvm", fxUbuntu2204, gib(20), fxWant{}},
		{"rhel 7 marketplace layout", "rhel7-ok", fxRHEL79, nil, fxWant{}},
		{"rhel 7 free space is not ADE's concern there", "rhel7-ok", fxRHEL79, mib(10), fxWant{}},
		{"rhel 7 ext4 root without /boot", "rhel7-ext4-noboot", fxRHEL79, nil, fxWant{
			key:  "fs.layout!",
			text: []string{"The root filesystem is ext4 on /dev/sda1, not xfs", "xfs_repair", "/boot is not a separate partition"},
		}},
		{"rhel 7 LVM with /boot", "rhel7-lvm", fxRHEL79, nil, fxWant{}},
		{"online path with /boot (btrfs root is fine)", "online-ok", fxUbuntu2404, nil, fxWant{}},
		{"online path without /boot", "ubuntu-ok", fxRHEL94, nil, fxWant{
			key: "fs.layout!", text: []string{"/boot is not a filesystem of its own (root is ext4 on /dev/sda1)", "osluksheader", "ADE online path"},
		}},
		{"data-only distribution: not applicable", "ubuntu-xfs", fxSLES15, nil, fxWant{}},
		{"no sysfs: checks what the mount table shows", "no-sysfs", fxUbuntu2204, nil, fxWant{
			key: "fs.layout", severity: api.SeverityMedium, text: []string{"/dev/sda1 is not in sysfs"},
		}},
		{"no mount table", "missing", fxUbuntu2204, nil, fxWant{err: "read mount table"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := fsProbe{freeBytes: func(_ *Env, mp string) (uint64, bool) {
				if mp != "/" {
					t.Errorf("statfs of %q", mp)
				}
				if tc.free == nil {
					return 0, false
				}
				return *tc.free, true
			}}
			fxCheck(t, p, fxEnv(t, "fs", tc.root, tc.distro), tc.want)
		})
	}
}

func TestFSNoStatfsOnFixtureRoots(t *testing.T) {
	env := fxEnv(t, "fs", "ubuntu-ok", fxUbuntu2204)
	if _, ok := (fsProbe{}).free(env, "/"); ok {
		t.Error("statfs of the real / used for a fixture root")
	}
}
