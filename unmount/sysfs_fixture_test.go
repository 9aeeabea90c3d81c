package unmount

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Fixture host roots are built at test time (t.TempDir + os.Symlink) rather than committed:
// sysfs names contain ':' ("8:1", "pci0000:00"), which Go module zips reject, and module
// zips drop symlinks. The builder mirrors the kernel's layout with relative symlinks:
//
//	sys/devices/<path>/{dev,partition,slaves/,holders/,dm/name,dm/uuid,loop/backing_file}
//	sys/dev/block/MAJ:MIN -> ../../devices/<path>
//	sys/class/block/NAME  -> ../../devices/<path>
//	sys/block/NAME        -> ../devices/<path>           (disks and virtual devices only)
//	<dev>/slaves/X        -> relative link to X's directory, and X/holders/<dev> back

// fxBlock is one block device of a fixture sysfs tree.
type fxBlock struct {
	name string // kernel name: sda, sda1, dm-0, loop0
	dev  string // "8:1"
	// path is the device's directory below sys/devices. A partition's is its disk's path
	// plus its own name; the builder then writes the partition file.
	path   string
	slaves []string // dm/md: the devices it is built on; holders/ are derived
	dmName string
	dmUUID string
	// backing is a loop device's backing_file content ("" = not bound).
	backing string
}

// fxHost is a fixture machine: its block devices, mount table and other files.
type fxHost struct {
	blocks    []fxBlock
	mountinfo string
	files     map[string]string // host path -> content (proc/swaps, ...)
	dirs      []string          // host directories that must exist
}

// Device paths below sys/devices, as on an Azure Gen2 VM (disks on VMBus) and others.
const (
	fxVMBus0 = "LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/f8b3781a-1e82-4818-a1c3-63d806ec15bb/host0/target0:0:0/0:0:0:0/block/"
	fxVMBus1 = "LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/f8b3781b-1e82-4818-a1c3-63d806ec15bb/host1/target1:0:1/1:0:1:0/block/"
	fxVMBus3 = "LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/f8b3781c-1e82-4818-a1c3-63d806ec15bb/host3/target3:0:0/3:0:0:0/block/"
	fxVMBus4 = "LNXSYSTM:00/LNXSYBUS:00/ACPI0004:00/VMBUS:00/f8b3781c-1e82-4818-a1c3-63d806ec15bb/host3/target3:0:0/3:0:0:1/block/"
	fxVirt   = "virtual/block/"
)

// fxDisk returns a disk and its partitions (name+number, dev) under base.
func fxDisk(base, name, dev string, parts ...string) []fxBlock {
	out := []fxBlock{{name: name, dev: dev, path: base + name}}
	for i := 0; i+1 < len(parts); i += 2 {
		out = append(out, fxBlock{name: parts[i], dev: parts[i+1], path: base + name + "/" + parts[i]})
	}
	return out
}

func fxBlocks(groups ...[]fxBlock) []fxBlock {
	var out []fxBlock
	for _, g := range groups {
		out = append(out, g...)
	}
	return out
}

