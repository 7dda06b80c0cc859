#!/bin/sh
# Benchmark: upload and download of a 50 MiB file by bgrun (b:put_file with
# 8 MiB parts, b:get_file) against `aws s3 cp` both ways, in the same run
# against the same store: wall time and peak RSS (/usr/bin/time -f %M) of
# each, best of ROUNDS, and the ratios.
#
#   bench/s3.sh [ROUNDS]   (default 3; SIZE_MIB=50)
#
# Uses the store the AWS_* variables name and SANDBOX_S3_BUCKET (the
# sandbox's: eval "$(tests/sandbox/sandbox up DIR)"); without them it starts
# a sandbox of its own for the run.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
ROUNDS=${1:-3}
SIZE_MIB=${SIZE_MIB:-50}
TMP=$(mktemp -d /tmp/bgrun-bench-s3.XXXXXX)
SB_STOP=

cleanup() {
	[ -n "$SB_STOP" ] && $SB_STOP >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
command -v aws >/dev/null 2>&1 || { echo "bench: aws (awscli) is missing" >&2; exit 1; }

if [ -z "${AWS_ENDPOINT_URL_S3:-}" ] || [ -z "${SANDBOX_S3_BUCKET:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "$TMP/sandbox")"
	SB_STOP="$ROOT/tests/sandbox/sandbox down $TMP/sandbox"
fi
BUCKET=$SANDBOX_S3_BUCKET
KEY="bench/s3-$$.bin"

head -c $((SIZE_MIB * 1024 * 1024)) /dev/urandom >"$TMP/data.bin"

cat >"$TMP/put.lua" <<LUA
local s3 = require("s3")
return playbook { run = function()
  local b <close> = s3.bucket { bucket = "$BUCKET" }
  b:put_file("$KEY", "$TMP/data.bin", { part_size = 8 * 1024 * 1024 })
end }
LUA
cat >"$TMP/get.lua" <<LUA
local s3 = require("s3")
return playbook { run = function()
  local b <close> = s3.bucket { bucket = "$BUCKET" }
  b:get_file("$KEY", "$TMP/bgrun.out")
end }
LUA

# the same part size for the CLI, path style as the sandbox serves
export AWS_CONFIG_FILE="$TMP/aws.config"
printf '[default]\ns3 =\n  multipart_chunksize = 8MB\n  multipart_threshold = 8MB\n  addressing_style = path\n' >"$AWS_CONFIG_FILE"

# warm up and check both round trips give the same bytes
"$BGRUN" -q "$TMP/put.lua"
"$BGRUN" -q "$TMP/get.lua"
aws s3 cp --quiet "$TMP/data.bin" "s3://$BUCKET/$KEY.aws"
aws s3 cp --quiet "s3://$BUCKET/$KEY.aws" "$TMP/aws.out"
want=$(sha256sum <"$TMP/data.bin")
[ "$(sha256sum <"$TMP/bgrun.out")" = "$want" ] && [ "$(sha256sum <"$TMP/aws.out")" = "$want" ] || {
	echo "bench: round trips differ" >&2
	exit 1
}

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

set -- $(measure aws s3 cp --quiet "$TMP/data.bin" "s3://$BUCKET/$KEY.aws")
aws_put_t=$1 aws_put_m=$2
set -- $(measure aws s3 cp --quiet "s3://$BUCKET/$KEY.aws" "$TMP/aws.out")
aws_get_t=$1 aws_get_m=$2
set -- $(measure "$BGRUN" -q "$TMP/put.lua")
b_put_t=$1 b_put_m=$2
set -- $(measure "$BGRUN" -q "$TMP/get.lua")
b_get_t=$1 b_get_m=$2
aws s3 rm --quiet "s3://$BUCKET/$KEY.aws" || true
aws s3 rm --quiet "s3://$BUCKET/$KEY" || true

echo "s3: ${SIZE_MIB} MiB, 8 MiB parts, best of $ROUNDS runs"
echo "s3: aws s3 cp upload:     ${aws_put_t} s, peak RSS ${aws_put_m} KiB"
echo "s3: bgrun put_file:       ${b_put_t} s, peak RSS ${b_put_m} KiB"
echo "s3: aws s3 cp download:   ${aws_get_t} s, peak RSS ${aws_get_m} KiB"
echo "s3: bgrun get_file:       ${b_get_t} s, peak RSS ${b_get_m} KiB"
awk -v a="$aws_put_t" -v b="$b_put_t" -v am="$aws_put_m" -v bm="$b_put_m" 'BEGIN {
	printf "s3: ratio bgrun/aws upload:   time %.2fx, peak memory %.2fx\n", (a > 0 ? b / a : 0), (am > 0 ? bm / am : 0) }'
awk -v a="$aws_get_t" -v b="$b_get_t" -v am="$aws_get_m" -v bm="$b_get_m" 'BEGIN {
	printf "s3: ratio bgrun/aws download: time %.2fx, peak memory %.2fx\n", (a > 0 ? b / a : 0), (am > 0 ? bm / am : 0) }'
