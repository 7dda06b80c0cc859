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

M.tag_param = { required = true, pattern = "^[%w][%w._-]*$", help = "image tag" }
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
  scale = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    M.scale_all(c, d.namespace, d.replicas, d.rollout_timeout)
  end,
}

return M
