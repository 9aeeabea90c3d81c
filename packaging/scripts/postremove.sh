#!/bin/sh
# adeagent postremove: deb postrm, rpm %postun. Reloads systemd after the unit files
# changed or went away; on dpkg's purge also removes the state directory.
#
# dpkg: $1 = remove | purge | upgrade new-version | failed-upgrade | abort-install |
#       abort-upgrade | disappear …
# rpm:  $1 = number of versions installed after this transaction: 0 erase, 1+ upgrade
#
# State (/var/lib/adeagent: the quiesce journal and the last report) survives remove and
# upgrade, and is deleted only by `apt purge` / `dpkg --purge`. rpm has no purge: after
# `rpm -e` / `dnf remove` the directory stays until removed by hand (rm -rf
# /var/lib/adeagent); a modified /etc/adeagent/adeagent.yaml is kept as .rpmsave. The group
# adeagent is never removed (files may still carry its GID).
#
# DPKG_ROOT: see postinstall.sh.
set -e

root="${DPKG_ROOT:-}"

systemd_running() {
	[ -z "$root" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1
}

if systemd_running; then systemctl daemon-reload || :; fi

case "$1" in
purge)
	rm -rf "$root/var/lib/adeagent"
	;;
remove | upgrade | failed-upgrade | abort-install | abort-upgrade | disappear | [0-9]*) ;;
*)
	echo "adeagent postremove: unknown argument '$1'" >&2
	;;
esac
exit 0
