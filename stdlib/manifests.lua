-- Applying Kubernetes manifests with server-side apply: each object is sent
-- whole as the intent of one field manager ("bgrun"); the API server merges
-- it, keeps what other managers own (a Service's clusterIP, an HPA's
-- replicas when the manifest leaves them out) and drops the fields bgrun
-- applied before but the manifest no longer has. YAML or JSON files,
-- several documents each.
local k8s = require("k8s")
local log = require("log")
local yaml = require("yaml")

local M = {}

---The field manager bgrun applies as.
M.FIELD_MANAGER = "bgrun"

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

local function usage(op, message)
  error(bgrun.error { module = "manifests", op = op, code = "usage", reason = "BadInput", message = message }, 0)
end

---The resource an object's kind names: the engine's kind table first
---(k8s.resource_for), else the API server's discovery document for its
---apiVersion (pass a client). Raises naming the kind when neither knows it.
---@param kind string
---@param api_version string?
---@param c any? k8s client, for discovery
---@return {group: string, version: string, plural: string, kind: string, namespaced: boolean}
function M.resource(kind, api_version, c)
  api_version = api_version or "v1"
  if type(kind) ~= "string" or kind == "" then
    usage("resource", "an object has no kind")
  end
  local ok, r = pcall(k8s.resource_for, kind, api_version)
  if not ok then usage("resource " .. kind, tostring(r)) end
  if r then return r end
  if not c then
    usage("resource " .. kind, ("unknown kind %s (apiVersion %s): not in the kind table and no client to ask the API server")
      :format(kind, api_version))
  end
  return M.discover(c, kind, api_version)
end

---The resource of kind in apiVersion from the API server's discovery
---document (GET /apis/GROUP/VERSION or /api/v1). Raises naming the kind
---when the server does not serve it.
---@param c any k8s client
---@param kind string
---@param api_version string
---@return {group: string, version: string, plural: string, kind: string, namespaced: boolean}
function M.discover(c, kind, api_version)
  local what = ("kind %s (apiVersion %s)"):format(kind, api_version)
  local path = (api_version:find("/", 1, true) and "/apis/" or "/api/") .. api_version
  local resp = c:request { method = "GET", path = path }
  if resp.status == 404 then
    usage("resource " .. kind, "unknown " .. what .. ": the API server does not serve " .. api_version)
  elseif resp.status ~= 200 then
    error(bgrun.error { module = "manifests", op = "discover " .. path, code = resp.status, reason = "DiscoveryFailed",
                        message = ("GET %s answered %d"):format(path, resp.status) }, 0)
  end
  local doc = require("json").decode(resp.body)
  for _, res in ipairs(doc.resources or {}) do
    if res.kind == kind and not res.name:find("/", 1, true) then
      local group, version = api_version:match("^(.+)/(.+)$")
      return { group = group or "", version = version or api_version, plural = res.name, kind = kind,
               namespaced = res.namespaced == true }
    end
  end
  usage("resource " .. kind, "unknown " .. what .. ": the API server's " .. api_version .. " has no such kind")
end

---The path form c:get/c:patch take ("networking.k8s.io/v1/ingresses").
---@param r {group: string, version: string, plural: string}
---@return string
function M.kind_path(r)
  if r.group == "" then return r.version .. "/" .. r.plural end
  return r.group .. "/" .. r.version .. "/" .. r.plural
end

---Server-side applies each object as field manager "bgrun" (opts.field_manager).
---force (default true: the manifests are the truth for the fields they set)
---takes over fields another manager set; force=false raises the API
---server's 409 Conflict instead. Returns {created=, replaced=} (replaced:
---objects that existed and were applied over).
---@param c any k8s client
---@param objs table[]
---@param opts {namespace: string?, force: boolean?, field_manager: string?}?
---@return {created: integer, replaced: integer}
function M.apply(c, objs, opts)
  opts = opts or {}
  local force = opts.force ~= false
  local manager = opts.field_manager or M.FIELD_MANAGER
  local plan = {}
  -- every kind resolved before anything is changed
  for i, obj in ipairs(objs) do
    if type(obj) ~= "table" then usage("apply", ("object %d is not a table"):format(i)) end
    local r = M.resource(obj.kind, obj.apiVersion, c)
    obj.apiVersion = obj.apiVersion or "v1"
    obj.metadata = obj.metadata or {}
    if type(obj.metadata.name) ~= "string" or obj.metadata.name == "" then
      usage("apply " .. r.plural, ("object %d (%s) has no metadata.name"):format(i, obj.kind))
    end
    local ns = r.namespaced and (obj.metadata.namespace or opts.namespace) or nil
    obj.metadata.namespace = ns
    -- the server owns these; sending them would claim them
    obj.metadata.resourceVersion, obj.metadata.managedFields, obj.status = nil, nil, nil
    plan[i] = { obj = obj, kind = M.kind_path(r), ns = ns }
  end
  local counts = { created = 0, replaced = 0 }
  for _, p in ipairs(plan) do
    local name = p.obj.metadata.name
    local existed = c:get(p.kind, name, { namespace = p.ns }) ~= nil
    c:patch(p.kind, name, p.obj, { namespace = p.ns, type = "apply", fieldManager = manager, force = force or nil })
    if existed then
      counts.replaced = counts.replaced + 1
      log.info("applied", { kind = p.obj.kind, name = name })
    else
      counts.created = counts.created + 1
      log.info("created", { kind = p.obj.kind, name = name })
    end
  end
  return counts
end

return M
