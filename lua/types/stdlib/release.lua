---@meta release
-- Generated from stdlib/release.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---The env parameter: one of the environments' names.
---@param environments table<string, table> playbooks/environments.lua
---@return table param spec
function M.env_param(environments) end

---@type table
M.tag_param = nil

---@type table
M.skip_tests_param = { type = "boolean", default = false, help = "skip the smoke tests of the new pods" }

---@type table
M.break_lock_param = nil

---The k8s client of an environment, on its own kubeconfig context. Every
---environment but `local` must name its `context` (or say `in_cluster =
---true`): bgrun never acts on a non-local environment through whatever
---context is current. Refuses (code "usage", exit 2) when the context is
---not named, or is not in the kubeconfig, naming the environment, the
---context and the kubeconfig files read.
---@param env_name string the environment's name (args.env)
---@param env table its entry in playbooks/environments.lua
---@return any k8s client
function M.client(env_name, env) end

---Whether env_name runs with the pod's service account: the environment
---says `in_cluster = true`, or BGRUN_IN_CLUSTER (set in the Job's or
---CronJob's pod spec) names it — a comma-separated list of environments.
---A process whose BGRUN_IN_CLUSTER does not name env_name is refused (code
---"usage"): a pod made to act on prod never acts on staging, neither
---through its service account nor through a kubeconfig.
---@param env_name string
---@param env table
---@return boolean
function M.in_cluster(env_name, env) end

---The in-cluster client of an environment: the pod's service account
---(KUBERNETES_SERVICE_HOST/PORT, the token, CA and namespace in
---/var/run/secrets/kubernetes.io/serviceaccount, or BGRUN_SERVICEACCOUNT_DIR).
---Refused (code "usage") when a kubeconfig is present: every client of the
---run — compensations, the lock keeper, `bgrun resume` — finds the
---service account only where no kubeconfig says otherwise.
---@param env_name string
---@param env table
---@return any k8s client
function M.in_cluster_client(env_name, env) end

---Where a playbook is about to act: "context C, SERVER, namespace N; live:
---COLOUR TAG" (live: none when the Service or its colour is absent).
---@param c any k8s client from release.client
---@param env table
---@return string
function M.target(c, env) end

---Names the target before a playbook acts: with env.confirm, asks
---"QUESTION (context ..., server, namespace ...; live: ...)?" (opts as
---confirm's); otherwise logs the same line (also what --dry-run shows).
---@param c any k8s client from release.client
---@param env table
---@param question string e.g. "Deploy v1.2.3 to prod"
---@param opts {expect: string?}?
function M.confirm(c, env, question, opts) end

---Writes version into the migration-version ConfigMap, creating it if needed.
---@param c any k8s client
---@param ns string
---@param version integer
function M.record_version(c, ns, version) end

---Writes version into the migration-version ConfigMap, retrying transient
---API errors (the write is idempotent: the same data each time).
---@param c any k8s client
---@param ns string
---@param version integer
function M.record_version_retrying(c, ns, version) end

---Whether err is a lost or refused database connection, as PostgreSQL
---and libpq say it: SQLSTATE class 08, or the server shutting down or
---starting (57P01-57P03).
---@param err any
---@return boolean
function M.connection_lost(err) end

---Runs fn(db) on a new connection to the database params name and closes
---it. A connection lost or refused (a server restart, an administrator's
---pg_terminate_backend) is tried again on a new one, up to opts.attempts
---(5) times a second apart; any other error is raised at once. For reads
---that check the world after a change, never for writes.
---@param params table postgres.connect's parameters
---@param fn fun(db: any): any
---@param opts {attempts: integer?, connect: function?, delay: number?}?
---@return any what fn returned
function M.with_db(params, fn, opts) end

---Restores the database of a deploy-with-migration from the backup it
---took first, but only while the database is still the one the run
---migrated: same OID (not swapped by another restore) and the schema at a
---version the run could have left (between d.expect.from and
---d.expect.version). Otherwise it does nothing and raises world_changed.
---The release serving when the run started must serve again before the
---database goes back under it: d.expect.service = {app, colour, image}.
---@param d table {path, database, bucket, context, namespace, expect = {from, version, oid, database, service}}
function M.restore_database(d) end

---The writes a restore from a backup loses: those made from the backup's
---time to the restore. Logs a warning and returns {from, to, seconds}.
---@param taken_at string? the backup's created_at (UTC, ISO 8601)
---@param database string?
---@return {from: string?, to: string, seconds: integer?}
function M.report_write_window(taken_at, database) end

function M.down_checksums(dir, from, to) end

---Undoes the migrations of a deploy-with-migration that did not reach its
---commit point, keeping the rows written meanwhile: with the same world
---checks as restore_database, it runs the down scripts back to
---d.expect.from when every migration the run applied has one, unchanged
---since the run (d.downs: version -> sha256, from down_checksums). Only
---when a down script is missing, changed or fails does it restore the
---backup d.path, and then it reports the writes lost (from the backup's
---time d.taken_at to the restore). Returns {method = "down"|"restore"|"none",
---reverted, lost}.
---@param d table {path, database, bucket, context, namespace, migrations, downs, taken_at, expect}
---@return table
function M.undo_migration(d) end

---@type string
M.RELEASE_ANNOTATION = "bgrun.io/migration-release"

---@type string
M.ROLLED_BACK_ANNOTATION = "bgrun.io/rolled-back-release"

---Writes the release record on the Service (a merge patch of one
---annotation), retrying transient API errors (the same data each time).
---@param c any k8s client
---@param ns string
---@param app string the Service's name
---@param rec table {tag, colour, image, previous_colour, previous_image, previous_tag, schema_from, schema_to, backup = {path, bucket, key, taken_at}, at}
function M.record_release(c, ns, app, rec) end

---The release record on the Service, or nil and why there is none.
---@param c any k8s client
---@param ns string
---@param app string
---@return table? record, string? why, table? service
function M.read_release(c, ns, app) end

---The three places a schema version is visible, checked against what a
---release should have left: schema_migrations (on db), the ConfigMap
---migration-version, and the API's /api/v1/info through the Service
---(o.tag its version, o.version the schema it sees). Returns the problems
---found (empty when all agree).
---@param c any k8s client
---@param db any postgres connection
---@param o {namespace: string, app: string, version: integer, tag: string?, timeout: number?}
---@return string[]
function M.check_versions(c, db, o) end

---Would a migration run change the schema? up: a pending migration at or
---below to; down: an applied one above to (default: one step back).
---@param st table migrate.status()
---@param action "up"|"down"
---@param to integer?
---@return boolean
function M.changes_schema(st, action, to) end

---Scales each Deployment (name -> replicas) and waits for the rollouts.
---@param c any k8s client
---@param ns string
---@param replicas table<string, integer>
---@param timeout number?
function M.scale_all(c, ns, replicas, timeout) end

---Undo actions `bgrun resume` runs from a journal's recorded data.
---@type table
M.undo = nil

return M
