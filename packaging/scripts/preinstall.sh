#!/bin/sh
# adeagent preinstall: deb preinst, rpm %pre. Creates the group adeagent (members may read
# the daemon's API socket) before anything is unpacked.
#
# dpkg: $1 = install [old-version] | upgrade old-version | abort-upgrade new-version
#       ("install old-version" = reinstall of a package removed but not purged)
# rpm:  $1 = number of versions installed after this transaction: 1 install, 2+ upgrade
#
# DPKG_ROOT (dpkg --root … --force-script-chrootless): the root being installed into.
set -e

root="${DPKG_ROOT:-}"
group=adeagent
# Left by a reinstall over the config-files state; postinstall.sh reads and removes it.
reinstall_marker="$root/var/lib/adeagent/.pkg-reinstall"

group_exists() {
	if [ -n "$root" ]; then
		grep -q "^$group:" "$root/etc/group" 2>/dev/null
	else
		getent group "$group" >/dev/null 2>&1
	fi
}

create_group() {
	group_exists && return 0
	# The same entry as the shipped /usr/lib/sysusers.d/adeagent.conf, which is not
	# unpacked yet; systemd-sysusers picks the GID the way it would at boot.
	if command -v systemd-sysusers >/dev/null 2>&1; then
		if printf 'g %s -\n' "$group" |
			systemd-sysusers ${root:+--root="$root"} --replace=/usr/lib/sysusers.d/adeagent.conf - >/dev/null 2>&1 &&
			group_exists; then
			return 0
		fi
	fi
	# No systemd-sysusers (or one too old for --replace and stdin): shadow-utils
	# (RHEL, SUSE, Debian's passwd package), then Debian's adduser.
	if command -v groupadd >/dev/null 2>&1; then
		groupadd -r ${root:+--prefix "$root"} "$group" && return 0
	fi
	if [ -z "$root" ] && command -v addgroup >/dev/null 2>&1; then
		addgroup --system "$group" && return 0
	fi
	echo "adeagent: could not create group $group; the API socket stays root-only" >&2
	return 0
}

case "$1" in
install)
	# From the config-files state (removed, not purged) dpkg passes the old version, and
	# postinst's "configure old-version" then looks like an upgrade. Leave a note so
	# that postinst enables and starts the unit as on a first install (prerm disabled it).
	if [ -n "${2:-}" ]; then
		if [ ! -d "$root/var/lib/adeagent" ]; then
			mkdir -p "$root/var/lib"
			mkdir -m 0700 "$root/var/lib/adeagent"
		fi
		: >"$reinstall_marker"
	fi
	create_group
	;;
upgrade | [0-9]*)
	create_group
	;;
abort-upgrade) ;;
*)
	echo "adeagent preinstall: unknown argument '$1'" >&2
	;;
esac
exit 0
