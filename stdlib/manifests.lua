-- Applying Kubernetes manifests the simple way: create what is missing,
-- replace what exists (guarded by its resourceVersion), keep the fields
-- the server owns (a Service's clusterIP). YAML or JSON files, several
-- documents each.
local log = require("log")
local yaml = require("yaml")

local M = {}

---Reads every object from the given files (YAML, several documents each).
---@param paths string[]
---@return table[]
function M.load(paths)
  local objs = {}
  for _, p in ipairs(paths) do
    for _, doc in ipairs(yaml.load_file(p)) do
      if type(doc) == "table" and doc.kind == "List" then
        for _, item in ipairs(doc.items or {}) do objs[#objs + 1] = item end
      elseif type(doc) == "table" then
        objs[#objs + 1] = doc
      end
    end
  end
  return objs
end

local function kind_path(obj)
  local group_version = obj.apiVersion or "v1"
  return group_version .. "/" .. obj.kind:lower() .. "s"
end

---Creates or replaces each object; returns {created=, replaced=}.
---@param c any k8s client
---@param objs table[]
---@param opts {namespace: string?}?
---@return {created: integer, replaced: integer}
function M.apply(c, objs, opts)
  opts = opts or {}
  local counts = { created = 0, replaced = 0 }
  for _, obj in ipairs(objs) do
    obj.metadata = obj.metadata or {}
    local ns = obj.metadata.namespace or opts.namespace
    obj.metadata.namespace = ns
    local kind = kind_path(obj)
    local current = c:get(kind, obj.metadata.name, { namespace = ns })
    if current then
      obj.metadata.resourceVersion = current.metadata.resourceVersion
      if obj.kind == "Service" and current.spec then
        obj.spec.clusterIP = current.spec.clusterIP
        obj.spec.clusterIPs = current.spec.clusterIPs
      end
      c:replace(obj, { namespace = ns })
      counts.replaced = counts.replaced + 1
      log.info("replaced", { kind = obj.kind, name = obj.metadata.name })
    else
      c:create(obj, { namespace = ns })
      counts.created = counts.created + 1
      log.info("created", { kind = obj.kind, name = obj.metadata.name })
    end
  end
  return counts
end

return M
