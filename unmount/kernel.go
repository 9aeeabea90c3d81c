package unmount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Kernel holders keep a filesystem busy without any process having it open: mounts on
// top of it, bind mounts and namespace copies of it, swap and loop devices backed by it,
// devices stacked on it, overlays layered on it, NFS exports of it (research: handles.md
// rows 16–24). No /proc fd scan sees any of them.

// remoteFS are filesystems whose paths must not be walked: a dead server would hang the
// walk. Their device is taken from the mount table instead.
var remoteFS = map[string]bool{
	"nfs": true, "nfs4": true, "cifs": true, "smb3": true, "9p": true, "ceph": true,
	"glusterfs": true, "fuse.sshfs": true, "afs": true, "lustre": true,
}

// kernelScan carries the inputs of the kernel-holder checks.
type kernelScan struct {
	ctx      context.Context
	root     hostroot.Root
	target   *Target
	sys      Sysfs
	out      []api.Holder
	inc      []api.Incomplete
	seen     map[int]bool // mount ids already reported
	swapList []Swap       // active swap areas, read once
}

// KernelHolders finds the holders of target that are not processes. ps supplies the mount
// namespaces seen by the process scan (nil skips the namespace check).
func KernelHolders(ctx context.Context, root hostroot.Root, target *Target, ps *ProcessScan) ([]api.Holder, []api.Incomplete) {
	k := &kernelScan{ctx: ctx, root: root, target: target, sys: Sysfs{Root: root}, seen: map[int]bool{}}
	k.readSwaps()
	k.childMounts()
	k.bindMounts()
	k.overlays()
	k.swaps()
	k.loops()
	k.stacked()
	k.nfsExports()
	if ps != nil {
		k.namespaces(ps)
	}
	return k.out, k.inc
}

func (k *kernelScan) targetMountIDs() map[int]bool {
	ids := map[int]bool{}
	for _, m := range k.target.Table {
		if k.target.has(m.Dev) {
			ids[m.ID] = true
		}
	}
	return ids
}

// childMounts: every mount stacked (transitively) below a target mount that is not itself
// on the target. umount fails with EBUSY while any exists.
func (k *kernelScan) childMounts() {
	parents := k.targetMountIDs()
	children := map[int][]int{}
	for i, m := range k.target.Table {
		children[m.ParentID] = append(children[m.ParentID], i)
	}
	var found []Mount
	var walk func(id int)
	visited := map[int]bool{}
	walk = func(id int) {
		for _, i := range children[id] {
			m := k.target.Table[i]
			if visited[m.ID] || m.ID == id {
				continue
			}
			visited[m.ID] = true
			if !k.target.has(m.Dev) {
				found = append(found, m)
			}
			walk(m.ID)
		}
	}
	for id := range parents {
		walk(id)
	}
	sort.Slice(found, func(i, j int) bool { return found[i].MountPoint < found[j].MountPoint })
	for _, m := range found {
		k.seen[m.ID] = true
		k.out = append(k.out, api.Holder{
			Kind:   api.KindMount,
			Mount:  m.MountPoint,
			Paths:  []string{m.MountPoint},
			Detail: fmt.Sprintf("%s %s (%s) is mounted inside the target", m.FSType, m.Source, m.Dev),
		})
	}
}

// bindMounts: other mounts of a target device. They keep the superblock alive after the
// target is unmounted.
func (k *kernelScan) bindMounts() {
	primary := map[int]bool{}
	for _, m := range k.target.Mounts {
		primary[m.ID] = true
	}
	for _, m := range k.target.Table {
		if primary[m.ID] || k.seen[m.ID] || !k.target.has(m.Dev) {
			continue
		}
		k.seen[m.ID] = true
		k.out = append(k.out, api.Holder{
			Kind:   api.KindMount,
			Mount:  m.MountPoint,
			Paths:  []string{m.MountPoint},
			Detail: fmt.Sprintf("bind mount of %s (%s) at %s: pins the filesystem after the target is unmounted", m.Root, m.Dev, m.MountPoint),
		})
	}
}

// devOfPath resolves a path's device for the kernel checks. A path that cannot be
// stat'ed (gone, or no such file) falls back to the mount that contains it; a walk cut off
// by the deadline is recorded as incomplete.
func (k *kernelScan) devOfPath(p string) (Dev, bool) {
	d, err := devOfPath(k.ctx, k.root, k.target.Table, p)
	if err == nil {
		return d, true
	}
	if errors.Is(err, errStatDeadline) {
		k.inc = append(k.inc, api.Incomplete{What: "path " + p, Reason: errStatDeadline.Error()})
		return Dev{}, false
	}
	m, ok := MountFor(k.target.Table, p)
	return m.Dev, ok
}

