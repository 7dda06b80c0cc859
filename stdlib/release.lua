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

---Writes version into the migration-version ConfigMap, retrying transient
---API errors (the write is idempotent: the same data each time).
---@param c any k8s client
---@param ns string
---@param version integer
function M.record_version_retrying(c, ns, version)
  for attempt = 1, 4 do
    local ok, err = pcall(M.record_version, c, ns, version)
    if ok then return end
    local transient = require("lock").transient(err) or (type(err) == "table" and err.code == 409)
    if not transient or attempt == 4 then error(err, 0) end
    require("log").warn("cannot record the migration version; retrying", { error = tostring(err), attempt = attempt })
    bgrun.sleep(0.5 * 2 ^ (attempt - 1))
  end
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
                  message = fmt:format(...) .. "; not restoring from " .. tostring(d.path) .. ", a human must look" }
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
    return
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
                      .. "a newer release may need the newer schema; not restoring from %s, a human must look")
                      :format(e.service.app, tostring(colour), tostring(image), e.service.colour,
                              tostring(e.service.image), tostring(d.path)) }
    end
  end
  require("restore").restore { path = d.path, database = d.database, bucket = d.bucket }
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
  -- brings back the replicas a run scaled to 0, only where they still are 0
  -- (or already back): another release's replicas are not ours to set
  scale = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    for name, n in pairs(d.replicas or {}) do
      local dep = c:get("deployment", name, { namespace = d.namespace })
      local now = dep and (dep.spec.replicas or 0)
      if now ~= 0 and now ~= n then
        bgrun.raise { module = "release", op = "scale " .. name, code = "world_changed", reason = "WorldChanged",
                      message = ("deployment %s has %s replicas, not 0 as the run left it (nor %d as it found it): "
                        .. "another run changed it; nothing was changed, a human must look"):format(name, tostring(now), n) }
      end
    end
    M.scale_all(c, d.namespace, d.replicas, d.rollout_timeout)
  end,
}

return M
