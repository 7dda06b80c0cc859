#!/bin/sh
# Benchmark: db:query of 100,000 rows (typed values in Lua tables) against
# `psql -At` of the same query, in the same run: wall time and peak RSS
# (/usr/bin/time -f %M) of each, best of ROUNDS, and the ratios.
#
#   bench/postgres.sh [ROUNDS]   (default 5)
#
# Uses the server the PG* variables name (the sandbox's, eval "$(tests/sandbox/
# sandbox up DIR)"), or, when PGHOST is unset, starts a private cluster on
# loopback for the run.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-5}
ROWS=${ROWS:-100000}
TMP=$(mktemp -d /tmp/bgrun-bench-pg.XXXXXX)
chmod 755 "$TMP"
PG_STOP=

cleanup() {
	[ -n "$PG_STOP" ] && eval "$PG_STOP" >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }

if [ -z "${PGHOST:-}" ]; then
	bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	as_pg=
	if [ "$(id -u)" -eq 0 ]; then as_pg="runuser -u postgres --"; fi
	mkdir "$TMP/pg"
	[ -n "$as_pg" ] && chown postgres "$TMP/pg"
	$as_pg "$bin/initdb" -D "$TMP/pg" -A trust -U postgres >/dev/null
	$as_pg "$bin/pg_ctl" -D "$TMP/pg" -l "$TMP/pg/log" -w \
		-o "-p $port -k $TMP/pg -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
	PG_STOP="$as_pg $bin/pg_ctl -D $TMP/pg -m immediate stop"
	export PGHOST=127.0.0.1 PGPORT=$port PGUSER=postgres PGDATABASE=postgres PGSSLMODE=disable
	unset PGPASSWORD
fi

QUERY="SELECT g AS id, 'patient ' || g AS full_name, g * 1.5::float8 AS score, (g % 7)::numeric / 3 AS ratio,
       g % 2 = 0 AS active, CASE WHEN g % 10 = 0 THEN NULL ELSE g % 100 END AS clinic_id,
       timestamptz '2026-01-01' + g * interval '1 minute' AS created_at
FROM generate_series(1, $ROWS) g"

cat >"$TMP/query.lua" <<LUA
local postgres = require("postgres")
return playbook {
  run = function()
    local db <close> = postgres.connect()
    local rows = db:query([[$QUERY]], nil, { readonly = true })
    assert(#rows == $ROWS and math.type(rows[1].id) == "integer")
    print(#rows)
  end,
}
LUA

# warm up both (page cache, the server's plan) and check they agree
n_psql=$(psql -X -At -c "$QUERY" | wc -l)
n_bgrun=$("$BGRUN" -q "$TMP/query.lua")
[ "$n_psql" = "$ROWS" ] && [ "$n_bgrun" = "$ROWS" ] || {
	echo "bench: row counts differ: psql $n_psql, bgrun $n_bgrun" >&2
	exit 1
}

# best wall time (s) and peak RSS (KiB) over ROUNDS runs of "$@"
measure() {
	best_t=
	best_m=
	r=0
	while [ "$r" -lt "$ROUNDS" ]; do
		/usr/bin/time -f "%e %M" -o "$TMP/time" "$@" >/dev/null
		read -r t m <"$TMP/time"
		if [ -z "$best_t" ] || awk -v a="$t" -v b="$best_t" 'BEGIN { exit !(a < b) }'; then best_t=$t; fi
		if [ -z "$best_m" ] || [ "$m" -lt "$best_m" ]; then best_m=$m; fi
		r=$((r + 1))
	done
	echo "$best_t $best_m"
}

set -- $(measure psql -X -At -c "$QUERY")
psql_t=$1 psql_m=$2
set -- $(measure "$BGRUN" -q "$TMP/query.lua")
bgrun_t=$1 bgrun_m=$2

echo "postgres: $ROWS rows x 7 columns, best of $ROUNDS runs"
echo "postgres: psql -At (text to /dev/null):            ${psql_t} s, peak RSS ${psql_m} KiB"
echo "postgres: bgrun db:query (typed Lua rows):          ${bgrun_t} s, peak RSS ${bgrun_m} KiB"
awk -v pt="$psql_t" -v bt="$bgrun_t" -v pm="$psql_m" -v bm="$bgrun_m" 'BEGIN {
	printf "postgres: ratio bgrun/psql: time %.2fx, peak memory %.2fx\n", (pt > 0 ? bt / pt : 0), (pm > 0 ? bm / pm : 0)
}'