// overlays: overlay mounts with a lower, upper or work directory on the target. Their
// users show the overlay's own device, so only the mount options tie them to the target.
func (k *kernelScan) overlays() {
	for _, m := range k.target.Table {
		if m.FSType != "overlay" {
			continue
		}
		var on []string
		for _, layer := range OverlayLayers(m.SuperOpts) {
			if d, ok := k.devOfPath(layer); ok && k.target.has(d) {
				on = append(on, layer)
			}
		}
		if len(on) == 0 {
			continue
		}
		k.out = append(k.out, api.Holder{
			Kind:   api.KindOverlay,
			Mount:  m.MountPoint,
			Paths:  on,
			Detail: fmt.Sprintf("overlay at %s has %d layer(s) on the target; it pins the filesystem", m.MountPoint, len(on)),
		})
	}
}

// readSwaps reads the active swap areas for swaps and stacked.
func (k *kernelScan) readSwaps() {
	data, err := os.ReadFile(k.root.Proc("swaps"))
	if err != nil {
		if !os.IsNotExist(err) {
			k.inc = append(k.inc, api.Incomplete{What: "swaps", Reason: err.Error()})
		}
		return
	}
	k.swapList = ParseSwaps(data)
}

// swaps: active swap files or partitions on the target.
func (k *kernelScan) swaps() {
	for _, s := range k.swapList {
		var d Dev
		var ok bool
		if s.Type == "partition" {
			if b, err := k.sys.BySource(s.Path); err == nil {
				d, ok = b.Dev, true
			}
		} else {
			p, _ := ParseLoopBacking(s.Path) // a deleted swap file reads "… (deleted)"
			d, ok = k.devOfPath(p)
		}
		if ok && k.target.has(d) {
			k.out = append(k.out, api.Holder{
				Kind:   api.KindSwap,
				Paths:  []string{s.Path},
				Detail: fmt.Sprintf("swap %s %s is active on the target (swapoff %s)", s.Type, s.Path, s.Path),
			})
		}
	}
}

// loops: loop devices whose backing file is on the target.
func (k *kernelScan) loops() {
	entries, err := os.ReadDir(k.root.Sys("block"))
	if err != nil {
		return
	}
	for _, e := range entries {
		name := e.Name()
		if !strings.HasPrefix(name, "loop") {
			continue
		}
		raw, err := os.ReadFile(k.root.Sys("block", name, "loop", "backing_file"))
		if err != nil {
			continue // not bound
		}
		path, deleted := ParseLoopBacking(string(raw))
		d, ok := k.loopBackingDev(name)
		if !ok && !deleted {
			d, ok = k.devOfPath(path)
		}
		if !ok || !k.target.has(d) {
			continue
		}
		detail := fmt.Sprintf("loop device /dev/%s is backed by %s on the target (losetup -d /dev/%s)", name, path, name)
		if deleted {
			detail = fmt.Sprintf("loop device /dev/%s is backed by the deleted file %s on the target", name, path)
		}
		k.out = append(k.out, api.Holder{Kind: api.KindLoop, Paths: []string{path}, Detail: detail})
	}
}

// loopBackingDev asks the loop driver for the backing file's device (exact even for a
// deleted file). Host only.
func (k *kernelScan) loopBackingDev(name string) (Dev, bool) {
	if !k.root.IsHost() {
		return Dev{}, false
	}
	fd, err := unix.Open("/dev/"+name, unix.O_RDONLY|unix.O_CLOEXEC|unix.O_NONBLOCK, 0)
	if err != nil {
		return Dev{}, false
	}
	defer unix.Close(fd)
	info, err := unix.IoctlLoopGetStatus64(fd)
	if err != nil {
		return Dev{}, false
	}
	return DevFromStat(info.Device), true
}

