---@meta json
-- JSON through jansson. Decoded arrays and objects are tables marked with
-- their kind, so an empty array stays an array; integers stay integers.
local json = {}

---The JSON null.
---@type lightuserdata
json.null = nil

---@param value any
---@param opts {indent: integer?, sort_keys: boolean?}?
---@return string
function json.encode(value, opts) end

---Raises a structured error {code="invalid", line=, column=, position=}.
---@param text string
---@return any
function json.decode(text) end

---Marks t (or a new table) to encode as an array, even when empty.
---@param t table?
---@return table
function json.array(t) end

---Marks t (or a new table) to encode as an object, even when empty.
---@param t table?
---@return table
function json.object(t) end

---@param t table
---@return boolean
function json.is_array(t) end

return json
