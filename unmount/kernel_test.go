package unmount

import (
	"context"
	"errors"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

// fxKernel is fxPlain with every kind of kernel holder: a data disk with a nested mount,
// bind mounts, overlays, swap files and partitions, loop devices, device-mapper devices
// that are not mounted, and NFS exports, on the OS drive and on the data disk.
var fxKernel = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda3", "8:3", "sda4", "8:4", "sda14", "8:14", "sda15", "8:15", "sda16", "259:0"),
		fxDisk(fxVMBus1, "sdb", "8:16", "sdb1", "8:17", "sdb2", "8:18"),
		fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33", "sdc2", "8:34"),
		fxDisk(fxVMBus4, "sdd", "8:48", "sdd1", "8:49"),
		[]fxBlock{
			{name: "dm-0", dev: "253:0", path: fxVirt + "dm-0", slaves: []string{"sda4"}, dmName: "scratchvg-scratchlv", dmUUID: fxLVMUUID + "0"},
			{name: "dm-1", dev: "253:1", path: fxVirt + "dm-1", slaves: []string{"sdc2"}, dmName: "datavg-sparelv", dmUUID: fxLVMUUID + "1"},
			{name: "loop0", dev: "7:0", path: fxVirt + "loop0", backing: "/var/lib/snapd/snaps/core20_2015.snap"},
			{name: "loop1", dev: "7:1", path: fxVirt + "loop1", backing: "/data/images/x.img"},
			{name: "loop2", dev: "7:2", path: fxVirt + "loop2", backing: "/var/tmp/gone.img (deleted)"},
			{name: "loop3", dev: "7:3", path: fxVirt + "loop3"}, // not bound
		},
	),
	mountinfo: `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard,errors=remount-ro
95 28 259:0 / /boot rw,relatime shared:50 - ext4 /dev/sda16 rw
98 95 8:15 / /boot/efi rw,relatime shared:53 - vfat /dev/sda15 rw,fmask=0077,dmask=0077
101 28 8:17 / /mnt rw,relatime shared:55 - ext4 /dev/sdb1 rw
104 28 8:33 / /data rw,relatime shared:57 - xfs /dev/sdc1 rw,attr2,inode64,noquota
105 104 8:49 / /data/nested rw,relatime shared:58 - ext4 /dev/sdd1 rw
110 28 7:0 / /snap/core20/2015 ro,nodev,relatime shared:31 - squashfs /dev/loop0 ro,errors=continue
120 28 8:1 /var/www /srv/www rw,relatime shared:1 - ext4 /dev/root rw,discard,errors=remount-ro
121 28 8:33 /exports /srv/data\040export rw,relatime shared:57 - xfs /dev/sdc1 rw,attr2,inode64,noquota
130 28 0:60 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/var/lib/docker/overlay2/l/X:/var/lib/docker/overlay2/l/Y,upperdir=/var/lib/docker/overlay2/abc/diff,workdir=/var/lib/docker/overlay2/abc/work,nouserxattr
131 104 0:61 / /data/c/merged rw,relatime - overlay overlay rw,lowerdir=/data/c/lower,upperdir=/data/c/upper,workdir=/data/c/work
`,
	files: map[string]string{
		"/proc/swaps": "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n" +
			"/swapfile                               file\t\t2097148\t\t0\t\t-2\n" +
			"/dev/sda3                               partition\t1048572\t\t0\t\t-3\n" +
			"/dev/sdb2                               partition\t1048572\t\t0\t\t-4\n" +
			"/data/swap\\040file                      file\t\t1048572\t\t0\t\t-5\n",
		"/proc/fs/nfsd/exports": "# Version 1.1\n# Path Client(Flags) # IPs\n" +
			"/srv/nfs\t10.0.0.0/8(rw,root_squash,sync,wdelay,no_subtree_check,sec=1)\n" +
			"/data/share\t*(ro,root_squash,sync,wdelay,no_subtree_check,sec=1)\n",
	},
	dirs: []string{"/data/share", "/boot/efi/EFI", "/srv/www", "/var/lib/docker"},
}

// holderKeys summarises holders as "kind path,path", sorted.
func holderKeys(hs []api.Holder) []string {
	out := make([]string, 0, len(hs))
	for _, h := range hs {
		out = append(out, h.Kind+" "+strings.Join(h.Paths, ","))
	}
	sort.Strings(out)
	return out
}

