package unmount

import (
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strings"
	"testing"
)

func devStrings(ds []Dev) []string {
	out := make([]string, 0, len(ds))
	for _, d := range ds {
		out = append(out, d.String())
	}
	sort.Strings(out)
	return out
}

func mountPoints(ms []Mount) []string {
	out := make([]string, 0, len(ms))
	for _, m := range ms {
		out = append(out, m.MountPoint)
	}
	return out
}

func blockNames(bs []Block) []string {
	out := make([]string, 0, len(bs))
	for _, b := range bs {
		out = append(out, b.Name)
	}
	return out
}

func TestFixtureSymlinksAreRelative(t *testing.T) {
	root := fxLUKS.build(t)
	for _, l := range []string{"sys/dev/block/8:2", "sys/class/block/sda2", "sys/block/sda", "sys/block/dm-1",
		"sys/devices/virtual/block/dm-1/slaves/dm-0", "sys/devices/virtual/block/dm-0/holders/dm-1"} {
		target, err := os.Readlink(filepath.Join(root.Dir(), l))
		if err != nil {
			t.Fatal(err)
		}
		if filepath.IsAbs(target) || !strings.HasPrefix(target, "../") {
			t.Errorf("%s -> %s: want a relative link like the kernel's", l, target)
		}
	}
	if _, err := os.Lstat(filepath.Join(root.Dir(), "sys/block/sda2")); err == nil {
		t.Error("sys/block lists a partition; the kernel lists disks only")
	}
}

func TestSysfsLookups(t *testing.T) {
	sys := Sysfs{Root: fxLVM.build(t)}
	b, err := sys.ByDev(Dev{8, 2})
	if err != nil {
		t.Fatal(err)
	}
	if b.Name != "sda2" || b.Dev != (Dev{8, 2}) || !b.IsPartition() {
		t.Errorf("ByDev(8:2) = %+v, partition %v", b, b.IsPartition())
	}
	if !strings.HasSuffix(b.Dir, "/block/sda/sda2") || !filepath.IsAbs(b.Dir) {
		t.Errorf("Dir = %q, want the resolved device directory", b.Dir)
	}
	if got := b.Holders(); !reflect.DeepEqual(got, []string{"dm-0", "dm-1", "dm-2", "dm-3", "dm-4"}) {
		t.Errorf("sda2 holders = %q", got)
	}
	if got := b.Slaves(); len(got) != 0 {
		t.Errorf("sda2 slaves = %q", got)
	}

	dm, err := sys.ByName("dm-3")
	if err != nil {
		t.Fatal(err)
	}
	if dm.Dev != (Dev{253, 3}) || dm.IsPartition() || dm.DMName() != "rootvg-homelv" || dm.DMUUID() != fxLVMUUID+"3" {
		t.Errorf("dm-3 = %+v name %q uuid %q", dm, dm.DMName(), dm.DMUUID())
	}
	if got := dm.Slaves(); !reflect.DeepEqual(got, []string{"sda2"}) {
		t.Errorf("dm-3 slaves = %q", got)
	}
	disk, _ := sys.ByName("sda")
	if disk.DMName() != "" || disk.DMUUID() != "" || disk.IsPartition() {
		t.Errorf("sda: dm name %q uuid %q partition %v", disk.DMName(), disk.DMUUID(), disk.IsPartition())
	}

	for _, name := range []string{"", ".", "..", "../sda", "sda/sda1", "nope", "sd\x00a"} {
		if b, err := sys.ByName(name); err == nil {
			t.Errorf("ByName(%q) = %+v, want an error", name, b)
		}
	}
	if b, err := sys.ByDev(Dev{8, 99}); err == nil {
		t.Errorf("ByDev(8:99) = %+v, want an error", b)
	}
	if b, err := sys.ByDev(Dev{0, 30}); err == nil {
		t.Errorf("ByDev(anonymous 0:30) = %+v, want an error", b)
	}
}

func TestSysfsBySource(t *testing.T) {
	sys := Sysfs{Root: fxLVM.build(t)}
	tests := []struct{ source, want string }{
		{"/dev/sda1", "sda1"},
		{"/dev/sda", "sda"},
		{"/dev/dm-2", "dm-2"},
		{"/dev/mapper/rootvg-rootlv", "dm-0"},
		{"/dev/mapper/rootvg-tmplv", "dm-4"},
		{"/dev/mapper/datavg-datalv", "dm-5"},
	}
	for _, tt := range tests {
		b, err := sys.BySource(tt.source)
		if err != nil || b.Name != tt.want {
			t.Errorf("BySource(%q) = %q, %v; want %q", tt.source, b.Name, err, tt.want)
		}
	}
	for _, bad := range []string{"", "sda1", "none", "tmpfs", "/dev/mapper/nope", "/dev/sdz9", "//server/share", "server:/export"} {
		if b, err := sys.BySource(bad); err == nil {
			t.Errorf("BySource(%q) = %q, want an error", bad, b.Name)
		}
	}
}

