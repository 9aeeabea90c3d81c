package unmount

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Topology is the OS drive as the kernel sees it: the root filesystem's device, the whole
// disks under it (partition → disk, device-mapper → its slaves, recursively), every block
// device stacked on those disks, and every mounted filesystem on them.
type Topology struct {
	Root    Mount    // the topmost mount of "/"
	Disks   []string // whole disks, e.g. "sda", "nvme0n1"
	Devices []Dev    // every block device of the OS drive: disks, partitions, dm/md on them
	Names   map[Dev]string
	Mounts  []Mount // the primary mount of each mounted device, "/" first
	// Note explains a topology that could not be resolved fully (e.g. a root device with no
	// sysfs entry); the devices then hold only the root filesystem's own device.
	Note string
}

// Block is one block device in sysfs.
type Block struct {
	Name string // kernel name: sda, sda1, dm-0, loop3
	Dev  Dev
	Dir  string // resolved sysfs directory
}

// Sysfs reads block-device facts from a root's /sys.
type Sysfs struct{ Root hostroot.Root }

// ByDev finds the block device with a device number.
func (s Sysfs) ByDev(d Dev) (Block, error) {
	return s.resolve(s.Root.Sys("dev", "block", d.String()))
}

// ByName finds a block device by kernel name ("sda1", "dm-0").
func (s Sysfs) ByName(name string) (Block, error) {
	if name == "" || strings.ContainsAny(name, "/\x00") || name == "." || name == ".." {
		return Block{}, fmt.Errorf("block device name %q: invalid", name)
	}
	return s.resolve(s.Root.Sys("class", "block", name))
}

func (s Sysfs) resolve(link string) (Block, error) {
	dir, err := filepath.EvalSymlinks(link)
	if err != nil {
		return Block{}, fmt.Errorf("sysfs block device: %w", err)
	}
	raw, err := os.ReadFile(filepath.Join(dir, "dev"))
	if err != nil {
		return Block{}, fmt.Errorf("sysfs block device: %w", err)
	}
	d, err := ParseDev(strings.TrimSpace(string(raw)))
	if err != nil {
		return Block{}, fmt.Errorf("sysfs %s: %w", dir, err)
	}
	return Block{Name: filepath.Base(dir), Dev: d, Dir: dir}, nil
}

// IsPartition reports whether b is a partition of a disk.
func (b Block) IsPartition() bool {
	_, err := os.Stat(filepath.Join(b.Dir, "partition"))
	return err == nil
}

// Slaves lists the devices b is built on (device-mapper, md).
func (b Block) Slaves() []string { return listNames(filepath.Join(b.Dir, "slaves")) }

// Holders lists the devices built on b.
func (b Block) Holders() []string { return listNames(filepath.Join(b.Dir, "holders")) }

// DMName is the device-mapper name ("rootvg-rootlv"), or "".
func (b Block) DMName() string { return readTrim(filepath.Join(b.Dir, "dm", "name")) }

// DMUUID is the device-mapper uuid ("LVM-…", "CRYPT-LUKS2-…"), or "".
func (b Block) DMUUID() string { return readTrim(filepath.Join(b.Dir, "dm", "uuid")) }

// Partitions lists the partitions of a whole disk.
func (s Sysfs) Partitions(disk Block) []Block {
	entries, err := os.ReadDir(disk.Dir)
	if err != nil {
		return nil
	}
	var parts []Block
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), disk.Name) {
			continue
		}
		p := filepath.Join(disk.Dir, e.Name())
		if _, err := os.Stat(filepath.Join(p, "partition")); err != nil {
			continue
		}
		if b, err := s.resolve(p); err == nil {
			parts = append(parts, b)
		}
	}
	return parts
}

// DiskOf returns the whole disks under b: its parent disk for a partition, the disks of
// its slaves (recursively) for dm/md, or b itself.
func (s Sysfs) DiskOf(b Block) []Block {
	return s.disksOf(b, map[string]bool{})
}

func (s Sysfs) disksOf(b Block, seen map[string]bool) []Block {
	if seen[b.Name] {
		return nil
	}
	seen[b.Name] = true
	if slaves := b.Slaves(); len(slaves) > 0 {
		var out []Block
		for _, name := range slaves {
			if sb, err := s.ByName(name); err == nil {
				out = append(out, s.disksOf(sb, seen)...)
			}
		}
		return out
	}
	if b.IsPartition() {
		if parent, err := s.resolve(filepath.Dir(b.Dir)); err == nil {
			return []Block{parent}
		}
	}
	return []Block{b}
}

