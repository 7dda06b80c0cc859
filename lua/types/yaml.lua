---@meta yaml
-- YAML reading (libyaml), typed by the YAML 1.2 core schema: plain
-- null/~, true/false, integers (decimal, 0x, 0o) and floats become Lua
-- values; quoted scalars and everything else are strings. Anchors, aliases
-- and "<<" merge keys are resolved. Mappings and sequences come back as
-- tables marked like json.decode's, so they re-encode to the same JSON.
local yaml = {}

---The first document of a YAML text (nil when the text has none).
---Raises a structured error (code "invalid") naming line and column.
---@param text string
---@return any
function yaml.decode(text) end

---Every document of a YAML text (`---` separated), empty ones skipped.
---@param text string
---@return any[]
function yaml.decode_all(text) end

---Every document of a YAML file, e.g. Kubernetes manifests.
---@param path string
---@return any[]
function yaml.load_file(path) end

return yaml
