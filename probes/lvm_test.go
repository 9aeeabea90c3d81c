package probes

import (
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

func TestLVMProbe(t *testing.T) {
	cases := []struct {
		name, root string
		distro     Distro
		want       fxWant
	}{
		{"rootvg layout ADE accepts", "rootvg-ok", fxRHEL79, fxWant{}},
		{"rootvg missing LVs", "rootvg-missing", fxRHEL79, fxWant{
			key: "lvm.os-disk!", severity: api.SeverityHigh,
			text: []string{"LVM volume rootvg-rootlv and rootvg-tmplv, rootvg-usrlv, rootvg-varlv are missing",
				"LVM OS disk layout does not satisfy prerequisites", "Logical volumes present: rootvg-homelv, rootvg-rootlv.", "vgs rootvg"},
			commands: []string{"lvcreate --name tmplv --size 512M rootvg", "lvcreate --name usrlv --size 512M rootvg", "lvcreate --name varlv --size 512M rootvg"},
			related:  []string{"device:/dev/mapper/rootvg-rootlv", "mount:/"},
		}},
		{"another volume group: no lvcreate", "othervg", fxRHEL79, fxWant{
			key: "lvm.os-disk!", text: []string{`The root volume group is "vg-sys", not rootvg`, "rootvg-rootlv are missing"},
			commands: []string{},
		}},
		{"root LV extended onto a data disk", "spans", fxRHEL79, fxWant{
			key: "lvm.os-disk!", text: []string{"spans 2 disks (sda, sdc)", "pvmove", "rootvg-rootlv is built on sda2, sdc1"},
			related: []string{"device:/dev/sda", "device:/dev/sdc"},
		}},
		{"root LV extended onto a data disk, online path", "spans", fxRHEL94, fxWant{
			key: "lvm.os-disk!", text: []string{"spans 2 disks"}, notText: []string{"are missing"},
		}},
		{"online path skips ADE's LV-name check", "rootvg-missing", fxRHEL94, fxWant{}},
		{"Ubuntu on the unmount path has no LVM machine", "rootvg-ok", fxUbuntu2204, fxWant{
			key: "lvm.os-disk!", text: []string{"LVM state machine only for RHEL/CentOS 7", "Ubuntu 22.04.4 LTS"},
		}},
		{"data-only distribution: not applicable", "rootvg-missing", fxSLES15, fxWant{}},
		{"root on a partition", "plain", fxRHEL79, fxWant{}},
		{"root on dm-crypt, not LVM", "crypt", fxRHEL79, fxWant{}},
		{"device-mapper root without sysfs", "no-sysfs", fxRHEL79, fxWant{err: "sysfs does not show it"}},
		{"no mount table", "missing", fxRHEL79, fxWant{err: "read mount table"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			fxCheck(t, lvmProbe{}, fxEnv(t, "lvm", tc.root, tc.distro), tc.want)
		})
	}
}

func TestLVMSplitDMName(t *testing.T) {
	for in, want := range map[string][2]string{
		"rootvg-rootlv":    {"rootvg", "rootlv"},
		"vg--sys-root":     {"vg-sys", "root"},
		"vg-lv--with-dash": {"vg", "lv-with-dash"},
		"novg":             {"novg", ""},
	} {
		vg, lv := lvmSplitDMName(in)
		if vg != want[0] || lv != want[1] {
			t.Errorf("lvmSplitDMName(%q) = %q, %q; want %q, %q", in, vg, lv, want[0], want[1])
		}
	}
}
