---@meta smoke
-- Generated from stdlib/smoke.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Seconds each check may take unless it says otherwise.
---@type number
M.DEFAULT_TIMEOUT = 10

---@type number
M.DEFAULT_CONCURRENCY = 16

---Matches any value that is present (not nil and not JSON null).
---@type any
M.present = nil

---Matches a non-empty array.
---@type any
M.non_empty = nil

---Matches a value of a Lua type ("string", "number", "boolean", "table").
---@param ty string
function M.type(ty) end

---Matches the value of run option vars[name] when given; otherwise
---`otherwise` (default: any present value).
---@param name string
---@param otherwise table?
function M.var(name, otherwise) end

---Matches when fn(value) is truthy.
---@param describe string
---@param fn fun(v: any): boolean
function M.satisfies(describe, fn) end

---Looks a dotted path ("items.1.code") up in a decoded JSON value.
---@param v any
---@param path string
function M.lookup(v, path) end

---Checks a response against expectations; returns ok, reason.
---@param resp table
---@param expect table?
---@param vars table?
---@return boolean, string?
function M.expect(resp, expect, vars) end

---Requests straight to the target URLs (pod IPs, a preview URL).
---@type table
M.http_transport = nil

---Requests through the Kubernetes API server's pods proxy, with the k8s
---client's credentials: each target URL is the client's server URL
---followed by /api/v1/namespaces/NS/pods/NAME:PORT/proxy.
---@param c any a k8s client
function M.k8s_proxy_transport(c) end

---Runs checks against every target. Every check runs at once as a task:
---the requests all of them are waiting on go out together (through the
---transport), so a check that makes several requests one after the other
---does not hold the others up. A check's requests share one deadline, its
---timeout from the start: against an app that hangs the whole run ends in
---about one timeout. Returns the report:
---{ ok = bool, passed = n, failed = n, duration_ms, results = { {check,
---target, url, ok, result, latency_ms, reason, status}, ... } } ordered by
---target, then by check.
---@param targets string|string[]|{name: string, url: string}[]
---@param checks table[]
---@param opts {timeout: number?, concurrency: integer?, vars: table?, http: table?, transport: table?}?
---@return {ok: boolean, passed: integer, failed: integer, results: table[]}
function M.run(targets, checks, opts) end

---Formats the report as an aligned text table ending with a summary line.
---@param report table
---@return string
function M.format_text(report) end

---Prints the report to stdout: a text table, or JSON when the log format
---is json (or opts.format says so).
---@param report table
---@param opts {format: string?}?
function M.print(report, opts) end

---Raises a structured error naming the failed checks unless all passed.
---@param report table
function M.assert_ok(report) end

return M
