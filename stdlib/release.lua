-- What the release playbooks share: their common parameters and the
-- migration-version ConfigMap, one of the three places a schema version is
-- visible (with schema_migrations and each backup's metadata).
local M = {}

---The env parameter: one of the environments' names.
---@param environments table<string, table> playbooks/environments.lua
---@return table param spec
function M.env_param(environments)
  local names = {}
  for name in pairs(environments) do names[#names + 1] = name end
  table.sort(names)
  return { required = true, choices = names, help = "environment from playbooks/environments.lua" }
end

-- OCI tags: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}
M.tag_param = { required = true, pattern = "^[%w_][%w._-]*$", max_length = 128,
                help = "image tag (at most 128 characters, as OCI allows)" }
M.skip_tests_param = { type = "boolean", default = false, help = "skip the smoke tests of the new pods" }
M.break_lock_param = { type = "boolean", default = false,
                       help = "take the deploy lock even if another run holds it" }

-- The kubeconfig files a client reads: env.kubeconfig, else KUBECONFIG
-- split on ':', else ~/.kube/config (as k8s.client looks them up).
local function kubeconfig_files(env)
  local list = env.kubeconfig or os.getenv("KUBECONFIG")
  local files = {}
  if list and list ~= "" then
    for f in list:gmatch("[^:]+") do files[#files + 1] = f end
  else
    files[1] = (os.getenv("HOME") or "~") .. "/.kube/config"
  end
  -- the ones that exist (missing KUBECONFIG entries are skipped, as kubectl does)
  local read = {}
  for _, p in ipairs(files) do
    local f = io.open(p, "r")
    if f then f:close(); read[#read + 1] = p end
  end
  return #read > 0 and read or files
end

---The k8s client of an environment, on its own kubeconfig context. Every
---environment but `local` must name its `context` (or say `in_cluster =
---true`): bgrun never acts on a non-local environment through whatever
---context is current. Refuses (code "usage", exit 2) when the context is
---not named, or is not in the kubeconfig, naming the environment, the
---context and the kubeconfig files read.
---@param env_name string the environment's name (args.env)
---@param env table its entry in playbooks/environments.lua
---@return any k8s client
function M.client(env_name, env)
  local k8s = require("k8s")
  if M.in_cluster(env_name, env) then
    return M.in_cluster_client(env_name, env)
  end
  local context = env.context
  if env_name ~= "local" and (type(context) ~= "string" or context == "") then
    bgrun.raise { module = "release", op = "target " .. env_name, code = "usage", reason = "NoContext",
                  message = ("environment %s names no kubeconfig context: set `context` for it in "
                    .. "environments.lua (bgrun never acts on %s through the current context)"):format(env_name, env_name) }
  end
  if env_name ~= "local" then
    -- with no kubeconfig at all k8s.client would take the pod's service
    -- account (a CI runner in some cluster has one): not the named context
    local present = false
    for _, p in ipairs(kubeconfig_files(env)) do
      local f = io.open(p, "r")
      if f then f:close(); present = true end
    end
    if not present then
      bgrun.raise { module = "release", op = "target " .. env_name, code = "usage", reason = "UnknownContext",
                    context = context, kubeconfig = table.concat(kubeconfig_files(env), ":"),
                    message = ("environment %s: context %q is not in the kubeconfig (no kubeconfig found: %s; "
                      .. "inside the cluster, set BGRUN_IN_CLUSTER=%s to use the pod's service account)")
                      :format(env_name, context, table.concat(kubeconfig_files(env), ", "), env_name) }
    end
  end
  -- k8s_timeout: seconds per API request (default the client's 30)
  local ok, c = pcall(k8s.client, { context = context, namespace = env.namespace, kubeconfig = env.kubeconfig,
                                    timeout = env.k8s_timeout })
  if ok then return c end
  local err = c
  if context and type(err) == "table" and err.code == "config" then
    local msg = tostring(err.message or err)
    local missing = msg:find("not found in the kubeconfig", 1, true) ~= nil
    bgrun.raise { module = "release", op = "target " .. env_name, code = "usage",
                  reason = missing and "UnknownContext" or "BadKubeconfig", context = context,
                  kubeconfig = table.concat(kubeconfig_files(env), ":"),
                  message = (missing and "environment %s: context %q is not in the kubeconfig (files read: %s)"
                             or "environment %s: context %q: %s (files read: %s)")
                    :format(env_name, context, missing and table.concat(kubeconfig_files(env), ", ") or msg,
                            table.concat(kubeconfig_files(env), ", ")) }
  end
  error(err, 0)
end

---Whether env_name runs with the pod's service account: the environment
---says `in_cluster = true`, or BGRUN_IN_CLUSTER (set in the Job's or
---CronJob's pod spec) names it — a comma-separated list of environments.
---A process whose BGRUN_IN_CLUSTER does not name env_name is refused (code
---"usage"): a pod made to act on prod never acts on staging, neither
---through its service account nor through a kubeconfig.
---@param env_name string
---@param env table
---@return boolean
function M.in_cluster(env_name, env)
  if env.in_cluster then return true end
  local list = os.getenv("BGRUN_IN_CLUSTER")
  if not list or list == "" then return false end
  for name in list:gmatch("[^,%s]+") do
    if name == env_name then return true end
  end
  bgrun.raise { module = "release", op = "target " .. env_name, code = "usage", reason = "NotThisCluster",
                message = ("environment %s: this process runs bgrun inside the cluster for %s (BGRUN_IN_CLUSTER=%s), "
                  .. "not for %s: it never acts on another environment, through its service account or a kubeconfig")
                  :format(env_name, list, list, env_name) }
end

---The in-cluster client of an environment: the pod's service account
---(KUBERNETES_SERVICE_HOST/PORT, the token, CA and namespace in
---/var/run/secrets/kubernetes.io/serviceaccount, or BGRUN_SERVICEACCOUNT_DIR).
---Refused (code "usage") when a kubeconfig is present: every client of the
---run — compensations, the lock keeper, `bgrun resume` — finds the
---service account only where no kubeconfig says otherwise.
---@param env_name string
---@param env table
---@return any k8s client
function M.in_cluster_client(env_name, env)
  local found = {}
  for _, p in ipairs(kubeconfig_files(env)) do
    local f = io.open(p, "r")
    if f then f:close(); found[#found + 1] = p end
  end
  local function refuse(reason, fmt, ...)
    bgrun.raise { module = "release", op = "target " .. env_name, code = "usage", reason = reason,
                  message = ("environment %s runs inside the cluster: " .. fmt):format(env_name, ...) }
  end
  if #found > 0 then
    refuse("KubeconfigPresent", "a kubeconfig is present (%s); remove it (unset KUBECONFIG) so that every client "
      .. "of the run uses the pod's service account", table.concat(found, ", "))
  end
  local ok, c = pcall(require("k8s").client, { in_cluster = true, namespace = env.namespace })
  if not ok then
    local err = c
    if type(err) == "table" and err.code == "config" then
      refuse("InClusterConfig", "%s", tostring(err.message or err))
    end
    error(err, 0)
  end
  return c
end

---Where a playbook is about to act: "context C, SERVER, namespace N; live:
---COLOUR TAG" (live: none when the Service or its colour is absent).
---@param c any k8s client from release.client
---@param env table
---@return string
function M.target(c, env)
  local info = c:info()
  local live = "none"
  local ok, svc = pcall(c.get, c, "service", env.app, { namespace = env.namespace })
  local colour = ok and svc and svc.spec and svc.spec.selector and svc.spec.selector.version
  if colour then
    local dok, dep = pcall(c.get, c, "deployment", env.app .. "-" .. colour, { namespace = env.namespace })
    local image = dok and dep and dep.spec.template.spec.containers[1].image or ""
    local slash = image:match("^.*()/") or 0
    live = colour .. " " .. (image:sub(slash + 1):match(":([^:@]+)$") or "?")
  end
  return ("context %s, %s, namespace %s; live: %s"):format(info.context, info.server,
    env.namespace or info.namespace, live)
end

---Names the target before a playbook acts: with env.confirm, asks
---"QUESTION (context ..., server, namespace ...; live: ...)?" (opts as
---confirm's); otherwise logs the same line (also what --dry-run shows).
---@param c any k8s client from release.client
---@param env table
---@param question string e.g. "Deploy v1.2.3 to prod"
---@param opts {expect: string?}?
function M.confirm(c, env, question, opts)
  local line = ("%s (%s)"):format(question, M.target(c, env))
  if env.confirm then
    confirm(line .. "?", opts)
  else
    require("log").info((bgrun.dry_run() and "dry-run: " or "") .. line)
  end
end

---Writes version into the migration-version ConfigMap, creating it if needed.
---@param c any k8s client
---@param ns string
---@param version integer
function M.record_version(c, ns, version)
  local data = { version = tostring(version), updated_at = os.date("!%Y-%m-%dT%H:%M:%SZ") }
  if c:get("configmap", "migration-version", { namespace = ns }) then
    c:patch("configmap", "migration-version", { data = data }, { type = "merge", namespace = ns })
  else
    c:create({ apiVersion = "v1", kind = "ConfigMap",
               metadata = { name = "migration-version", namespace = ns,
                            labels = { ["app.kubernetes.io/managed-by"] = "bgrun" } },
               data = data }, { namespace = ns })
  end
end

-- Runs fn() until it returns what it returns. An error again(err) accepts
-- is tried again, attempts times in all, delay(attempt) seconds apart,
-- logged as "WHAT; retrying"; any other error, or the last, is raised.
local function retrying(what, again, attempts, delay, fn)
  for attempt = 1, attempts do
    local ok, res = pcall(fn)
    if ok then return res end
    if not again(res) or attempt == attempts then error(res, 0) end
    require("log").warn(what .. "; retrying", { error = tostring(res), attempt = attempt })
    bgrun.sleep(delay(attempt))
  end
end

local function backoff(attempt) return 0.5 * 2 ^ (attempt - 1) end

-- an API error worth trying again for an idempotent write: the server's,
-- the network's, or a conflict
local function api_again(err)
  return require("lock").transient(err) or (type(err) == "table" and err.code == 409)
end

---Writes version into the migration-version ConfigMap, retrying transient
---API errors (the write is idempotent: the same data each time).
---@param c any k8s client
---@param ns string
---@param version integer
function M.record_version_retrying(c, ns, version)
  retrying("cannot record the migration version", api_again, 4, backoff,
           function() M.record_version(c, ns, version) end)
end

---Whether err is a lost or refused database connection, as PostgreSQL
---and libpq say it: SQLSTATE class 08, or the server shutting down or
---starting (57P01-57P03).
---@param err any
---@return boolean
local function connection_lost(err)
  local code = type(err) == "table" and err.code
  return type(code) == "string" and (code:sub(1, 2) == "08" or code:match("^57P0[123]$") ~= nil)
end
M.connection_lost = connection_lost

---Runs fn(db) on a new connection to the database params name and closes
---it. A connection lost or refused (a server restart, an administrator's
---pg_terminate_backend) is tried again on a new one, up to opts.attempts
---(5) times a second apart; any other error is raised at once. For reads
---that check the world after a change, never for writes.
---@param params table postgres.connect's parameters
---@param fn fun(db: any): any
---@param opts {attempts: integer?, connect: function?, delay: number?}?
---@return any what fn returned
function M.with_db(params, fn, opts)
  opts = opts or {}
  local connect = opts.connect or require("postgres").connect
  return retrying("the database connection was lost (a new one next)", connection_lost, opts.attempts or 5,
                  function() return opts.delay or 1 end, function()
    local db <close> = connect(params)
    return fn(db)
  end)
end

-- The checks an undo of a deploy-with-migration makes before touching the
-- database: it acts only on the database the run migrated (same OID), at a
-- schema version the run could have left (d.expect.from to
-- d.expect.version), and only while the release serving when the run
-- started serves again (d.expect.service = {app, colour, image}). Returns
-- the schema version found, and true when there is nothing to undo (still
-- at the version the run found).
local function check_migrated_world(d, what)
  local e = d.expect or {}
  local postgres = require("postgres")
  local db <close> = postgres.connect(d.database or {})
  local id = require("backup").identity(db)
  local ok, rows = pcall(db.query, db, "SELECT coalesce(max(version), 0) AS v FROM schema_migrations", nil,
                         { readonly = true })
  local version = ok and rows[1].v or 0
  db:close()
  local function changed(fmt, ...)
    bgrun.raise { module = "release", op = "restore " .. tostring(id.database), code = "world_changed",
                  reason = "WorldChanged",
                  message = fmt:format(...) .. "; not " .. what .. ", a human must look" }
  end
  if e.oid and id.oid ~= e.oid then
    changed("database %s is no longer the one the run migrated (OID %s, the run saw %s): it was replaced since",
      id.database, tostring(id.oid), tostring(e.oid))
  end
  if e.version and (version > e.version or version < (e.from or e.version)) then
    changed("database %s is at schema version %s, outside what the run left (%s to %s): another run migrated it since",
      id.database, tostring(version), tostring(e.from or e.version), tostring(e.version))
  end
  if e.from and version == e.from and e.version ~= e.from then
    require("log").info("nothing to restore: the database is still at the version the run found",
      { database = id.database, version = version })
    return version, true
  end
  if e.service then
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    local svc = c:get("service", e.service.app, { namespace = d.namespace })
    local colour = svc and ((svc.spec or {}).selector or {}).version
    local live = colour and c:get("deployment", e.service.app .. "-" .. colour, { namespace = d.namespace })
    local ct = live and (((live.spec or {}).template or {}).spec or {}).containers
    local image = ct and ct[1] and ct[1].image
    if colour ~= e.service.colour or image ~= e.service.image then
      bgrun.raise { module = "release", op = "restore database", code = "world_changed", reason = "WorldChanged",
                    message = ("the Service %s sends traffic to %s (%s), not to %s (%s) as when the run started: "
                      .. "a newer release may need the newer schema; not %s, a human must look")
                      :format(e.service.app, tostring(colour), tostring(image), e.service.colour,
                              tostring(e.service.image), what) }
    end
  end
  return version, false
end

---Restores the database of a deploy-with-migration from the backup it
---took first, but only while the database is still the one the run
---migrated: same OID (not swapped by another restore) and the schema at a
---version the run could have left (between d.expect.from and
---d.expect.version). Otherwise it does nothing and raises world_changed.
---The release serving when the run started must serve again before the
---database goes back under it: d.expect.service = {app, colour, image}.
---@param d table {path, database, bucket, context, namespace, expect = {from, version, oid, database, service}}
function M.restore_database(d)
  local _, nothing = check_migrated_world(d, "restoring from " .. tostring(d.path))
  if nothing then return end
  require("restore").restore { path = d.path, database = d.database, bucket = d.bucket }
end

-- "2026-11-30T08:01:02Z" -> seconds since the epoch (UTC), or nil.
local function parse_utc(s)
  local y, mo, dd, h, mi, sec = tostring(s or ""):match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)")
  if not y then return nil end
  local t = os.time { year = tonumber(y), month = tonumber(mo), day = tonumber(dd), hour = tonumber(h),
                      min = tonumber(mi), sec = tonumber(sec), isdst = false }
  -- os.time reads the table as local time: take the zone's offset back out
  local now = os.time()
  local offset = os.difftime(os.time(os.date("*t", now)), os.time(os.date("!*t", now)))
  return t + offset
end

---The writes a restore from a backup loses: those made from the backup's
---time to the restore. Logs a warning and returns {from, to, seconds}.
---@param taken_at string? the backup's created_at (UTC, ISO 8601)
---@param database string?
---@return {from: string?, to: string, seconds: integer?}
function M.report_write_window(taken_at, database)
  local to = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local t = parse_utc(taken_at)
  local w = { from = taken_at, to = to, seconds = t and math.max(0, math.floor(os.time() - t)) or nil }
  require("log").warn("restored from the backup: writes made between the backup and the restore are lost",
    { database = database, lost_from = tostring(taken_at or "?"), lost_to = to,
      lost_seconds = w.seconds })
  return w
end

-- The down scripts of the migrations above from, as the run saw them
-- (version -> sha256 of the down script, false when there is none).
local function down_checksums(dir, from, to)
  local digest = require("digest")
  local out = {}
  for _, m in ipairs(require("migrate").find(dir)) do
    if m.version > from and m.version <= to then
      out[tostring(m.version)] = m.down_sql and digest.sha256(m.down_sql) or false
    end
  end
  return out
end
M.down_checksums = down_checksums

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
function M.undo_migration(d)
  local log = require("log")
  local e = d.expect or {}
  local from = e.from or 0
  local found, nothing = check_migrated_world(d, "undoing the migration")
  if nothing then return { method = "none" } end
  local why
  if type(d.migrations) ~= "string" then
    why = "the run recorded no migrations folder"
  else
    local ok, now = pcall(down_checksums, d.migrations, from, found)
    if not ok then
      why = "cannot read the migrations in " .. d.migrations .. ": " .. tostring(now)
    else
      local missing, versions = {}, {}
      for k in pairs(now) do versions[#versions + 1] = tonumber(k) end
      for k in pairs(d.downs or {}) do
        if now[k] == nil and tonumber(k) <= found then versions[#versions + 1] = tonumber(k) end
      end
      table.sort(versions)
      local fmt = require("migrate").format_version
      for _, v in ipairs(versions) do
        local k = tostring(v)
        local was = d.downs and d.downs[k]
        if now[k] == nil then
          missing[#missing + 1] = ("%s is no longer in %s"):format(fmt(v), d.migrations)
        elseif not now[k] then
          missing[#missing + 1] = ("%s has no down script"):format(fmt(v))
        elseif was and was ~= now[k] then
          missing[#missing + 1] = ("the down script of %s changed since the run"):format(fmt(v))
        end
      end
      if #missing > 0 then why = table.concat(missing, "; ") end
    end
  end
  if not why then
    local postgres = require("postgres")
    local ok, res = pcall(function()
      local db <close> = postgres.connect(d.database or {})
      return require("migrate").down(db, { dir = d.migrations, to = from, applied_by = d.applied_by or "bgrun undo",
                                           lock_timeout = d.lock_timeout })
    end)
    if ok then
      log.info("migration undone by its down scripts: rows written since the migration are kept",
        { from = found, to = from, reverted = #res.reverted })
      return { method = "down", reverted = res.reverted }
    end
    why = "a down script failed: " .. tostring(res)
  end
  log.warn("cannot undo the migration by its down scripts; restoring the database from the backup",
    { reason = why, backup = d.path })
  -- the down scripts may have run part of the way: the checks again, then the restore
  local _, done = check_migrated_world(d, "restoring from " .. tostring(d.path))
  if done then return { method = "down" } end
  local r = require("restore").restore { path = d.path, database = d.database, bucket = d.bucket }
  return { method = "restore", lost = M.report_write_window(d.taken_at, r.database), reason = why }
end

-- The release record: what a deploy-with-migration leaves on the Service
-- after its commit point, so that rollback-release finds the release, its
-- previous colour and its pinned pre-migration backup without anybody
-- typing them.
M.RELEASE_ANNOTATION = "bgrun.io/migration-release"
M.ROLLED_BACK_ANNOTATION = "bgrun.io/rolled-back-release"

---Writes the release record on the Service (a merge patch of one
---annotation), retrying transient API errors (the same data each time).
---@param c any k8s client
---@param ns string
---@param app string the Service's name
---@param rec table {tag, colour, image, previous_colour, previous_image, previous_tag, schema_from, schema_to, backup = {path, bucket, key, taken_at}, at}
function M.record_release(c, ns, app, rec)
  local json = require("json")
  local patch = { metadata = { annotations = { [M.RELEASE_ANNOTATION] = json.encode(rec, { sort_keys = true }) } } }
  retrying("cannot record the release", require("lock").transient, 4, backoff,
           function() c:patch("service", app, patch, { type = "merge", namespace = ns }) end)
end

---The release record on the Service, or nil and why there is none.
---@param c any k8s client
---@param ns string
---@param app string
---@return table? record, string? why, table? service
function M.read_release(c, ns, app)
  local svc = c:get("service", app, { namespace = ns })
  if not svc then return nil, ("service %s not found in namespace %s"):format(app, ns) end
  local text = ((svc.metadata or {}).annotations or {})[M.RELEASE_ANNOTATION]
  if not text then
    return nil, ("the Service %s carries no release record (annotation %s): no deploy-with-migration "
      .. "has finished here since records were kept, or its release was rolled back already"):format(app,
      M.RELEASE_ANNOTATION), svc
  end
  local ok, rec = pcall(require("json").decode, text)
  if not ok or type(rec) ~= "table" or type(rec.backup) ~= "table" then
    return nil, ("the release record on the Service %s is not readable: %s"):format(app, text:sub(1, 200)), svc
  end
  return rec, nil, svc
end

---The three places a schema version is visible, checked against what a
---release should have left: schema_migrations (on db), the ConfigMap
---migration-version, and the API's /api/v1/info through the Service
---(o.tag its version, o.version the schema it sees). Returns the problems
---found (empty when all agree).
---@param c any k8s client
---@param db any postgres connection
---@param o {namespace: string, app: string, version: integer, tag: string?, timeout: number?}
---@return string[]
function M.check_versions(c, db, o)
  local problems = {}
  local cm = c:get("configmap", "migration-version", { namespace = o.namespace })
  local recorded = cm and cm.data and cm.data.version
  if tonumber(recorded) ~= o.version then
    problems[#problems + 1] = ("ConfigMap migration-version says %s"):format(tostring(recorded))
  end
  local current = db:query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations", nil,
                           { readonly = true })[1].v
  if current ~= o.version then
    problems[#problems + 1] = ("schema_migrations is at %s"):format(tostring(current))
  end
  local svc = c:get("service", o.app, { namespace = o.namespace })
  local port = svc.spec.ports[1].port
  local ok, info = pcall(require("http").get, ("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, port),
                         { timeout = o.timeout or 10 })
  if not ok then
    problems[#problems + 1] = ("the service does not answer: %s"):format(tostring(info))
  elseif info.status ~= 200 or not info.json or (o.tag and info.json.version ~= o.tag) then
    problems[#problems + 1] = ("the service answers version %s (status %d)")
      :format(tostring(info.json and info.json.version), info.status)
  elseif info.json.schema_version ~= o.version then
    problems[#problems + 1] = ("the API sees schema version %s"):format(tostring(info.json.schema_version))
  end
  return problems
end

---Would a migration run change the schema? up: a pending migration at or
---below to; down: an applied one above to (default: one step back).
---@param st table migrate.status()
---@param action "up"|"down"
---@param to integer?
---@return boolean
function M.changes_schema(st, action, to)
  if action == "up" then
    for _, e in ipairs(st.pending) do
      if not to or e.version <= to then return true end
    end
    return false
  end
  return #st.applied > 0 and (to == nil or st.current > to)
end

---Scales each Deployment (name -> replicas) and waits for the rollouts.
---@param c any k8s client
---@param ns string
---@param replicas table<string, integer>
---@param timeout number?
function M.scale_all(c, ns, replicas, timeout)
  for name, n in pairs(replicas) do c:scale("deployment", name, n, { namespace = ns }) end
  for name, n in pairs(replicas) do
    if n > 0 then c:rollout_status("deployment", name, { namespace = ns, timeout = timeout }) end
  end
end

---Undo actions `bgrun resume` runs from a journal's recorded data.
M.undo = {
  restore_database = function(d) M.restore_database(d) end,
  undo_migration = function(d) M.undo_migration(d) end,
  record_version = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    M.record_version_retrying(c, d.namespace, d.version)
  end,
  -- puts back the replicas a run changed, only where the run's own count
  -- (d.left) is still there, or they are already back: another release's
  -- replicas are not ours to set
  scale = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    for name, n in pairs(d.left or {}) do
      local dep = c:get("deployment", name, { namespace = d.namespace })
      local now = dep and (dep.spec.replicas or 0)
      if now ~= n and now ~= (d.replicas or {})[name] then
        bgrun.raise { module = "release", op = "scale " .. name, code = "world_changed", reason = "WorldChanged",
                      message = ("deployment %s has %s replicas, not %d as the run left it (nor %s as it found it): "
                        .. "another run changed it; nothing was changed, a human must look")
                        :format(name, tostring(now), n, tostring((d.replicas or {})[name])) }
      end
    end
    M.scale_all(c, d.namespace, d.replicas, d.rollout_timeout)
  end,
}

return M
