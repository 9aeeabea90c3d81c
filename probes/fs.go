package probes

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// fsProbe checks the root filesystem type and the OS disk's partition layout against what
// ADE's state machine for this distribution does with them (fs.layout). Facts from the
// extension's source (research: ade_extension.md §1.2, §2):
//
//   - Ubuntu, unmount path (ubuntu_1604/ubuntu_2004 split_root_partition): e2fsck -yf and
//     resize2fs shrink the root filesystem by 256 MiB, pyparted shrinks the root partition
//     and adds a partition in the freed space ("Probed root fs is not ext4" unless ext4),
//     mkfs.ext2 makes it the new /boot and `mv /oldroot/boot/* /boot/` fills it. So: ext4
//     root on a partition, ≥ 256 MiB free, room for one more partition, no separate /boot.
//   - RHEL/CentOS 7, unmount path: rhel_72 runs `xfs_repair <rootdev>` (xfs root unless on
//     LVM), and the LUKS header goes to /boot/luks on an existing separate /boot.
//   - Online path (RHEL 8.1+/9, Ubuntu 24.04, Mariner, Azure Linux): `cryptsetup reencrypt
//     --encrypt --init-only <rootdev> --header /boot/luks/osluksheader`; the initramfs must
//     read that header before the root is unlocked, so /boot must be its own filesystem.
type fsProbe struct {
	// freeBytes returns the free bytes of the filesystem mounted at mountPoint, ok=false
	// when it cannot tell (nil: statfs(2), only when Env.Root is the running host).
	freeBytes func(env *Env, mountPoint string) (free uint64, ok bool)
}

func (fsProbe) Name() string { return "fs" }

const (
	fsShrinkBytes = 256 << 20 // what ADE takes off an Ubuntu root for its /boot partition
	fsShrinkWarn  = 512 << 20 // below this resize2fs may not find the 256 MiB
)

