#!/bin/sh
# adeagent preremove: deb prerm, rpm %preun. Stops and disables the units on the final
# removal only; an upgrade leaves the daemon running (postinstall restarts it).
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
