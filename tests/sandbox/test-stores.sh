#!/bin/bash
# The sandbox's stores and demo app, checked with the real clients: psql,
# the AWS CLI, curl. Starts its own sandbox in a temporary directory, or
# reuses the one named by SANDBOX_DIR when the sandbox's variables are set.
set -u

here=$(cd "$(dirname "$0")" && pwd)
sandbox=$here/sandbox
work=$(mktemp -d)
passed=0
failed=0
started=()   # sandbox dirs this script brought up
apps=()      # demo app pids

ok() { echo "ok - $1"; passed=$((passed + 1)); }
notok() {
	echo "not ok - $1"
	[ $# -ge 2 ] && printf '%s\n' "$2" | tail -n 15 | sed 's/^/#   /'
	failed=$((failed + 1))
}
# check NAME COMMAND...: the command's exit status decides.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then ok "$name"; else notok "$name" "$out"; fi
}
finish() {
	local pid dir
	for pid in "${apps[@]}"; do kill "$pid" 2>/dev/null; done
	for dir in "${started[@]}"; do "$sandbox" down "$dir" >/dev/null 2>&1; done
	rm -rf "$work"
	echo "sandbox-stores: $passed passed, $failed failed"
	[ "$failed" -eq 0 ]
}
trap 'finish; exit $?' EXIT
trap 'exit 130' INT TERM

if ! out=$("$here/build.sh" 2>&1); then
	notok "build.sh builds the sandbox" "$out"
	exit 1
fi
ok "build.sh builds the sandbox"

now() { date +%s.%N; }
elapsed() { printf '%.2f' "$(echo "$(now) - $1" | bc)"; }

exports="KUBECONFIG PGHOST PGPORT PGUSER PGPASSWORD PGDATABASE AWS_ACCESS_KEY_ID
AWS_SECRET_ACCESS_KEY AWS_REGION AWS_ENDPOINT_URL_S3 SANDBOX_ADMIN_URL SANDBOX_BEHAVIORS
PROMETHEUS_URL PROMETHEUS_AUTH_URL PROMETHEUS_USER PROMETHEUS_PASSWORD PROMETHEUS_TOKEN"

all_exported() { # all_exported FILE
	local name
	for name in $exports; do
		grep -q "^export $name=." "$1" || { echo "no $name in $1"; return 1; }
	done
}

# ---- up ----------------------------------------------------------------

sb=$work/sb
if [ -n "${SANDBOX_DIR:-}" ] && [ -n "${PGHOST:-}" ] && [ -n "${AWS_ENDPOINT_URL_S3:-}" ] && [ -n "${KUBECONFIG:-}" ]; then
	echo "# reusing the sandbox in $SANDBOX_DIR"
	sb=$SANDBOX_DIR
	"$sandbox" env "$sb" >"$work/up.out"
else
	t0=$(now)
	if "$sandbox" up "$sb" >"$work/up.out" 2>"$work/up.err"; then
		started+=("$sb")
		ok "sandbox up starts every part"
	else
		notok "sandbox up starts every part" "$(cat "$work/up.err")"
		exit 1
	fi
	secs=$(elapsed "$t0")
	echo "# sandbox up took ${secs}s"
	check "sandbox up took under 5 s (${secs}s)" test "$(echo "$secs < 5" | bc)" = 1
	check "up prints every export" all_exported "$work/up.out"
	check "up writes the same exports to DIR/env.sh" cmp "$work/up.out" "$sb/env.sh"
	check "SANDBOX_BEHAVIORS is DIR/behaviors.json holding {}" \
		bash -c ". '$work/up.out' && [ \"\$SANDBOX_BEHAVIORS\" = '$sb/behaviors.json' ] && jq -e '. == {}' \"\$SANDBOX_BEHAVIORS\""
	t0=$(now)
	"$sandbox" up "$sb" >"$work/up2.out" 2>"$work/up2.err"
	rc=$?
	secs=$(elapsed "$t0")
	check "up when already up prints the same exports (${secs}s)" \
		bash -c "[ $rc = 0 ] && cmp '$work/up.out' '$work/up2.out'"