// "/dev/mapper/" names no device-mapper device, but BySource compares the empty name with
// DMName(), which is "" for every device that is not device-mapper, and returns the first
// disk in sys/block.
func TestSysfsBySourceEmptyMapperName(t *testing.T) {
	sys := Sysfs{Root: fxLVM.build(t)}
	if b, err := sys.BySource("/dev/mapper/"); err == nil {
		t.Errorf("BySource(\"/dev/mapper/\") = %q, want an error", b.Name)
	}
}

func TestSysfsDiskOfAndPartitions(t *testing.T) {
	cycle := fxHost{blocks: []fxBlock{
		{name: "dm-0", dev: "253:0", path: fxVirt + "dm-0", slaves: []string{"dm-1"}},
		{name: "dm-1", dev: "253:1", path: fxVirt + "dm-1", slaves: []string{"dm-0"}},
	}}
	tests := []struct {
		name  string
		host  fxHost
		dev   string
		disks []string
	}{
		{"partition", fxPlain, "sda1", []string{"sda"}},
		{"extended-devt partition", fxPlain, "sda16", []string{"sda"}},
		{"whole disk", fxPlain, "sdc", []string{"sdc"}},
		{"whole-disk filesystem", fxWholeDisk, "vda", []string{"vda"}},
		{"nvme partition", fxNVMe, "nvme0n1p15", []string{"nvme0n1"}},
		{"lvm", fxLVM, "dm-0", []string{"sda"}},
		{"lvm on the data disk", fxLVM, "dm-5", []string{"sdc"}},
		{"dm on dm on partition", fxLUKS, "dm-1", []string{"sda"}},
		{"md raid1", fxMD, "md0", []string{"sda", "sdb"}},
		{"slave cycle terminates", cycle, "dm-0", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			sys := Sysfs{Root: tt.host.build(t)}
			b, err := sys.ByName(tt.dev)
			if err != nil {
				t.Fatal(err)
			}
			if got := blockNames(sys.DiskOf(b)); !reflect.DeepEqual(got, tt.disks) && !(len(got) == 0 && len(tt.disks) == 0) {
				t.Errorf("DiskOf(%s) = %q, want %q", tt.dev, got, tt.disks)
			}
		})
	}

	parts := []struct {
		host fxHost
		disk string
		want []string
	}{
		{fxPlain, "sda", []string{"sda1", "sda14", "sda15", "sda16"}},
		{fxPlain, "sdc", []string{"sdc1"}},
		{fxNVMe, "nvme0n1", []string{"nvme0n1p1", "nvme0n1p14", "nvme0n1p15"}},
		{fxNVMe, "nvme0n2", nil},
		{fxWholeDisk, "vda", nil},
		{fxLVM, "dm-0", nil},
	}
	for _, p := range parts {
		sys := Sysfs{Root: p.host.build(t)}
		disk, err := sys.ByName(p.disk)
		if err != nil {
			t.Fatal(err)
		}
		got := blockNames(sys.Partitions(disk))
		if len(got) != 0 || len(p.want) != 0 {
			if !reflect.DeepEqual(got, p.want) {
				t.Errorf("Partitions(%s) = %q, want %q", p.disk, got, p.want)
			}
		}
	}
}

