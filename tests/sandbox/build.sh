#!/bin/sh
# Build the sandbox CLI (incremental through Go's build cache) and, only
# when they are missing, SeaweedFS's weed binary and actionlint into the
# bgrun cache.
set -eu

WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6

here=$(cd "$(dirname "$0")" && pwd)
cache=${BGRUN_CACHE:-$HOME/.cache/bgrun}
weed=$cache/bin/weed

(cd "$here" && go build -o sandbox .)
# actionlint for the CI example's lint, once into the cache too.
"$here/../../tools/actionlint.sh" >/dev/null

[ -x "$weed" ] && exit 0

mkdir -p "$cache/bin"
# One weed build at a time: a second build.sh waits, then finds the binary.
exec 9>"$cache/weed.lock"
flock 9
[ -x "$weed" ] && exit 0

echo "build.sh: building weed ($WEED_MODULE@$WEED_VERSION); this takes several minutes once" >&2
# `go install` refuses modules with replace directives, so build from the
# module's source. Outside any module, so our go.mod is left alone.
src=$(cd "$cache" && GOFLAGS=-mod=mod go mod download -json "$WEED_MODULE@$WEED_VERSION" |
	sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
if [ -z "$src" ] || [ ! -d "$src" ]; then
	echo "build.sh: go mod download $WEED_MODULE@$WEED_VERSION gave no source directory" >&2
	exit 1
fi
tmp_out=$weed.tmp.$$
trap 'rm -f "$tmp_out"; [ -n "${copy:-}" ] && rm -rf "$copy"' EXIT
if ! (cd "$src" && GOFLAGS=-mod=mod go build -o "$tmp_out" ./weed); then
	# The module cache is read-only; when the build needs to write next
	# to the source (go.sum), build a writable copy instead.
	echo "build.sh: in-place build failed; building from a writable copy" >&2
	copy=$(mktemp -d)
	cp -r "$src/." "$copy/"
	chmod -R u+w "$copy"
	(cd "$copy" && GOFLAGS=-mod=mod go build -o "$tmp_out" ./weed)
fi
mv "$tmp_out" "$weed"
echo "build.sh: $weed" >&2
