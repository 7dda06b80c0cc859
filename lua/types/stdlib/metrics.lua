---@meta metrics
-- Generated from stdlib/metrics.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type table
M.defaults = nil

---@type table
M.VARIABLES = { "colour", "color", "tag", "version", "namespace", "app" }

---Compiles a condition ("value < 0.01", "value <= 250", combined with
---and/or/not, arithmetic + - * /) into a function(value) -> boolean.
---Raises a plain error naming the column of a mistake.
---@param src string
---@return fun(value: number): boolean
function M.condition(src) end

---Checks a metrics config without touching the network; raises a
---structured error (code "usage", exit 2) whose message names the input:
---"monitor.metrics query 2 (latency): condition \"value <<< 1\": ...".
---@param cfg table
---@param where string? how to name the config in messages (default "metrics")
function M.validate(cfg, where) end

function M.query(prom, query) end

---A running analysis of the compiled config for one colour: vars are the
---template variables (colour, tag, namespace, app), interval the default
---between measurements, start and deadline the window (bgrun.now() times).
---@param cfg table the config (checked again here)
---@param opts {colour: string?, tag: string?, namespace: string?, app: string?, interval: number, start: number?, deadline: number, where: string?}
function M.analysis(cfg, opts) end

---What an analysis would measure, one line per query, for --dry-run:
---"error-rate every 10s from 60s for 300s: QUERY (value < 0.01, failure_limit 1, inconclusive_limit 0) at URL".
---@param cfg table
---@param opts {colour: string?, tag: string?, namespace: string?, app: string?, interval: number, window: number}
---@return string[]
function M.plan(cfg, opts) end

---Report lines of an analysis result (none for nil): one per metric,
---"metric error-rate  Successful  5 measurement(s), last 0.002 (value < 0.01)".
---@param result table? an analysis' result
---@return string[]
function M.summary(result) end

return M
