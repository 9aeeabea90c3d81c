#!/bin/sh
# adeagent preremove: deb prerm, rpm %preun. On the final removal only: restores what a
# prepare changed if the journal still owes it, then stops and disables the units; an
# upgrade leaves the daemon running (postinstall restarts it).
#
# dpkg: $1 = remove | upgrade new-version | deconfigure … | failed-upgrade old-version
# rpm:  $1 = number of versions installed after this transaction: 0 erase, 1+ upgrade
#
# DPKG_ROOT: see postinstall.sh.
set -e

root="${DPKG_ROOT:-}"
units="adeagent.service adeagent-restore.service"

have_systemctl() { command -v systemctl >/dev/null 2>&1; }
systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ] && have_systemctl; }

final_removal() {
	# A prepare whose restore is still owed: put the services and SELinux back now, while
	# the binary is still here — after the removal nothing would. A failed restore does
	# not stop the removal; the journal stays in /var/lib/adeagent (removed only by purge).
	if [ -z "$root" ] && [ -e /var/lib/adeagent/quiesce.json ] && command -v adeagent >/dev/null 2>&1; then
		adeagent restore --owed ||
			echo "adeagent preremove: the owed restore failed; see /var/lib/adeagent/quiesce.json" >&2
	fi
	# shellcheck disable=SC2086 # two unit names
	if systemd_running; then systemctl stop $units || :; fi
	# Works without a running systemd too (it only removes the symlinks); postremove
	# reloads systemd once the unit files are gone.
	# shellcheck disable=SC2086
	if have_systemctl; then systemctl ${root:+--root="$root"} --no-reload disable $units || :; fi
}

case "$1" in
remove | 0) final_removal ;;
upgrade | deconfigure | failed-upgrade | [0-9]*) ;;
*)
	echo "adeagent preremove: unknown argument '$1'" >&2
	;;
esac
exit 0
