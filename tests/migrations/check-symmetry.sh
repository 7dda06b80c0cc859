#!/usr/bin/env bash
# tests/migrations/check-symmetry.sh — prove the PhysioFlow example migrations
# are symmetric: every rollback/NNN_down.sql returns the schema to exactly the
# state it was in before NNN was applied.
#
# Starts its own throwaway PostgreSQL 15 (initdb into a temporary directory,
# a free port on 127.0.0.1, unix socket inside the temporary directory),
# applies 001..N one by one as a non-superuser owner role (the way the app
# role runs them), recording a normalised `pg_dump --schema-only` before
# each, then rolls back N..001 and diffs each dump against the recorded one.
# Also checks the seeded reference tables, a few constraints/triggers/indexes
# the API relies on, static rules for migration files (pairs, no explicit
# transaction control, no schema_migrations, bgrun:contract markers), and that
# a full re-apply after a full rollback gives the same schema.
#
# Output: one `ok - ...` / `not ok - ...` line per check, then the last line
#   migrations-symmetry: N passed, N failed
# Exit status 0 only when nothing failed. The server is always stopped and the
# temporary directory removed (trap).
#
# Environment: PGBIN (default /usr/lib/postgresql/15/bin),
#              MIGRATIONS_DIR (default examples/physioflow/migrations),
#              KEEP_TMP=1 keeps the temporary directory for inspection.

set -u -o pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MIG=${MIGRATIONS_DIR:-$ROOT/examples/physioflow/migrations}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
SUITE=migrations-symmetry
APP_ROLE=physioflow
APP_DB=physioflow

passed=0
failed=0
ok()     { passed=$((passed + 1)); printf 'ok - %s\n' "$*"; }
not_ok() { failed=$((failed + 1)); printf 'not ok - %s\n' "$*"; }
# indented diagnostic lines (TAP style) from stdin, capped
diag()   { head -n "${1:-40}" | sed 's/^/#   /'; }
summary() { printf '%s: %d passed, %d failed\n' "$SUITE" "$passed" "$failed"; }

WORK=""
DATA=""
STARTED=0

# postgres refuses to run as root: run server-side tools as the postgres user.
if [ "$(id -u)" -eq 0 ]; then
    if ! id postgres >/dev/null 2>&1; then
        printf 'not ok - running as root needs a "postgres" user to run the server as\n'
        printf '%s: 0 passed, 1 failed\n' "$SUITE"
        exit 1
    fi
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

cleanup() {
    local rc=$?
    # stop the server whenever it may be running — also when a signal came in
    # while `pg_ctl start` was still waiting (STARTED not yet set; bash runs
    # the trap only after pg_ctl returned, so postmaster.pid exists by then)
    if [ "$STARTED" -eq 1 ] || { [ -n "$DATA" ] && [ -f "$DATA/postmaster.pid" ]; }; then
        if ! as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 stop >/dev/null 2>&1; then
            local pid
            pid=$(head -n 1 "$DATA/postmaster.pid" 2>/dev/null)
            [[ "$pid" =~ ^[0-9]+$ ]] && kill -QUIT "$pid" 2>/dev/null
            sleep 1
        fi
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "${KEEP_TMP:-0}" = 1 ]; then
            echo "# kept $WORK" >&2
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
interrupted() {
    not_ok "interrupted by SIG$1"
    summary
    exit "$2"
}
trap cleanup EXIT
trap 'interrupted INT 130' INT
trap 'interrupted TERM 143' TERM