fi
set -a
. "$work/up.out"
set +a

check "status exits 0 with every part up" bash -c \
	"'$sandbox' status '$sb' >'$work/status.out' && [ \$(grep -c ' up ' '$work/status.out') = 5 ]"

# ---- PostgreSQL --------------------------------------------------------

psqlq() { psql -X -q -v ON_ERROR_STOP=1 -tA "$@"; }

out=$(psql -X -tAc "SELECT current_user || '@' || current_database()" 2>&1)
if [ "$out" = physioflow@physioflow_local ]; then
	ok "psql connects with the exported PG* variables"
else
	notok "psql connects with the exported PG* variables" "$out"
fi
check "the role can create databases (CREATEDB)" \
	psqlq -c "CREATE DATABASE sbtest_createdb" -c "DROP DATABASE sbtest_createdb"
out=$(PGPASSWORD=wrong psql -X -tAc "SELECT 1" 2>&1)
if [ $? -ne 0 ] && grep -q "password authentication failed" <<<"$out"; then
	ok "a wrong password is refused"
else
	notok "a wrong password is refused" "$out"
fi
check "TCP port is on loopback only" test "$PGHOST" = 127.0.0.1
check "SANDBOX_PG_SUPERUSER_URL connects as a superuser" bash -c \
	'[ "$(psql -X -tA "$SANDBOX_PG_SUPERUSER_URL" -c "SELECT rolsuper FROM pg_roles WHERE rolname = current_user")" = t ]'

# ---- S3 -----------------------------------------------------------------

