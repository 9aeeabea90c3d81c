package probes

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// lvmProbe checks an LVM root against what ADE accepts (lvm.os-disk).
//
// ADE's fatal precheck validate_lvm_os (check_util.py) runs only on distributions without
// online encryption: when `lsblk -o TYPE,MOUNTPOINT` shows an lvm device mounted at /, each
// of rootvg-tmplv, rootvg-usrlv, rootvg-homelv, rootvg-varlv and rootvg-rootlv must appear
// in `lsblk -o NAME` (swaplv is optional), else "LVM OS disk layout does not satisfy
// prerequisites ( see https://aka.ms/adelvm )". Only RHEL/CentOS 7 has an LVM state machine
// (rhel_72_lvm); Ubuntu's machine splits a root partition. Microsoft also lists "a root LV
// extended onto a data disk" as unsupported on every path (research: ade_extension.md §1.1,
// §2; services_selinux.md §7).
type lvmProbe struct{}

func (lvmProbe) Name() string { return "lvm" }

// lvmRequiredLVs are the device-mapper names ADE's precheck greps for.
var lvmRequiredLVs = []string{"rootvg-tmplv", "rootvg-usrlv", "rootvg-homelv", "rootvg-varlv", "rootvg-rootlv"}

func (lvmProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	if env.Distro.Path == PathNone {
		return nil, nil // ADE does not encrypt this OS drive at all (distro.unsupported)
	}
	mounts, err := unmount.ReadMountInfo(env.Root)
	if err != nil {
		return nil, fmt.Errorf("lvm: %w", err)
	}
	topo, err := unmount.OSDrive(env.Root, mounts)
	if err != nil {
		return nil, fmt.Errorf("lvm: %w", err)
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	sys := unmount.Sysfs{Root: env.Root}
	root := topo.Root
	blk, err := sys.ByDev(root.Dev)
	if err != nil {
		blk, err = sys.BySource(root.Source)
	}
	if err != nil {
		if strings.HasPrefix(root.Source, "/dev/mapper/") || strings.HasPrefix(root.Source, "/dev/dm-") {
			return nil, fmt.Errorf("lvm: root is on device-mapper (%s) but sysfs does not show it: %w", root.Source, err)
		}
		return nil, nil // a plain device; not LVM
	}
	if !strings.HasPrefix(blk.DMUUID(), "LVM-") {
		return nil, nil // a partition, a disk, or dm-crypt/other dm: not an LVM root
	}
	rootLV := blk.DMName()
	vg, _ := lvmSplitDMName(rootLV)
	lvNames := lvmNames(sys)

	var problems []string
	var cmds [][]string
	var hints []string
	severity, blocker := api.SeverityHigh, true
	f := api.Finding{Key: "lvm.os-disk", Probe: "lvm", Related: []api.Related{
		{Kind: "device", ID: "/dev/mapper/" + rootLV}, {Kind: "mount", ID: "/"},
	}}

	if len(topo.Disks) > 1 {
		problems = append(problems, fmt.Sprintf("the root LV %s spans %d disks (%s): Microsoft does not support a root LV extended onto a data disk, and ADE encrypts only the OS disk's physical volume",
			rootLV, len(topo.Disks), strings.Join(topo.Disks, ", ")))
		hints = append(hints, fmt.Sprintf("Move %s's extents back onto the OS disk (pvmove <data-disk PV>, which needs that much free space in %s) and remove the data disk's PV from the group (vgreduce %s <PV>), or redeploy with the OS on one disk; %s is built on %s",
			rootLV, vg, vg, rootLV, strings.Join(blk.Slaves(), ", ")))
		for _, d := range topo.Disks {
			f.Related = append(f.Related, api.Related{Kind: "device", ID: "/dev/" + d})
		}
	}

	if env.Distro.Path != PathOnline {
		rhel := lvmIsRHELFamily(env.Distro)
		var missing []string
		for _, lv := range lvmRequiredLVs {
			if !lvmContainsSubstring(lvNames, lv) {
				missing = append(missing, lv)
			}
		}
		switch {
		case !rhel && env.Distro.ID != "":
			problems = append(problems, fmt.Sprintf("the root filesystem is on the LVM volume %s, and ADE's unmount-path machine for %s encrypts a root partition: it has an LVM state machine only for RHEL/CentOS 7 (rhel_72_lvm)",
				rootLV, svcDistroLabel(env.Distro)))
			hints = append(hints, "Redeploy from a marketplace image whose root is a plain partition, move to a distribution that ADE encrypts online (Ubuntu 24.04, RHEL 8.1+/9), or use encryption at host")
		case len(missing) > 0:
			problems = append(problems, fmt.Sprintf("the root filesystem is on the LVM volume %s and %s missing: ADE's precheck requires %s (swaplv optional) and fails with \"LVM OS disk layout does not satisfy prerequisites ( see https://aka.ms/adelvm )\"",
				rootLV, lvmListIsAre(missing), strings.Join(lvmRequiredLVs, ", ")))
			if vg == "rootvg" {
				for _, lv := range missing {
					cmds = append(cmds, []string{"lvcreate", "--name", strings.TrimPrefix(lv, "rootvg-"), "--size", "512M", "rootvg"})
				}
				hints = append(hints, fmt.Sprintf("ADE's precheck only looks for the names: create the missing LVs in rootvg (512 MiB each; check the free space first with 'vgs rootvg'): %s. The layout Microsoft supports is that of the RHEL/CentOS 7-LVM marketplace images (https://aka.ms/adelvm)",
					strings.Join(lvmJoinCmds(cmds), "; ")))
			} else {
				hints = append(hints, fmt.Sprintf("The root volume group is %q, not rootvg: ADE's LVM machine converts rootvg only. Redeploy from a RHEL/CentOS 7-LVM marketplace image (https://aka.ms/adelvm), or use encryption at host", vg))
			}
		}
	}
	if len(problems) == 0 {
		return nil, nil
	}
	f.Severity, f.Blocker = severity, blocker
	f.Title = "The LVM OS disk layout is one ADE cannot encrypt"
	f.Summary = lvmCapitalize(strings.Join(problems, "; ")) + fmt.Sprintf(". Logical volumes present: %s.", strings.Join(lvmOrNone(lvNames), ", "))
	f.Remediation.Hint = strings.Join(hints, ". ") + "."
	f.Remediation.Commands = cmds
	return []api.Finding{f}, nil
}

// lvmNames lists the device-mapper names of the active LVM volumes, sorted.
func lvmNames(sys unmount.Sysfs) []string {
	entries, err := os.ReadDir(sys.Root.Sys("block"))
	if err != nil {
		return nil
	}
	var names []string
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "dm-") {
			continue
		}
		b, err := sys.ByName(e.Name())
		if err != nil || !strings.HasPrefix(b.DMUUID(), "LVM-") {
			continue
		}
		if n := b.DMName(); n != "" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	return names
}

