#!/bin/bash
# Builds the Debian bookworm guest image of the VM test bed (docs/vm-tests.md).
#
#   build-image.sh OUTDIR            -> OUTDIR/base.raw, OUTDIR/vmlinuz, OUTDIR/initrd.img
#
# Run as root. No loop mounts: mmdebstrap builds a tree, the tree is configured and
# SELinux-labelled on the host, and `mkfs.ext4 -d` turns it into a raw ext4 image. The Go
# side (image.go) hashes this file and the package list into the cache key, and adds the
# guest agent binary with debugfs afterwards (so an agent change does not rebuild this).
#
# Environment: PACKAGES (space separated, required), IMAGE_SIZE (default 6G),
# MIRROR (default http://deb.debian.org/debian), SECURITY_MIRROR.
set -euo pipefail

if [ "${1:-}" = customize ]; then
	# mmdebstrap --customize-hook: $2 is the tree; /proc, /sys and /dev are mounted in it.
	r=$2
	echo adeagent-e2e >"$r/etc/hostname"
	printf '127.0.0.1 localhost\n127.0.1.1 adeagent-e2e\n' >"$r/etc/hosts"
	printf '/dev/vda / ext4 rw,errors=remount-ro 0 0\n' >"$r/etc/fstab"
	# A fixed machine-id: no first-boot logic on every fresh overlay.
	echo 5ade5ade5ade5ade5ade5ade5ade5ade >"$r/etc/machine-id"
	chroot "$r" passwd -d root >/dev/null
	# Root autologin on the serial console (debugging with the console log / -serial stdio).
	mkdir -p "$r/etc/systemd/system/serial-getty@ttyS0.service.d"
	cat >"$r/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'UNIT'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --keep-baud 115200,57600,38400,9600 %I $TERM
UNIT
	# Timers and services that only cost boot time or change behaviour between boots.
	# selinux-autorelabel-mark would drop /.autorelabel on a non-SELinux boot.
	for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service \
		fstrim.timer dpkg-db-backup.timer systemd-timesyncd.service selinux-autorelabel-mark.service \
		man-db.timer logrotate.timer; do
		ln -sf /dev/null "$r/etc/systemd/system/$u"
	done
	# Docker (when installed) is started by the tests that want it, not at every boot.
	for u in docker.service docker.socket containerd.service; do
		[ -e "$r/lib/systemd/system/$u" ] && chroot "$r" systemctl disable "$u" >/dev/null 2>&1 || true
	done
	# The guest agent (e2e/vm/guestagent): the binary is added by image.go with debugfs.
	cat >"$r/etc/systemd/system/adeagent-e2e-guest.service" <<'UNIT'
[Unit]
Description=adeagent e2e test bed guest agent (virtio-serial command channel)
# Early and outside every ordering a test could disturb; no sandboxing (no private mount
# namespace that would pin the OS drive).
DefaultDependencies=no

[Service]
Type=simple
ExecStart=/usr/local/sbin/adeagent-e2e-guest
Restart=always
RestartSec=1
OOMScoreAdjust=-1000

[Install]
WantedBy=sysinit.target
UNIT
	mkdir -p "$r/etc/systemd/system/sysinit.target.wants"
	ln -sf ../adeagent-e2e-guest.service "$r/etc/systemd/system/sysinit.target.wants/adeagent-e2e-guest.service"
	# Journal kept across reboots (reboot scenarios read the previous boot).
	mkdir -p "$r/var/log/journal"
	# SELinux: permissive from the config file; the kernel command line decides the rest.
	if [ -e "$r/etc/selinux/config" ]; then
		sed -i 's/^SELINUX=.*/SELINUX=permissive/; s/^SELINUXTYPE=.*/SELINUXTYPE=default/' "$r/etc/selinux/config"
	fi
	# virtio drivers are modules in the cloud kernel: force them into the initramfs.
	printf '%s\n' virtio_pci virtio_blk virtio_console ext4 >>"$r/etc/initramfs-tools/modules"
	chroot "$r" update-initramfs -u -k all 2>&1 | grep -v "Couldn't identify type of root file system" || true
	# Pre-label for SELinux on the host: setfiles needs /proc in the chroot (mounted by
	# mmdebstrap here) and -m (the host has no SELinux, so no fs has seclabel).
	if [ -x "$r/sbin/setfiles" ]; then
		chroot "$r" /sbin/setfiles -m -F -e /proc -e /sys -e /dev /etc/selinux/default/contexts/files/file_contexts /
	fi
	rm -f "$r/.autorelabel"
	# Leave no apt lists or caches in the image.
	rm -rf "$r/var/lib/apt/lists/"* "$r/var/cache/apt/"*.bin "$r/var/cache/apt/archives/"*.deb
	exit 0
fi

out=${1:?usage: build-image.sh OUTDIR}
: "${PACKAGES:?PACKAGES must list the guest packages}"
mirror=${MIRROR:-http://deb.debian.org/debian}
secmirror=${SECURITY_MIRROR:-http://deb.debian.org/debian-security}
size=${IMAGE_SIZE:-6G}
self=$(readlink -f "$0")
mkdir -p "$out"
tree=$out/tree
rm -rf "$tree"
t0=$(date +%s.%N)
# --skip=cleanup/reproducible: mmdebstrap would otherwise empty /etc/machine-id after the
# customize hooks, unlabelled (unlabeled_t), and journald fails under enforcing SELinux.
mmdebstrap --mode=root --variant=minbase --quiet --skip=cleanup/reproducible \
	--aptopt='Acquire::Check-Valid-Until "false"' \
	--aptopt='APT::Install-Recommends "false"' \
	--dpkgopt='path-exclude=/usr/share/man/*' \
	--dpkgopt='path-exclude=/usr/share/doc/*' \
	--dpkgopt='path-include=/usr/share/doc/*/copyright' \
	--dpkgopt='path-exclude=/usr/share/locale/*' \
	--include="$(echo $PACKAGES | tr ' ' ,)" \
	--customize-hook="$self customize \"\$1\"" \
	bookworm "$tree" \
	"deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $secmirror bookworm-security main"
t1=$(date +%s.%N)
cp "$tree"/boot/vmlinuz-* "$out/vmlinuz"
cp "$tree"/boot/initrd.img-* "$out/initrd.img"
rm -f "$out/base.raw"
truncate -s "$size" "$out/base.raw"
mkfs.ext4 -q -F -L root -d "$tree" "$out/base.raw"
t2=$(date +%s.%N)
du -sm "$tree" | awk '{print "tree_mb " $1}'
rm -rf "$tree"
awk "BEGIN{print \"mmdebstrap_s \" $t1-$t0}"
awk "BEGIN{print \"mkfs_s \" $t2-$t1}"