func TestOSDrive(t *testing.T) {
	tests := []struct {
		name    string
		host    fxHost
		disks   []string
		devices []string
		mounts  []string
		names   map[string]string // dev -> sysfs name, spot checks
		note    bool
	}{
		{name: "plain partitions", host: fxPlain,
			disks:   []string{"sda"},
			devices: []string{"259:0", "8:0", "8:1", "8:14", "8:15"},
			mounts:  []string{"/", "/boot", "/boot/efi"},
			names:   map[string]string{"8:1": "sda1", "259:0": "sda16", "8:0": "sda"}},
		{name: "whole disk", host: fxWholeDisk,
			disks: []string{"vda"}, devices: []string{"254:0"}, mounts: []string{"/"},
			names: map[string]string{"254:0": "vda"}},
		{name: "nvme", host: fxNVMe,
			disks: []string{"nvme0n1"}, devices: []string{"259:0", "259:1", "259:2", "259:3"},
			mounts: []string{"/", "/boot/efi"},
			names:  map[string]string{"259:1": "nvme0n1p1"}},
		{name: "lvm", host: fxLVM,
			disks:   []string{"sda"},
			devices: []string{"253:0", "253:1", "253:2", "253:3", "253:4", "8:0", "8:1", "8:14", "8:15", "8:2"},
			mounts:  []string{"/", "/boot", "/boot/efi", "/home", "/tmp", "/usr", "/var"},
			names:   map[string]string{"253:0": "dm-0", "253:4": "dm-4", "8:2": "sda2"}},
		{name: "luks under lvm", host: fxLUKS,
			disks:   []string{"sda"},
			devices: []string{"253:0", "253:1", "8:0", "8:1", "8:15", "8:2"},
			mounts:  []string{"/", "/boot", "/boot/efi"},
			names:   map[string]string{"253:0": "dm-0", "253:1": "dm-1"}},
		{name: "btrfs anonymous device", host: fxBtrfs,
			disks:   []string{"sda"},
			devices: []string{"0:30", "8:0", "8:1", "8:15"},
			mounts:  []string{"/", "/boot/efi"},
			names:   map[string]string{"8:1": "sda1"}},
		{name: "md raid1", host: fxMD,
			disks:   []string{"sda", "sdb"},
			devices: []string{"8:0", "8:1", "8:16", "8:17", "8:18", "8:2", "9:0"},
			mounts:  []string{"/", "/boot"}},
		{name: "root without sysfs", host: fxNoSysfs,
			devices: []string{"8:1"}, mounts: []string{"/"}, note: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := tt.host.build(t)
			mounts, err := ReadMountInfo(root)
			if err != nil {
				t.Fatal(err)
			}
			topo, err := OSDrive(root, mounts)
			if err != nil {
				t.Fatal(err)
			}
			if topo.Root.MountPoint != "/" {
				t.Errorf("Root = %q", topo.Root.MountPoint)
			}
			if !slices.Equal(topo.Disks, tt.disks) {
				t.Errorf("Disks = %q, want %q", topo.Disks, tt.disks)
			}
			if got := devStrings(topo.Devices); !reflect.DeepEqual(got, tt.devices) {
				t.Errorf("Devices = %q, want %q", got, tt.devices)
			}
			if len(topo.Devices) == 0 || topo.Devices[0] != topo.Root.Dev {
				t.Errorf("Devices %v do not start with the root's own device %v", topo.Devices, topo.Root.Dev)
			}
			if got := mountPoints(topo.Mounts); !reflect.DeepEqual(got, tt.mounts) {
				t.Errorf("Mounts = %q, want %q", got, tt.mounts)
			}
			for d, n := range tt.names {
				dev, _ := ParseDev(d)
				if topo.Names[dev] != n {
					t.Errorf("Names[%s] = %q, want %q", d, topo.Names[dev], n)
				}
			}
			if (topo.Note != "") != tt.note {
				t.Errorf("Note = %q, want note: %v", topo.Note, tt.note)
			}
			for _, m := range topo.Mounts {
				if m.MountPoint == "/data" || m.MountPoint == "/mnt" {
					t.Errorf("data/resource disk mount %s is part of the OS drive", m.MountPoint)
				}
			}
		})
	}
}

func TestOSDriveErrors(t *testing.T) {
	root := fxPlain.build(t)
	if _, err := OSDrive(root, nil); err == nil {
		t.Error("empty mount table: no error")
	}
	noRoot := mustParseMountInfo(t, "104 28 8:33 / /data rw - xfs /dev/sdc1 rw\n")
	if _, err := OSDrive(root, noRoot); err == nil {
		t.Error("mount table without /: no error")
	}
}

// A bind mount of the root filesystem shows the same device; the primary mount is the one
// that shows the filesystem's root at "/", whatever the order.
func TestOSDrivePrimaryMountIgnoresBindMounts(t *testing.T) {
	root := fxPlain.build(t)
	mounts := mustParseMountInfo(t, `40 28 8:1 /var/www /srv/www rw - ext4 /dev/root rw
28 1 8:1 / / rw,relatime shared:1 - ext4 /dev/root rw
41 28 259:0 /grub /srv/grub rw - ext4 /dev/sda16 rw
95 28 259:0 / /boot rw,relatime shared:50 - ext4 /dev/sda16 rw
`)
	topo, err := OSDrive(root, mounts)
	if err != nil {
		t.Fatal(err)
	}
	if got := mountPoints(topo.Mounts); !reflect.DeepEqual(got, []string{"/", "/boot"}) {
		t.Errorf("Mounts = %q, want / and /boot", got)
	}
}
