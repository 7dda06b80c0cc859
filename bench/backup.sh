#!/bin/sh
# Benchmark: a backup of a realistic database (clinical notes: text,
# jsonb, timestamps, indexes; about SIZE MiB, default 1024) by
#   - the floor: `pg_dump -Fc` alone, to a local file;
#   - the old scripts' pipeline: schema, data and custom dumps one after
#     another, sha256sum of each, `tar czf`, `aws s3 cp`;
#   - bgrun playbooks/backup.lua (a local copy and the upload), and with
#     local=false (straight to the bucket);
# alternating, ROUNDS rounds each; then a restore of that backup by
# bgrun (restore.restore: the dump out of the archive, pg_restore --jobs,
# swapped in by rename) against `pg_restore` alone into an empty database.
# Wall time and peak RSS (/usr/bin/time) of each, medians, and the ratios.
#
#   bench/backup.sh [ROUNDS]   (default 3; SIZE=1024 MiB)
#   ONLY=restore bench/backup.sh   (one backup, then the restore rounds)
#
# Uses the sandbox the PG*/AWS_* variables name (eval "$(tests/sandbox/sandbox
# up DIR)"); without them it starts one of its own. The database is built
# once per SIZE and kept (bgrun_bench_<SIZE>) for the next run.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-3}
SIZE=${SIZE:-1024}
ONLY=${ONLY:-}
TMP=$(mktemp -d "${BENCH_TMP:-/tmp}/bgrun-bench-backup.XXXXXX")
SB_STOP=

