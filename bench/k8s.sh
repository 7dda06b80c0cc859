#!/usr/bin/env bash
# Benchmark: the k8s module against kubectl on the sandbox cluster, in the
# same run, printing ratios:
#   1. 50 gets and 10 patches of a Service: one bgrun process against one
#      kubectl invocation each (as the shell scripts did, with a fresh
#      KUBECACHEDIR of its own);
#   2. watch reaction: from the moment the Deployment becomes available
#      (seen by a passive curl watch) to `c:rollout_status` returning,
#      against `kubectl rollout status` waiting on the same rollout;
#   3. memory: peak RSS (/usr/bin/time -f %M) of a bgrun watch over 1,000
#      and over 10,000 events: flat, not growing with the stream.
#
#   bench/k8s.sh [ROUNDS]   (reaction rounds, default 5)
#
# Uses the cluster KUBECONFIG names (eval "$(tests/sandbox/sandbox up DIR)"),
# or brings up the shared sandbox in ${SANDBOX_DIR:-/tmp/bgrun-dev}.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-5}
EVENTS=${EVENTS:-10000}
TMP=$(mktemp -d /tmp/bgrun-bench-k8s.XXXXXX)
NS=bench-k8s-$$
OBSERVER=

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v kubectl >/dev/null || { echo "bench: kubectl is missing" >&2; exit 1; }
command -v jq >/dev/null || { echo "bench: jq is missing" >&2; exit 1; }

