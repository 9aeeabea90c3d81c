# Helpers that lay out fixture host roots (sysfs block devices, mountinfo, udev data) for
# the mounts, lvm and fs probe tests. Sourced by the gen.sh scripts beside the fixtures;
# run those to regenerate a fixture tree (the trees themselves are committed).
set -eu

_link() { # root name maj:min path-under-sys
	local r=$1 n=$2 dev=$3 p=$4
	mkdir -p "$r/sys/class/block" "$r/sys/dev/block" "$r/sys/block"
	ln -sfn "../../$p" "$r/sys/class/block/$n"
	ln -sfn "../../$p" "$r/sys/dev/block/$dev"
	case $n in *[0-9]p[0-9]*|sd*[0-9]|vd*[0-9]|xvd*[0-9]) ;; *) ln -sfn "../$p" "$r/sys/block/$n" ;; esac
}

# disk ROOT NAME MAJ:MIN [SECTORS] [PTTYPE]
disk() {
	local r=$1 n=$2 dev=$3 size=${4:-62914560} pt=${5:-gpt}
	local d="$r/sys/devices/block/$n"
	mkdir -p "$d/holders" "$d/slaves"
	echo "$dev" >"$d/dev"
	echo "$size" >"$d/size"
	_link "$r" "$n" "$dev" "devices/block/$n"
	if [ "$pt" != none ]; then
		mkdir -p "$r/run/udev/data"
		printf 'E:ID_PART_TABLE_TYPE=%s\n' "$pt" >"$r/run/udev/data/b$dev"
	fi
}

# part ROOT DISK NAME NUMBER MAJ:MIN [SECTORS]
part() {
	local r=$1 k=$2 n=$3 num=$4 dev=$5 size=${6:-2097152}
	local d="$r/sys/devices/block/$k/$n"
	mkdir -p "$d/holders"
	echo "$dev" >"$d/dev"
	echo "$num" >"$d/partition"
	echo "$size" >"$d/size"
	_link "$r" "$n" "$dev" "devices/block/$k/$n"
}

# dm ROOT NAME MAJ:MIN DMNAME DMUUID SLAVE...   (slaves given as sysfs paths under devices/)
dm() {
	local r=$1 n=$2 dev=$3 name=$4 uuid=$5
	shift 5
	local d="$r/sys/devices/virtual/block/$n"
	mkdir -p "$d/dm" "$d/slaves" "$d/holders"
	echo "$dev" >"$d/dev"
	echo "$name" >"$d/dm/name"
	echo "$uuid" >"$d/dm/uuid"
	echo 41943040 >"$d/size"
	_link "$r" "$n" "$dev" "devices/virtual/block/$n"
	local s
	for s in "$@"; do
		local sn=${s##*/}
		ln -sfn "../../../../$s" "$d/slaves/$sn"
		mkdir -p "$r/sys/devices/$s/holders"
		ln -sfn "$(realpath -m --relative-to="$r/sys/devices/$s/holders" "$d")" "$r/sys/devices/$s/holders/$n"
	done
}

# mountinfo ROOT < lines ("ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTS")
mountinfo() {
	mkdir -p "$1/proc/self"
	cat >"$1/proc/self/mountinfo"
}

# pseudo: the usual pseudo filesystems every host has, as mountinfo lines (parent 1).
pseudo() {
	cat <<'PSEUDO'
22 1 0:21 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
23 1 0:22 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw
24 1 0:5 / /dev rw,nosuid,relatime shared:2 - devtmpfs udev rw,size=4000000k
25 1 0:23 / /run rw,nosuid,nodev,noexec,relatime shared:5 - tmpfs tmpfs rw,size=800000k,mode=755
26 22 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw
PSEUDO
}