func TestKernelHoldersOSDrive(t *testing.T) {
	root := fxKernel.build(t)
	if root.IsHost() {
		t.Fatal("fixture root is the host")
	}
	target, err := OSDriveTarget(root)
	if err != nil {
		t.Fatal(err)
	}
	if got := target.MountPoints(); !reflect.DeepEqual(got, []string{"/", "/boot", "/boot/efi"}) {
		t.Fatalf("target mounts = %q", got)
	}
	holders, inc := KernelHolders(context.Background(), root, target, nil)
	if len(inc) != 0 {
		t.Errorf("incomplete: %+v", inc)
	}
	want := []string{
		"dm /dev/dm-0", // scratchvg-scratchlv on sda4, not mounted; dm-1 is on the data disk
		"loop /var/lib/snapd/snaps/core20_2015.snap",
		// every mount below "/" that is not on the OS drive blocks its unmount
		"mount /data",
		"mount /data/c/merged",
		"mount /data/nested",
		"mount /mnt",
		"mount /proc",
		"mount /snap/core20/2015",
		"mount /srv/data export",
		"mount /srv/www", // bind mount of /var/www from the root filesystem
		"mount /sys",
		"mount /var/lib/docker/overlay2/abc/merged",
		"nfs-export /srv/nfs",
		"overlay /var/lib/docker/overlay2/l/X,/var/lib/docker/overlay2/l/Y,/var/lib/docker/overlay2/abc/diff,/var/lib/docker/overlay2/abc/work",
		"swap /dev/sda3",
		"swap /swapfile",
	}
	if got := holderKeys(holders); !reflect.DeepEqual(got, want) {
		t.Errorf("holders:\n got %q\nwant %q", got, want)
	}
	for _, h := range holders {
		if h.Detail == "" {
			t.Errorf("holder %s %v has no detail", h.Kind, h.Paths)
		}
		if h.Kind == api.KindMount && h.Mount == "" {
			t.Errorf("mount holder %v has no mount", h.Paths)
		}
	}
}

func TestKernelHoldersDataMount(t *testing.T) {
	root := fxKernel.build(t)
	target, err := PathTarget(root, "/data/share")
	if err != nil {
		t.Fatal(err)
	}
	holders, inc := KernelHolders(context.Background(), root, target, nil)
	if len(inc) != 0 {
		t.Errorf("incomplete: %+v", inc)
	}
	want := []string{
		"loop /data/images/x.img",
		"mount /data/c/merged",
		"mount /data/nested",
		"mount /srv/data export", // bind mount of /exports from the data filesystem
		"nfs-export /data/share",
		"overlay /data/c/lower,/data/c/upper,/data/c/work",
		"swap /data/swap file",
	}
	if got := holderKeys(holders); !reflect.DeepEqual(got, want) {
		t.Errorf("holders:\n got %q\nwant %q", got, want)
	}
}

// Every LV of rootvg is mounted or swap: no dm holder. An active LV that is not mounted is.
func TestKernelHoldersLVM(t *testing.T) {
	host := fxLVM
	host.blocks = append(slices.Clone(fxLVM.blocks),
		fxBlock{name: "dm-6", dev: "253:6", path: fxVirt + "dm-6", slaves: []string{"sda2"}, dmName: "rootvg-swaplv", dmUUID: fxLVMUUID + "6"},
		fxBlock{name: "dm-7", dev: "253:7", path: fxVirt + "dm-7", slaves: []string{"sda2"}, dmName: "rootvg-optlv", dmUUID: fxLVMUUID + "7"},
	)
	host.files = map[string]string{"/proc/swaps": "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/dm-6  partition\t4194300\t\t0\t\t-2\n"}
	root := host.build(t)
	target, err := OSDriveTarget(root)
	if err != nil {
		t.Fatal(err)
	}
	holders, _ := KernelHolders(context.Background(), root, target, nil)
	want := []string{"dm /dev/dm-7", "mount /data", "mount /sys", "swap /dev/dm-6"}
	if got := holderKeys(holders); !reflect.DeepEqual(got, want) {
		t.Errorf("holders:\n got %q\nwant %q", got, want)
	}
	for _, h := range holders {
		if h.Kind == api.KindDM && !strings.Contains(h.Detail, "rootvg-optlv") {
			t.Errorf("dm holder detail %q does not name the LV", h.Detail)
		}
	}
}

