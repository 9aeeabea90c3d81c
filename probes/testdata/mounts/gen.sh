#!/bin/bash
# Regenerates the mounts probe fixtures: bash gen.sh (from this directory).
cd "$(dirname "$0")"
. ./sysfs.sh
for c in pass nested under-mnt lvm-os-folder no-sysfs missing malformed; do rm -rf "$c"; done

# pass: Ubuntu with the resource disk on /mnt, ADE's BEK volume, one data drive, a bind
# mount of a directory on it, and pseudo/overlay/snap/NFS mounts that are never drives.
r=pass
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15
disk $r sdb 8:16; part $r sdb sdb1 1 8:17
disk $r sdc 8:32; part $r sdc sdc1 1 8:33
disk $r sdd 8:48 none; part $r sdd sdd1 1 8:49
{ cat <<'M'
1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,discard,errors=remount-ro
30 1 8:15 / /boot/efi rw,relatime shared:30 - vfat /dev/sda15 rw
31 1 8:17 / /mnt rw,relatime shared:31 - ext4 /dev/sdb1 rw
32 31 8:49 / /mnt/azure_bek_disk rw,relatime shared:32 - vfat /dev/sdd1 rw,fmask=0077
33 1 8:33 / /datadrive rw,relatime shared:33 - xfs /dev/sdc1 rw
34 1 8:33 /www /var/www rw,relatime shared:33 - xfs /dev/sdc1 rw
35 1 0:40 / /var/lib/docker/overlay2/abc/merged rw,relatime - overlay overlay rw,lowerdir=/x
36 1 7:0 / /snap/core20/2015 ro,nodev,relatime shared:36 - squashfs /dev/loop0 ro
37 1 0:50 / /shared rw,relatime shared:37 - nfs4 10.0.0.4:/export rw
38 25 0:51 / /run/user/1000 rw,nosuid,nodev,relatime shared:38 - tmpfs tmpfs rw
M
pseudo; } | mountinfo $r
mkdir -p $r/etc; printf 'UUID=aaaa / ext4 defaults 0 1\nUUID=cccc /datadrive xfs defaults,nofail 0 2\n' >$r/etc/fstab

# nested: /data3/data4 inside /data3 (in fstab, line 3), /mnt/data inside the resource disk
# (not in fstab)
r=nested
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda15 15 8:15
disk $r sdb 8:16; part $r sdb sdb1 1 8:17
disk $r sdc 8:32; part $r sdc sdc1 1 8:33
disk $r sdd 8:48; part $r sdd sdd1 1 8:49
disk $r sde 8:64; part $r sde sde1 1 8:65
{ cat <<'M'
1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 1 8:15 / /boot/efi rw,relatime shared:30 - vfat /dev/sda15 rw
31 1 8:17 / /mnt rw,relatime shared:31 - ext4 /dev/sdb1 rw
32 31 8:33 / /mnt/data rw,relatime shared:32 - ext4 /dev/sdc1 rw
33 1 8:49 / /data3 rw,relatime shared:33 - ext4 /dev/sdd1 rw
34 33 8:65 / /data3/data4 rw,relatime shared:34 - xfs /dev/sde1 rw
M
pseudo; } | mountinfo $r
mkdir -p $r/etc
printf '# /etc/fstab\nUUID=aaaa / ext4 defaults 0 1\nUUID=eeee /data3/data4 xfs defaults,nofail 0 2\nUUID=dddd /data3 ext4 defaults,nofail 0 2\n' >$r/etc/fstab

# under-mnt: RHEL, resource disk at /mnt/resource (waagent.conf), a data drive at /mnt/data
r=under-mnt
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda2 2 8:2
disk $r sdb 8:16; part $r sdb sdb1 1 8:17
disk $r sdc 8:32; part $r sdc sdc1 1 8:33
{ cat <<'M'
1 0 8:2 / / rw,relatime shared:1 - xfs /dev/sda2 rw
30 1 8:1 / /boot rw,relatime shared:30 - xfs /dev/sda1 rw
31 1 8:17 / /mnt/resource rw,relatime shared:31 - ext4 /dev/sdb1 rw
32 1 8:33 / /mnt/data rw,relatime shared:32 - xfs /dev/sdc1 rw
M
pseudo; } | mountinfo $r
mkdir -p $r/etc
printf 'ResourceDisk.Format=y\nResourceDisk.MountPoint=/mnt/resource\n' >$r/etc/waagent.conf
printf 'UUID=cccc /mnt/data xfs defaults,nofail 0 2\n' >$r/etc/fstab

# lvm-os-folder: RHEL LVM image (rootvg LVs for / /var /home on sda2 are the OS drive, not
# nested data drives) and a data drive on /var/lib/mysql (an OS folder)
r=lvm-os-folder
disk $r sda 8:0; part $r sda sda1 1 8:1; part $r sda sda2 2 8:2; part $r sda sda15 15 8:15
disk $r sdc 8:32; part $r sdc sdc1 1 8:33
dm $r dm-0 253:0 rootvg-rootlv LVM-aaaaROOT block/sda/sda2
dm $r dm-1 253:1 rootvg-varlv LVM-aaaaVAR block/sda/sda2
dm $r dm-2 253:2 rootvg-homelv LVM-aaaaHOME block/sda/sda2
{ cat <<'M'
1 0 253:0 / / rw,relatime shared:1 - xfs /dev/mapper/rootvg-rootlv rw
30 1 8:1 / /boot rw,relatime shared:30 - xfs /dev/sda1 rw
31 30 8:15 / /boot/efi rw,relatime shared:31 - vfat /dev/sda15 rw
32 1 253:1 / /var rw,relatime shared:32 - xfs /dev/mapper/rootvg-varlv rw
33 1 253:2 / /home rw,relatime shared:33 - xfs /dev/mapper/rootvg-homelv rw
34 32 8:33 / /var/lib/mysql rw,relatime shared:34 - xfs /dev/sdc1 rw
M
pseudo; } | mountinfo $r

# no-sysfs: only a mount table (container-ish fixture): topology falls back to the root
# device alone, /boot is still not a data drive, /data/sub is nested in /data
r=no-sysfs
{ cat <<'M'
1 0 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 1 8:2 / /boot rw,relatime shared:30 - ext4 /dev/sda2 rw
31 1 8:33 / /data rw,relatime shared:31 - ext4 /dev/sdc1 rw
32 31 8:49 / /data/sub rw,relatime shared:32 - ext4 /dev/sdd1 rw
M
pseudo; } | mountinfo $r

# missing: no mount table at all
mkdir -p missing/etc && touch missing/etc/.keep

# malformed: a mount table line the kernel never writes
r=malformed
printf '1 0 8:1 / / rw shared:1 - ext4 /dev/sda1 rw\nthis is not mountinfo\n' | mountinfo $r