// build writes the fixture under a new temporary directory and returns its root.
func (h fxHost) build(t testing.TB) hostroot.Root {
	t.Helper()
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	byName := map[string]fxBlock{}
	byPath := map[string]bool{}
	for _, b := range h.blocks {
		byName[b.name] = b
		byPath[b.path] = true
	}
	devDir := func(b fxBlock) string { return filepath.Join(sys, "devices", b.path) }
	link := func(target, name string) {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
			t.Fatal(err)
		}
		rel, err := filepath.Rel(filepath.Dir(name), target)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(rel, name); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range h.blocks {
		d := devDir(b)
		for _, sub := range []string{"slaves", "holders", "power"} {
			if err := os.MkdirAll(filepath.Join(d, sub), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		fxWriteFile(t, filepath.Join(d, "dev"), b.dev+"\n")
		fxWriteFile(t, filepath.Join(d, "uevent"), "MAJOR="+strings.Split(b.dev, ":")[0]+"\nDEVNAME="+b.name+"\n")
		partition := byPath[filepath.Dir(b.path)]
		if partition {
			num := strings.TrimLeft(b.name, "abcdefghijklmnopqrstuvwxyz-")
			if i := strings.LastIndexByte(b.name, 'p'); strings.HasPrefix(b.name, "nvme") && i > 0 {
				num = b.name[i+1:]
			}
			fxWriteFile(t, filepath.Join(d, "partition"), num+"\n")
		} else {
			fxWriteFile(t, filepath.Join(d, "queue", "rotational"), "0\n")
			link(d, filepath.Join(sys, "block", b.name))
		}
		if b.dmName != "" {
			fxWriteFile(t, filepath.Join(d, "dm", "name"), b.dmName+"\n")
			fxWriteFile(t, filepath.Join(d, "dm", "uuid"), b.dmUUID+"\n")
		}
		if b.backing != "" {
			fxWriteFile(t, filepath.Join(d, "loop", "backing_file"), b.backing+"\n")
		}
		link(d, filepath.Join(sys, "dev", "block", b.dev))
		link(d, filepath.Join(sys, "class", "block", b.name))
		for _, s := range b.slaves {
			sb, ok := byName[s]
			if !ok {
				t.Fatalf("fixture: %s has unknown slave %s", b.name, s)
			}
			link(devDir(sb), filepath.Join(d, "slaves", s))
			link(d, filepath.Join(devDir(sb), "holders", b.name))
		}
	}
	if h.mountinfo != "" {
		fxWriteFile(t, filepath.Join(dir, "proc", "self", "mountinfo"), h.mountinfo)
	}
	for p, c := range h.files {
		fxWriteFile(t, filepath.Join(dir, p), c)
	}
	for _, p := range h.dirs {
		if err := os.MkdirAll(filepath.Join(dir, p), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	root, err := hostroot.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// The fixture machines. Each mount table is what the kernel would show for the layout.

// fxPlain: Ubuntu 24.04 on Azure: root on sda1, BIOS boot sda14, /boot/efi on sda15 and
// /boot on sda16 (partition 16 of an sd disk gets an extended dev_t, 259:0), the resource
// disk sdb1 on /mnt and a data disk sdc1 on /data.
var fxPlain = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda14", "8:14", "sda15", "8:15", "sda16", "259:0"),
		fxDisk(fxVMBus1, "sdb", "8:16", "sdb1", "8:17"),
		fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33"),
	),
	mountinfo: `22 28 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 28 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:12 - proc proc rw
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw,discard,errors=remount-ro,commit=30
95 28 259:0 / /boot rw,relatime shared:50 - ext4 /dev/sda16 rw
98 95 8:15 / /boot/efi rw,relatime shared:53 - vfat /dev/sda15 rw,fmask=0077,dmask=0077
101 28 8:17 / /mnt rw,relatime shared:55 - ext4 /dev/sdb1 rw
104 28 8:33 / /data rw,relatime shared:57 - xfs /dev/sdc1 rw,attr2,inode64,noquota
`,
}

// fxWholeDisk: a KVM guest with the root filesystem on the whole virtio disk.
var fxWholeDisk = fxHost{
	blocks: fxBlocks(
		fxDisk("pci0000:00/0000:00:05.0/virtio2/block/", "vda", "254:0"),
		fxDisk("pci0000:00/0000:00:06.0/virtio3/block/", "vdb", "254:16", "vdb1", "254:17"),
	),
	mountinfo: `20 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
21 20 254:17 / /data rw,relatime shared:2 - ext4 /dev/vdb1 rw
`,
}

// fxNVMe: an Azure v6 VM with NVMe disks: OS disk nvme0n1, data disk nvme0n2 (whole disk).
var fxNVMe = fxHost{
	blocks: fxBlocks(
		fxDisk("pci0000:00/0000:00:04.0/nvme/nvme0/", "nvme0n1", "259:0", "nvme0n1p1", "259:1", "nvme0n1p14", "259:2", "nvme0n1p15", "259:3"),
		fxDisk("pci0000:00/0000:00:04.0/nvme/nvme0/", "nvme0n2", "259:4"),
	),
	mountinfo: `28 1 259:1 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw,discard,errors=remount-ro
98 28 259:3 / /boot/efi rw,relatime shared:53 - vfat /dev/nvme0n1p15 rw
104 28 259:4 / /data rw,relatime shared:57 - xfs /dev/nvme0n2 rw
`,
}

const fxLVMUUID = "LVM-Wq6e3c1R3B2k3d4e5f6g7h8i9j0k1l2m3n4o5p6q7r8s9t0u1v2w3x4y5z6A7B8"

// fxLVM: the RHEL 7/8 Azure "LVM" image: /boot on sda1, /boot/efi on sda15, rootvg on
// sda2 with rootlv, usrlv, varlv, homelv and tmplv mounted; a data disk sdc with its own
// volume group on /data.
var fxLVM = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda2", "8:2", "sda14", "8:14", "sda15", "8:15"),
		fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33"),
		[]fxBlock{
			{name: "dm-0", dev: "253:0", path: fxVirt + "dm-0", slaves: []string{"sda2"}, dmName: "rootvg-rootlv", dmUUID: fxLVMUUID + "0"},
			{name: "dm-1", dev: "253:1", path: fxVirt + "dm-1", slaves: []string{"sda2"}, dmName: "rootvg-usrlv", dmUUID: fxLVMUUID + "1"},
			{name: "dm-2", dev: "253:2", path: fxVirt + "dm-2", slaves: []string{"sda2"}, dmName: "rootvg-varlv", dmUUID: fxLVMUUID + "2"},
			{name: "dm-3", dev: "253:3", path: fxVirt + "dm-3", slaves: []string{"sda2"}, dmName: "rootvg-homelv", dmUUID: fxLVMUUID + "3"},
			{name: "dm-4", dev: "253:4", path: fxVirt + "dm-4", slaves: []string{"sda2"}, dmName: "rootvg-tmplv", dmUUID: fxLVMUUID + "4"},
			{name: "dm-5", dev: "253:5", path: fxVirt + "dm-5", slaves: []string{"sdc1"}, dmName: "datavg-datalv", dmUUID: fxLVMUUID + "5"},
		},
	),
	mountinfo: `22 60 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw,seclabel
60 1 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/rootvg-rootlv rw,seclabel,attr2,inode64,noquota
61 60 253:1 / /usr rw,relatime shared:21 - xfs /dev/mapper/rootvg-usrlv rw,seclabel,attr2,inode64,noquota
62 60 8:1 / /boot rw,relatime shared:22 - xfs /dev/sda1 rw,seclabel,attr2,inode64,noquota
63 62 8:15 / /boot/efi rw,relatime shared:23 - vfat /dev/sda15 rw,fmask=0077,dmask=0077
64 60 253:3 / /home rw,relatime shared:24 - xfs /dev/mapper/rootvg-homelv rw,seclabel,attr2,inode64,noquota
65 60 253:4 / /tmp rw,relatime shared:25 - xfs /dev/mapper/rootvg-tmplv rw,seclabel,attr2,inode64,noquota
66 60 253:2 / /var rw,relatime shared:26 - xfs /dev/mapper/rootvg-varlv rw,seclabel,attr2,inode64,noquota
70 60 253:5 / /data rw,relatime shared:30 - xfs /dev/mapper/datavg-datalv rw,seclabel,attr2,inode64,noquota
`,
}

// fxLUKS: an encrypted root: sda2 -> dm-0 (LUKS2 "osencrypt") -> dm-1 (rootvg-rootlv).
var fxLUKS = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda2", "8:2", "sda15", "8:15"),
		fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33"),
		[]fxBlock{
			{name: "dm-0", dev: "253:0", path: fxVirt + "dm-0", slaves: []string{"sda2"}, dmName: "osencrypt", dmUUID: "CRYPT-LUKS2-5b1c3d2e4f6a4b7c8d9e0f1a2b3c4d5e-osencrypt"},
			{name: "dm-1", dev: "253:1", path: fxVirt + "dm-1", slaves: []string{"dm-0"}, dmName: "rootvg-rootlv", dmUUID: fxLVMUUID + "0"},
		},
	),
	mountinfo: `60 1 253:1 / / rw,relatime shared:1 - xfs /dev/mapper/rootvg-rootlv rw,attr2,inode64,noquota
62 60 8:1 / /boot rw,relatime shared:22 - xfs /dev/sda1 rw,attr2,inode64,noquota
63 62 8:15 / /boot/efi rw,relatime shared:23 - vfat /dev/sda15 rw
70 60 8:33 / /data rw,relatime shared:30 - ext4 /dev/sdc1 rw
`,
}