// A second mount of the target filesystem's root at a point inside the target (mount
// --bind /data /data/again) is a child mount: umount of the target fails with EBUSY while
// it exists. It was once reported by neither the child-mount nor the bind-mount check.
func TestKernelHoldersFullBindMountInsideTarget(t *testing.T) {

	host := fxKernel
	host.mountinfo += "150 104 8:33 / /data/again rw,relatime shared:57 - xfs /dev/sdc1 rw\n"
	root := host.build(t)
	target, err := PathTarget(root, "/data")
	if err != nil {
		t.Fatal(err)
	}
	holders, _ := KernelHolders(context.Background(), root, target, nil)
	for _, h := range holders {
		if h.Kind == api.KindMount && h.Mount == "/data/again" {
			return
		}
	}
	t.Errorf("/data/again not reported; holders %q", holderKeys(holders))
}

// On an encrypted root (sda2 -> dm-0 crypt -> dm-1 LV mounted on /), dm-0 is part of the
// OS drive's own stack, in use by the mounted root: it is not an unmounted device that
// holds the disk.
func TestKernelHoldersEncryptedRootIsNotADMHolder(t *testing.T) {

	root := fxLUKS.build(t)
	target, err := OSDriveTarget(root)
	if err != nil {
		t.Fatal(err)
	}
	holders, _ := KernelHolders(context.Background(), root, target, nil)
	for _, h := range holders {
		if h.Kind == api.KindDM {
			t.Errorf("dm holder reported: %s", h.Detail)
		}
	}
}

func TestPathTargetFixture(t *testing.T) {
	root := fxKernel.build(t)
	tests := []struct {
		path   string
		mount  string
		dev    string
		name   string
		mRoot  string
		source string
	}{
		{"/data/share", "/data", "8:33", "sdc1", "/", "/dev/sdc1"},
		{"/data", "/data", "8:33", "sdc1", "/", "/dev/sdc1"},
		{"/boot/efi/EFI", "/boot/efi", "8:15", "sda15", "/", "/dev/sda15"},
		{"/var/lib/docker", "/", "8:1", "sda1", "/", "/dev/root"},
		{"/srv/www", "/srv/www", "8:1", "sda1", "/var/www", "/dev/root"},
		{"/proc/swaps", "/proc", "0:22", "", "/", "proc"},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			target, err := PathTarget(root, tt.path)
			if err != nil {
				t.Fatal(err)
			}
			if len(target.Mounts) != 1 || target.Mounts[0].MountPoint != tt.mount || target.Mounts[0].Root != tt.mRoot || target.Mounts[0].Source != tt.source {
				t.Errorf("mounts = %+v, want %s (root %s, source %s)", target.Mounts, tt.mount, tt.mRoot, tt.source)
			}
			if got := target.DevStrings(); !reflect.DeepEqual(got, []string{tt.dev}) {
				t.Errorf("devs = %q, want %s", got, tt.dev)
			}
			dev, _ := ParseDev(tt.dev)
			if target.Names[dev] != tt.name {
				t.Errorf("name = %q, want %q", target.Names[dev], tt.name)
			}
			if len(target.Table) != 13 {
				t.Errorf("table has %d mounts, want the whole table (13)", len(target.Table))
			}
		})
	}
	if _, err := PathTarget(root, "/data/missing"); !errors.Is(err, ErrNoSuchPath) {
		t.Errorf("missing path: err = %v, want ErrNoSuchPath", err)
	}

	noRoot := fxHost{mountinfo: "104 28 8:33 / /data rw - xfs /dev/sdc1 rw\n", dirs: []string{"/etc"}}
	if _, err := PathTarget(noRoot.build(t), "/etc"); err == nil || errors.Is(err, ErrNoSuchPath) {
		t.Errorf("path outside every mount: err = %v, want a no-mount error", err)
	}
	if _, err := PathTarget(fxHost{dirs: []string{"/etc"}}.build(t), "/etc"); err == nil {
		t.Error("no mount table: no error")
	}
}