// lvmSplitDMName splits an LVM device-mapper name into VG and LV ("--" escapes a "-").
func lvmSplitDMName(name string) (vg, lv string) {
	for i := 0; i < len(name); i++ {
		if name[i] != '-' {
			continue
		}
		if i+1 < len(name) && name[i+1] == '-' {
			i++
			continue
		}
		return strings.ReplaceAll(name[:i], "--", "-"), strings.ReplaceAll(name[i+1:], "--", "-")
	}
	return strings.ReplaceAll(name, "--", "-"), ""
}

// lvmIsRHELFamily reports whether the distribution is RHEL or a rebuild of it.
func lvmIsRHELFamily(d Distro) bool {
	for _, v := range append([]string{d.ID}, d.IDLike...) {
		switch v {
		case "rhel", "centos", "fedora", "ol", "almalinux", "rocky":
			return true
		}
	}
	return false
}

// lvmContainsSubstring mirrors `lsblk -o NAME | grep -q NAME`.
func lvmContainsSubstring(list []string, s string) bool {
	for _, x := range list {
		if strings.Contains(x, s) {
			return true
		}
	}
	return false
}

func lvmListIsAre(items []string) string {
	if len(items) == 1 {
		return items[0] + " is"
	}
	return strings.Join(items, ", ") + " are"
}

func lvmJoinCmds(cmds [][]string) []string {
	out := make([]string, len(cmds))
	for i, c := range cmds {
		out[i] = strings.Join(c, " ")
	}
	return out
}

func lvmOrNone(list []string) []string {
	if len(list) == 0 {
		return []string{"none"}
	}
	return list
}

func lvmCapitalize(s string) string {
	if s == "" {
		return s
	}
	return strings.ToUpper(s[:1]) + s[1:]
}
