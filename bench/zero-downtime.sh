#!/usr/bin/env bash
# Benchmark: requests through the Service while bgrun changes what serves
# them (issue 16, "Load"). A bounded request loop (bench/loadclient: one
# new connection per request, WORKERS at a time, to the Service's address
# on loopback) runs across each scenario, on PhysioFlow in a namespace of
# its own:
#   deploy         a successful blue-green deploy (v2.0.0);
#   smoke-fails    a deploy whose smoke tests fail (exit 1, never switched);
#   crash          a deploy whose pods crash CRASH_S s after they start,
#                  after the switch: the monitor switches traffic back;
#   switch-back    playbooks/switch-back.lua to the previous release;
#   canary         playbooks/canary.lua, steps 25,50,100 over 4 replicas;
#   canary-abort   a canary whose new pods log errors: the analysis fails
#                  at 25 %, the old colour is restored alone.
# Each loop keeps going until its scenario has ended and it has sent at
# least MIN requests (default 5,000). Per scenario it prints the requests,
# the failed ones (and why), p50/p99 latency, and checks the target: 0
# failed requests wherever the colour serving before stays healthy (all
# but crash, where the serving pods themselves die until the monitor
# switches back). Exit 1 when bgrun ends otherwise than expected or a
# target is missed.
#
#   bench/zero-downtime.sh     (KEEP=1 keeps the runs' logs in a temporary directory)
#   (PRESTOP=S: the pods' preStop sleep, 2 s by default; 0 shows the EndpointSlice gap)
#
# Uses the sandbox the variables name (eval "$(tests/sandbox/sandbox up DIR)"),
# or brings up the shared sandbox in ${SANDBOX_DIR:-/tmp/bgrun-dev}.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
MIN=${MIN:-5000}
WORKERS=${WORKERS:-2}
CRASH_S=${CRASH_S:-9}
REPLICAS=4
PRESTOP=${PRESTOP:-2}
TMP=$(mktemp -d -t bgrun-bench-zd.XXXXXX)
NS=bench-zd-$$
DB=bench_zd_$$
APP=physioflow-api
LOAD=