bucket=physioflow-backups-local
s3=s3://$bucket
check "aws s3 ls lists the bucket $bucket" bash -c "aws s3 ls | grep -qw $bucket"
echo "hello from the sandbox $$" >"$work/small.txt"
head -c $((50 * 1024 * 1024)) /dev/urandom >"$work/big.bin"
check "aws s3 cp uploads a small file" aws s3 cp --only-show-errors "$work/small.txt" "$s3/test-$$/small.txt"
check "aws s3 cp uploads 50 MiB (multipart)" aws s3 cp --only-show-errors "$work/big.bin" "$s3/test-$$/big.bin"
etag=$(aws s3api head-object --bucket $bucket --key "test-$$/big.bin" --query ETag --output text 2>&1)
# A multipart object's ETag is md5-of-md5s followed by -<parts>.
if [[ $etag =~ -[0-9]+\"?$ ]]; then ok "the 50 MiB object was stored as a multipart upload ($etag)"; else notok "the 50 MiB object was stored as a multipart upload" "$etag"; fi
list=$(aws s3 ls "$s3/test-$$/" 2>&1)
if grep -q " 52428800 big.bin$" <<<"$list" && grep -q " small.txt$" <<<"$list"; then
	ok "aws s3 ls lists both objects with their sizes"
else
	notok "aws s3 ls lists both objects with their sizes" "$list"
fi
check "download of the 50 MiB object has the same sha256" bash -c \
	"aws s3 cp --only-show-errors '$s3/test-$$/big.bin' '$work/big.out' &&
	 [ \"\$(sha256sum <'$work/big.bin')\" = \"\$(sha256sum <'$work/big.out')\" ]"
check "download of the small object is identical" bash -c \
	"aws s3 cp --only-show-errors '$s3/test-$$/small.txt' '$work/small.out' && cmp '$work/small.txt' '$work/small.out'"
out=$(AWS_SECRET_ACCESS_KEY=wrong-secret aws s3 ls "$s3/" 2>&1)
if [ $? -ne 0 ] && grep -q SignatureDoesNotMatch <<<"$out"; then
	ok "a wrong secret key is refused (SignatureDoesNotMatch)"
else
	notok "a wrong secret key is refused (SignatureDoesNotMatch)" "$out"
fi
out=$(AWS_ACCESS_KEY_ID=NOSUCHKEY aws s3 ls "$s3/" 2>&1)
if [ $? -ne 0 ] && grep -q InvalidAccessKeyId <<<"$out"; then
	ok "an unknown access key is refused (InvalidAccessKeyId)"
else
	notok "an unknown access key is refused (InvalidAccessKeyId)" "$out"
fi
out=$(aws s3 cp "$work/small.txt" "s3://no-such-bucket-$$/small.txt" 2>&1)
if [ $? -ne 0 ] && grep -q NoSuchBucket <<<"$out"; then
	ok "an upload to a missing bucket fails (NoSuchBucket)"
else
	notok "an upload to a missing bucket fails (NoSuchBucket)" "$out"
fi
check "aws s3 rm deletes, and the listing no longer shows it" bash -c \
	"aws s3 rm --only-show-errors '$s3/test-$$/small.txt' && ! aws s3 ls '$s3/test-$$/' | grep -q small.txt"
aws s3 rm --only-show-errors --recursive "$s3/test-$$/" >/dev/null 2>&1
rm -f "$work/big.bin" "$work/big.out"
# the replica: another bucket behind a second endpoint, signed for another region
replica=(--endpoint-url "$SANDBOX_S3_REPLICA_ENDPOINT" --region "$SANDBOX_S3_REPLICA_REGION")
check "the replica endpoint is another loopback address ($SANDBOX_S3_REPLICA_ENDPOINT), region $SANDBOX_S3_REPLICA_REGION" \
	bash -c '[[ $SANDBOX_S3_REPLICA_ENDPOINT =~ ^http://127\.0\.0\.2:[0-9]+$ ]] && [ "$SANDBOX_S3_REPLICA_REGION" != "$AWS_REGION" ]'
check "aws s3 cp through the replica endpoint into $SANDBOX_S3_REPLICA_BUCKET, and back identical" bash -c \
	"aws ${replica[*]} s3 cp --only-show-errors '$work/small.txt' 's3://$SANDBOX_S3_REPLICA_BUCKET/test-$$/small.txt' &&
	 aws ${replica[*]} s3 cp --only-show-errors 's3://$SANDBOX_S3_REPLICA_BUCKET/test-$$/small.txt' '$work/replica.out' &&
	 cmp '$work/small.txt' '$work/replica.out' &&
	 aws ${replica[*]} s3 rm --only-show-errors 's3://$SANDBOX_S3_REPLICA_BUCKET/test-$$/small.txt'"

# ---- demo app -----------------------------------------------------------

db=sbtest_demo_$$
empty=sbtest_empty_$$
if psqlq -c "CREATE DATABASE $db" -c "CREATE DATABASE $empty" >"$work/db.err" 2>&1 &&
	psqlq -d "$db" >>"$work/db.err" 2>&1 <<'SQL'
CREATE TABLE schema_migrations (version text PRIMARY KEY, checksum text, applied_at timestamptz DEFAULT now());
INSERT INTO schema_migrations (version) VALUES ('001'), ('002'), ('003');
CREATE TABLE outcome_measure_library (code text PRIMARY KEY, name text, category text,
  min_score numeric, max_score numeric, higher_is_better boolean);
INSERT INTO outcome_measure_library VALUES
  ('NPRS', 'Numeric Pain Rating Scale', 'pain', 0, 10, false),
  ('LEFS', 'Lower Extremity Functional Scale', 'function', 0, 80, true);
CREATE TABLE pt_service_codes (code text PRIMARY KEY, name text, category text,
  unit_price_vnd bigint, duration_min int, active boolean);
INSERT INTO pt_service_codes VALUES
  ('PT-01', 'Điện xung trị liệu', 'electrotherapy', 45000, 20, true),
  ('PT-02', 'Tập vận động', 'exercise', 60000, 30, true),
  ('PT-03', 'Siêu âm trị liệu', 'electrotherapy', 50000, 15, false);
CREATE TABLE clinical_protocols (code text PRIMARY KEY, name text, condition text, phase text, duration_weeks int);
INSERT INTO clinical_protocols VALUES ('ACL-R', 'ACL reconstruction rehabilitation', 'ACL tear', 'post-op', 24);
CREATE TABLE medical_terms (term_en text, term_vi text, category text, definition text);
INSERT INTO medical_terms VALUES
  ('Frozen shoulder', 'Viêm quanh khớp vai', 'musculoskeletal', 'Stiffness and pain of the shoulder joint'),
  ('Low back pain', 'Đau thắt lưng', 'musculoskeletal', 'Pain below the ribs and above the legs'),
  ('100% effort', 'Nỗ lực tối đa', 'exercise', 'A term with a percent sign');
SQL
then
	ok "scratch databases for the demo app"
else
	notok "scratch databases for the demo app" "$(cat "$work/db.err")"
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# start_app NAME VERSION [VAR=value...]: runs `sandbox demoapp` in the
# background; sets app_pid and url once it listens.
start_app() {
	local name=$1 version=$2 port i
	shift 2
	port=$(free_port)
	env POD_IP=127.0.0.1 PORT="$port" APP_VERSION="$version" POD_NAME="$name" \
		SANDBOX_BEHAVIORS="$work/behaviors.json" PGDATABASE="$db" "$@" \
		"$sandbox" demoapp >"$work/$name.out" 2>"$work/$name.err" &
	app_pid=$!
	apps+=("$app_pid")
	url=http://127.0.0.1:$port
	for i in $(seq 100); do
		grep -q "listening on" "$work/$name.out" 2>/dev/null && return 0
		kill -0 "$app_pid" 2>/dev/null || break
		sleep 0.05
	done
	echo "# demo app $name did not start:"; sed 's/^/#   /' "$work/$name.err"
	return 1
}

# req METHOD PATH [BODY]: sets code and body.
req() {
	local args=(-s -m 10 -o "$work/body" -w '%{http_code}' -X "$1" "$url$2")
	[ $# -ge 3 ] && args+=(-H 'Content-Type: application/json' --data-binary "$3")
	code=$(curl "${args[@]}")
	body=$(cat "$work/body" 2>/dev/null)
}

# expect NAME STATUS JQ: the last response has STATUS and satisfies JQ.
expect() {
	if [ "$code" = "$2" ] && jq -e "$3" >/dev/null 2>&1 <<<"$body"; then
		ok "$1"
	else
		notok "$1" "got $code $body"
	fi
}

cat >"$work/behaviors.json" <<'JSON'
{
  "v2-broken": {"fail_paths": ["/api/v1/service-codes"], "never_ready": true, "slow_ms": 1500},
  "v3-crash": {"crash_after_s": 1, "exit_code": 7},
  "v4-slowstart": {"ready_after_s": 2},
  "v5-noisy": {"error_logs_per_s": 5}
}
JSON

start_app good v1
req GET /health
expect "GET /health answers 200 with the version" 200 '.status == "ok" and .version == "v1"'
req GET /ready
expect "GET /ready answers 200 when the database answers" 200 '.ready == true'
req GET /api/v1/info
expect "GET /api/v1/info names app, version, pod and schema version" 200 \
	'.name == "physioflow-api" and .version == "v1" and .pod == "good" and .schema_version == 3'
req POST /api/v1/insurance/bhyt/validate '{"card_number":"DN4010123456789"}'
expect "BHYT DN4010123456789 is valid and parsed" 200 \
	'.valid == true and .card_number == "DN4010123456789" and .object_code == "DN" and .benefit_level == 4 and .province_code == "01" and .social_insurance_number == "0123456789"'
req POST /api/v1/insurance/bhyt/validate '{"card_number":"ZZ7000123456789"}'
expect "BHYT with unknown object code, level 7, province 00 is invalid, three errors" 200 \
	'.valid == false and (.errors | length) == 3'
req POST /api/v1/insurance/bhyt/validate '{"card_number":"DN40101234"}'
expect "BHYT of 10 characters is invalid" 200 '.valid == false and (.errors[0] | test("15 characters"))'
req POST /api/v1/insurance/bhyt/validate 'not json'
expect "BHYT with a body that is not JSON is 400" 400 '.error'
req POST /api/v1/insurance/bhyt/validate '{"number":"DN4010123456789"}'
expect "BHYT without card_number is 400" 400 '.error | test("card_number")'
req GET /api/v1/outcome-measures
expect "outcome measures come from outcome_measure_library" 200 \
	'(.items | length) == 2 and (.items | map(.code) | sort) == ["LEFS","NPRS"] and (.items[] | select(.code=="LEFS") | .max_score == 80 and .higher_is_better == true)'
req GET /api/v1/service-codes
expect "service codes come from pt_service_codes" 200 \
	'(.items | length) == 3 and .items[0].code == "PT-01" and .items[0].unit_price_vnd == 45000 and .items[0].name == "Điện xung trị liệu"'
req GET /api/v1/protocols
expect "protocols come from clinical_protocols" 200 '.items == [{"code":"ACL-R","name":"ACL reconstruction rehabilitation","condition":"ACL tear","phase":"post-op","duration_weeks":24}]'
req GET '/api/v1/medical-terms?q=SHOULDER'
expect "medical terms match term_en case-insensitively" 200 '.query == "SHOULDER" and (.items | map(.term_en)) == ["Frozen shoulder"]'
req GET '/api/v1/medical-terms?q=%C4%90AU%20TH%E1%BA%AET'
expect "medical terms match term_vi case-insensitively (ĐAU THẮT)" 200 '(.items | map(.term_en)) == ["Low back pain"]'
req GET '/api/v1/medical-terms?q=%25'
expect "medical terms treat % in q literally" 200 '(.items | map(.term_en)) == ["100% effort"]'
req GET '/api/v1/medical-terms?q=%27%3B%20DROP%20TABLE%20medical_terms%3B--'
expect "medical terms with SQL in q find nothing and harm nothing" 200 '.items == []'
req GET /api/v1/medical-terms
expect "medical terms without q is 400" 400 '.error'
req GET /api/v1/db-check
expect "db-check reports ok, latency and schema version" 200 \
	'.database == "ok" and (.latency_ms | type) == "number" and .schema_version == 3'
req GET /no/such/path
expect "unknown paths are 404" 404 '.error'
check "each request is logged to stdout" grep -Eq 'INFO GET /api/v1/info 200 [0-9]+ms' "$work/good.out"
kill -TERM "$app_pid"
wait "$app_pid"
check "SIGTERM stops the app with exit 0" test $? = 0

start_app empty v1 PGDATABASE="$empty"
req GET /api/v1/service-codes
expect "a missing table is 503 with the database error" 503 '.error | test("pt_service_codes")'
req GET /api/v1/info
expect "without schema_migrations the schema version is 0" 200 '.schema_version == 0'
req GET /health
expect "the app keeps serving after database errors" 200 '.status == "ok"'
kill "$app_pid"

start_app dburl v1 PGDATABASE=no_such_db \
	DATABASE_URL="postgres://$PGUSER:$PGPASSWORD@127.0.0.1:$PGPORT/$db?sslmode=disable"
req GET /api/v1/info
expect "DATABASE_URL is preferred over PG* variables" 200 '.schema_version == 3'
kill "$app_pid"

start_app nodb v1 PGPORT="$(free_port)"
req GET /health
expect "without a database /health still answers 200" 200 '.status == "ok"'
req GET /ready
expect "without a database /ready is 503" 503 '.ready == false and (.reason | test("database"))'
req GET /api/v1/db-check
expect "without a database /db-check is 503" 503 '.database == "error" and (.error | length) > 0'
check "database errors never print the password" bash -c "! grep -qF -- '$PGPASSWORD' '$work/nodb.out' '$work/nodb.err'"
kill "$app_pid"

start_app broken v2-broken
t0=$(now)
req GET /health
secs=$(elapsed "$t0")
expect "slow_ms delays every request (/health took ${secs}s)" 200 ".status == \"ok\" and $secs >= 1.5"
req GET /api/v1/service-codes
expect "fail_paths answer 500 injected failure" 500 '.error == "injected failure"'
req GET /api/v1/protocols
expect "paths not in fail_paths still work" 200 '.items | length == 1'
req GET /ready
expect "never_ready keeps /ready at 503" 503 '.ready == false'
curl -s -m 10 -o "$work/inflight" -w '%{http_code}' "$url/health" >"$work/inflight.code" &
curl_pid=$!
sleep 0.5
kill -TERM "$app_pid"
wait "$curl_pid"
wait "$app_pid"
rc=$?
check "SIGTERM finishes the request in flight, then exits 0" \
	bash -c "[ \"\$(cat '$work/inflight.code')\" = 200 ] && [ $rc = 0 ]"

start_app crash v3-crash
t0=$(now)
wait "$app_pid"
rc=$?
secs=$(elapsed "$t0")
check "crash_after_s exits with exit_code (7) after ~1 s (${secs}s)" \
	bash -c "[ $rc = 7 ] && [ \$(echo '$secs < 3' | bc) = 1 ]"

start_app slowstart v4-slowstart
req GET /ready
expect "ready_after_s: /ready is 503 at first" 503 '.ready == false'
sleep 2.1
req GET /ready
expect "ready_after_s: /ready is 200 after that" 200 '.ready == true'
kill "$app_pid"

start_app noisy v5-noisy
sleep 1.5
n=$(grep -cE '^[0-9T:-]+Z ERROR ' "$work/noisy.err")
check "error_logs_per_s prints ERROR lines to stderr ($n in 1.5 s)" test "$n" -ge 5 -a "$n" -le 9
kill "$app_pid"

psqlq -c "DROP DATABASE $db" -c "DROP DATABASE $empty" >/dev/null 2>&1

# ---- status and down ----------------------------------------------------

check "status of a directory without a sandbox exits non-zero" bash -c "! '$sandbox' status '$work/none' >/dev/null 2>&1"

broken=$work/broken
out=$(BGRUN_CACHE=$work/no-cache "$sandbox" up "$broken" 2>&1)
rc=$?
if [ $rc = 1 ] && grep -q "s3 failed to start" <<<"$out" && ! pgrep -f -- "-D $broken/pg" >/dev/null &&
	! "$sandbox" status "$broken" >/dev/null 2>&1; then
	ok "up names the part that failed, stops the rest, exits 1"
else
	notok "up names the part that failed, stops the rest, exits 1" "rc=$rc $out"
fi
"$sandbox" down "$broken" >/dev/null 2>&1

if [ ${#started[@]} -eq 0 ]; then
	# The reused sandbox is not ours to stop: bring up one to take down.
	sb=$work/sb
	if "$sandbox" up "$sb" >"$work/up.out" 2>"$work/up.err"; then started+=("$sb"); fi
fi
# A pod, so that down has one to stop.
podip=
if KUBECONFIG=$sb/cluster/kubeconfig kubectl apply --validate=false -f - >"$work/kubectl.out" 2>&1 <<'YAML' &&
apiVersion: apps/v1
kind: Deployment
metadata: {name: sbtest, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: sbtest}}
  template:
    metadata: {labels: {app: sbtest}}
    spec:
      containers:
      - {name: api, image: physioflow-api:v-down, ports: [{containerPort: 8080}]}
YAML
	KUBECONFIG=$sb/cluster/kubeconfig kubectl -n default wait --for=condition=Available deployment/sbtest --timeout=30s >>"$work/kubectl.out" 2>&1; then
	podip=$(KUBECONFIG=$sb/cluster/kubeconfig kubectl -n default get pods -l app=sbtest -o jsonpath='{.items[0].status.podIP}')
fi
if [ -n "$podip" ] && curl -s -m 2 "http://$podip:8080/health" | jq -e '.version == "v-down"' >/dev/null; then
	ok "a pod runs the demo app ($podip)"
else
	notok "a pod runs the demo app" "$(cat "$work/kubectl.out")"
fi
# ---- Prometheus ---------------------------------------------------------

promurl=$(sed -n "s/^export PROMETHEUS_URL=//p" "$sb/env.sh")
authurl=$(sed -n "s/^export PROMETHEUS_AUTH_URL=//p" "$sb/env.sh")
promtoken=$(sed -n "s/^export PROMETHEUS_TOKEN=//p" "$sb/env.sh")
prompw=$(sed -n "s/^export PROMETHEUS_PASSWORD=//p" "$sb/env.sh")
promq() { curl -s -m 5 "$promurl/api/v1/query" --data-urlencode "query=$1"; }
# the pod's requests, then Prometheus' view of them (scraped every second)
for _ in 1 2 3; do curl -s -m 2 -o /dev/null "http://$podip:8080/api/v1/nowhere"; done
scraped=
for _ in $(seq 1 60); do
	if promq 'up{namespace="default",app="sbtest"}' | jq -e '.data.result[0].value[1] == "1" and .data.result[0].metric.pod != null' >/dev/null &&
		promq 'sum(http_requests_total{app="sbtest",path="other",code="404",app_version="v-down"})' |
		jq -e '.data.result[0].value[1] == "3"' >/dev/null; then
		scraped=yes
		break
	fi
	sleep 0.5
done
check "prometheus scrapes the pod (file_sd: namespace, pod, app labels; its 404s by path, code and app_version)" test -n "$scraped"
check "the auth proxy refuses a request without credentials (401)" bash -c \
	"[ \$(curl -s -o /dev/null -w '%{http_code}' '$authurl/api/v1/query?query=up') = 401 ]"
check "the auth proxy takes the bearer token" bash -c \
	"curl -s -H 'Authorization: Bearer $promtoken' '$authurl/api/v1/query?query=up' | jq -e '.status == \"success\"' >/dev/null"
check "the auth proxy takes basic auth" bash -c \
	"curl -s -u 'bgrun:$prompw' '$authurl/api/v1/query?query=up' | jq -e '.status == \"success\"' >/dev/null"
check "prometheus-stop: the API refuses connections, the proxy answers 502" bash -c \
	"'$sandbox' prometheus-stop '$sb' && ! curl -s -m 2 -o /dev/null '$promurl/-/ready' &&
	 [ \$(curl -s -o /dev/null -w '%{http_code}' -u 'bgrun:$prompw' '$authurl/-/ready') = 502 ] &&
	 ! '$sandbox' status '$sb' >/dev/null"
check "prometheus-start: ready again on the same URL" bash -c \
	"'$sandbox' prometheus-start '$sb' && curl -sf -m 2 -o /dev/null '$promurl/-/ready' && '$sandbox' status '$sb' >/dev/null"

pgport=$(sed -n "s/^export PGPORT=//p" "$sb/env.sh")
s3url=$(sed -n "s/^export AWS_ENDPOINT_URL_S3=//p" "$sb/env.sh")
pid=$(cat "$sb/sandbox.pid")
if "$sandbox" down "$sb" >"$work/down.out" 2>&1; then ok "sandbox down exits 0"; else notok "sandbox down exits 0" "$(cat "$work/down.out")"; fi
started=()
check "down removes DIR's state" test ! -e "$sb"
# Gone, or a zombie waiting for an init that does not reap.
check "down stopped the sandbox process" bash -c "ps -o stat= -p $pid | grep -qv '^Z' && exit 1 || exit 0"
check "down stopped PostgreSQL" bash -c "! pg_isready -q -h 127.0.0.1 -p $pgport"
check "down stopped the S3 store" bash -c "! curl -s -m 2 -o /dev/null $s3url"
check "down stopped Prometheus" bash -c "! curl -s -m 2 -o /dev/null $promurl/-/ready"
check "down stopped the pods" bash -c "[ -n '$podip' ] && ! curl -s -m 2 -o /dev/null http://$podip:8080/health"
check "status after down exits non-zero" bash -c "! '$sandbox' status '$sb' >/dev/null 2>&1"
