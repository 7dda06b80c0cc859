#!/bin/sh
# Benchmark (and proof): the sandbox's S3 store accepts more than the 3 GB
# its first configuration refused at (16 volumes of 256 MB). Streams
# CAP_GIB GiB (default 5) as objects of 1 GiB each through b:upload (8 MiB
# parts, 3 at a time), reads the sizes back with head, deletes them, and
# prints the throughput and bgrun's peak RSS.
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
local s3 = require("s3")
return playbook { run = function()
  local b <close> = s3.bucket { bucket = "$SANDBOX_S3_BUCKET" }
  -- 8 MiB that do not compress or repeat within a part
  local f = assert(io.open("/dev/urandom", "rb"))
  local chunk = f:read(8 * 1024 * 1024)
  f:close()
  local total = 0
  for i = 1, $CAP_GIB do
    local key = ("bench/capacity-%d.bin"):format(i)
    local u <close> = b:upload(key)
    for _ = 1, 128 do u:write(chunk) end
    u:finish()
    total = total + assert(b:head(key)).size
  end
  for i = 1, $CAP_GIB do b:delete(("bench/capacity-%d.bin"):format(i)) end
  print(total)
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
