#!/usr/bin/env bash
# Benchmark: getting back to the previous release (issue 14). bgrun's
# playbooks/switch-back.lua against the shell equivalent, kubectl patch of
# the Service selector + kubectl rollout status, in the same run, in both
# cases the old scripts promised "under 30 s" for:
#   warm:        the previous colour still runs (one selector patch);
#   scaled down: the previous colour was scaled to 0 (scale up, wait for
#                readiness, then switch).
# bgrun's time is the whole process (lock taken and released, endpoints
# confirmed to list only the previous colour's pods) and its reported
# switch_back_seconds; the shell's is the wall time of its kubectl calls,
# which confirm nothing about the endpoints.
#
#   bench/switch-back.sh [ROUNDS]   (default 3)
#
# Uses the sandbox named by KUBECONFIG/SANDBOX_ADMIN_URL (eval "$(tests/sandbox/sandbox up DIR)"),
# or brings up the shared one in ${SANDBOX_DIR:-/tmp/bgrun-dev}.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-3}
TMP=$(mktemp -d /tmp/bgrun-bench-switchback.XXXXXX)
NS=bench-switchback-$$
DB=bench_switchback_$$
APP=physioflow-api

[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "bench: kubectl is missing" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench: jq is missing" >&2; exit 1; }
command -v psql >/dev/null || { echo "bench: psql is missing" >&2; exit 1; }

if [ -z "${KUBECONFIG:-}" ] || [ -z "${SANDBOX_ADMIN_URL:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "${SANDBOX_DIR:-/tmp/bgrun-dev}")"
fi

cleanup() {
	kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
	psql -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }
k() { kubectl -n "$NS" "$@"; }

# the playbooks next to an environments.lua naming the bench's namespace
cp "$ROOT/playbooks/deploy.lua" "$ROOT/playbooks/switch-back.lua" "$TMP/"
cat >"$TMP/environments.lua" <<EOF2
return { ["local"] = { namespace = "$NS", app = "$APP", replicas = 2, database = {},
                       rollout_timeout = 120, monitor = { window = 2, interval = 1 },
                       migrations = "$ROOT/examples/physioflow/migrations" } }
EOF2
export BGRUN_PATH="$TMP:$ROOT/playbooks" PGDATABASE=$DB BGRUN_JOURNAL_DIR="$TMP/journal"

echo "bench/switch-back: installing PhysioFlow v1.0.0 on blue in $NS, then deploying v2.0.0 to green"
psql -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
kubectl create namespace "$NS" >/dev/null
(cd "$ROOT" && "$BGRUN" -q examples/physioflow/setup.lua env=local tag=v1.0.0 to=010 >/dev/null)
(cd "$ROOT" && "$BGRUN" -q "$TMP/deploy.lua" env=local tag=v2.0.0 skip-tests=true >/dev/null)

wait_gone() {   # the pods of colour $1 have all gone
	for _ in $(seq 300); do
		[ -z "$(k get pods -l "app=$APP,version=$1" -o name)" ] && return 0
		sleep 0.2
	done
	echo "bench: pods of $1 never went away" >&2
	exit 1
}

bgrun_switch() {   # prints "wall reported scaled_up"
	local t0 t1 out
	t0=$(now)
	out=$(cd "$ROOT" && "$BGRUN" -q --log-format json "$TMP/switch-back.lua" env=local)
	t1=$(now)
	printf '%s %s %s\n' "$(elapsed "$t0" "$t1")" "$(jq -r .switch_back_seconds <<<"$out")" \
		"$(jq -r .scaled_up <<<"$out")"
}

shell_warm() {   # $1: colour to switch to; prints the wall time
	local t0 t1
	t0=$(now)
	k rollout status "deployment/$APP-$1" --timeout=120s >/dev/null
	k patch service "$APP" -p "{\"spec\":{\"selector\":{\"version\":\"$1\"}}}" >/dev/null
	t1=$(now)
	elapsed "$t0" "$t1"
}

shell_cold() {   # $1: colour to scale up and switch to; prints the wall time
	local t0 t1
	t0=$(now)
	k scale "deployment/$APP-$1" --replicas=2 >/dev/null
	k rollout status "deployment/$APP-$1" --timeout=120s >/dev/null
	k patch service "$APP" -p "{\"spec\":{\"selector\":{\"version\":\"$1\"}}}" >/dev/null
	t1=$(now)
	elapsed "$t0" "$t1"
}

wait_gone blue   # the retired colour's pods have gone: the first round starts cold too
: >"$TMP/rows"
for r in $(seq "$ROUNDS"); do
	# green serves v2.0.0, blue (v1.0.0) is scaled to 0, the release recorded
	read -r cold_wall cold_rep cold_up < <(bgrun_switch)       # blue scaled up, then switched to
	[ "$cold_up" = true ] || { echo "bench: blue was not scaled down" >&2; exit 1; }
	read -r warm_wall warm_rep warm_up < <(bgrun_switch)       # back to green, warm
	[ "$warm_up" = false ] || { echo "bench: green was not warm" >&2; exit 1; }
	sh_warm=$(shell_warm blue)
	shell_warm green >/dev/null
	k scale "deployment/$APP-blue" --replicas=0 >/dev/null
	wait_gone blue
	sh_cold=$(shell_cold blue)
	k patch service "$APP" -p '{"spec":{"selector":{"version":"green"}}}' >/dev/null
	k scale "deployment/$APP-blue" --replicas=0 >/dev/null
	wait_gone blue
	printf 'round %d: bgrun warm %ss (reported %.3fs), shell warm %ss; bgrun scaled-down %ss (reported %.3fs), shell scaled-down %ss\n' \
		"$r" "$warm_wall" "$warm_rep" "$sh_warm" "$cold_wall" "$cold_rep" "$sh_cold"
	echo "$warm_wall $warm_rep $sh_warm $cold_wall $cold_rep $sh_cold" >>"$TMP/rows"
done

median() {   # column $1 of the rows
	cut -d' ' -f"$1" "$TMP/rows" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ww=$(median 1); wr=$(median 2); sw=$(median 3); cw=$(median 4); cr=$(median 5); sc=$(median 6)
echo
echo "bench/switch-back: medians of $ROUNDS round(s) (the old scripts promised under 30 s)"
printf '  %-34s %8ss  (switch_back_seconds %.3fs)\n' "bgrun warm" "$ww" "$wr"
printf '  %-34s %8ss\n' "kubectl rollout status + patch" "$sw"
printf '  %-34s %8.2fx the time\n' "ratio warm (bgrun / shell)" "$(awk -v a="$ww" -v b="$sw" 'BEGIN { print a / b }')"
printf '  %-34s %8ss  (switch_back_seconds %.3fs)\n' "bgrun scaled down" "$cw" "$cr"
printf '  %-34s %8ss\n' "kubectl scale + rollout + patch" "$sc"
printf '  %-34s %8.2fx the time\n' "ratio scaled down (bgrun / shell)" "$(awk -v a="$cw" -v b="$sc" 'BEGIN { print a / b }')"
