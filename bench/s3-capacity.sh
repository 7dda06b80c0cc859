#!/bin/sh
# Benchmark (and proof): the sandbox's S3 store accepts more than the 3 GB
# its first configuration refused at (16 volumes of 256 MB). Streams
# CAP_GIB GiB (default 5) of random bytes as one .tar.gz the way a backup
# streams pg_dump (archive.writer's add_command, stored, into b:upload: 8
# MiB parts, 3 at a time), reads its size back with head, deletes it, and
# prints the throughput and bgrun's peak RSS (flat: a few parts, whatever
# the size).
#
#   bench/s3-capacity.sh       (CAP_GIB=5)
#
# Uses the store the AWS_* variables name and SANDBOX_S3_BUCKET; without
# them it starts a sandbox of its own for the run.
set -eu

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BGRUN=${BGRUN:-$ROOT/bgrun}
CAP_GIB=${CAP_GIB:-5}
TMP=$(mktemp -d /tmp/bgrun-bench-cap.XXXXXX)
SB_STOP=

cleanup() {
	[ -n "$SB_STOP" ] && $SB_STOP >/dev/null 2>&1 || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

[ -x /usr/bin/time ] || { echo "bench: /usr/bin/time is missing (apt-get install time)" >&2; exit 1; }
[ -x "$BGRUN" ] || { echo "bench: $BGRUN is missing (make bgrun)" >&2; exit 1; }
if [ -z "${AWS_ENDPOINT_URL_S3:-}" ] || [ -z "${SANDBOX_S3_BUCKET:-}" ]; then
	eval "$("$ROOT/tests/sandbox/sandbox" up "$TMP/sandbox")"
	SB_STOP="$ROOT/tests/sandbox/sandbox down $TMP/sandbox"
fi

cat >"$TMP/cap.lua" <<LUA
local archive = require("archive")
local s3 = require("s3")
return playbook { run = function()
  local b <close> = s3.bucket { bucket = "$SANDBOX_S3_BUCKET" }
  local key = "bench/capacity.tar.gz"
  local u <close> = b:upload(key, { size_hint = $CAP_GIB * 1073741824 })
  local w <close> = archive.writer { sinks = { u } }
  w:add_command("random.bin", { "head", "-c", tostring($CAP_GIB * 1073741824), "/dev/urandom" }, { level = 0 })
  w:finish()
  u:finish()
  print(assert(b:head(key)).size)
  b:delete(key)
end }
LUA
/usr/bin/time -f "%e %M" -o "$TMP/time" "$BGRUN" -q "$TMP/cap.lua" >"$TMP/out" || {
	echo "s3-capacity: the store refused the upload before $CAP_GIB GiB" >&2
	exit 1
}
read -r t m <"$TMP/time"
bytes=$(tail -1 "$TMP/out")
awk -v b="$bytes" -v t="$t" -v m="$m" 'BEGIN {
	printf "s3-capacity: %.2f GiB accepted in %.1f s (%.0f MiB/s), bgrun peak RSS %d KiB\n", b / 1073741824, t, b / 1048576 / t, m }'
