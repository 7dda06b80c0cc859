#!/bin/sh
# build-rootfs.sh [--build] DEST: the bgrun image's root filesystem, built from Debian
# packages alone (no container engine, no registry), in the folder DEST.
#
# The same filesystem as the Dockerfile's runtime stage, by construction:
# the same package list (deploy/image/packages.txt), the same user and
# folders (deploy/image/setup.sh) and the same files at the same paths
# (deploy/image/stage.sh). The Debian part is built once with mmdebstrap
# (variant minbase, docs and locales left out as in bookworm-slim) and
# cached as a tarball in ${BGRUN_CACHE:-$HOME/.cache/bgrun}/rootfs, keyed by
# the hash of the package list, setup.sh and the mmdebstrap options; it is
# rebuilt only when that tarball is missing (others unused for 30 days are
# removed). bgrun and the playbooks are
# copied in fresh every time (run `make` first).
#
# The Debian mirror is the machine's own: the apt sources files naming
# bookworm, else deb.debian.org; BGRUN_ROOTFS_MIRROR overrides it (a URL or
# a sources.list/deb822 file, as mmdebstrap takes it).
#
# Needs root (mmdebstrap's root mode, device nodes in /dev). Use the
# result with chroot, systemd-nspawn, or `tar -C DEST -c . | docker import -`.
set -eu

# With --build, DEST is the Dockerfile's build stage instead: the packages
# of deploy/image/build-packages.txt, no user, no bgrun (the tests compile
# bgrun in it, as `docker build` would).
# With --cache-only, only the cached Debian part is made (no DEST): make
# test does this before the tests run where there is no network.
build_stage=false
cache_only=false
while [ $# -gt 0 ]; do
	case $1 in
	--build) build_stage=true ;;
	--cache-only) cache_only=true ;;
	*) break ;;
	esac
	shift
done
if $cache_only; then
	[ $# -eq 0 ] || { echo "usage: build-rootfs.sh [--build] --cache-only" >&2; exit 2; }
	set -- "(none)"
fi
[ $# -eq 1 ] || { echo "usage: build-rootfs.sh [--build] [--cache-only] DEST" >&2; exit 2; }
dest=$1
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
suite=bookworm
list=$here/packages.txt
setup=$here/setup.sh
if $build_stage; then
	list=$here/build-packages.txt
	setup=/dev/null
fi

if [ "$(id -u)" -ne 0 ]; then
	echo "build-rootfs.sh: needs root (mmdebstrap's root mode and device nodes)" >&2
	exit 2
fi
if ! $build_stage && ! $cache_only && [ ! -x "$repo/bgrun" ]; then
	echo "build-rootfs.sh: $repo/bgrun is missing: run make first" >&2
	exit 2
fi
case $dest in
/ | "") echo "build-rootfs.sh: refusing DEST '$dest'" >&2; exit 2 ;;
esac
# Only ever replace an empty folder or one this script built.
if ! $cache_only && [ -e "$dest" ] && [ -n "$(ls -A "$dest" 2>/dev/null)" ] && [ ! -d "$dest/opt/bgrun" ] && [ ! -d "$dest/usr/include/lua5.4" ]; then
	echo "build-rootfs.sh: $dest is not empty and not a bgrun root filesystem; not replacing it" >&2
	exit 2
fi

if ! command -v mmdebstrap >/dev/null 2>&1; then
	echo "build-rootfs.sh: installing mmdebstrap" >&2
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null ||
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap >/dev/null; }
fi

# The package list as mmdebstrap's --include (comments and blanks dropped).
packages=$(sed 's/#.*//' "$list" | tr -s ' \t\n' '\n' | grep -v '^$' | paste -sd, -)
[ -n "$packages" ] || { echo "build-rootfs.sh: $list lists no package" >&2; exit 2; }

# bookworm-slim's dpkg filters: no manuals, docs (but copyrights) or locales.
options="--variant=minbase --mode=root --format=tar
--dpkgopt=path-exclude=/usr/share/man/*
--dpkgopt=path-exclude=/usr/share/doc/*
--dpkgopt=path-include=/usr/share/doc/*/copyright
--dpkgopt=path-exclude=/usr/share/locale/*
--dpkgopt=path-exclude=/usr/share/info/*"

key=$( (echo "$suite $options $packages"; cat "$setup") | sha256sum | cut -c1-16)
cache=${BGRUN_CACHE:-$HOME/.cache/bgrun}/rootfs
base=$cache/$suite-$key.tar

# The machine's own Debian mirror for this suite.
mirrors=""
if [ -n "${BGRUN_ROOTFS_MIRROR:-}" ]; then
	mirrors=$BGRUN_ROOTFS_MIRROR
else
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
		[ -f "$f" ] || continue
		grep -Eq "^[^#]*([[:space:]]|^Suites:.*)$suite([[:space:]]|$)" "$f" || continue
		mirrors="$mirrors $f"
	done
	[ -n "$mirrors" ] || mirrors=http://deb.debian.org/debian
fi

mkdir -p "$cache"
if [ ! -s "$base" ]; then
	# One build at a time: a second run waits, then finds the tarball.
	exec 9>"$cache/.lock"
	flock 9
	if [ ! -s "$base" ]; then
		echo "build-rootfs.sh: building $base with mmdebstrap (about 1.5 minutes, once)" >&2
		tmp=$base.tmp.$$
		trap 'rm -f "$tmp"' EXIT
		# shellcheck disable=SC2086 # options and mirrors are word lists
		mmdebstrap --quiet $options --include="$packages" \
			--customize-hook="chroot \"\$1\" sh -s < '$setup'" \
			"$suite" "$tmp" $mirrors
		mv "$tmp" "$base"
		trap - EXIT
	fi
	exec 9>&-
fi
# Tarballs of other package lists unused for 30 days go.
touch "$base"
find "$cache" -maxdepth 1 -name "$suite-*.tar" -mtime +30 -delete 2>/dev/null || true
$cache_only && exit 0

rm -rf "$dest"
mkdir -p "$dest"
tar -xf "$base" -C "$dest" --numeric-owner
$build_stage || "$here/stage.sh" "$repo" "$dest"
echo "build-rootfs.sh: $dest (Debian part: $base)" >&2