// BySource finds the block device named by a mount source ("/dev/sda1",
// "/dev/mapper/rootvg-rootlv"), for filesystems whose mountinfo device number is not a
// block device (btrfs reports an anonymous device).
func (s Sysfs) BySource(source string) (Block, error) {
	if !strings.HasPrefix(source, "/dev/") {
		return Block{}, fmt.Errorf("mount source %q is not a device", source)
	}
	if name, ok := strings.CutPrefix(source, "/dev/mapper/"); ok {
		if name == "" {
			return Block{}, fmt.Errorf("mount source %q names no device-mapper device", source)
		}
		entries, _ := os.ReadDir(s.Root.Sys("block"))
		for _, e := range entries {
			if b, err := s.ByName(e.Name()); err == nil && b.DMName() == name {
				return b, nil
			}
		}
		return Block{}, fmt.Errorf("no device-mapper device named %q", name)
	}
	return s.ByName(filepath.Base(source))
}

// OSDrive resolves the OS drive's topology from a mount table and the root's sysfs.
func OSDrive(root hostroot.Root, mounts []Mount) (*Topology, error) {
	rootMount, ok := MountFor(mounts, "/")
	if !ok {
		return nil, errors.New("mount table has no root filesystem")
	}
	t := &Topology{Root: rootMount, Names: map[Dev]string{}}
	sys := Sysfs{Root: root}
	start, err := sys.ByDev(rootMount.Dev)
	if err != nil {
		start, err = sys.BySource(rootMount.Source)
	}
	if err != nil {
		t.Devices = []Dev{rootMount.Dev}
		t.Note = fmt.Sprintf("root filesystem %s (%s on %s) has no block device in sysfs; only its own device is checked",
			rootMount.Dev, rootMount.FSType, rootMount.Source)
		t.Mounts = primaryMounts(mounts, t.Devices)
		return t, nil
	}
	seen := map[Dev]bool{}
	add := func(b Block) bool {
		t.Names[b.Dev] = b.Name
		if seen[b.Dev] {
			return false
		}
		seen[b.Dev] = true
		t.Devices = append(t.Devices, b.Dev)
		return true
	}
	// Whatever the root's own device number is (btrfs: anonymous), it belongs to the drive.
	seen[rootMount.Dev] = true
	t.Devices = append(t.Devices, rootMount.Dev)
	add(start)
	var up func(b Block)
	up = func(b Block) {
		for _, h := range b.Holders() {
			if hb, err := sys.ByName(h); err == nil && add(hb) {
				up(hb)
			}
		}
	}
	for _, disk := range sys.DiskOf(start) {
		t.Disks = append(t.Disks, disk.Name)
		add(disk)
		up(disk)
		for _, p := range sys.Partitions(disk) {
			add(p)
			up(p)
		}
	}
	sort.Strings(t.Disks)
	t.Mounts = primaryMounts(mounts, t.Devices)
	return t, nil
}

// primaryMounts returns, for each device, the mount that shows the filesystem's root (or
// the first one listed), ordered by mount point with "/" first. Other mounts of the same
// device are bind mounts; the scanner reports those as holders.
func primaryMounts(mounts []Mount, devs []Dev) []Mount {
	want := map[Dev]bool{}
	for _, d := range devs {
		want[d] = true
	}
	best := map[Dev]int{}
	for i, m := range mounts {
		if !want[m.Dev] {
			continue
		}
		j, ok := best[m.Dev]
		switch {
		case !ok:
			best[m.Dev] = i
		case mounts[j].Root != "/" && m.Root == "/":
			best[m.Dev] = i
		case m.MountPoint == "/" && mounts[j].MountPoint != "/":
			best[m.Dev] = i
		}
	}
	var out []Mount
	for _, i := range best {
		out = append(out, mounts[i])
	}
	sort.Slice(out, func(a, b int) bool { return out[a].MountPoint < out[b].MountPoint })
	return out
}

func listNames(dir string) []string {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names
}

func readTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}
