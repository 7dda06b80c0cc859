---@meta log
-- Levelled log lines on stderr: text (coloured on a terminal) or, with
-- --log-format json, one JSON object a line {time, level, message, step,
-- fields}. Registered secrets are masked on every path.
local log = {}

---@param message any
---@param fields table<string, any>?
function log.debug(message, fields) end
---@param message any
---@param fields table<string, any>?
function log.info(message, fields) end
---@param message any
---@param fields table<string, any>?
function log.warn(message, fields) end
---@param message any
---@param fields table<string, any>?
function log.error(message, fields) end

---Registers a value that must never be printed; returns it.
---@param value string
---@return string
function log.secret(value) end

---text with every registered secret replaced by "[REDACTED]".
---@param text string
---@return string
function log.redact(text) end

---@param opts {format: ("text"|"json")?, level: ("debug"|"info"|"warn"|"error")?, color: boolean?}
function log.configure(opts) end

---@return "text"|"json"
function log.format() end

---@return "debug"|"info"|"warn"|"error"
function log.level() end

return log
