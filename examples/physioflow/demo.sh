#!/usr/bin/env bash
# make demo: a full blue-green release with a database migration against
# the local sandbox (a Kubernetes API whose pods are real processes,
# PostgreSQL and the S3 store, all on loopback), then a broken release that
# bgrun refuses and rolls back. KEEP=1 leaves the sandbox running.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
BGRUN=${BGRUN:-$ROOT/bgrun}
DIR=${DEMO_DIR:-$ROOT/build/demo}
SANDBOX=$ROOT/tests/sandbox/sandbox

banner() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

"$SANDBOX" down "$DIR" >/dev/null 2>&1 || true
banner "starting the sandbox in $DIR"
exports=$("$SANDBOX" up "$DIR")
eval "$exports"
[ "${KEEP:-0}" = 1 ] || trap '"$SANDBOX" down "$DIR" >/dev/null 2>&1 || true' EXIT
export BGRUN_PATH="$ROOT/playbooks"

banner "installing PhysioFlow v1.0.0 (blue) with the schema at 010"
"$BGRUN" -q examples/physioflow/setup.lua env=local tag=v1.0.0 to=010

banner "release v2.0.0: back up, migrate 010 -> 011, blue-green deploy, record the version"
"$BGRUN" playbooks/deploy-with-migration.lua env=local tag=v2.0.0

banner "migration status"
"$BGRUN" -q playbooks/migrate.lua env=local action=status

banner "release v2.1.0, which is broken: its clinical protocols endpoint fails"
echo '{"v2.1.0": {"fail_paths": ["/api/v1/protocols"]}}' >"$SANDBOX_BEHAVIORS"
set +e
"$BGRUN" playbooks/deploy.lua env=local tag=v2.1.0
rc=$?
set -e
echo "deploy.lua exited with $rc (1: failed and cleaned up)"
[ "$rc" -eq 1 ]

banner "after the refused release: v2.0.0 still serves, schema at 011"
"$BGRUN" -q examples/physioflow/status.lua env=local
