#!/usr/bin/env bash
# Benchmark: how fast a bad release leaves traffic. On the sandbox, under a
# small request load through the Service, bgrun deploys a version whose
# pods crash CRASH_S seconds after they start (a few seconds after the
# switch), and the monitor switches traffic back. Per round it prints:
#   - detection: from the crash (the app's last log line, as the kubelet
#     stamps it) to bgrun seeing it ("monitor: failure seen"), against the
#     old scripts' figure in the same run: their next poll after the crash
#     (they polled every POLL_S = 10 s from the start of monitoring);
#   - reaction: bgrun's reaction_ms (engine time from seeing the failure to
#     the Service selecting the old colour again; target under 100 ms),
#     against the old scripts' next poll plus their `kubectl patch` of the
#     selector, timed here in the same run;
#   - failed requests of the load during the round (it runs throughout).
#
#   bench/deploy.sh [ROUNDS]   (default 3)
#
# Uses the sandbox the variables name (eval "$(tests/sandbox/sandbox up DIR)"),
# or brings up the shared sandbox in ${SANDBOX_DIR:-/tmp/bgrun-dev}. It owns
# the physioflow namespace's app while it runs (as the integration specs do).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-3}
CRASH_S=${CRASH_S:-5}   # the first round's; each next round crashes 3 s later (another phase of the old poll)
POLL_S=${POLL_S:-10}
RATE_MS=${RATE_MS:-50}
NS=physioflow
APP=physioflow-api
TMP=$(mktemp -d /tmp/bgrun-bench-deploy.XXXXXX)
cd "$ROOT"
DB=bench_deploy_$$
LOAD=

[ -n "${SANDBOX_PG_SUPERUSER_URL:-}" ] || [ -z "${KUBECONFIG:-}" ] || { echo "bench: the sandbox's variables are incomplete" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "bench: kubectl is missing" >&2; exit 1; }
command -v python3 >/dev/null || { echo "bench: python3 is missing" >&2; exit 1; }

if [ -z "${KUBECONFIG:-}" ] || [ -z "${SANDBOX_ADMIN_URL:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "${SANDBOX_DIR:-/tmp/bgrun-dev}")"
fi

cleanup() {
	[ -n "$LOAD" ] && kill "$LOAD" 2>/dev/null || true
	[ -n "${SANDBOX_BEHAVIORS:-}" ] && echo '{}' >"$SANDBOX_BEHAVIORS"
	psql -X -q "$SANDBOX_PG_SUPERUSER_URL" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

now_ms() { date +%s%N | cut -c1-13; }

# a fresh app: blue serving v1.0.0, in a database of our own
echo '{}' >"$SANDBOX_BEHAVIORS"
psql -X -q -v ON_ERROR_STOP=1 "$SANDBOX_PG_SUPERUSER_URL" -c "CREATE DATABASE $DB OWNER $PGUSER" >/dev/null
for obj in deployment/$APP-blue deployment/$APP-green service/$APP configmap/migration-version lease/bgrun-deploy-lock; do
	kubectl -n $NS delete "$obj" --ignore-not-found --wait=false >/dev/null
done
export PGDATABASE=$DB BGRUN_JOURNAL_DIR=$TMP/journal BGRUN_PATH=$ROOT/playbooks
"$BGRUN" -q examples/physioflow/setup.lua env=local tag=v1.0.0 to=010 >/dev/null

# deploy.lua next to an environment of our own (on the sandbox's context, as
# every environment but local names one): monitored as in prod
mkdir -p "$TMP/pb"
cp "$ROOT/playbooks/deploy.lua" "$TMP/pb/"
cat >"$TMP/pb/environments.lua" <<EOF
return {
  bench = { context = "$(kubectl config current-context)", namespace = "$NS", app = "$APP", replicas = 2, database = {}, rollout_timeout = 120,
            monitor = { window = 60, interval = $POLL_S } },
}
EOF

svc=$(kubectl -n $NS get service $APP -o jsonpath='{.spec.clusterIP}:{.spec.ports[0].port}')
URL=http://$svc/api/v1/info

pause=$(awk -v m="$RATE_MS" 'BEGIN { print m / 1000 }')
# the load: one request every RATE_MS through the Service, one line each
load() {
	while :; do
		curl -s -o /dev/null -m 2 -w '%{http_code}\n' "$URL" || true
		sleep "$pause"
	done
}
load >"$TMP/load.log" 2>/dev/null &
LOAD=$!

echo "deploy: $ROUNDS round(s): a release whose 2 pods crash ${CRASH_S}s, $((CRASH_S + 3))s, ... after they start, under load ($URL every ${RATE_MS} ms)"
r=1
while [ $r -le "$ROUNDS" ]; do
	tag=v9.$r.0
	crash=$((CRASH_S + 3 * (r - 1)))
	echo "{\"$tag\": {\"crash_after_s\": $crash}}" >"$SANDBOX_BEHAVIORS"
	before=$(wc -l <"$TMP/load.log")
	set +e
	("$BGRUN" --log-format json "$TMP/pb/deploy.lua" env=bench tag=$tag >"$TMP/out.$r" 2>"$TMP/err.$r")
	rc=$?
	set -e
	sleep 1 # the load's requests of the round's end
	lines=$(tail -n +$((before + 1)) "$TMP/load.log")
	total=$(printf '%s\n' "$lines" | grep -c . || true)
	failed=$(printf '%s\n' "$lines" | grep -vc '^200$' || true)
	# the old scripts' switch back: kubectl patch of the selector (to the colour it already has)
	live=$(kubectl -n $NS get service $APP -o jsonpath='{.spec.selector.version}')
	t0=$(now_ms)
	kubectl -n $NS patch service $APP --type merge -p "{\"spec\":{\"selector\":{\"version\":\"$live\"}}}" >/dev/null
	patch_ms=$(($(now_ms) - t0))
	if [ $rc -ne 1 ]; then
		echo "deploy: round $r: bgrun ended $rc, expected 1 (switched back)" >&2
		tail -n 20 "$TMP/err.$r" >&2
		exit 1
	fi
	python3 - "$TMP/err.$r" "$SANDBOX_DIR/cluster/pods" "$POLL_S" "$patch_ms" "$total" "$failed" "$r" \
		>>"$TMP/rounds" <<'EOF'
import glob, json, math, os, sys
from datetime import datetime
err, pods, poll, patch_ms, total, failed, rnd = sys.argv[1:8]
poll, patch_ms = float(poll), int(patch_ms)
def ts(s):  # RFC 3339 with up to ns: to epoch seconds
    s = s.rstrip("Z")
    base, _, frac = s.partition(".")
    return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))
