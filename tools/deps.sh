#!/bin/sh
# Installs what building and testing bgrun needs, when it is missing.
# As root it runs apt-get; otherwise it prints the command to run.
set -eu

DEBS="build-essential pkg-config lua5.4 liblua5.4-dev libjansson-dev
libcurl4-openssl-dev libpq-dev libarchive-dev libexpat1-dev libyaml-dev libssl-dev zlib1g-dev
libcmocka-dev lua-busted postgresql postgresql-client curl time
ca-certificates openssl python3 jq mmdebstrap shellcheck"
# shell completion (zsh, bash-completion), the man page checks (mandoc,
# groff, man) and a pseudo-terminal for the progress and colour specs
# (script, in bsdutils)
DEBS="$DEBS zsh bash-completion mandoc groff-base man-db bsdutils"
# the sandbox's network namespace (tests/sandbox/in-netns: unshare, ip)
DEBS="$DEBS util-linux iproute2"
# the libFuzzer harnesses (tests/fuzz): clang and compiler-rt, whose
# libclang-rt-dev ships libclang_rt.fuzzer
DEBS="$DEBS clang libclang-rt-dev"
# the secrets sweep reads the members of the archives the tests wrote (bsdtar)
DEBS="$DEBS libarchive-tools"

missing=""
for p in $DEBS; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" -eq 0 ]; then
		echo "deps: installing:$missing"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		# shellcheck disable=SC2086
		apt-get install -y -qq --no-install-recommends $missing >/dev/null
	else
		echo "deps: missing Debian packages:$missing" >&2
		echo "deps: run: sudo apt-get install -y$missing" >&2
		exit 1
	fi
fi

# Tools from outside Debian's archive that the tests drive as the real thing.
command -v go >/dev/null 2>&1 || [ -x /usr/local/go/bin/go ] || {
	echo "deps: Go (1.26 or newer) is required to build the test sandbox" >&2
	exit 1
}
command -v kubectl >/dev/null 2>&1 || {
	echo "deps: kubectl (1.32) is required by the sandbox's fidelity tests" >&2
	exit 1
}
command -v aws >/dev/null 2>&1 || {
	if command -v pip3 >/dev/null 2>&1 || command -v pip >/dev/null 2>&1; then
		echo "deps: installing awscli from PyPI"
		"$(command -v pip3 || command -v pip)" install -q awscli
	else
		echo "deps: awscli is required by the S3 store tests (pip install awscli)" >&2
		exit 1
	fi
}
exit 0
