#!/bin/sh
# Build the sandbox CLI (incremental through Go's build cache) and, only
# when they are missing, Prometheus', SeaweedFS's and actionlint's binaries
# into the bgrun cache.
set -eu

WEED_MODULE=github.com/seaweedfs/seaweedfs
WEED_VERSION=v0.0.0-20261109003541-7506e5f91cd6
PROMETHEUS_MODULE=github.com/prometheus/prometheus
PROMETHEUS_VERSION=v0.316.0 # Prometheus 3.16.0

here=$(cd "$(dirname "$0")" && pwd)
cache=${BGRUN_CACHE:-$HOME/.cache/bgrun}
weed=$cache/bin/weed
prometheus=$cache/bin/prometheus

(cd "$here" && go build -o sandbox .)
# actionlint for the CI example's lint, once into the cache too.
"$here/../../tools/actionlint.sh" >/dev/null

# build_once BIN LOCK WHAT BUILDER: when BIN is missing, builds it with
# `BUILDER TMP` into a temporary file, then moves it into place. One build
# of a binary at a time (flock on LOCK): a second build.sh waits, then
# finds the binary.
build_once() {
	bin=$1 lock=$2 what=$3 builder=$4
	[ -x "$bin" ] && return 0
	mkdir -p "$cache/bin"
	exec 9>"$lock"
	flock 9
	if [ -x "$bin" ]; then
		exec 9>&-
		return 0
	fi
	echo "build.sh: building $what once" >&2
	t0=$(date +%s)
	tmp=$bin.tmp.$$
	if ! "$builder" "$tmp"; then
		rm -f "$tmp"
		echo "build.sh: building $bin failed" >&2
		exit 1
	fi
	mv "$tmp" "$bin"
	echo "build.sh: $bin ($(($(date +%s) - t0)) s)" >&2
	exec 9>&-
}

# module_source MODULE VERSION: the module's source directory, downloaded
# into Go's module cache (outside any module or workspace, so our go.mod is
# left alone).
module_source() {
	dir=$(cd "$cache" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$1@$2" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	if [ -z "$dir" ] || [ ! -d "$dir" ]; then
		echo "build.sh: go mod download $1@$2 gave no source directory" >&2
		exit 1
	fi
	echo "$dir"
}

# Prometheus: only the file and HTTP service discoveries (remove_all_sd),
# which keeps the cloud SDKs out of the build; no web UI assets (the API
# is all the sandbox needs). Its module ships a go.work: build outside it.
prometheus_build() {
	psrc=$(module_source "$PROMETHEUS_MODULE" "$PROMETHEUS_VERSION") || exit 1
	(cd "$psrc" && GOWORK=off GOFLAGS=-mod=mod go build -trimpath -tags remove_all_sd -ldflags "-s -w" \
		-o "$1" ./cmd/prometheus)
}
build_once "$prometheus" "$cache/prometheus.lock" \
	"prometheus ($PROMETHEUS_MODULE@$PROMETHEUS_VERSION); this takes a few minutes" prometheus_build

# The control plane: etcd, kube-apiserver and kube-controller-manager in
# one binary (tests/sandbox/kube), keyed by the Kubernetes release its
# go.mod requires, with the version stamped as the release builds do
# (clients read it from /version).
version=$(sed -n 's/^\(require\)\{0,1\}[[:space:]]*k8s\.io\/kubernetes \(v[0-9.]*\)$/\2/p' "$here/kube/go.mod" | head -n 1)
[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes version in $here/kube/go.mod" >&2; exit 1; }
kube_build() {
	minor=${version#v1.}
	minor=${minor%%.*}
	x=k8s.io/component-base/version
	(cd "$here/kube" && GOFLAGS=-mod=mod go build -trimpath -o "$1" -ldflags "-s -w \
		-X $x.gitVersion=$version -X $x.gitMajor=1 -X $x.gitMinor=$minor \
		-X $x.gitCommit=0000000000000000000000000000000000000000 -X $x.gitTreeState=clean \
		-X $x.buildDate=1970-01-01T00:00:00Z" .)
}
build_once "$cache/bin/kube-$version" "$cache/kube.lock" \
	"the control plane (k8s.io/kubernetes $version, etcd); about 10-20 minutes" kube_build

# SeaweedFS: `go install` refuses modules with replace directives, so
# build from the module's source.
weed_build() {
	src=$(module_source "$WEED_MODULE" "$WEED_VERSION") || exit 1
	(cd "$src" && GOFLAGS=-mod=mod go build -o "$1" ./weed) && return 0
	# The module cache is read-only; when the build needs to write next
	# to the source (go.sum), build a writable copy instead.
	echo "build.sh: in-place build failed; building from a writable copy" >&2
	copy=$(mktemp -d)
	cp -r "$src/." "$copy/" && chmod -R u+w "$copy" &&
		(cd "$copy" && GOFLAGS=-mod=mod go build -o "$1" ./weed)
	rc=$?
	rm -rf "$copy"
	return $rc
}
build_once "$weed" "$cache/weed.lock" \
	"weed ($WEED_MODULE@$WEED_VERSION); this takes several minutes" weed_build
