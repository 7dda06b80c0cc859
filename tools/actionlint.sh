#!/bin/sh
# Prints the path of actionlint (GitHub Actions workflow linter, the Go
# module github.com/rhysd/actionlint), building it into the bgrun cache
# (${BGRUN_CACHE:-$HOME/.cache/bgrun}/bin) from the Go module proxy only when
# that version is missing. tests/sandbox/build.sh calls it; the CI examples'
# test runs it on examples/ci/github/*.yml.
set -eu

MODULE=github.com/rhysd/actionlint
VERSION=v1.7.12

export PATH="$PATH:/usr/local/go/bin"
cache=${BGRUN_CACHE:-$HOME/.cache/bgrun}
bin=$cache/bin/actionlint-$VERSION

if [ ! -x "$bin" ]; then
	mkdir -p "$cache/bin"
	# One build at a time: a second caller waits, then finds the binary.
	exec 9>"$cache/actionlint.lock"
	flock 9
	if [ ! -x "$bin" ]; then
		echo "actionlint.sh: building $MODULE@$VERSION" >&2
		tmp=$(mktemp -d "$cache/actionlint.XXXXXX")
		trap 'rm -rf "$tmp"' EXIT
		# Outside any module, so no go.mod of ours is touched.
		(cd "$tmp" && GOBIN="$tmp" GOFLAGS=-mod=mod go install "$MODULE/cmd/actionlint@$VERSION") >&2
		mv "$tmp/actionlint" "$bin"
	fi
fi
echo "$bin"
