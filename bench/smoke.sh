#!/bin/sh
# Benchmark: the nine smoke checks by bgrun (one process, concurrent
# requests on kept connections) against the old script's way (one curl
# process per request, one after another, grep on the body), on the demo
# app, in the same run. Prints both wall times and the ratio.
#
#   bench/smoke.sh [ROUNDS]          (default 20)
#   BENCH_URL=http://... bench/smoke.sh   to use a running app
#
# Without BENCH_URL it starts what it needs on loopback: a database (in the
# sandbox's PostgreSQL when SANDBOX_PG_SUPERUSER_URL is set, else a private
# cluster) with the PhysioFlow migrations, and one demo app.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-20}
TMP=$(mktemp -d /tmp/bgrun-bench-smoke.XXXXXX)
chmod 755 "$TMP"
APP_PID=
PG_STOP=

cleanup() {
	[ -n "$APP_PID" ] && kill "$APP_PID" 2>/dev/null || true
	[ -n "$PG_STOP" ] && eval "$PG_STOP" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

free_port() {
	python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

now_ms() {
	date +%s%N | cut -c1-13
}

start_env() {
	db=bench_smoke_$$
	if [ -n "${SANDBOX_PG_SUPERUSER_URL:-}" ]; then
		psql -X -q -v ON_ERROR_STOP=1 "$SANDBOX_PG_SUPERUSER_URL" -c "CREATE DATABASE $db OWNER $PGUSER" >/dev/null
		PG_STOP="psql -X -q '$SANDBOX_PG_SUPERUSER_URL' -c 'DROP DATABASE IF EXISTS $db WITH (FORCE)'"
		export PGDATABASE=$db PGSSLMODE=disable
	else
		bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
		port=$(free_port)
		as_pg=
		if [ "$(id -u)" -eq 0 ]; then as_pg="runuser -u postgres --"; fi
		mkdir "$TMP/pg"
		[ -n "$as_pg" ] && chown postgres "$TMP/pg"
		$as_pg "$bin/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null
		$as_pg "$bin/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/log" -w \
			-o "-p $port -k $TMP/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
		PG_STOP="$as_pg $bin/pg_ctl -D $TMP/pg -m immediate stop"
		export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=$db PGSSLMODE=disable
		unset PGPASSWORD
		createdb "$db"
	fi
	for f in "$ROOT"/examples/physioflow/migrations/[0-9][0-9][0-9]_*.sql; do
		PGOPTIONS=--client-min-messages=error psql -X -q -v ON_ERROR_STOP=1 -f "$f" >/dev/null
	done
	sandbox=$ROOT/tests/sandbox/sandbox
	[ -x "$sandbox" ] || (cd "$ROOT/tests/sandbox" && go build -o sandbox .)
	app_port=$(free_port)
	POD_IP=127.0.0.1 PORT=$app_port APP_VERSION=v1 POD_NAME=bench SANDBOX_BEHAVIORS= \
		"$sandbox" demoapp >"$TMP/app.log" 2>&1 &
	APP_PID=$!
	BENCH_URL=http://127.0.0.1:$app_port
	i=0
	until curl -sf -o /dev/null "$BENCH_URL/health"; do
		i=$((i + 1))
		[ $i -gt 200 ] && { cat "$TMP/app.log" >&2; echo "bench: demo app did not start" >&2; exit 1; }
		sleep 0.05
	done
}

# The old smoke-test.sh: one curl per request, sequentially, status and a
# grep on the body.
curl_check() { # method path expect-substring [json-body]
	if [ $# -ge 4 ]; then
		code=$(curl -s -m 10 -o "$TMP/body" -w '%{http_code}' -X "$1" -H 'Content-Type: application/json' -d "$4" "$BENCH_URL$2")
	else
		code=$(curl -s -m 10 -o "$TMP/body" -w '%{http_code}' -X "$1" "$BENCH_URL$2")
	fi
	[ "$code" = 200 ] && grep -q "$3" "$TMP/body"
}

curl_round() {
	curl_check GET /health '"status":"ok"'
	curl_check GET /ready '"ready":true'
	curl_check GET /api/v1/info '"name":"physioflow-api"'
	curl_check POST /api/v1/insurance/bhyt/validate '"valid":true' '{"card_number":"DN4010123456789"}'
	curl_check POST /api/v1/insurance/bhyt/validate '"valid":false' '{"card_number":"XX9990123"}'
	curl_check GET /api/v1/outcome-measures '"items":\[{'
	curl_check GET /api/v1/service-codes '"items":\[{'
	curl_check GET /api/v1/protocols '"items":\[{'
	curl_check GET '/api/v1/medical-terms?q=pain' '"query":"pain"'
	curl_check GET /api/v1/db-check '"database":"ok"'
}

bgrun_round() {
	"$BGRUN" -q "$ROOT/playbooks/smoke-test.lua" url="$BENCH_URL" >/dev/null
}

[ -n "${BENCH_URL:-}" ] || start_env

# warm both paths (page cache, the app's database pool) and check they pass
curl_round || { echo "bench: the curl checks fail against $BENCH_URL" >&2; exit 1; }
bgrun_round || { echo "bench: the bgrun checks fail against $BENCH_URL" >&2; exit 1; }

t0=$(now_ms)
r=0
while [ $r -lt "$ROUNDS" ]; do curl_round; r=$((r + 1)); done
t1=$(now_ms)
r=0
while [ $r -lt "$ROUNDS" ]; do bgrun_round; r=$((r + 1)); done
t2=$(now_ms)

curl_ms=$((t1 - t0))
bgrun_ms=$((t2 - t1))
echo "smoke: $ROUNDS rounds of the nine checks against $BENCH_URL"
echo "smoke: curl, one process per request, sequential: ${curl_ms} ms ($((curl_ms / ROUNDS)) ms/round)"
echo "smoke: bgrun smoke-test.lua, concurrent:            ${bgrun_ms} ms ($((bgrun_ms / ROUNDS)) ms/round)"
awk -v c="$curl_ms" -v b="$bgrun_ms" 'BEGIN { printf "smoke: ratio curl/bgrun = %.2fx\n", (b > 0 ? c / b : 0) }'