[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "bench: kubectl is missing" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench: jq is missing" >&2; exit 1; }
command -v psql >/dev/null || { echo "bench: psql is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 1; }
command -v go >/dev/null || [ -x /usr/local/go/bin/go ] || { echo "bench: go is missing" >&2; exit 1; }

if [ -z "${KUBECONFIG:-}" ] || [ -z "${SANDBOX_ADMIN_URL:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "${SANDBOX_DIR:-/tmp/bgrun-dev}")"
fi

cleanup() {
	[ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null || true
	[ -n "${SANDBOX_BEHAVIORS:-}" ] && echo '{}' >"$SANDBOX_BEHAVIORS"
	kubectl delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	if [ -n "${KEEP:-}" ]; then echo "zero-downtime: kept $TMP" >&2; else rm -rf "$TMP"; fi
}
trap cleanup EXIT INT TERM

# the load client, built into build/ (Go's cache makes a rebuild instant)
CLIENT=$ROOT/build/loadclient
(cd "$ROOT/bench/loadclient" && PATH=$PATH:/usr/local/go/bin go build -o "$CLIENT" .)

# the playbooks next to an environment of the bench's own namespace
cp "$ROOT/playbooks/deploy.lua" "$ROOT/playbooks/switch-back.lua" "$ROOT/playbooks/canary.lua" "$TMP/"
cat >"$TMP/environments.lua" <<EOF
return { ["local"] = { namespace = "$NS", app = "$APP", replicas = $REPLICAS, database = {},
                       rollout_timeout = 120, monitor = { window = 20, interval = 1 },
                       migrations = "$ROOT/examples/physioflow/migrations" } }
EOF
export BGRUN_PATH="$TMP:$ROOT/playbooks" PGDATABASE=$DB BGRUN_JOURNAL_DIR="$TMP/journal"

echo '{}' >"$SANDBOX_BEHAVIORS"
psql -X -q -d postgres -c "CREATE DATABASE $DB" >/dev/null
kubectl create namespace "$NS" >/dev/null
(cd "$ROOT" && "$BGRUN" -q examples/physioflow/setup.lua env=local tag=v1.0.0 to=010 >/dev/null)
# A deleted pod keeps serving PRESTOP s before its SIGTERM, as a production
# Deployment does (lifecycle.preStop.sleep): kube-controller-manager drops it
# from the EndpointSlices after the deletion, and without the pause a canary
# step's scale-down loses the connections of that gap (1-2 per step here).
for colour in blue green; do
	kubectl -n "$NS" patch "deployment/$APP-$colour" --type strategic -p \
		"{\"spec\":{\"template\":{\"spec\":{\"containers\":[{\"name\":\"api\",\"lifecycle\":{\"preStop\":{\"sleep\":{\"seconds\":$PRESTOP}}}}]}}}}" >/dev/null
done
kubectl -n "$NS" scale "deployment/$APP-blue" --replicas=$REPLICAS >/dev/null
kubectl -n "$NS" rollout status "deployment/$APP-blue" --timeout=120s >/dev/null
svc=$(kubectl -n "$NS" get service "$APP" -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')
URL=http://$svc/api/v1/info
# Loopback only: 127/8, or the sandbox's 198.18.0.0/15 when it is on this
# (network namespace's) loopback interface (tests/sandbox/in-netns).
case $svc in
127.*) ;;
198.1[89].*)
	ip -o addr show dev lo 2>/dev/null | grep -q ' 198\.18\.0\.1/15 ' ||
		{ echo "bench: the Service's address $svc is not on this loopback (run it with tests/sandbox/in-netns)" >&2; exit 1; } ;;
*) echo "bench: the Service's address $svc is not on loopback" >&2; exit 1 ;;
esac

echo "zero-downtime: $NS, PhysioFlow v1.0.0 on blue ($REPLICAS replicas); load: GET $URL, $WORKERS clients," \
	"a new connection per request, at least $MIN requests a scenario"
printf '%-12s %-58s %5s %9s %7s %9s %9s  %s\n' scenario "what bgrun did" exit requests failed "p50 ms" "p99 ms" target
status=0

# scenario NAME EXPECTED_EXIT TARGET(zero|none) DESCRIPTION -- bgrun args...
scenario() {
	local name=$1 want=$2 target=$3 what=$4
	shift 5
	rm -f "$TMP/stop"
	"$CLIENT" -url "$URL" -min "$MIN" -workers "$WORKERS" -stop "$TMP/stop" >"$TMP/$name.load.json" &
	LOAD=$!
	sleep 0.5 # the loop runs before bgrun starts
	local rc=0
	(cd "$ROOT" && "$BGRUN" --log-format json "$@" >"$TMP/$name.out" 2>"$TMP/$name.err") || rc=$?
	sleep 0.5 # and a little after it ended
	touch "$TMP/stop"
	wait "$LOAD"
	LOAD=
	local j=$TMP/$name.load.json
	local req failed p50 p99 verdict
	req=$(jq .requests "$j"); failed=$(jq .failed "$j"); p50=$(jq .p50_ms "$j"); p99=$(jq .p99_ms "$j")
	if [ "$target" = zero ]; then
		if [ "$failed" -eq 0 ]; then verdict="0 failed: met"; else verdict="0 failed: MISSED"; status=1; fi
	else
		verdict="none (the serving pods crash)"
	fi
	if [ "$rc" -ne "$want" ]; then
		what="$what: ENDED $rc, expected $want"
		status=1
	fi
	printf '%-12s %-58s %5s %9s %7s %9.2f %9.2f  %s\n' "$name" "$what" "$rc" "$req" "$failed" "$p50" "$p99" "$verdict"
	if [ "$failed" -gt 0 ]; then
		echo "             failures: $(jq -c .reasons "$j"); first: $(jq -c .first_failures "$j")"
	fi
	if [ "$rc" -ne "$want" ]; then
		grep -v '"level":"debug"' "$TMP/$name.err" | tail -n 5 | sed 's/^/             /' >&2
	fi
	jq -c --arg s "$name" --argjson rc "$rc" '. + {scenario: $s, exit: $rc}' "$j" >>"$TMP/results"
}

# has the run's log a message? (switched back, ...)
logged() { grep -q "\"message\":\"$2\"" "$TMP/$1.err"; }

scenario deploy 0 zero "deploy v2.0.0 to green, monitored 20 s" -- \
	"$TMP/deploy.lua" env=local tag=v2.0.0

echo '{"v3.0.0": {"fail_paths": ["/api/v1/protocols"]}}' >"$SANDBOX_BEHAVIORS"
scenario smoke-fails 1 zero "deploy v3.0.0 to blue: smoke tests fail, not switched" -- \
	"$TMP/deploy.lua" env=local tag=v3.0.0

echo "{\"v4.0.0\": {\"crash_after_s\": $CRASH_S}}" >"$SANDBOX_BEHAVIORS"
scenario crash 1 none "deploy v4.0.0 to blue: its pods crash, switched back" -- \
	"$TMP/deploy.lua" env=local tag=v4.0.0
if ! logged crash "traffic switched back"; then
	echo "zero-downtime: the crash scenario never switched back (did the pods crash before the switch? raise CRASH_S)" >&2
	status=1
else
	# the failures against the crash and bgrun's reaction, on the load's clock
	python3 - "$TMP/crash.err" "$TMP/crash.load.json" "$SANDBOX_DIR/cluster/pods" <<'PY'
import glob, json, os, sys
from datetime import datetime
err, load, pods = sys.argv[1:4]
def ts(s):  # RFC 3339 with up to ns: to epoch seconds
    s = s.rstrip("Z")
    base, _, frac = s.partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))
