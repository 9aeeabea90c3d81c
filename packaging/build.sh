#!/usr/bin/env bash
# Builds adeagent's .deb and .rpm.
#
#   packaging/build.sh VERSION [OUTDIR]
#
# VERSION   1.2.3 or 1.2.3-PRERELEASE (letters, digits and dots, e.g. 1.2.3-rc.1); no
#           leading "v". `adeagent version` of the packaged binary prints it as given;
#           the package version is the same, except that a pre-release is written with
#           "~" (1.2.3~rc.1) so that it sorts before 1.2.3 in dpkg and rpm.
# OUTDIR    where the packages go (default: dist/ in the repository); created if missing.
#
# Environment: GOARCH (default amd64; arm64 also works) picks the architecture.
# SOURCE_DATE_EPOCH (default: the time of the HEAD commit) fixes the timestamps in the
# packages, so that the same commit and VERSION give the same packages.
#
# Output contract (e2e/vm and the tests parse it): the LAST two lines on stdout are the
# absolute paths of the two packages, the .deb first, then the .rpm:
#   OUTDIR/adeagent_VERSION_ARCH.deb          e.g. adeagent_1.2.3_amd64.deb
#   OUTDIR/adeagent-VERSION-1.RPMARCH.rpm     e.g. adeagent-1.2.3-1.x86_64.rpm
# (VERSION with "~" for a pre-release.) Everything else goes to stderr.
# Exit status: 0 built, 2 usage error (bad VERSION), 1 build failure.
set -euo pipefail

usage() {
	echo "usage: packaging/build.sh VERSION [OUTDIR]   (VERSION like 1.2.3 or 1.2.3-rc.1)" >&2
	exit 2
}

[ $# -ge 1 ] && [ $# -le 2 ] || usage
version=$1
semver='^(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)(-[0-9A-Za-z]+(\.[0-9A-Za-z]+)*)?$'
if ! [[ $version =~ $semver ]]; then
	echo "packaging/build.sh: VERSION '$version' is not MAJOR.MINOR.PATCH[-PRERELEASE] (e.g. 1.2.3 or 1.2.3-rc.1, no leading v)" >&2
	exit 2
fi

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
outdir=${2:-$repo/dist}
mkdir -p "$outdir"
outdir=$(cd "$outdir" && pwd)

arch=${GOARCH:-amd64}
case $arch in
amd64) rpmarch=x86_64 ;;
arm64) rpmarch=aarch64 ;;
*)
	echo "packaging/build.sh: GOARCH '$arch' is not supported (amd64, arm64)" >&2
	exit 2
	;;
esac

cd "$repo"
commit=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
	SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || date +%s)
fi
export SOURCE_DATE_EPOCH

build=$(mktemp -d)
trap 'rm -rf "$build"' EXIT

pkg=github.com/adeagent/adeagent/agent/version
ldflags="-s -w -X $pkg.Version=$version -X $pkg.Commit=$commit"
start=$(date +%s)
for cmd in adeagent adeagentctl; do
	echo "building $cmd $version ($commit, $arch)" >&2
	CGO_ENABLED=0 GOOS=linux GOARCH=$arch go build -trimpath -ldflags "$ldflags" \
		-o "$build/$cmd" "./cmd/$cmd" >&2
done

# nfpm writes a pre-release as 1.2.3~rc.1 in both formats.
pkgversion=${version/-/\~}
deb=$outdir/adeagent_${pkgversion}_${arch}.deb
rpm=$outdir/adeagent-${pkgversion}-1.${rpmarch}.rpm
export ADEAGENT_VERSION=$version ADEAGENT_ARCH=$arch ADEAGENT_BUILD=$build
for p in deb rpm; do
	target=$deb
	[ "$p" = rpm ] && target=$rpm
	rm -f "$target"
	go tool nfpm package --config packaging/nfpm.yaml --packager "$p" --target "$target" >&2
	[ -s "$target" ] || {
		echo "packaging/build.sh: nfpm did not write $target" >&2
		exit 1
	}
done
echo "built in $(($(date +%s) - start)) s: $(du -h "$deb" | cut -f1) deb, $(du -h "$rpm" | cut -f1) rpm" >&2

echo "$deb"
echo "$rpm"