fatal() {
    not_ok "$1"
    [ $# -ge 2 ] && [ -f "$2" ] && diag 30 <"$2"
    summary
    exit 1
}

free_port() {
    python3 - 2>/dev/null <<'PY' && return 0
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
    # fallback: random high port not currently listening
    local p
    for _ in $(seq 1 50); do
        p=$((20000 + RANDOM % 40000))
        if ! ss -ltn 2>/dev/null | awk '{print $4}' | grep -q "[:.]$p\$"; then
            echo "$p"
            return 0
        fi
    done
    return 1
}

# ---------------------------------------------------------------- static checks

[ -d "$MIG" ] || fatal "migrations directory $MIG exists"
[ -x "$PGBIN/postgres" ] || fatal "PostgreSQL server binaries in $PGBIN"

mapfile -t UPS < <(cd "$MIG" && ls | grep -E '^[0-9]{3}_.+\.sql$' | sort)
[ "${#UPS[@]}" -gt 0 ] || fatal "up migrations found in $MIG"

pairs_ok=1
pair_msgs=""
expect=1
for f in "${UPS[@]}"; do
    n=${f%%_*}
    if [ "$((10#$n))" -ne "$expect" ]; then
        pairs_ok=0; pair_msgs+="numbering gap or duplicate at $f (expected $(printf %03d "$expect"))"$'\n'
    fi
    expect=$((10#$n + 1))
    [ -f "$MIG/rollback/${n}_down.sql" ] || { pairs_ok=0; pair_msgs+="missing rollback/${n}_down.sql"$'\n'; }
done
for d in "$MIG"/rollback/*.sql; do
    [ -e "$d" ] || continue
    n=$(basename "$d"); n=${n%%_*}
    ls "$MIG/${n}"_*.sql >/dev/null 2>&1 || { pairs_ok=0; pair_msgs+="rollback/$(basename "$d") has no up migration"$'\n'; }
done
if [ "$pairs_ok" -eq 1 ]; then
    ok "migrations ${UPS[0]%%_*}..${UPS[-1]%%_*} are numbered without gaps and each has rollback/NNN_down.sql"
else
    not_ok "migration files pair up (NNN_name.sql <-> rollback/NNN_down.sql)"
    printf '%s' "$pair_msgs" | diag
fi

# SQL text with comments, string literals and dollar-quoted bodies removed, so
# keyword checks do not trip over seed data, comments or PL/pgSQL BEGIN/END.
sql_code() {
    perl -0777 -pe '
        s/\$([A-Za-z_]*)\$.*?\$\1\$/ /gs;   # dollar-quoted bodies
        s/--[^\n]*//g;                       # line comments
        s{/\*.*?\*/}{ }gs;                   # block comments
        s/\x27(?:[^\x27]|\x27\x27)*\x27/ /g; # string literals
    ' "$1"
}

lint_msgs=""
for f in "${UPS[@]}" $(cd "$MIG" && ls rollback/*.sql 2>/dev/null); do
    code=$(sql_code "$MIG/$f")
    if grep -qiE '(^|;)[[:space:]]*(BEGIN|COMMIT|ROLLBACK|START[[:space:]]+TRANSACTION|END)[[:space:]]*(TRANSACTION|WORK)?[[:space:]]*;' <<<"$code"; then
        lint_msgs+="$f: explicit transaction control (the runner wraps each file in a transaction)"$'\n'
    fi
    if grep -qi 'schema_migrations' "$MIG/$f"; then
        lint_msgs+="$f: touches schema_migrations (owned by the runner)"$'\n'
    fi
    if grep -qi 'bgrun:no-transaction' "$MIG/$f"; then
        if [ "$(head -n 1 "$MIG/$f")" != "-- bgrun:no-transaction" ]; then
            lint_msgs+="$f: bgrun:no-transaction must be the first line"$'\n'
        fi
    fi
done
if [ -z "$lint_msgs" ]; then
    ok "no explicit BEGIN/COMMIT and no schema_migrations in any migration"
else
    not_ok "migration files leave transactions and schema_migrations to the runner"
    printf '%s' "$lint_msgs" | diag
fi

# An up migration that breaks the previous app version during a blue-green
# switch must say so with a `-- bgrun:contract` line.
contract_msgs=""
contract_files=""
for f in "${UPS[@]}"; do
    code=$(sql_code "$MIG/$f")
    has_marker=0
    grep -qE '^--[[:space:]]*bgrun:contract([[:space:]]|$)' "$MIG/$f" && has_marker=1
    [ "$has_marker" -eq 1 ] && contract_files+="$f "
    if grep -qiE 'DROP[[:space:]]+COLUMN|RENAME[[:space:]]|SET[[:space:]]+NOT[[:space:]]+NULL|ALTER[[:space:]]+COLUMN[^;]*[[:space:]]TYPE[[:space:]]|DROP[[:space:]]+(TABLE|VIEW|TYPE)' <<<"$code" \
        && [ "$has_marker" -eq 0 ]; then
        contract_msgs+="$f: breaking change (drop/rename/type change/SET NOT NULL) without -- bgrun:contract"$'\n'
    fi
done
if [ -z "$contract_msgs" ]; then
    ok "breaking up migrations carry -- bgrun:contract (marked: ${contract_files:-none})"
else
    not_ok "breaking up migrations carry -- bgrun:contract"
    printf '%s' "$contract_msgs" | diag
fi

# ---------------------------------------------------------------- the server

# the server runs as postgres: a TMPDIR it cannot reach (inside a clone
# made with mktemp -d, 0700) gives way to /tmp
BASE=${TMPDIR:-/tmp}
[ "$(id -u)" -eq 0 ] && ! as_pg test -x "$BASE" 2>/dev/null && BASE=/tmp
WORK=$(mktemp -d "$BASE/bgrun-migsym.XXXXXX") || fatal "create a temporary directory"
DATA=$WORK/data
chmod 0700 "$WORK"
[ "$(id -u)" -eq 0 ] && chown postgres:postgres "$WORK"

if ! as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 >"$WORK/initdb.log" 2>&1; then
    rm -rf "$DATA"
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --no-locale >"$WORK/initdb.log" 2>&1 \
        || fatal "initdb a throwaway cluster" "$WORK/initdb.log"
fi

PORT=""
for attempt in 1 2 3 4 5; do
    PORT=$(free_port) || fatal "find a free port on 127.0.0.1"
    if as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$PORT -c unix_socket_directories=$WORK -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c shared_buffers=32MB -c max_connections=20 -c TimeZone=UTC" \
        start >"$WORK/pg_ctl.log" 2>&1; then
        STARTED=1
        break
    fi
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate stop >/dev/null 2>&1 || true
done
[ "$STARTED" -eq 1 ] || fatal "start PostgreSQL on 127.0.0.1" "$WORK/server.log"

export PGHOST=$WORK PGPORT=$PORT
unset PGDATABASE PGUSER PGPASSWORD PGSERVICE PGOPTIONS PGSSLMODE 2>/dev/null || true
PSQL=("$PGBIN/psql" -X -q -v ON_ERROR_STOP=1)

version=$("${PSQL[@]}" -U postgres -d postgres -tAc 'SHOW server_version_num') || fatal "connect to the server"
[ "${version:0:2}" = 15 ] || fatal "server is PostgreSQL 15 (got $version)"

# the application role: owns its database, not a superuser, cannot create
# extensions that need superuser — the migrations must not need more.
"${PSQL[@]}" -U postgres -d postgres >"$WORK/setup.log" 2>&1 <<SQL || fatal "create role and database" "$WORK/setup.log"
CREATE ROLE $APP_ROLE LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
CREATE DATABASE $APP_DB OWNER $APP_ROLE ENCODING 'UTF8' TEMPLATE template0;
SQL

app_psql() { "${PSQL[@]}" -U "$APP_ROLE" -d "$APP_DB" "$@"; }

# schema dump without comments, SET lines, blank lines and the per-dump
# random \restrict key of newer pg_dump releases
dump_schema() {
    "$PGBIN/pg_dump" -U postgres -d "$APP_DB" --schema-only >"$1.raw" 2>"$WORK/pg_dump.err" || return 1
    # (grep exits 1 when nothing is left, e.g. the empty database before 001)
    grep -vE '^(--|SET |SELECT pg_catalog\.set_config\(|\\(un)?restrict )' "$1.raw" \
        | grep -vE '^[[:space:]]*$' >"$1" || true
}

apply() {  # apply FILE LOGFILE — one transaction, stop at first error
    app_psql -1 -f "$1" >"$2" 2>&1
}

# one value from a query run as the app role
q() { app_psql -tAc "$1" 2>&1; }

# run FIXTURE + ASSERT in a transaction that is rolled back; ASSERT's last
# output line must be "t"
check_true() {  # check_true DESCRIPTION SQL
    local out
    out=$(printf 'BEGIN;\n%s\n%s\nROLLBACK;\n' "$FIXTURE" "$2" | app_psql -tA 2>&1)
    if [ "$(printf '%s\n' "$out" | tail -n 1)" = t ]; then
        ok "$1"
    else
        not_ok "$1"
        printf '%s\n' "$out" | diag 10
    fi
}

# a statement that must be rejected with SQLSTATE
check_rejects() {  # check_rejects DESCRIPTION SQLSTATE STATEMENT
    local out
    out=$(printf 'BEGIN;\n%s\nDO $chk$ BEGIN\n  %s;\n  RAISE EXCEPTION %s;\nEXCEPTION WHEN SQLSTATE %s THEN NULL;\nEND $chk$;\nSELECT true;\nROLLBACK;\n' \
        "$FIXTURE" "$3" "'statement was accepted'" "'$2'" | app_psql -tA 2>&1)
    if [ "$(printf '%s\n' "$out" | tail -n 1)" = t ]; then
        ok "$1"
    else
        not_ok "$1"
        printf '%s\n' "$out" | diag 10
    fi
}

FIXTURE="
INSERT INTO clinics (id, code, name) VALUES (1, 'HCM-Q1', 'PhysioFlow Quận 1');
INSERT INTO therapists (id, clinic_id, full_name) VALUES (1, 1, 'Nguyễn Thị Lan');
INSERT INTO patients (id, clinic_id, full_name, date_of_birth, sex, national_id)
    VALUES (1, 1, 'Trần Văn Minh', '1980-05-17', 'male', '079080001234');
"

seed_checks() {
    local t min n
    for spec in outcome_measure_library:10 pt_service_codes:10 clinical_protocols:6 protocol_steps:6 medical_terms:25; do
        t=${spec%%:*}; min=${spec##*:}
        n=$(q "SELECT count(*) FROM $t")
        if [[ "$n" =~ ^[0-9]+$ ]] && [ "$n" -ge "$min" ]; then
            ok "seed: $t has $n rows (>= $min)"
        else
            not_ok "seed: $t has at least $min rows (got: $n)"
        fi
    done
    n=$(q "SELECT count(*) FROM clinical_protocols p WHERE NOT EXISTS (SELECT 1 FROM protocol_steps s WHERE s.protocol_id = p.id)")
    if [ "$n" = 0 ]; then ok "seed: every clinical protocol has steps"; else not_ok "seed: every clinical protocol has steps ($n without)"; fi
    n=$(q "SELECT string_agg(code, ',' ORDER BY code) FROM outcome_measure_library WHERE code IN ('VAS','NPRS','ODI','NDI','BBS','TUG','DASH','LEFS','6MWT','KOOS')")
    if [ "$n" = "6MWT,BBS,DASH,KOOS,LEFS,NDI,NPRS,ODI,TUG,VAS" ]; then
        ok "seed: outcome library holds VAS, NPRS, ODI, NDI, BBS, TUG, DASH, LEFS, 6MWT, KOOS"
    else
        not_ok "seed: outcome library holds the ten standard instruments (got: $n)"
    fi
}

behaviour_checks() {
    check_true "BHYT: a well-formed card (DN4797912345678) is accepted with matching decoded parts" "
        INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number,
                                    bhyt_object_code, bhyt_benefit_level, bhyt_province_code, bhyt_valid_from, bhyt_valid_to)
        VALUES (1, 'BHYT', 'DN4797912345678', '2026-01-01', 'DN4797912345678', 'DN', 4, '79', '2026-01-01', '2026-12-31');
        SELECT count(*) = 1 FROM insurance_info WHERE bhyt_card_number = 'DN4797912345678';"
    check_rejects "BHYT: benefit level 6 in the card code is rejected" 23514 \
        "INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number) VALUES (1, 'BHYT', 'x', '2026-01-01', 'DN6797912345678')"
    check_rejects "BHYT: lower-case / short card codes are rejected" 23514 \
        "INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number) VALUES (1, 'BHYT', 'x', '2026-01-01', 'dn479791234567')"
    check_rejects "BHYT: decoded benefit level must agree with the card code" 23514 \
        "INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number, bhyt_benefit_level) VALUES (1, 'BHYT', 'x', '2026-01-01', 'DN4797912345678', 3)"
    check_rejects "BHYT: a malformed card with decoded parts fails as a check violation, not a cast error" 23514 \
        "INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number, bhyt_benefit_level) VALUES (1, 'BHYT', 'x', '2026-01-01', 'DNX797912345678', 4)"
    check_rejects "BHYT: a card number can be registered only once" 23505 \
        "INSERT INTO insurance_info (patient_id, provider, policy_number, valid_from, bhyt_card_number) VALUES (1, 'BHYT', 'a', '2026-01-01', 'HT3010123456789'), (1, 'BHYT', 'b', '2026-01-01', 'HT3010123456789')"
    check_true "outcome_measures: rows route to the yearly partition of measured_at" "
        INSERT INTO outcome_measures (patient_id, measure_code, measured_at, score) VALUES
            (1, 'NPRS', '2026-06-15 09:00+07', 6), (1, 'ODI', '2030-01-01 09:00+07', 40);
        SELECT string_agg(tableoid::regclass::text || ':' || measure_code, ',' ORDER BY measure_code) = 'outcome_measures_2026:NPRS,outcome_measures_default:ODI'
        FROM outcome_measures;"
    check_true "outcome_measures: a year starts at midnight Vietnam time (2026-12-31 17:00 UTC is 2027)" "
        INSERT INTO outcome_measures (patient_id, measure_code, measured_at, score) VALUES (1, 'VAS', '2026-12-31 17:00:00+00', 3);
        SELECT tableoid::regclass::text = 'outcome_measures_2027' FROM outcome_measures;"
    check_rejects "outcome_measures: a score outside the instrument's range (VAS 11) is rejected" 23514 \
        "INSERT INTO outcome_measures (patient_id, measure_code, measured_at, score) VALUES (1, 'VAS', '2026-06-15 09:00+07', 11)"
    check_true "updated_at trigger moves updated_at on a real change" "
        UPDATE patients SET updated_at = '2000-01-01' WHERE id = 1;
        UPDATE patients SET phone = '0901234567' WHERE id = 1;
        SELECT updated_at > '2000-01-02' FROM patients WHERE id = 1;"
    check_true "billing: invoice total is subtotal minus BHYT share and discount" "
        INSERT INTO invoices (invoice_number, clinic_id, patient_id, status, issued_at, subtotal_vnd, insurance_covered_vnd, discount_vnd)
            VALUES ('HCM-Q1-2026-000001', 1, 1, 'issued', now(), 300000, 240000, 10000);
        INSERT INTO invoice_items (invoice_id, service_code, quantity, unit_price_vnd)
            SELECT id, 'PT-EX', 2, 120000 FROM invoices;
        INSERT INTO payments (invoice_id, amount_vnd, method) SELECT id, 50000, 'cash' FROM invoices;
        SELECT (SELECT total_vnd FROM invoices) = 50000 AND (SELECT line_total_vnd FROM invoice_items) = 240000;"
    check_rejects "billing: an unknown payment method is rejected by the enum" 22P02 \
        "INSERT INTO payments (invoice_id, amount_vnd, method) VALUES (1, 1, 'cheque')"
    check_rejects "discharge plan must reference a treatment plan of the same patient" 23503 "
        INSERT INTO patients (id, clinic_id, full_name, date_of_birth) VALUES (2, 1, 'Lê Thị Hoa', '1975-02-03');
        INSERT INTO treatment_plans (id, patient_id, therapist_id, diagnosis, start_date) VALUES (1, 2, 1, 'Knee OA', '2026-11-01');
        INSERT INTO discharge_plans (patient_id, treatment_plan_id) VALUES (1, 1)"
    check_true "medical terms: Vietnamese full-text search (any case) and lower(term_en) lookup work" "
        SELECT (SELECT count(*) FROM medical_terms
                 WHERE to_tsvector('simple', term_en || ' ' || term_vi) @@ to_tsquery('simple', 'Khớp')) >= 2
           AND (SELECT count(*) FROM medical_terms WHERE lower(term_en) = lower('STROKE')) = 1;"
    local plan
    plan=$(app_psql -tA -c "SET enable_seqscan = off; EXPLAIN SELECT * FROM medical_terms WHERE to_tsvector('simple', term_en || ' ' || term_vi) @@ to_tsquery('simple', 'khớp')" 2>&1)
    if grep -q medical_terms_search_idx <<<"$plan"; then
        ok "medical terms: the search expression matches the GIN index"
    else
        not_ok "medical terms: the search expression matches the GIN index"
        printf '%s\n' "$plan" | diag 10
    fi
    check_true "audit_logs: rows route to the monthly partition (Vietnam time)" "
        INSERT INTO audit_logs (created_at, table_name, record_id, action, changes) VALUES
            ('2026-11-26 10:00+07', 'patients', '1', 'UPDATE', '{\"phone\": {\"old\": null, \"new\": \"0901234567\"}}'),
            ('2026-11-30 18:00+00', 'patients', '1', 'READ', '{}'),
            ('2025-01-01 00:00+07', 'patients', '1', 'READ', '{}');
        SELECT string_agg(tableoid::regclass::text, ',' ORDER BY created_at) = 'audit_logs_default,audit_logs_2026_11,audit_logs_2026_12'
        FROM audit_logs;"
    check_rejects "audit_logs: changes must be a JSON object" 23514 \
        "INSERT INTO audit_logs (table_name, record_id, action, changes) VALUES ('patients', '1', 'UPDATE', '[1,2]')"
}

# ---------------------------------------------------------------- up, then down

declare -a APPLIED=()
for f in "${UPS[@]}"; do
    n=${f%%_*}
    if ! dump_schema "$WORK/before_$n.sql"; then
        not_ok "pg_dump before $f"; diag <"$WORK/pg_dump.err"; break
    fi
    if apply "$MIG/$f" "$WORK/up_$n.log"; then
        ok "up $f applies in one transaction as the non-superuser owner"
        APPLIED+=("$n")
    else
        not_ok "up $f applies in one transaction as the non-superuser owner"
        diag 20 <"$WORK/up_$n.log"
        break
    fi
    [ "$n" = 010 ] && seed_checks
done
if [ "${#APPLIED[@]}" -ne "${#UPS[@]}" ]; then
    not_ok "all ${#UPS[@]} up migrations applied (stopped after ${#APPLIED[@]}); rolling back what was applied"
elif [ "${#UPS[@]}" -lt 10 ]; then
    not_ok "seed checks ran (they need migration 010)"
else
    behaviour_checks
fi

dump_schema "$WORK/after_all_up.sql"

for ((i = ${#APPLIED[@]} - 1; i >= 0; i--)); do
    n=${APPLIED[$i]}
    down="rollback/${n}_down.sql"
    if ! apply "$MIG/$down" "$WORK/down_$n.log"; then
        not_ok "$down applies"
        diag 20 <"$WORK/down_$n.log"
        continue
    fi
    dump_schema "$WORK/after_down_$n.sql"
    if diff -u "$WORK/before_$n.sql" "$WORK/after_down_$n.sql" >"$WORK/diff_$n.txt"; then
        ok "$down restores the schema exactly as it was before ${n}"
    else
        not_ok "$down restores the schema exactly as it was before ${n}"
        tail -n +3 "$WORK/diff_$n.txt" | diag 40
    fi
done

# a full rollback must leave nothing behind that blocks (or changes) a re-run
if [ "${#APPLIED[@]}" -eq "${#UPS[@]}" ]; then
    reapply_ok=1
    for f in "${UPS[@]}"; do
        if ! apply "$MIG/$f" "$WORK/reup.log"; then
            reapply_ok=0
            not_ok "re-apply of $f after the full rollback"
            diag 20 <"$WORK/reup.log"
            break
        fi
    done
    if [ "$reapply_ok" -eq 1 ]; then
        dump_schema "$WORK/after_reapply.sql"
        if diff -u "$WORK/after_all_up.sql" "$WORK/after_reapply.sql" >"$WORK/diff_reapply.txt"; then
            ok "re-applying all migrations after the full rollback gives the same schema"
        else
            not_ok "re-applying all migrations after the full rollback gives the same schema"
            tail -n +3 "$WORK/diff_reapply.txt" | diag 40
        fi
    fi
fi

summary
[ "$failed" -eq 0 ]