cleanup() {
	[ -n "$SB_STOP" ] && $SB_STOP >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v aws >/dev/null 2>&1 || { echo "bench: aws (awscli) is missing" >&2; exit 1; }

if [ -z "${AWS_ENDPOINT_URL_S3:-}" ] || [ -z "${SANDBOX_S3_BUCKET:-}" ] || [ -z "${PGHOST:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "$TMP/sandbox")"
	SB_STOP="$ROOT/tests/sandbox/sandbox down $TMP/sandbox"
fi
BUCKET=$SANDBOX_S3_BUCKET
DB=bgrun_bench_$SIZE
export PGDATABASE=$DB

# ---------------------------------------------------------------- the data
if [ "$(psql -X -At -d postgres -c "SELECT count(*) FROM pg_database WHERE datname = '$DB'")" != 1 ] ||
	[ "$(psql -X -At -c "SELECT done FROM bench_built" 2>/dev/null)" != t ]; then
	echo "backup: building $DB (about $SIZE MiB)..."
	psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
	# about 400 bytes a row with its indexes (SIZE=1024: 2.7 M notes)
	rows=$((SIZE * 1024 * 1024 / 400))
	psql -X -q -v ON_ERROR_STOP=1 -v rows="$rows" <<'SQL'
CREATE TABLE schema_migrations (version bigint PRIMARY KEY, name text, checksum text, applied_at timestamptz DEFAULT now());
INSERT INTO schema_migrations (version, name) VALUES (10, 'bench');
CREATE TABLE patients (id bigint PRIMARY KEY, name text NOT NULL, born date, insurance jsonb);
INSERT INTO patients SELECT g, 'Patient ' || g, date '1940-01-01' + (g % 25000),
  jsonb_build_object('card', 'HC4' || lpad((g * 7919 % 10000000)::text, 10, '0'), 'level', g % 5)
  FROM generate_series(1, greatest(:rows / 40, 1)) g;
CREATE TABLE clinical_notes (
  id bigint PRIMARY KEY,
  patient_id bigint NOT NULL REFERENCES patients,
  author text NOT NULL,
  kind text NOT NULL,
  body text NOT NULL,
  details jsonb NOT NULL,
  created_at timestamptz NOT NULL,
  updated_at timestamptz);
WITH words(w) AS (SELECT ARRAY['patient','reports','reduced','pain','after','exercise','knee','shoulder','lumbar',
  'flexion','extension','range','of','motion','improved','degrees','gait','stable','swelling','mild','moderate',
  'home','program','reviewed','strength','grade','tolerated','session','well','manual','therapy','applied',
  'ultrasound','heat','cold','follow','up','next','week','goals','met','partially','plan','continue'])
INSERT INTO clinical_notes
SELECT g, 1 + g % greatest(:rows / 40, 1),
  'PT-' || (g % 97),
  (ARRAY['SOAP','progress','discharge','intake'])[1 + g % 4],
  w[1 + g % 44] || ' ' || w[1 + (g / 3) % 44] || ' ' || w[1 + (g / 7) % 44] || ' ' || w[1 + (g / 11) % 44] || ' '
    || w[1 + (g / 13) % 44] || ' ' || w[1 + (g * 17) % 44] || ' ' || w[1 + (g * 31) % 44] || ' '
    || w[1 + (g / 5) % 44] || ' ' || w[1 + (g * 3) % 44] || ' ' || w[1 + (g / 17) % 44] || '; VAS '
    || (g % 11) || '/10; ' || md5(g::text),
  jsonb_build_object('pain', g % 11, 'rom', jsonb_build_array(g % 140, g % 90), 'codes',
    jsonb_build_array('PT' || (g % 30), 'M' || (g % 99)), 'visit', g % 20),
  timestamptz '2020-01-01' + make_interval(secs => g * 37),
  CASE WHEN g % 3 = 0 THEN timestamptz '2020-01-01' + make_interval(secs => g * 37 + 3600) END
FROM words, generate_series(1, :rows) g;
CREATE INDEX ON clinical_notes (patient_id, created_at);
CREATE INDEX ON clinical_notes (created_at);
CREATE INDEX ON clinical_notes ((details ->> 'visit'));
CREATE TABLE bench_built (done boolean);
INSERT INTO bench_built VALUES (true);
VACUUM ANALYZE patients, clinical_notes;
SQL
fi
db_mib=$(psql -X -At -c "SELECT pg_database_size(current_database()) / 1048576")
rows=$(psql -X -At -c "SELECT count(*) FROM clinical_notes")

# ----------------------------------------------------------- the contenders
mkdir -p "$TMP/pb" "$TMP/backups" "$TMP/oldwork"
cat >"$TMP/pb/environments.lua" <<LUA
local envs = dofile("$ROOT/playbooks/environments.lua")
local e = envs["local"]
e.backups = "$TMP/backups"
e.migrations = "$ROOT/examples/physioflow/migrations"
e.database = { dbname = "$DB" }
e.bucket = "$BUCKET"
return envs
LUA
cp "$ROOT/playbooks/backup.lua" "$TMP/pb/"
cat >"$TMP/pb/restore-bench.lua" <<LUA
local restore = require("restore")
local postgres = require("postgres")
return playbook { params = { path = { required = true } }, run = function(args)
  local r = restore.restore { path = args.path, database = { dbname = "$DB" }, work_dir = "$TMP" }
  local admin <close> = postgres.connect { dbname = "postgres" }
  -- an autovacuum worker (a superuser's) may hold it a moment
  for i = 1, 60 do
    if pcall(admin.exec, admin, "DROP DATABASE " .. postgres.quote_ident(r.old_database) .. " WITH (FORCE)") then break end
    bgrun.sleep(1)
  end
end }
LUA

# the old scripts: three dumps one after another, checksums, tar czf, upload
cat >"$TMP/old.sh" <<'SH'
#!/bin/sh
set -e
d=$1/old-$$
mkdir -p "$d"
pg_dump --schema-only --no-owner -f "$d/schema.sql"
pg_dump --data-only --no-owner -f "$d/data.sql"
pg_dump --format=custom --no-owner -f "$d/full_backup.dump"
( cd "$d"
  printf '{"files": {' >metadata.json
  for f in schema.sql data.sql full_backup.dump; do
    printf '"%s": {"size": %s, "sha256": "%s"},' "$f" "$(stat -c %s "$f")" "$(sha256sum "$f" | cut -d' ' -f1)" >>metadata.json
  done
  printf '"_": 0}}\n' >>metadata.json
  tar czf ../old-$$.tar.gz metadata.json schema.sql data.sql full_backup.dump )
aws s3 cp --quiet "$1/old-$$.tar.gz" "s3://$2/bench/old-$$.tar.gz"
rm -rf "$d" "$1/old-$$.tar.gz"
SH
chmod +x "$TMP/old.sh"
export AWS_CONFIG_FILE="$TMP/aws.config"
printf '[default]\ns3 =\n  multipart_chunksize = 8MB\n  addressing_style = path\n' >"$AWS_CONFIG_FILE"

run() { # name command...: appends "seconds peak_kib" to $TMP/name
	name=$1
	shift
	/usr/bin/time -f "%e %M" -o "$TMP/time" "$@" >"$TMP/out" 2>"$TMP/err" || {
		echo "bench: $name failed:" >&2
		tail -20 "$TMP/err" >&2
		exit 1
	}
	cat "$TMP/time" >>"$TMP/$name"
}

# drops a database, waiting out an autovacuum worker (a superuser process
# WITH (FORCE) may not end for us)
drop_db() {
	i=0
	until psql -X -q -d postgres -c "DROP DATABASE IF EXISTS $1 WITH (FORCE)" 2>/dev/null; do
		i=$((i + 1))
		[ "$i" -lt 60 ] || { echo "bench: cannot drop $1" >&2; exit 1; }
		sleep 1
	done
}

median() { # file column
	cut -d' ' -f"$2" "$1" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2) }'
}
peak() { cut -d' ' -f2 "$1" | sort -n | tail -1; }

echo "backup: $DB, $db_mib MiB, $rows notes; $ROUNDS rounds; load $(cut -d' ' -f1-3 /proc/loadavg) on $(nproc) cores"
r=1
if [ "$ONLY" = restore ]; then
	run bgrun "$BGRUN" -q "$TMP/pb/backup.lua" env=local label=bench keep=1
	last=$(tail -1 "$TMP/out")
	r=$((ROUNDS + 1))
fi
while [ "$r" -le "$ROUNDS" ]; do
	run floor pg_dump --format=custom --no-owner -f "$TMP/floor.dump"
	rm -f "$TMP/floor.dump"
	run old "$TMP/old.sh" "$TMP/oldwork" "$BUCKET"
	run bgrun "$BGRUN" -q "$TMP/pb/backup.lua" env=local label=bench keep=1
	last=$(tail -1 "$TMP/out")
	run stream "$BGRUN" -q "$TMP/pb/backup.lua" env=local label=bench local=false
	echo "backup: round $r: floor $(tail -1 "$TMP/floor" | cut -d' ' -f1) s, old $(tail -1 "$TMP/old" | cut -d' ' -f1) s," \
		"bgrun $(tail -1 "$TMP/bgrun" | cut -d' ' -f1) s, bgrun local=false $(tail -1 "$TMP/stream" | cut -d' ' -f1) s"
	r=$((r + 1))
done
archive_mib=$(($(stat -c %s "$last") / 1048576))

# restore: the dump of the last backup into an empty database by
# pg_restore alone, against bgrun's whole restore of that backup
mkdir -p "$TMP/x"
tar xzf "$last" -C "$TMP/x" full_backup.dump
r=1
while [ "$r" -le "$ROUNDS" ]; do
	drop_db "${DB}_pgr"
	psql -X -q -d postgres -c "CREATE DATABASE ${DB}_pgr"
	run pg_restore pg_restore --no-owner --exit-on-error -d "${DB}_pgr" "$TMP/x/full_backup.dump"
	run restore "$BGRUN" -q "$TMP/pb/restore-bench.lua" path="$last"
	echo "backup: restore round $r: pg_restore $(tail -1 "$TMP/pg_restore" | cut -d' ' -f1) s, bgrun $(tail -1 "$TMP/restore" | cut -d' ' -f1) s"
	r=$((r + 1))
done
drop_db "${DB}_pgr"
aws s3 rm --quiet --recursive "s3://$BUCKET/bench/" || true
for k in $(aws s3 ls "s3://$BUCKET/local/" | awk '/-local-bench/ { print $4 }'); do
	aws s3 rm --quiet "s3://$BUCKET/local/$k" || true
done

p=$(median "$TMP/pg_restore" 1) x=$(median "$TMP/restore" 1)
echo "backup: $db_mib MiB database, archive $archive_mib MiB; medians of $ROUNDS, peak RSS the highest"
if [ "$ONLY" = restore ]; then
	echo "backup: pg_restore alone:               $p s, peak RSS $(peak "$TMP/pg_restore") KiB"
	echo "backup: bgrun restore (verify+jobs+swap): $x s, peak RSS $(peak "$TMP/restore") KiB"
	awk -v p="$p" -v x="$x" 'BEGIN { printf "backup: ratio restore bgrun/pg_restore %.2fx\n", x / p }'
	exit 0
fi
f=$(median "$TMP/floor" 1) o=$(median "$TMP/old" 1) g=$(median "$TMP/bgrun" 1) s=$(median "$TMP/stream" 1)
echo "backup: pg_dump -Fc alone (floor):      $f s, peak RSS $(peak "$TMP/floor") KiB"
echo "backup: old pipeline + aws s3 cp:       $o s, peak RSS $(peak "$TMP/old") KiB"
echo "backup: bgrun backup.lua (local+upload): $g s, peak RSS $(peak "$TMP/bgrun") KiB"
echo "backup: bgrun backup.lua local=false:    $s s, peak RSS $(peak "$TMP/stream") KiB"
echo "backup: pg_restore alone:               $p s, peak RSS $(peak "$TMP/pg_restore") KiB"
echo "backup: bgrun restore (verify+jobs+swap): $x s, peak RSS $(peak "$TMP/restore") KiB"
awk -v f="$f" -v o="$o" -v g="$g" -v s="$s" -v p="$p" -v x="$x" 'BEGIN {
	printf "backup: ratio old/bgrun %.2fx faster (local=false %.2fx); bgrun/floor %.2fx (local=false %.2fx)\n", o / g, o / s, g / f, s / f
	printf "backup: ratio restore bgrun/pg_restore %.2fx\n", x / p }'
