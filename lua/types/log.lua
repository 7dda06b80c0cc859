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

---Names the step on every following line (nil: none); the prelude's
---step() sets it.
---@param name string?
function log.set_step(name) end

---A transfer's progress through the engine's reporter (engine/progress.h):
---on a terminal one line rewritten in place (bytes, rate, ETA), with
-----log-format json an event {"event":"progress",...} every 5 s and one
---with done=true at the end, as plain text lines every 10 s in CI logs,
---nothing with -q. Updates are cheap and rate-limited by the clock.
---Use it with <close>: a block that raises ends it as failed.
---@param label string what is moved ("upload prod/x.tar.gz")
---@param opts {total: integer?}? total: the bytes to move, when known
---@return log.Progress
function log.progress(label, opts) end

---@class log.Progress
local Progress = {}
---Bytes done so far.
---@param bytes integer
---@return log.Progress
function Progress:update(bytes) end
---@param n integer bytes more
---@return log.Progress
function Progress:add(n) end
---@param bytes integer the total, once known
---@return log.Progress
function Progress:set_total(bytes) end
---Prints the summary (terminal, text) or the done event (JSON); once.
---@param ok boolean? default true
function Progress:finish(ok) end

return log