ev = {}
for line in open(err):
    try:
        j = json.loads(line)
    except ValueError:
        continue
    m, step = j.get("message"), j.get("step") or ""
    if m == "step started" and step.startswith("monitor "):
        ev["monitor"] = ts(j["time"])
    elif m == "traffic switched" and "switch" not in ev:
        ev["switch"] = ts(j["time"])
    elif m == "monitor: failure seen":
        ev["seen"], ev["pod"] = ts(j["time"]), j["fields"]["pod"]
    elif m == "traffic switched back":
        ev["back"], ev["reaction_ms"] = ts(j["time"]), j["fields"].get("reaction_ms")
crash = None
for f in glob.glob(os.path.join(pods, "*_%s_*" % ev["pod"], "*", "*.log")):
    for line in open(f):
        if "injected crash" in line:
            t = ts(line.split(" ", 1)[0])
            crash = t if crash is None else min(crash, t)
detect_ms = (ev["seen"] - crash) * 1000
since = crash - ev["monitor"]
old_detect_ms = (math.ceil(since / poll) * poll - since) * 1000
print(json.dumps({"round": int(rnd), "after_switch_s": crash - ev["switch"], "detect_ms": detect_ms,
                  "reaction_ms": ev["reaction_ms"], "old_detect_ms": old_detect_ms,
                  "old_reaction_ms": old_detect_ms + patch_ms, "patch_ms": patch_ms,
                  "requests": int(total), "failed": int(failed)}))
EOF
	python3 - "$TMP/rounds" "$r" <<'EOF'
import json, sys
x = [json.loads(l) for l in open(sys.argv[1])][int(sys.argv[2]) - 1]
print(("deploy: round %d: crash %.1f s after the switch; detection %.0f ms (old scripts' next poll: %.0f ms); "
       "reaction %d ms (old: poll + kubectl patch %d ms = %.0f ms); %d of %d requests failed")
      % (x["round"], x["after_switch_s"], x["detect_ms"], x["old_detect_ms"], x["reaction_ms"], x["patch_ms"],
         x["old_reaction_ms"], x["failed"], x["requests"]))
EOF
	r=$((r + 1))
done

python3 - "$TMP/rounds" "$POLL_S" "$RATE_MS" <<'EOF'
import json, statistics as st, sys
xs = [json.loads(l) for l in open(sys.argv[1])]
poll, rate_ms = float(sys.argv[2]), float(sys.argv[3])
med = lambda k: st.median(x[k] for x in xs)
print("deploy: median detection (crash to bgrun seeing it):     %6.0f ms   old scripts (next poll, every %s s): %6.0f ms"
      % (med("detect_ms"), sys.argv[2], med("old_detect_ms")))
print("deploy: median reaction (seen to Service on old colour): %6.0f ms   old scripts (poll + kubectl patch):  %6.0f ms"
      % (med("reaction_ms"), med("old_reaction_ms")))
total = med("detect_ms") + med("reaction_ms")
print("deploy: crash to traffic back: bgrun %.0f ms, old scripts %.0f ms: ratio old/bgrun = %.1fx"
      % (total, med("old_reaction_ms"), med("old_reaction_ms") / total if total > 0 else 0))
print("deploy: failed requests of the load: %d of %d" % (sum(x["failed"] for x in xs), sum(x["requests"] for x in xs)))
# the old scripts left the crashed colour in the Service until their poll:
# at this load, every request of that gap fails (an estimate, not a run)
print("deploy: old scripts (estimate): the crashed colour serves until their poll, %.1f s on average (%.0f s at worst): "
      "about %.0f failed requests a crash at this load" % (poll / 2, poll, poll / 2 * 1000 / rate_ms))
EOF

# Getting back by hand after a finished deploy: switch-back, warm and with
# the previous colour scaled down, next to its kubectl equivalent (the old
# scripts promised an app rollback under 30 s).
echo
"$ROOT/bench/switch-back.sh" "$ROUNDS"