l = json.load(open(load))
t0 = l["started_unix"]
ev = {}
for line in open(err):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    m = j.get("message")
    if m == "traffic switched" and "switch" not in ev:
        ev["switch"] = ts(j["time"])
    elif m == "monitor: failure seen" and "seen" not in ev:
        ev["seen"], ev["signal"], ev["pod"] = ts(j["time"]), j["fields"].get("signal"), j["fields"].get("pod")
    elif m == "traffic switched back":
        ev["back"], ev["reaction_ms"] = ts(j["time"]), j["fields"].get("reaction_ms")
crash = None
for f in glob.glob(os.path.join(pods, "*_%s_*" % ev.get("pod"), "*", "*.log")):
    for line in open(f):
        if "injected crash" in line:
            t = ts(line.split(" ", 1)[0])
            crash = t if crash is None else min(crash, t)
rel = lambda t: "%.3f s" % (t - t0) if t else "?"
first = l["first_failures"][0].split(" ")[0] if l.get("first_failures") else "-"
print("             on the load's clock: switch %s, first pod crash %s, monitor saw it %s (%s), traffic back %s "
      "(reaction %s ms); failures from %s to %.3f s" % (rel(ev.get("switch")), rel(crash), rel(ev.get("seen")),
      ev.get("signal"), rel(ev.get("back")), ev.get("reaction_ms"), first, l.get("last_failure_s", 0)))
PY
fi
echo '{}' >"$SANDBOX_BEHAVIORS"

scenario switch-back 0 zero "switch-back to blue (v1.0.0, scaled down: up first)" -- \
	"$TMP/switch-back.lua" env=local

scenario canary 0 zero "canary v5.0.0 on green: 25,50,100 %, 3 s each" -- \
	"$TMP/canary.lua" env=local tag=v5.0.0 steps=25,50,100 pause=3

echo '{"v6.0.0": {"error_logs_per_s": 20}}' >"$SANDBOX_BEHAVIORS"
scenario canary-abort 1 zero "canary v6.0.0 on blue: its analysis fails at 25 %, aborted" -- \
	"$TMP/canary.lua" env=local tag=v6.0.0 steps=25,50,100 pause=3
echo '{}' >"$SANDBOX_BEHAVIORS"

total=$(jq -s 'map(.requests) | add' "$TMP/results")
bad=$(jq -s 'map(.failed) | add' "$TMP/results")
echo "zero-downtime: $total requests in all, $bad failed"
[ "$status" -eq 0 ] && echo "zero-downtime: every target met" || echo "zero-downtime: a target was missed or a run ended unexpectedly"
exit "$status"
