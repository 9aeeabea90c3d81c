package unmount

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Target is what a holder scan looks for: a set of filesystems, named by device number.
type Target struct {
	// Mounts are the target filesystems' primary mounts ("/" first for the OS drive).
	Mounts []Mount
	// Devs are every device number that counts as the target.
	Devs []Dev
	// Disks are the whole disks under the target (OS drive only).
	Disks []string
	// Names are sysfs names of target devices, where known.
	Names map[Dev]string
	// Table is the mount table the target was resolved in.
	Table []Mount
	// Note explains a partial resolution.
	Note string
}

// OSDriveTarget targets every filesystem on the disk(s) under "/".
func OSDriveTarget(root hostroot.Root) (*Target, error) {
	table, err := ReadMountInfo(root)
	if err != nil {
		return nil, err
	}
	topo, err := OSDrive(root, table)
	if err != nil {
		return nil, err
	}
	return &Target{Mounts: topo.Mounts, Devs: topo.Devices, Disks: topo.Disks, Names: topo.Names,
		Table: table, Note: topo.Note}, nil
}

// ErrNoSuchPath is returned by PathTarget for a path that does not exist.
var ErrNoSuchPath = errors.New("no such file or directory")

// PathTarget targets the filesystem that contains path (a host path). A block device path
// targets the filesystem on that device, like `fuser -m /dev/sdX`.
func PathTarget(root hostroot.Root, path string) (*Target, error) {
	table, err := ReadMountInfo(root)
	if err != nil {
		return nil, err
	}
	var dev Dev
	var m Mount
	var found bool
	if root.IsHost() {
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, path, statxFlags, statxMask, &stx); err != nil {
			if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
				return nil, fmt.Errorf("%s: %w", path, ErrNoSuchPath)
			}
			return nil, &fs.PathError{Op: "stat", Path: path, Err: err}
		}
		dev = Dev{stx.Dev_major, stx.Dev_minor}
		if stx.Mode&unix.S_IFMT == unix.S_IFBLK {
			dev = Dev{stx.Rdev_major, stx.Rdev_minor}
		}
		// The mount that contains path, if it shows that device; else any mount of it.
		if mm, ok := MountFor(table, path); ok && mm.Dev == dev {
			m, found = mm, true
		} else {
			for _, mm := range table {
				if mm.Dev == dev {
					m, found = mm, true
					break
				}
			}
		}
		if !found {
			return nil, fmt.Errorf("%s: device %s is not mounted", path, dev)
		}
	} else {
		if _, err := os.Lstat(root.Path(path)); err != nil {
			return nil, fmt.Errorf("%s: %w", path, ErrNoSuchPath)
		}
		if m, found = MountFor(table, path); !found {
			return nil, fmt.Errorf("%s: no mount contains it", path)
		}
		dev = m.Dev
	}
	t := &Target{Mounts: []Mount{m}, Devs: []Dev{dev}, Table: table, Names: map[Dev]string{}}
	if b, err := (Sysfs{Root: root}).ByDev(dev); err == nil {
		t.Names[dev] = b.Name
	}
	return t, nil
}

// MountPoints lists the target's mount points.
func (t *Target) MountPoints() []string {
	out := make([]string, 0, len(t.Mounts))
	for _, m := range t.Mounts {
		out = append(out, m.MountPoint)
	}
	return out
}

// DevStrings lists the target's devices as "maj:min", sorted.
func (t *Target) DevStrings() []string {
	out := make([]string, 0, len(t.Devs))
	for _, d := range t.Devs {
		out = append(out, d.String())
	}
	sort.Strings(out)
	return out
}

func (t *Target) has(d Dev) bool {
	for _, x := range t.Devs {
		if x == d {
			return true
		}
	}
	return false
}
