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

# Prometheus: only the file and HTTP service discoveries (remove_all_sd),
# which keeps the cloud SDKs out of the build; no web UI assets (the API
# is all the sandbox needs). Its module ships a go.work: build outside it.
build_prometheus() {
	[ -x "$prometheus" ] && return 0
	mkdir -p "$cache/bin"
	exec 8>"$cache/prometheus.lock"
	flock 8
	if [ -x "$prometheus" ]; then
		exec 8>&-
		return 0
	fi
	echo "build.sh: building prometheus ($PROMETHEUS_MODULE@$PROMETHEUS_VERSION); this takes a few minutes once" >&2
	t0=$(date +%s)
	psrc=$(cd "$cache" && GOWORK=off GOFLAGS=-mod=mod go mod download -json "$PROMETHEUS_MODULE@$PROMETHEUS_VERSION" |
		sed -n 's/^[[:space:]]*"Dir": "\(.*\)",\{0,1\}$/\1/p')
	if [ -z "$psrc" ] || [ ! -d "$psrc" ]; then
		echo "build.sh: go mod download $PROMETHEUS_MODULE@$PROMETHEUS_VERSION gave no source directory" >&2
		exit 1
	fi
	ptmp=$prometheus.tmp.$$
	if ! (cd "$psrc" && GOWORK=off GOFLAGS=-mod=mod go build -trimpath -tags remove_all_sd -ldflags "-s -w" \
		-o "$ptmp" ./cmd/prometheus); then
		rm -f "$ptmp"
		echo "build.sh: building prometheus failed" >&2
		exit 1
	fi
	mv "$ptmp" "$prometheus"
	echo "build.sh: $prometheus ($(($(date +%s) - t0)) s)" >&2
	exec 8>&-
}
build_prometheus

# The control plane: etcd, kube-apiserver and kube-controller-manager in
# one binary (tests/sandbox/kube), keyed by the Kubernetes release its
# go.mod requires, with the version stamped as the release builds do
# (clients read it from /version).
build_kube() {
	version=$(sed -n 's/^\(require\)\{0,1\}[[:space:]]*k8s\.io\/kubernetes \(v[0-9.]*\)$/\2/p' "$here/kube/go.mod" | head -n 1)
	[ -n "$version" ] || { echo "build.sh: no k8s.io/kubernetes version in $here/kube/go.mod" >&2; exit 1; }
	kube=$cache/bin/kube-$version
	[ -x "$kube" ] && return 0
	mkdir -p "$cache/bin"
	exec 7>"$cache/kube.lock"
	flock 7
	if [ -x "$kube" ]; then
		exec 7>&-
		return 0
	fi
	echo "build.sh: building the control plane (k8s.io/kubernetes $version, etcd); about 10-20 minutes once" >&2
	t0=$(date +%s)
	minor=${version#v1.}
	minor=${minor%%.*}
	x=k8s.io/component-base/version
	ktmp=$kube.tmp.$$
	if ! (cd "$here/kube" && GOFLAGS=-mod=mod go build -trimpath -o "$ktmp" -ldflags "-s -w \
		-X $x.gitVersion=$version -X $x.gitMajor=1 -X $x.gitMinor=$minor \
		-X $x.gitCommit=0000000000000000000000000000000000000000 -X $x.gitTreeState=clean \
		-X $x.buildDate=1970-01-01T00:00:00Z" .); then
		rm -f "$ktmp"
		echo "build.sh: building the control plane failed" >&2
		exit 1
	fi
	mv "$ktmp" "$kube"
	echo "build.sh: $kube ($(($(date +%s) - t0)) s)" >&2
	exec 7>&-
}
build_kube

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
