#!/bin/bash
# Regenerates the lvm probe fixtures: bash gen.sh (from this directory).
cd "$(dirname "$0")"
. ../mounts/sysfs.sh
for c in rootvg-ok rootvg-missing othervg spans plain crypt no-sysfs missing; do rm -rf "$c"; done

lvroot() { # root: mount table with / on dm-0 (name $2), /boot on sda1
	{ printf '1 0 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/%s rw\n' "$2"
	  printf '30 1 8:1 / /boot rw,relatime shared:30 - xfs /dev/sda1 rw\n'
	  pseudo; } | mountinfo "$1"
}
base() { disk "$1" sda 8:0; part "$1" sda sda1 1 8:1; part "$1" sda sda2 2 8:2; }

# rootvg-ok: the RHEL 7-LVM image layout (swaplv absent: optional)
r=rootvg-ok; base $r
i=0; for lv in rootlv tmplv usrlv homelv varlv; do dm $r dm-$i 253:$i rootvg-$lv LVM-vgUUID$lv block/sda/sda2; i=$((i+1)); done
lvroot $r rootvg-rootlv

# rootvg-missing: rootvg with only rootlv and homelv
r=rootvg-missing; base $r
dm $r dm-0 253:0 rootvg-rootlv LVM-vgUUIDrootlv block/sda/sda2
dm $r dm-1 253:1 rootvg-homelv LVM-vgUUIDhomelv block/sda/sda2
lvroot $r rootvg-rootlv

# othervg: a custom volume group with a dash in its name (vg--sys-root = VG "vg-sys", LV "root")
r=othervg; base $r
dm $r dm-0 253:0 vg--sys-root LVM-vgUUIDroot block/sda/sda2
dm $r dm-1 253:1 vg--sys-swap LVM-vgUUIDswap block/sda/sda2
lvroot $r vg--sys-root

# spans: the full rootvg layout, but rootlv was extended onto the data disk sdc
r=spans; base $r
disk $r sdc 8:32; part $r sdc sdc1 1 8:33
dm $r dm-0 253:0 rootvg-rootlv LVM-vgUUIDrootlv block/sda/sda2 block/sdc/sdc1
i=1; for lv in tmplv usrlv homelv varlv; do dm $r dm-$i 253:$i rootvg-$lv LVM-vgUUID$lv block/sda/sda2; i=$((i+1)); done
lvroot $r rootvg-rootlv

# plain: root on a partition
r=plain; base $r
{ printf '1 0 8:2 / / rw,relatime shared:1 - xfs /dev/sda2 rw\n30 1 8:1 / /boot rw - xfs /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# crypt: root already on dm-crypt (ADE's osencrypt), not LVM
r=crypt; base $r
dm $r dm-0 253:0 osencrypt CRYPT-LUKS2-0123abcd-osencrypt block/sda/sda2
{ printf '1 0 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/osencrypt rw\n30 1 8:1 / /boot rw - xfs /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# no-sysfs: root on /dev/mapper but no sysfs to tell what it is
r=no-sysfs
lvroot $r rootvg-rootlv

# missing: no mount table
mkdir -p missing/etc && touch missing/etc/.keep
