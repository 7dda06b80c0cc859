---@meta manifests
-- Generated from stdlib/manifests.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Reads every object from the given files (YAML, several documents each).
---@param paths string[]
---@return table[]
function M.load(paths) end

---Creates or replaces each object; returns {created=, replaced=}.
---@param c any k8s client
---@param objs table[]
---@param opts {namespace: string?}?
---@return {created: integer, replaced: integer}
function M.apply(c, objs, opts) end

return M
