#!/bin/bash
# Regenerates the fs probe fixtures: bash gen.sh (from this directory).
cd "$(dirname "$0")"
. ../mounts/sysfs.sh
for c in ubuntu-ok ubuntu-xfs ubuntu-sepboot ubuntu-wholedisk ubuntu-mbr-full ubuntu-lvm rhel7-ok rhel7-ext4-noboot rhel7-lvm online-ok no-sysfs missing; do rm -rf "$c"; done

# ubuntu-ok: the Ubuntu 22.04 marketplace layout: ext4 root on sda1, BIOS boot sda14,
# /boot/efi on sda15, GPT
r=ubuntu-ok
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda14 14 8:14; part $r sda sda15 15 8:15
{ printf '1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard\n30 1 8:15 / /boot/efi rw,relatime shared:30 - vfat /dev/sda15 rw\n'; pseudo; } | mountinfo $r

# ubuntu-xfs: same layout, xfs root
r=ubuntu-xfs
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15
{ printf '1 0 8:1 / / rw,relatime shared:1 - xfs /dev/sda1 rw\n30 1 8:15 / /boot/efi rw,relatime shared:30 - vfat /dev/sda15 rw\n'; pseudo; } | mountinfo $r

# ubuntu-sepboot: the 24.04-style layout (separate /boot on sda16) on a 22.04 system
r=ubuntu-sepboot
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15; part $r sda sda16 16 8:16
{ printf '1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n29 1 8:16 / /boot rw,relatime shared:29 - ext4 /dev/sda16 rw\n30 29 8:15 / /boot/efi rw,relatime shared:30 - vfat /dev/sda15 rw\n'; pseudo; } | mountinfo $r

# ubuntu-wholedisk: ext4 made on the whole disk, no partition table
r=ubuntu-wholedisk
disk $r sda 8:0 62914560 none
{ printf '1 0 8:0 / / rw,relatime shared:1 - ext4 /dev/sda rw\n'; pseudo; } | mountinfo $r

# ubuntu-mbr-full: MBR disk with all four primary partitions used
r=ubuntu-mbr-full
disk $r sda 8:0 62914560 dos
for i in 1 2 3 4; do part $r sda sda$i $i 8:$i; done
{ printf '1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n31 1 8:3 / /srv rw,relatime shared:31 - ext4 /dev/sda3 rw\n'; pseudo; } | mountinfo $r

# ubuntu-lvm: ext4 root on an LVM volume (lvm.os-disk reports it; fs has nothing to split)
r=ubuntu-lvm
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15
dm $r dm-0 253:0 ubuntu--vg-ubuntu--lv LVM-abc block/sda/sda1
{ printf '1 0 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/ubuntu--vg-ubuntu--lv rw\n30 1 8:15 / /boot/efi rw - vfat /dev/sda15 rw\n'; pseudo; } | mountinfo $r

# rhel7-ok: RHEL 7.9 marketplace layout: /boot xfs on sda1, / xfs on sda2
r=rhel7-ok
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda2 2 8:2
{ printf '1 0 8:2 / / rw,relatime shared:1 - xfs /dev/sda2 rw\n30 1 8:1 / /boot rw,relatime shared:30 - xfs /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# rhel7-ext4-noboot: ext4 root, no separate /boot
r=rhel7-ext4-noboot
disk $r sda 8:0; part $r sda sda1 1 8:1
{ printf '1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# rhel7-lvm: the 7-LVM image: /boot on sda1, rootvg on sda2 (root fs type not checked)
r=rhel7-lvm
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda2 2 8:2
dm $r dm-0 253:0 rootvg-rootlv LVM-rootlv block/sda/sda2
{ printf '1 0 253:0 / / rw,relatime shared:1 - ext4 /dev/mapper/rootvg-rootlv rw\n30 1 8:1 / /boot rw - xfs /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# online-ok: Ubuntu 24.04 / RHEL 9 style: / on sda1, /boot on sda16, /boot/efi on sda15
r=online-ok
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15; part $r sda sda16 16 8:16
{ printf '1 0 8:1 / / rw,relatime shared:1 - btrfs /dev/sda1 rw\n29 1 8:16 / /boot rw - ext4 /dev/sda16 rw\n30 29 8:15 / /boot/efi rw - vfat /dev/sda15 rw\n'; pseudo; } | mountinfo $r

# no-sysfs: a mount table only
r=no-sysfs
{ printf '1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n'; pseudo; } | mountinfo $r

# missing: no mount table
mkdir -p missing/etc && touch missing/etc/.keep
