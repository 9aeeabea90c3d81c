package probes

import (
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

func TestMountsProbe(t *testing.T) {
	cases := []struct {
		name, root string
		distro     Distro
		want       fxWant
	}{
		{"pass: resource disk, BEK, data drive, bind/pseudo/overlay/snap/nfs mounts", "pass", fxUbuntu2204, fxWant{}},
		{"nested in a data drive and in the resource disk", "nested", fxUbuntu2204, fxWant{
			key: "mounts.nested!", severity: api.SeverityHigh,
			text: []string{
				"/data3/data4 (/dev/sde1, xfs) is mounted inside the data drive /data3",
				"/mnt/data (/dev/sdc1, ext4) is mounted inside /mnt (the resource disk",
				`/etc/fstab line 3 "UUID=eeee /data3/data4 xfs defaults,nofail 0 2" becomes "UUID=eeee /data4 xfs defaults,nofail 0 2"`,
				"Move /mnt/data to /data; it has no /etc/fstab entry",
			},
			commands: []string{
				"umount /data3/data4",
				`sed -i -E 3s#^(\S+\s+)/data3/data4(\s)#\1/data4\2# /etc/fstab`,
				"systemctl daemon-reload",
				"mkdir -p /data4",
				"mount /data4",
				"umount /mnt/data",
				"mkdir -p /data",
				"mount /dev/sdc1 /data",
			},
			related: []string{"mount:/data3/data4", "device:/dev/sde1", "mount:/mnt/data", "device:/dev/sdc1"},
		}},
		{"nested is a blocker on the online path too", "nested", fxRHEL94, fxWant{key: "mounts.nested!"}},
		{"under /mnt beside the resource disk at /mnt/resource", "under-mnt", fxRHEL79, fxWant{
			key:      "mounts.nested!",
			text:     []string{"/mnt/data (/dev/sdc1, xfs) is mounted under /mnt"},
			notText:  []string{"/mnt/resource ("},
			commands: []string{"umount /mnt/data", `sed -i -E 1s#^(\S+\s+)/mnt/data(\s)#\1/data\2# /etc/fstab`, "systemctl daemon-reload", "mkdir -p /data", "mount /data"},
		}},
		{"LVM OS drive mounts are not data drives; a drive on /var/lib/mysql is", "lvm-os-folder", fxRHEL79, fxWant{
			key: "mounts.nested", severity: api.SeverityMedium,
			text:    []string{"/var/lib/mysql (/dev/sdc1, xfs) is mounted on the OS folder /var", "top-level path (e.g. /mysql)"},
			notText: []string{"/home (", "/boot/efi ("},
		}},
		{"no sysfs: root device only, /boot still ignored", "no-sysfs", fxUbuntu2204, fxWant{
			key: "mounts.nested!", text: []string{"/data/sub (/dev/sdd1, ext4) is mounted inside the data drive /data"},
			notText:  []string{"/boot"},
			commands: []string{"umount /data/sub", "mkdir -p /sub", "mount /dev/sdd1 /sub"},
		}},
		{"missing mount table", "missing", fxUbuntu2204, fxWant{err: "read mount table"}},
		{"malformed mount table", "malformed", fxUbuntu2204, fxWant{err: "mountinfo line 2"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fxCheck(t, mountsProbe{}, fxEnv(t, "mounts", tc.root, tc.distro), tc.want)
		})
	}
}

func TestSuggestName(t *testing.T) {
	taken := map[string]bool{"/data": true, "/data-2": true}
	for mp, want := range map[string]string{
		"/data3/data4": "data4",
		"/mnt/data":    "data-3",
		"/mnt/var":     "data-var",
		"/x/.":         "x",
	} {
		if got := mntSuggestName(mp, taken); got != want {
			t.Errorf("mntSuggestName(%q) = %q, want %q", mp, got, want)
		}
	}
}

func TestFindMountIssuesInnermostParent(t *testing.T) {
	m := func(mp string) unmount.Mount { return unmount.Mount{MountPoint: mp, Source: "/dev/x", Root: "/"} }
	issues := mntFindMountIssues([]unmount.Mount{m("/a"), m("/a/b"), m("/a/b/c"), m("/ab")}, "/mnt")
	got := map[string]string{}
	for _, is := range issues {
		got[is.Child.MountPoint] = is.Kind + " " + is.Parent
	}
	if len(got) != 2 || got["/a/b"] != "nested /a" || got["/a/b/c"] != "nested /a/b" {
		t.Errorf("issues = %v (string prefixes like /a and /ab are not nesting)", got)
	}
}
