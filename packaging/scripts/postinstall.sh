#!/bin/sh
# adeagent postinstall: deb postinst, rpm %post.
#   first install: daemon-reload, enable adeagent.service and adeagent-restore.service,
#                  start adeagent.service
#   upgrade:       daemon-reload, try-restart adeagent.service (restarts it only if it
#                  runs; an enabled/disabled choice of the administrator is kept)
#
# dpkg: $1 = configure [most-recently-configured-version] | abort-upgrade new-version |
#       abort-remove | abort-deconfigure …
# rpm:  $1 = number of versions installed after this transaction: 1 install, 2+ upgrade
#
# systemd is asked to reload/start/restart only when it runs ([ -d /run/systemd/system ]):
# in a chroot or an image build the unit is only enabled. DPKG_ROOT (dpkg --root …
# --force-script-chrootless) is the root being installed into: then nothing talks to the
# running systemd, which belongs to another root.
set -e

root="${DPKG_ROOT:-}"
unit=adeagent.service
units="adeagent.service adeagent-restore.service"
reinstall_marker="$root/var/lib/adeagent/.pkg-reinstall"

have_systemctl() { command -v systemctl >/dev/null 2>&1; }
systemd_running() { [ -z "$root" ] && [ -d /run/systemd/system ] && have_systemctl; }

reload() {
	if systemd_running; then systemctl daemon-reload || :; fi
}

first_install() {
	rm -f "$reinstall_marker"
	reload
	if have_systemctl; then
		# shellcheck disable=SC2086 # two unit names
		systemctl ${root:+--root="$root"} enable $units || :
	fi
	if systemd_running; then
		# Type=notify: returns once the daemon answers on its socket (or after
		# TimeoutStartSec). A failed start must not fail the package installation.
		systemctl start "$unit" ||
			echo "adeagent: $unit did not start; see: journalctl -u $unit" >&2
	fi
}

upgrade() {
	reload
	if systemd_running; then systemctl try-restart "$unit" || :; fi
}

case "$1" in
configure)
	if [ -z "${2:-}" ] || [ -e "$reinstall_marker" ]; then
		first_install
	else
		upgrade
	fi
	;;
abort-upgrade | abort-remove | abort-deconfigure)
	# An interrupted upgrade or removal: make sure an enabled daemon runs again.
	reload
	if systemd_running && systemctl is-enabled --quiet "$unit" 2>/dev/null; then
		systemctl start "$unit" || :
	fi
	;;
1) first_install ;;
[0-9]*) upgrade ;;
*)
	echo "adeagent postinstall: unknown argument '$1'" >&2
	;;
esac
exit 0
