---@meta monitor
-- Generated from stdlib/monitor.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type table
M.defaults = nil

---Checks monitor options before anything changes (the deploy calls it
---first): numbers, and the metric analysis. Bad input raises a structured
---error with code "usage" (exit 2) naming it, e.g. "monitor.metrics query
---1 (error-rate): query is missing (a PromQL expression)".
---@param opts table? the environment's monitor table
function M.validate(opts) end

---Restart counts of the pods matching selector, keyed by pod name: the
---baseline that later checks compare against.
---@param c any k8s client
---@param opts {namespace: string?, selector: string}
---@return table<string, integer>
function M.baseline(c, opts) end

---One periodic check on a fresh list of the pods: every pod Running and
---ready, no restarts beyond the baseline, few error lines in recent logs,
---the health endpoint answering. Returns ok and a list of problems.
---@param c any k8s client
---@param opts table selector, namespace, baseline, since (log seconds), service (health_access "service" or "proxy") or health_url, replicas, and M.defaults' fields
---@return boolean, string[], table
function M.check(c, opts) end

---Watches the pods of selector for window seconds and checks them every
---interval; raises {module="monitor", code="unhealthy", problems=, seen=,
---detected_at=} at the first failure that is not tolerated. seen says what
---was seen ({signal="restart"|"unready"|"pod_gone"|"checks"|"metrics",
---pod=, metric=, ...}); detected_at is bgrun.now() when it was. A metric
---analysis failure has reason "AnalysisFailed" or "AnalysisInconclusive"
---and carries the analysis (its measurements). on_tick (e.g. renewing the
---deploy lock) runs before each periodic check. opts.report, when given,
---is the table the result is written into as the monitor goes (so a
---failed monitor's report has its checks and measurements too).
---@param c any k8s client
---@param opts table namespace, selector, baseline, service (health probe through it: its cluster IP, or with health_access = "proxy" the API server's services proxy) or health_url, replicas (wanted ready pods; default: the pods found at the start), on_tick, report, metrics (with colour, tag, app for its query templates), and M.defaults' fields
---@return {checks: integer, failed_checks: integer, events: integer, seconds: number, analysis: table?}
function M.watch(c, opts) end

return M