func (p fsProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	path := env.Distro.Path
	if path != PathUnmount && path != PathOnline {
		return nil, nil // ADE does not encrypt this OS drive (distro.unsupported says why)
	}
	mounts, err := unmount.ReadMountInfo(env.Root)
	if err != nil {
		return nil, fmt.Errorf("fs: %w", err)
	}
	topo, err := unmount.OSDrive(env.Root, mounts)
	if err != nil {
		return nil, fmt.Errorf("fs: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	root := topo.Root
	boot, hasBoot := unmount.MountFor(mounts, "/boot")
	separateBoot := hasBoot && boot.MountPoint == "/boot" && boot.Dev != root.Dev

	sys := unmount.Sysfs{Root: env.Root}
	blk, blkErr := sys.ByDev(root.Dev)
	if blkErr != nil {
		blk, blkErr = sys.BySource(root.Source)
	}
	isDM := strings.HasPrefix(root.Source, "/dev/mapper/") || strings.HasPrefix(root.Source, "/dev/dm-") ||
		(blkErr == nil && blk.DMName() != "")
	isLVM := blkErr == nil && strings.HasPrefix(blk.DMUUID(), "LVM-")

	var problems, hints []string
	warnOnly := true
	block := func(problem, hint string) {
		problems = append(problems, problem)
		if hint != "" {
			hints = append(hints, hint)
		}
		warnOnly = false
	}
	warn := func(problem, hint string) {
		problems = append(problems, problem)
		if hint != "" {
			hints = append(hints, hint)
		}
	}
	rootDesc := fmt.Sprintf("%s on %s", root.FSType, root.Source)
	redeploy := "Redeploy from the distribution's Azure marketplace image (its default layout is the one ADE handles), or use encryption at host"

	switch {
	case path == PathOnline:
		if !separateBoot {
			block(fmt.Sprintf("/boot is not a filesystem of its own (root is %s): ADE writes the detached LUKS2 header to /boot/luks/osluksheader and the initramfs must read it before the root is unlocked", rootDesc),
				"Give /boot its own partition (the marketplace images have one); "+redeploy)
		}
	case fsIsRHEL(env.Distro):
		if !isLVM && root.FSType != "xfs" {
			block(fmt.Sprintf("The root filesystem is %s, not xfs: ADE's RHEL 7 machine runs xfs_repair on the root device after unmounting it and fails on anything else", rootDesc), redeploy)
		}
		if !separateBoot {
			block("/boot is not a separate partition: ADE's RHEL 7 machine mounts /boot to keep the LUKS header (/boot/luks) and boot files outside the encrypted root", redeploy)
		}
	default: // Ubuntu-style split of the root partition
		if root.FSType != "ext4" {
			block(fmt.Sprintf("The root filesystem is %s, not ext4: ADE shrinks it with e2fsck/resize2fs and stops with \"Probed root fs is not ext4\"", rootDesc), redeploy)
		}
		if separateBoot {
			block(fmt.Sprintf("/boot is already a separate filesystem (%s on %s): ADE makes its own /boot partition from 256 MiB of the root partition and moves the old root's /boot/* into it, which fails when /boot lives elsewhere", boot.FSType, boot.Source),
				"Move /boot back onto the root filesystem (copy its contents, remove its /etc/fstab line, update-grub), or "+strings.ToLower(redeploy[:1])+redeploy[1:])
		}
		switch {
		case isDM:
			// LVM or another device-mapper root: lvm.os-disk speaks for it; there is no
			// root partition to split here.
		case blkErr != nil:
			warn(fmt.Sprintf("The root device %s is not in sysfs, so whether its partition can be split was not checked", root.Source), "")
		case !blk.IsPartition():
			block(fmt.Sprintf("The root filesystem is on the whole disk %s, not a partition: ADE shrinks the root partition and adds a /boot partition after it", blk.Name), redeploy)
		default:
			disks := sys.DiskOf(blk)
			if len(disks) == 1 {
				if pt := fsPartTableType(env, disks[0].Dev); pt == "dos" {
					primaries := 0
					for _, part := range sys.Partitions(disks[0]) {
						if n, err := strconv.Atoi(fsReadTrim(filepath.Join(part.Dir, "partition"))); err == nil && n <= 4 {
							primaries++
						}
					}
					if primaries >= 4 {
						block(fmt.Sprintf("The disk %s has an MBR partition table with all 4 primary partitions in use: ADE cannot add its /boot partition", disks[0].Name),
							"Free a primary partition slot (or convert the disk to GPT) before encrypting")
					}
				}
			}
		}
		if free, ok := p.free(env, "/"); ok {
			switch {
			case free < fsShrinkBytes:
				block(fmt.Sprintf("The root filesystem has %d MiB free: ADE shrinks it by 256 MiB", free>>20),
					fmt.Sprintf("Free at least %d MiB on / (e.g. apt-get clean, journalctl --vacuum-size=100M, remove old kernels) or grow the OS disk and the root partition", (fsShrinkWarn-free)>>20))
			case free < fsShrinkWarn:
				warn(fmt.Sprintf("The root filesystem has only %d MiB free: ADE takes 256 MiB of it, and resize2fs may need more to move blocks", free>>20),
					"Free some space on / before encrypting")
			}
		}
	}
	if len(problems) == 0 {
		return nil, nil
	}
	f := api.Finding{Key: "fs.layout", Probe: "fs", Related: []api.Related{{Kind: "mount", ID: "/"}, {Kind: "device", ID: root.Source}}}
	if separateBoot {
		f.Related = append(f.Related, api.Related{Kind: "mount", ID: "/boot"})
	}
	for _, d := range topo.Disks {
		f.Related = append(f.Related, api.Related{Kind: "device", ID: "/dev/" + d})
	}
	f.Related = mntUniqueRelated(f.Related)
	if warnOnly {
		f.Severity, f.Blocker = api.SeverityMedium, false
		f.Title = "The OS drive's layout may not suit ADE"
	} else {
		f.Severity, f.Blocker = api.SeverityHigh, true
		f.Title = "The OS drive's filesystem or partition layout is one ADE cannot handle"
	}
	f.Summary = strings.Join(problems, ". ") + fmt.Sprintf(". (%s, ADE %s path.)", svcDistroLabel(env.Distro), path)
	if len(hints) == 0 {
		hints = append(hints, redeploy)
	}
	f.Remediation.Hint = strings.Join(fsUnique(hints), ". ") + "."
	return []api.Finding{f}, nil
}

func (p fsProbe) free(env *Env, mountPoint string) (uint64, bool) {
	if p.freeBytes != nil {
		return p.freeBytes(env, mountPoint)
	}
	if !env.Root.IsHost() {
		return 0, false // a fixture tree's statfs says nothing about the host it stands for
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(mountPoint, &st); err != nil {
		return 0, false
	}
	return st.Bfree * uint64(st.Bsize), true
}

// fsPartTableType reads the partition table type udev recorded for a disk ("gpt", "dos"),
// or "" when unknown.
func fsPartTableType(env *Env, dev unmount.Dev) string {
	data, err := env.Root.ReadFile("/run/udev/data/b" + dev.String())
	if err != nil {
		return ""
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "E:ID_PART_TABLE_TYPE="); ok {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func fsIsRHEL(d Distro) bool { return lvmIsRHELFamily(d) }

func fsReadTrim(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

func fsUnique(list []string) []string {
	var out []string
	for _, s := range list {
		out = svcAppendUnique(out, s)
	}
	return out
}