// stacked: device-mapper or md devices built on a target device that are not mounted
// and not swap: they hold the disk open (e.g. an active but unmounted LV, an open LUKS
// mapping).
func (k *kernelScan) stacked() {
	// A device is in use by a mount when it is mounted or lies (through slaves/) under a
	// mounted device: the dm-crypt device under a mounted root LV is part of the stack.
	mounted := map[Dev]bool{}
	var markDown func(b Block, depth int)
	markDown = func(b Block, depth int) {
		mounted[b.Dev] = true
		if depth > 16 {
			return
		}
		for _, name := range b.Slaves() {
			if sb, err := k.sys.ByName(name); err == nil && !mounted[sb.Dev] {
				markDown(sb, depth+1)
			}
		}
	}
	for _, m := range k.target.Table {
		mounted[m.Dev] = true
		if b, err := k.sys.ByDev(m.Dev); err == nil {
			markDown(b, 0)
		}
	}
	swapDevs := map[string]bool{}
	for _, s := range k.swapList {
		swapDevs[s.Path] = true
	}
	seen := map[string]bool{}
	for _, d := range k.target.Devs {
		b, err := k.sys.ByDev(d)
		if err != nil {
			continue
		}
		for _, h := range b.Holders() {
			hb, err := k.sys.ByName(h)
			if err != nil || seen[hb.Name] || mounted[hb.Dev] || swapDevs["/dev/"+hb.Name] {
				continue
			}
			seen[hb.Name] = true
			label := hb.Name
			if n := hb.DMName(); n != "" {
				label = fmt.Sprintf("%s (%s)", hb.Name, n)
			}
			k.out = append(k.out, api.Holder{
				Kind:   api.KindDM,
				Paths:  []string{"/dev/" + hb.Name},
				Detail: fmt.Sprintf("%s is stacked on %s and not mounted; it keeps the device open", label, b.Name),
			})
		}
	}
}

// nfsExports: paths on the target that the kernel NFS server exports.
func (k *kernelScan) nfsExports() {
	data, err := os.ReadFile(k.root.Proc("fs", "nfsd", "exports"))
	if err != nil {
		if data, err = os.ReadFile(k.root.Path("/var/lib/nfs/etab")); err != nil {
			return
		}
	}
	for _, p := range ParseNFSExports(data) {
		if d, ok := k.devOfPath(p); ok && k.target.has(d) {
			k.out = append(k.out, api.Holder{
				Kind:   api.KindNFSExport,
				Paths:  []string{p},
				Detail: fmt.Sprintf("%s is exported by the kernel NFS server (exportfs -u)", p),
			})
		}
	}
}

// namespaces: other mount namespaces that have a target device mounted. With private
// propagation such a copy survives the host's unmount and keeps the filesystem alive.
func (k *kernelScan) namespaces(ps *ProcessScan) {
	type nsEntry struct {
		ino uint64
		pid int
	}
	var list []nsEntry
	for ino, pid := range ps.MountNS {
		if ino != ps.SelfNS {
			list = append(list, nsEntry{ino, pid})
		}
	}
	sort.Slice(list, func(i, j int) bool { return list[i].pid < list[j].pid })
	for _, ns := range list {
		if k.ctx.Err() != nil {
			k.inc = append(k.inc, api.Incomplete{What: "mount namespaces", Reason: "scan deadline reached"})
			return
		}
		data, err := os.ReadFile(k.root.PID(ns.pid, "mountinfo"))
		if err != nil {
			if !os.IsNotExist(err) && !strings.Contains(err.Error(), "no such process") {
				k.inc = append(k.inc, api.Incomplete{PID: ns.pid, What: "mountinfo", Reason: err.Error()})
			}
			continue
		}
		mounts, err := ParseMountInfo(bytes.NewReader(data))
		if err != nil {
			k.inc = append(k.inc, api.Incomplete{PID: ns.pid, What: "mountinfo", Reason: err.Error()})
			continue
		}
		var points []string
		private := false
		for _, m := range mounts {
			if k.target.has(m.Dev) {
				points = append(points, m.MountPoint)
				if !hasOptional(m, "master:") && !m.Shared() {
					private = true
				}
			}
		}
		if len(points) == 0 {
			continue
		}
		prop := "it follows the host's unmount (slave/shared propagation) unless a process in it holds the filesystem"
		if private {
			prop = "private propagation: the copy survives the host's unmount and pins the filesystem"
		}
		if len(points) > 4 {
			points = append(points[:4], fmt.Sprintf("… %d more", len(points)-4))
		}
		h := api.Holder{
			Kind:   api.KindNamespace,
			PID:    ns.pid,
			Paths:  points,
			Detail: fmt.Sprintf("mount namespace mnt:[%d] has the target mounted; %s", ns.ino, prop),
		}
		attributePID(k.root, &h)
		k.out = append(k.out, h)
	}
}

func hasOptional(m Mount, prefix string) bool {
	for _, o := range m.Optional {
		if strings.HasPrefix(o, prefix) {
			return true
		}
	}
	return false
}