// fxBtrfs: root and /home are subvolumes of a btrfs on sda1; mountinfo shows the
// filesystem's anonymous device 0:30, which is not a block device in sysfs.
var fxBtrfs = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda15", "8:15"),
		fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33"),
	),
	mountinfo: `28 1 0:30 /@ / rw,relatime shared:1 - btrfs /dev/sda1 rw,discard=async,space_cache=v2,subvolid=256,subvol=/@
29 28 0:30 /@home /home rw,relatime shared:2 - btrfs /dev/sda1 rw,discard=async,space_cache=v2,subvolid=257,subvol=/@home
30 28 8:15 / /boot/efi rw,relatime shared:3 - vfat /dev/sda15 rw
31 28 8:33 / /data rw,relatime shared:4 - ext4 /dev/sdc1 rw
`,
}

// fxNoSysfs: the root device (8:1, "/dev/root") has no entry in sysfs (a container, or a
// fixture copied without /sys).
var fxNoSysfs = fxHost{
	blocks: fxDisk(fxVMBus3, "sdc", "8:32", "sdc1", "8:33"),
	mountinfo: `28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
29 28 8:1 /srv/www /var/www rw,relatime shared:1 - ext4 /dev/root rw
31 28 8:33 / /data rw,relatime shared:4 - ext4 /dev/sdc1 rw
`,
}

// fxMD: root on an md RAID1 of sda2 and sdb2.
var fxMD = fxHost{
	blocks: fxBlocks(
		fxDisk(fxVMBus0, "sda", "8:0", "sda1", "8:1", "sda2", "8:2"),
		fxDisk(fxVMBus1, "sdb", "8:16", "sdb1", "8:17", "sdb2", "8:18"),
		[]fxBlock{{name: "md0", dev: "9:0", path: fxVirt + "md0", slaves: []string{"sda2", "sdb2"}}},
	),
	mountinfo: `28 1 9:0 / / rw,relatime shared:1 - ext4 /dev/md0 rw
29 28 8:1 / /boot rw,relatime shared:2 - ext4 /dev/sda1 rw
`,
}
