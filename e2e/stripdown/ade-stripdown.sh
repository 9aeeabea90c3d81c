#!/bin/bash
# ade-stripdown.sh — a re-enactment of the Azure Disk Encryption extension's OS-drive
# stripdown and unmount on the unmount path (Ubuntu 16.04–22.04), written from the public
# description in research/ade_extension.md §1.2 (StripdownState, UnmountOldrootState) and
# the simulation notes in research/ade_unmount_simulation.md. Used by the VM acceptance
# tests (e2e/vm); it runs inside a throwaway guest as root.
#
# What it leaves out on purpose: ADE's final `kill -9` of every pid `fuser -vm /oldroot`
# lists (we record the list instead: the point is to see what would have been killed), the
# BEK volume, the partition split and the encryption itself.
#
#   ade-stripdown.sh stage1   tmpfs copy, pivot_root, hand-off to PID 1 (runs stage2)
#   ade-stripdown.sh stage2   (started by systemd from the new root) rescue, restart of
#                             running services, swapoff, fuser, re-exec, umount /oldroot
#
# Results go to /run/ade-stripdown/ (which survives the pivot: ADE moves /run):
#   log          every step with a timestamp
#   fuser.txt    what `fuser -vm /oldroot` printed (what ADE would kill -9)
#   umount.txt   `umount /oldroot`'s output;  umount.rc its exit status (0 = unmounted)
#   active.txt   the units active after the stripdown (ADE restarted them on the RAM copy)
#   done         written last
#
# The script must live in /run/ade-stripdown/ before stage1 (the test pushes it there), so
# that stage2 runs a copy that is not on the old root.
set -u
OUT=/run/ade-stripdown
SELF=$OUT/ade-stripdown.sh
# Units the test harness needs alive through `systemctl rescue` and the restarts, as ADE
# spares walinuxagent and sshd (research §1.2 UnmountOldrootState step 2).
SPARE_RE='walinuxagent\.service|sshd\.service|adeagent-e2e-guest\.service|ade-stripdown-stage2\.service'

log() { echo "$(date +%T.%N) $*" >>"$OUT/log"; }

stage1() {
	mkdir -p "$OUT"
	# -r, not -x: /run is mounted noexec (stage 2 runs it with bash).
	[ -r "$SELF" ] || { echo "copy this script to $SELF first" >&2; exit 2; }
	# Test harness: `systemctl rescue` isolates, which would stop the guest agent unit that
	# the test drives the guest through; a runtime drop-in spares it (the image is unchanged).
	if systemctl cat adeagent-e2e-guest.service >/dev/null 2>&1; then
		mkdir -p /run/systemd/system/adeagent-e2e-guest.service.d
		printf '[Unit]\nIgnoreOnIsolate=yes\n' >/run/systemd/system/adeagent-e2e-guest.service.d/isolate.conf
		systemctl daemon-reload
	fi
	log "stage1 (pid $$)"
	systemctl list-units --type=service --state=running --no-legend --plain 2>/dev/null |
		awk '{print $1}' >"$OUT/running-before.txt"
	# StripdownState.should_enter: a pre-existing /oldroot aborts the run.
	if [ -e /oldroot ]; then log "/oldroot exists: ADE would abort"; echo "/oldroot exists" >&2; exit 3; fi
	rm -rf /tmp/tmproot
	log "umount -a"
	umount -a >>"$OUT/log" 2>&1 || true
	mkdir -p /tmp/tmproot
	mount -t tmpfs none /tmp/tmproot || { log "tmpfs failed"; exit 1; }
	mkdir -p /tmp/tmproot/{proc,sys,dev,run,usr,var,tmp,root,oldroot,boot}
	log "copy the trees ADE copies"
	for d in /bin /etc /mnt /sbin /lib /lib64 /root; do
		[ -e "$d" ] && cp -ax "$d" /tmp/tmproot/
	done
	for d in bin sbin lib lib64 share; do
		[ -e "/usr/$d" ] && cp -ax "/usr/$d" /tmp/tmproot/usr/
	done
	for d in lib local lock opt run spool tmp; do
		[ -e "/var/$d" ] && cp -ax "/var/$d" /tmp/tmproot/var/
	done
	mkdir -p /tmp/tmproot/var/log
	[ -d /var/log/azure ] && cp -ax /var/log/azure /tmp/tmproot/var/log/
	log "make-rprivate, pivot_root"
	mount --make-rprivate /
	cd /tmp/tmproot || exit 1
	pivot_root /tmp/tmproot /tmp/tmproot/oldroot || { log "pivot_root failed"; exit 1; }
	cd / || exit 1
	for d in dev proc sys run; do
		mount --move "/oldroot/$d" "/$d" || log "mount --move /oldroot/$d failed"
	done
	# Hand-off (research/ade_unmount_simulation.md, harness lessons): this shell's
	# executable is on the old root; PID 1 re-execs from the new root and starts stage 2
	# from there, and this process exits.
	log "daemon-reexec, hand off to stage2"
	systemctl daemon-reexec
	systemd-run --unit=ade-stripdown-stage2 -p IgnoreOnIsolate=yes --no-block /bin/bash "$SELF" stage2 \
		>>"$OUT/log" 2>&1 || { log "systemd-run failed"; exit 1; }
	exit 0
}

stage2() {
	log "stage2 from the new root (pid $$)"
	# UnmountOldrootState, Ubuntu: systemctl rescue, then restart every running service
	# except the agent and sshd, so they re-exec from the RAM copy.
	log "systemctl rescue"
	timeout 180 systemctl rescue >>"$OUT/log" 2>&1 || log "systemctl rescue: rc $?"
	systemctl list-units --type=service --state=running --no-legend --plain 2>/dev/null |
		awk '{print $1}' | grep -Ev "^($SPARE_RE)\$" >"$OUT/restarted.txt"
	while read -r unit; do
		log "restart $unit"
		timeout 120 systemctl restart "$unit" >>"$OUT/log" 2>&1 || log "restart $unit: rc $?"
	done <"$OUT/restarted.txt"
	log "swapoff -a"
	swapoff -a >>"$OUT/log" 2>&1 || true
	umount /oldroot/mnt >/dev/null 2>&1 || true
	umount -R /mnt >/dev/null 2>&1 || true
	log "fuser -vm /oldroot (recorded; ADE would kill -9 these, PID 1 excepted)"
	fuser -vm /oldroot >"$OUT/fuser.txt" 2>&1 || true
	log "telinit u"
	systemctl daemon-reexec
	sleep 3
	log "umount /oldroot"
	umount /oldroot >"$OUT/umount.txt" 2>&1
	echo $? >"$OUT/umount.rc"
	log "umount rc $(cat "$OUT/umount.rc")"
	grep ' /oldroot' /proc/self/mountinfo >"$OUT/mounts-after.txt" 2>/dev/null || true
	ps -eo pid,comm,unit --no-headers >"$OUT/ps-after.txt" 2>/dev/null || true
	systemctl list-units --type=service --state=active --no-legend --plain 2>/dev/null |
		awk '{print $1}' >"$OUT/active.txt"
	touch "$OUT/done"
}

case "${1:-}" in
stage1) stage1 ;;
stage2) stage2 ;;
*) echo "usage: $0 stage1|stage2" >&2; exit 2 ;;
esac
