---@meta manifests
-- Generated from stdlib/manifests.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---The field manager bgrun applies as.
---@type string
M.FIELD_MANAGER = "bgrun"

---Reads every object from the given files (YAML, several documents each).
---@param paths string[]
---@return table[]
function M.load(paths) end

---The resource an object's kind names: the engine's kind table first
---(k8s.resource_for), else the API server's discovery document for its
---apiVersion (pass a client). Raises naming the kind when neither knows it.
---@param kind string
---@param api_version string?
---@param c any? k8s client, for discovery
---@return {group: string, version: string, plural: string, kind: string, namespaced: boolean}
function M.resource(kind, api_version, c) end

---The resource of kind in apiVersion from the API server's discovery
---document (GET /apis/GROUP/VERSION or /api/v1). Raises naming the kind
---when the server does not serve it.
---@param c any k8s client
---@param kind string
---@param api_version string
---@return {group: string, version: string, plural: string, kind: string, namespaced: boolean}
function M.discover(c, kind, api_version) end

---The path form c:get/c:patch take ("networking.k8s.io/v1/ingresses").
---@param r {group: string, version: string, plural: string}
---@return string
function M.kind_path(r) end

---Server-side applies each object as field manager "bgrun" (opts.field_manager).
---force (default true: the manifests are the truth for the fields they set)
---takes over fields another manager set; force=false raises the API
---server's 409 Conflict instead. Returns {created=, replaced=} (replaced:
---objects that existed and were applied over).
---@param c any k8s client
---@param objs table[]
---@param opts {namespace: string?, force: boolean?, field_manager: string?}?
---@return {created: integer, replaced: integer}
function M.apply(c, objs, opts) end

return M
