#!/usr/bin/env bash
# Startup cost: median wall time of bgrun running an empty playbook, against
# the bare Lua interpreter and against `kubectl version --client` (what the
# shell scripts paid on every kubectl call). Prints ratios.
set -eu
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
RUNS=${RUNS:-30}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo 'return playbook { run = function() end }' >"$tmp/empty.lua"

# median_ms CMD... : median of RUNS wall times, in milliseconds
median_ms() {
	local i t0 t1
	for ((i = 0; i < RUNS; i++)); do
		t0=$(date +%s%N)
		"$@" >/dev/null 2>&1
		t1=$(date +%s%N)
		echo $(((t1 - t0) / 1000))
	done | sort -n | awk '{a[NR]=$1} END {m = (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2; printf "%.2f\n", m / 1000}'
}

bg=$(median_ms "$BGRUN" -q "$tmp/empty.lua")
lua=$(median_ms lua5.4 -e '')
echo "bgrun empty playbook:      ${bg} ms (median of $RUNS)"
echo "lua5.4 -e '':              ${lua} ms"
awk -v a="$bg" -v b="$lua" 'BEGIN { printf "ratio bgrun/lua5.4:        %.2fx (target: within 2x)\n", a / b }'
if command -v kubectl >/dev/null 2>&1; then
	kc=$(median_ms kubectl version --client)
	echo "kubectl version --client:  ${kc} ms"
	awk -v a="$bg" -v b="$kc" 'BEGIN { printf "ratio bgrun/kubectl:       %.3fx\n", a / b }'
fi