if [ -z "${KUBECONFIG:-}" ] || [ -z "${SANDBOX_ADMIN_URL:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "${SANDBOX_DIR:-/tmp/bgrun-dev}")"
fi

# the observer is a subshell running curl | perl: stop them, not only it
stop_observer() {
	pkill -P "$OBSERVER" 2>/dev/null || true
	kill "$OBSERVER" 2>/dev/null || true
	wait "$OBSERVER" 2>/dev/null || true
	OBSERVER=
}

cleanup() {
	[ -n "$OBSERVER" ] && stop_observer
	"$BGRUN" -q "$TMP/ns.lua" ns="$NS" action=delete >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

now() { echo "$EPOCHREALTIME"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'; }

# ---- playbooks the bench runs ----
cat >"$TMP/ns.lua" <<'EOF'
local k8s = require("k8s")
return playbook { params = { ns = { required = true }, action = { required = true } }, run = function(a)
  local c <close> = k8s.client {}
  if a.action == "delete" then c:delete("ns", a.ns, { ignore_not_found = true }) return end
  c:create { apiVersion = "v1", kind = "Namespace", metadata = { name = a.ns } }
  c:create({ apiVersion = "v1", kind = "Service", metadata = { name = "physioflow-api" },
             spec = { selector = { app = "bench-web" }, ports = { { port = 80, targetPort = 8080 } } } },
           { namespace = a.ns })
  c:create({ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "ticker" }, data = { n = "0" } },
           { namespace = a.ns })
  local env = {}
  for _, k in ipairs({ "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "PGDATABASE" }) do
    env[#env + 1] = { name = k, value = os.getenv(k) or "" }
  end
  c:create({ apiVersion = "apps/v1", kind = "Deployment", metadata = { name = "bench-web" },
             spec = { replicas = 1, selector = { matchLabels = { app = "bench-web" } },
                      template = { metadata = { labels = { app = "bench-web" } },
                                   spec = { containers = { { name = "api", image = "registry.local/physioflow-api:r0",
                                                             env = env, ports = { { name = "http", containerPort = 8080 } },
                                                             readinessProbe = { httpGet = { path = "/ready", port = "http" },
                                                                                periodSeconds = 1 } } } } } } },
           { namespace = a.ns })
  c:rollout_status("deploy", "bench-web", { namespace = a.ns, timeout = 120 })
end }
EOF

cat >"$TMP/getpatch.lua" <<'EOF'
local k8s = require("k8s")
return playbook { params = { ns = { required = true } }, run = function(a)
  local c <close> = k8s.client { namespace = a.ns }
  for _ = 1, 50 do assert(c:get("svc", "physioflow-api")) end
  for i = 1, 10 do c:patch("svc", "physioflow-api", { metadata = { annotations = { bench = tostring(i) } } }) end
end }
EOF

cat >"$TMP/rollout.lua" <<'EOF'
local k8s = require("k8s")
return playbook { params = { ns = { required = true } }, run = function(a)
  local c <close> = k8s.client { namespace = a.ns }
  c:rollout_status("deploy", "bench-web", { timeout = 120 })
end }
EOF

cat >"$TMP/settag.lua" <<'EOF'
local k8s = require("k8s")
return playbook { params = { ns = { required = true }, tag = { required = true } }, run = function(a)
  local c <close> = k8s.client { namespace = a.ns }
  c:patch("deploy", "bench-web", { spec = { template = { spec = { containers = {
    { name = "api", image = "registry.local/physioflow-api:" .. a.tag } } } } } }, { type = "strategic" })
end }
EOF

cat >"$TMP/watchcount.lua" <<'EOF'
local k8s = require("k8s")
return playbook { params = { ns = { required = true }, n = { type = "integer", required = true } }, run = function(a)
  local c <close> = k8s.client { namespace = a.ns }
  local got, last = 0, 0
  for ev, obj in c:watch("cm", { fieldSelector = "metadata.name=ticker", send_initial = false, timeout = 300 }) do
    if ev == "MODIFIED" then
      local v = tonumber(obj.data.n)
      assert(v == last + 1, ("event out of order: %s after %d"):format(obj.data.n, last))
      last, got = v, got + 1
      if got == a.n then break end
    end
  end
  assert(got == a.n, ("watch ended after %d of %d events"):format(got, a.n))
  print(got)
end }
EOF

echo "bench/k8s: setting up namespace $NS (Service, ConfigMap, Deployment)"
"$BGRUN" -q "$TMP/ns.lua" ns="$NS" action=create

# ---- 1. 50 gets + 10 patches ----
t0=$(now)
"$BGRUN" -q "$TMP/getpatch.lua" ns="$NS"
t1=$(now)
bg_gp=$(elapsed "$t0" "$t1")

export KUBECACHEDIR="$TMP/kubecache"
t0=$(now)
for _ in $(seq 50); do kubectl get svc physioflow-api -n "$NS" -o json >/dev/null; done
for i in $(seq 10); do
	kubectl patch svc physioflow-api -n "$NS" --type merge -p "{\"metadata\":{\"annotations\":{\"bench\":\"k$i\"}}}" >/dev/null
done
t1=$(now)
kc_gp=$(elapsed "$t0" "$t1")
echo "50 gets + 10 patches:  bgrun ${bg_gp}s (one process)  kubectl ${kc_gp}s (60 invocations)"
awk -v a="$bg_gp" -v b="$kc_gp" 'BEGIN { printf "  ratio kubectl/bgrun: %.1fx\n", b / a }'

# ---- 2. watch reaction ----
SERVER=$(sed -n 's/^ *server: *//p' "$KUBECONFIG" | head -n 1)
TOKEN=$(sed -n 's/^ *token: *//p' "$KUBECONFIG" | head -n 1)
sed -n 's/^ *certificate-authority-data: *//p' "$KUBECONFIG" | head -n 1 | base64 -d >"$TMP/ca.crt"
# the token goes in a file (curl -H @FILE), not on a command line ps shows
(umask 077; printf 'Authorization: Bearer %s\n' "$TOKEN" >"$TMP/auth")
CURL_AUTH=(--cacert "$TMP/ca.crt" -H @"$TMP/auth")

# The passive observer: every watch event of the Deployment, stamped on arrival.
(curl -sN "${CURL_AUTH[@]}" \
	"$SERVER/apis/apps/v1/namespaces/$NS/deployments?watch=true&fieldSelector=metadata.name%3Dbench-web&timeoutSeconds=600" |
	perl -MTime::HiRes=time -ne '$| = 1; printf "%.6f %s", time, $_' >"$TMP/observed") &
OBSERVER=$!
sleep 0.5

# available_at TAG: arrival time of the first event with TAG rolled out (kubectl's rule)
available_at() {
	local tag=$1
	while read -r stamp json; do
		if printf '%s' "$json" | jq -e --arg img "registry.local/physioflow-api:$tag" '
			.object as $d | ($d.status // {}) as $s |
			($d.spec.template.spec.containers[0].image == $img) and
			(($d.metadata.generation // 0) <= ($s.observedGeneration // 0)) and
			(($s.updatedReplicas // 0) >= ($d.spec.replicas // 1)) and
			(($s.replicas // 0) <= ($s.updatedReplicas // 0)) and
			(($s.availableReplicas // 0) >= ($s.updatedReplicas // 0))' >/dev/null; then
			echo "$stamp"
			return
		fi
	done <"$TMP/observed"
}

bg_all=""
kc_all=""
for r in $(seq "$ROUNDS"); do
	tag="r$r"
	"$BGRUN" -q "$TMP/settag.lua" ns="$NS" tag="$tag"
	tp=$(now)
	("$BGRUN" -q "$TMP/rollout.lua" ns="$NS" && echo "$EPOCHREALTIME" >"$TMP/t_bgrun") &
	bg_pid=$!
	(kubectl rollout status deploy/bench-web -n "$NS" --timeout=120s >/dev/null && echo "$EPOCHREALTIME" >"$TMP/t_kubectl") &
	kc_pid=$!
	wait "$bg_pid" "$kc_pid"
	sleep 0.3
	ta=$(available_at "$tag")
	[ -n "$ta" ] || { echo "bench: the observer never saw $tag rolled out" >&2; exit 1; }
	bg_r=$(elapsed "$ta" "$(cat "$TMP/t_bgrun")")
	kc_r=$(elapsed "$ta" "$(cat "$TMP/t_kubectl")")
	echo "rollout $tag: patched -> available $(elapsed "$tp" "$ta")s; available -> returned: bgrun ${bg_r}s  kubectl ${kc_r}s" \
		"(patched -> returned: bgrun $(elapsed "$tp" "$(cat "$TMP/t_bgrun")")s  kubectl $(elapsed "$tp" "$(cat "$TMP/t_kubectl")")s)"
	bg_all="$bg_all $bg_r"
	kc_all="$kc_all $kc_r"
done
median() { tr ' ' '\n' | sed '/^$/d' | sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
bg_med=$(echo "$bg_all" | median)
kc_med=$(echo "$kc_all" | median)
# The observer (curl | perl) has a few ms of latency of its own, so single
# rounds can come out slightly negative; compare medians.
awk -v a="$bg_med" -v b="$kc_med" -v n="$ROUNDS" 'BEGIN {
	printf "watch reaction (median of %d, available -> returned): bgrun %.1f ms  kubectl %.1f ms  difference %.1f ms",
		n, a * 1000, b * 1000, (b - a) * 1000
	if (a > 0.0005) printf "  ratio kubectl/bgrun: %.1fx", b / a
	printf "\n" }'
stop_observer

# ---- 3. memory over a long watch ----
# gen N: N merge patches of the ticker ConfigMap over one kept connection
gen() {
	local n=$1 i
	for ((i = 1; i <= n; i++)); do
		echo "url = \"$SERVER/api/v1/namespaces/$NS/configmaps/ticker\""
		echo "request = PATCH"
		echo "data = \"{\\\"data\\\":{\\\"n\\\":\\\"$((base + i))\\\"}}\""
		echo "output = /dev/null"
		echo "cacert = \"$TMP/ca.crt\""
		echo "header = \"Authorization: Bearer $TOKEN\""
		echo "header = \"Content-Type: application/merge-patch+json\""
		if [ "$i" -lt "$n" ]; then echo "next"; fi
	done >"$TMP/gen.cfg"
	curl -s -K "$TMP/gen.cfg"
}

# the watch counts from the ticker's current value
base=0
rss() {
	local n=$1
	kubectl patch cm ticker -n "$NS" --type merge -p '{"data":{"n":"0"}}' >/dev/null
	base=0
	/usr/bin/time -f %M -o "$TMP/rss.$n" "$BGRUN" -q "$TMP/watchcount.lua" ns="$NS" n="$n" >"$TMP/count.$n" &
	local w=$!
	sleep 1
	local t0
	t0=$(now)
	gen "$n"
	wait "$w"
	echo "$(cat "$TMP/rss.$n") $(elapsed "$t0" "$(now)")"
}
small=$(rss 1000)
large=$(rss "$EVENTS")
s_kb=${small%% *}
l_kb=${large%% *}
echo "watch memory: 1000 events peak RSS ${s_kb} KB; $EVENTS events peak RSS ${l_kb} KB (in ${large##* }s)"
awk -v a="$s_kb" -v b="$l_kb" -v n="$EVENTS" 'BEGIN { printf "  ratio RSS(%d)/RSS(1000): %.2f (flat is 1.0)\n", n, b / a }'
