-- Smoke tests: checks as data (or Lua functions for what data cannot
-- say), run concurrently against one base URL or several (every pod of a
-- colour), reported as a table. Playbooks: smoke-test.lua, deploy.lua.
--
-- A data check:
--   { name = "health", method = "GET", path = "/health", headers = {...},
--     body = "..." | json = {...}, timeout = 10, readonly = true,
--     expect = { status = 200, json = { ["path.to.field"] = value },
--                contains = "text", max_ms = 500 } }
-- A function check:
--   { name = "BHYT validation", run = function(t) ... end }
--   t.url is the target's base URL; t:request(req) / t:all(reqs) send
--   requests with path= resolved against it, within what is left of the
--   check's timeout (one deadline for all its requests: t:remaining());
--   t:expect(resp, expect) applies data-style expectations. The function
--   passes by returning true (or nothing), fails by returning false,
--   reason or by raising.
-- Every check runs at once as a coroutine; the requests they wait on go
-- out together through a transport: http.all (pod IPs, a preview URL) or
-- the k8s client's pods proxy (M.k8s_proxy_transport).
local http = require("http")
local json = require("json")
local log = require("log")

local M = {}

---Seconds each check may take unless it says otherwise.
M.DEFAULT_TIMEOUT = 10
M.DEFAULT_CONCURRENCY = 16

------------------------------------------------------------------ matchers

local MATCHER = {}

local function matcher(describe, test)
  return setmetatable({ describe = describe, test = test }, MATCHER)
end

local function show(v)
  if v == json.null then return "null" end
  if type(v) == "string" then return ("%q"):format(v) end
  if type(v) == "table" then
    local ok, s = pcall(json.encode, v)
    return ok and s or tostring(v)
  end
  return tostring(v)
end

---Matches any value that is present (not nil and not JSON null).
M.present = matcher("present", function(v) return v ~= nil and v ~= json.null end)

---Matches a non-empty array.
M.non_empty = matcher("a non-empty array", function(v)
  return type(v) == "table" and v[1] ~= nil
end)

---Matches a value of a Lua type ("string", "number", "boolean", "table").
---@param ty string
function M.type(ty)
  return matcher("a " .. ty, function(v) return type(v) == ty end)
end

---Matches the value of run option vars[name] when given; otherwise
---`otherwise` (default: any present value).
---@param name string
---@param otherwise table?
function M.var(name, otherwise)
  return matcher("${" .. name .. "}", function(v, vars)
    local want = vars and vars[name]
    if want == nil then
      local m = otherwise or M.present
      return m.test(v, vars), m.describe
    end
    return v == want, show(want)
  end)
end

---Matches when fn(value) is truthy.
---@param describe string
---@param fn fun(v: any): boolean
function M.satisfies(describe, fn)
  return matcher(describe, function(v) return fn(v) and true or false end)
end

local function match(want, got, vars)
  if getmetatable(want) == MATCHER then
    local ok, d = want.test(got, vars)
    return ok, d or want.describe
  end
  if type(want) == "number" and type(got) == "number" then return want == got, show(want) end
  if type(want) == "table" and type(got) == "table" then
    local a, b = json.encode(want), json.encode(got)
    return a == b, show(want)
  end
  return want == got, show(want)
end

---Looks a dotted path ("items.1.code") up in a decoded JSON value.
---@param v any
---@param path string
function M.lookup(v, path)
  for part in path:gmatch("[^.]+") do
    if type(v) ~= "table" then return nil end
    local n = math.tointeger(tonumber(part))
    if n ~= nil and v[n] ~= nil then v = v[n] else v = v[part] end
  end
  return v
end

---Checks a response against expectations; returns ok, reason.
---@param resp table
---@param expect table?
---@param vars table?
---@return boolean, string?
function M.expect(resp, expect, vars)
  expect = expect or {}
  local want_status = expect.status or 200
  if resp.status ~= want_status then
    return false, ("HTTP %d (expected %d)"):format(resp.status, want_status)
  end
  if expect.json then
    if resp.json == nil then return false, "response is not JSON" end
    local keys = {}
    for k in pairs(expect.json) do keys[#keys + 1] = k end
    table.sort(keys)
    for _, k in ipairs(keys) do
      local got = M.lookup(resp.json, k)
      local ok, d = match(expect.json[k], got, vars)
      if not ok then
        return false, ("json %s = %s, expected %s"):format(k, show(got), d)
      end
    end
  end
  if expect.contains and not resp.body:find(expect.contains, 1, true) then
    return false, ("body does not contain %q"):format(expect.contains)
  end
  if expect.max_ms and resp.time_ms > expect.max_ms then
    return false, ("took %d ms, more than %s ms"):format(math.floor(resp.time_ms + 0.5), tostring(expect.max_ms))
  end
  return true
end

-- Request options the caller may pass for every check (TLS and such).
local PASS_THROUGH = { "ca_file", "client_cert", "client_key", "insecure", "http_version", "connect_timeout" }

------------------------------------------------------------------ transports

-- A transport sends a batch of requests ({method, url, headers, body, json,
-- timeout, readonly, ...}, as http.request takes them) concurrently and
-- returns one result per request: a response {status, headers, body, json,
-- time_ms} or a structured error, as http.all does.

---Requests straight to the target URLs (pod IPs, a preview URL).
M.http_transport = { name = "http", all = function(reqs, o) return http.all(reqs, o) end }

local function is_json_type(ct)
  ct = (ct or ""):lower():match("^[^;]*") or ""
  return ct == "application/json" or (ct:match("^application/.+%+json$") ~= nil)
end

---Requests through the Kubernetes API server's pods proxy, with the k8s
---client's credentials: each target URL is the client's server URL
---followed by /api/v1/namespaces/NS/pods/NAME:PORT/proxy.
---@param c any a k8s client
function M.k8s_proxy_transport(c)
  local server = (c:info().server or ""):gsub("/+$", "")
  local tr = { name = "proxy", server = server }
  function tr.all(reqs)
    local raw, out = {}, {}
    for i, r in ipairs(reqs) do
      if r.url:sub(1, #server) ~= server then
        error(("smoke: %s is not on the API server %s"):format(r.url, server), 0)
      end
      local method = (r.method or (r.body or r.json) and "POST" or "GET"):upper()
      if bgrun.dry_run() and method ~= "GET" and method ~= "HEAD" and not r.readonly then
        out[i] = { status = 0, dry_run = true, body = "", headers = {}, time_ms = 0, url = r.url }
      else
        local headers = {}
        for k, v in pairs(r.headers or {}) do headers[k] = v end
        local body = r.body
        if r.json ~= nil then
          body = json.encode(r.json)
          local has = false
          for k in pairs(headers) do if k:lower() == "content-type" then has = true end end
          if not has then headers["Content-Type"] = "application/json" end
        end
        raw[#raw + 1] = { method = method, path = r.url:sub(#server + 1), headers = headers, body = body,
                          timeout = r.timeout }
        out[i] = #raw
      end
    end
    local got = #raw > 0 and c:request_all(raw) or {}
    for i, slot in ipairs(out) do
      if type(slot) == "number" then
        local resp = got[slot]
        if not bgrun.is_error(resp) then
          resp.url = reqs[i].url
          if is_json_type(resp.headers["content-type"]) then
            local ok, v = pcall(json.decode, resp.body)
            if ok then resp.json = v end
          end
        end
        out[i] = resp
      end
    end
    return out
  end
  return tr
end

------------------------------------------------------------------ running

local CHECK_KEYS = { name = true, method = true, path = true, headers = true, body = true,
                     json = true, expect = true, timeout = true, readonly = true, run = true }
local EXPECT_KEYS = { status = true, json = true, contains = true, max_ms = true }

local function normalize_checks(checks)
  if type(checks) ~= "table" then error("smoke: checks must be a list", 3) end
  local out = {}
  for i, c in ipairs(checks) do
    if type(c) == "function" then c = { name = "check " .. i, run = c } end
    if type(c) ~= "table" then error(("smoke: check %d must be a table or a function"):format(i), 3) end
    for k in pairs(c) do
      if not CHECK_KEYS[k] then error(("smoke: check %d: unknown field '%s'"):format(i, tostring(k)), 3) end
    end
    for k in pairs(c.expect or {}) do
      if not EXPECT_KEYS[k] then error(("smoke: check %d: unknown expect field '%s'"):format(i, tostring(k)), 3) end
    end
    if type(c.name) ~= "string" then error(("smoke: check %d needs a name"):format(i), 3) end
    if c.run == nil and type(c.path) ~= "string" then
      error(("smoke: check '%s' needs a path (or run=function)"):format(c.name), 3)
    end
    if c.run ~= nil and type(c.run) ~= "function" then
      error(("smoke: check '%s': run must be a function"):format(c.name), 3)
    end
    out[#out + 1] = c
  end
  return out
end

local function normalize_targets(targets)
  if type(targets) == "string" then targets = { targets } end
  if type(targets) ~= "table" or #targets == 0 then error("smoke: give at least one target URL", 3) end
  local out = {}
  for i, t in ipairs(targets) do
    if type(t) == "string" then t = { url = t } end
    if type(t) ~= "table" or type(t.url) ~= "string" then
      error(("smoke: target %d must be a URL or {name=, url=}"):format(i), 3)
    end
    out[#out + 1] = { name = t.name or t.url, url = (t.url:gsub("/+$", "")) }
  end
  return out
end

local function transport_reason(e)
  if type(e) == "table" and e.reason then
    return ("%s: %s"):format(e.reason, e.message or "")
  end
  return tostring(e)
end

-- The error a request gets when its check's time is already spent.
local function spent(c, timeout, url)
  return bgrun.error { module = "smoke", op = "check " .. c.name, code = "timeout", reason = "Timeout",
                       message = ("the check's %s s were spent before %s was sent"):format(tostring(timeout), url),
                       url = url }
end

-- Inside a check's coroutine: sends reqs (filled) through the scheduler
-- and returns their results; requests after the deadline fail at once.
local function send(cell, reqs)
  local now, todo, out = bgrun.now(), {}, {}
  for i, r in ipairs(reqs) do
    if cell.deadline - now <= 0.001 then
      out[i] = spent(cell.check, cell.timeout, r.url)
    else
      todo[#todo + 1] = r
      out[i] = #todo
    end
  end
  local got = #todo > 0 and coroutine.yield(todo) or {}
  for i, slot in ipairs(out) do
    if type(slot) == "number" then out[i] = got[slot] end
  end
  return out
end

-- Sends the requests of every waiting check, at most concurrency at a
-- time. Each batch goes out with what is left of its checks' deadlines, and
-- a request whose check has no time left fails without being sent: however
-- many requests wait, the run ends in about one timeout.
local function dispatch(transport, reqs, owners, concurrency)
  local got, k = {}, 1
  while k <= #reqs do
    local batch, slots = {}, {}
    while k <= #reqs and #batch < concurrency do
      local cell, r = owners[k][1], reqs[k]
      local left = cell.deadline - bgrun.now()
      if left <= 0.001 then
        got[k] = spent(cell.check, cell.timeout, r.url)
      else
        if not r.timeout or r.timeout > left then r.timeout = left end
        batch[#batch + 1] = r
        slots[#batch] = k
      end
      k = k + 1
    end
    if #batch > 0 then
      local res = transport.all(batch, { concurrency = #batch })
      for j, v in ipairs(res) do got[slots[j]] = v end
    end
  end
  return got
end

-- The context a function check gets.
local function check_context(cell, opts)
  local target, c = cell.target, cell.check
  local t = { url = target.url, target = target.name, timeout = cell.timeout, vars = opts.vars or {} }
  local function fill(req)
    local r = {}
    for k, v in pairs(req) do r[k] = v end
    if r.path then r.url, r.path = target.url .. r.path, nil end
    for _, k in ipairs(PASS_THROUGH) do if opts.http and opts.http[k] ~= nil and r[k] == nil then r[k] = opts.http[k] end end
    return r
  end
  ---Seconds left of the check's timeout.
  function t:remaining() return math.max(0, cell.deadline - bgrun.now()) end
  function t:request(req)
    local resp = send(cell, { fill(req) })[1]
    if bgrun.is_error(resp) then error(resp, 0) end
    return resp
  end
  function t:all(reqs)
    local filled = {}
    for i, r in ipairs(reqs) do filled[i] = fill(r) end
    return send(cell, filled)
  end
  function t:expect(resp, expect) return M.expect(resp, expect, t.vars) end
  t.check = c.name
  return t
end

local function row(target, c, ok, latency, reason, status)
  return { check = c.name, target = target.name, url = target.url, ok = ok, result = ok and "PASS" or "FAIL",
           latency_ms = latency and math.floor(latency + 0.5) or nil, reason = reason, status = status }
end

-- A data check as a task: one request, then the expectations.
local function data_task(cell, opts)
  local target, c = cell.target, cell.check
  local req = { method = c.method, url = target.url .. c.path, headers = c.headers, body = c.body, json = c.json,
                readonly = c.readonly }
  for _, k in ipairs(PASS_THROUGH) do if opts.http and opts.http[k] ~= nil then req[k] = opts.http[k] end end
  local resp = send(cell, { req })[1]
  if bgrun.is_error(resp) then return row(target, c, false, nil, transport_reason(resp)) end
  local ok, reason = M.expect(resp, c.expect, opts.vars)
  return row(target, c, ok, resp.time_ms, reason, resp.status)
end

-- A function check as a task.
local function function_task(cell, opts)
  local ctx = check_context(cell, opts)
  local c0 = bgrun.now()
  local res = table.pack(pcall(cell.check.run, ctx))
  local took = (bgrun.now() - c0) * 1000
  if res[1] and res[2] ~= false then return row(cell.target, cell.check, true, took) end
  if res[1] then
    return row(cell.target, cell.check, false, took, tostring(res[3] or "check returned false"))
  end
  local e = res[2]
  if type(e) == "table" and e.code == "interrupted" then error(e, 0) end
  return row(cell.target, cell.check, false, took, transport_reason(e))
end

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
function M.run(targets, checks, opts)
  opts = opts or {}
  targets = normalize_targets(targets)
  checks = normalize_checks(checks)
  local transport = opts.transport or M.http_transport

  local t0 = bgrun.now()
  local cells = {}
  for _, target in ipairs(targets) do
    for _, c in ipairs(checks) do
      local timeout = c.timeout or opts.timeout or M.DEFAULT_TIMEOUT
      local cell = { target = target, check = c, timeout = timeout, deadline = t0 + timeout }
      local task = c.run and function_task or data_task
      cell.co = coroutine.create(function() return task(cell, opts) end)
      cells[#cells + 1] = cell
    end
  end

  -- Resumes a cell's task; records its row when it finishes, or the
  -- requests it now waits for.
  local function step(cell, ...)
    local ok, v = coroutine.resume(cell.co, ...)
    if not ok then
      if type(v) == "table" and v.code == "interrupted" then error(v, 0) end
      error(debug.traceback(cell.co, tostring(v)), 0)
    end
    if coroutine.status(cell.co) == "dead" then
      cell.row, cell.waiting = v, nil
    else
      cell.waiting = v
    end
  end

  for _, cell in ipairs(cells) do step(cell) end
  while true do
    local reqs, owners = {}, {}
    for _, cell in ipairs(cells) do
      if cell.waiting then
        for i, r in ipairs(cell.waiting) do
          reqs[#reqs + 1] = r
          owners[#reqs] = { cell, i }
        end
      end
    end
    if #reqs == 0 then break end
    local got = dispatch(transport, reqs, owners, opts.concurrency or M.DEFAULT_CONCURRENCY)
    local answers = {}
    for k, o in ipairs(owners) do
      answers[o[1]] = answers[o[1]] or {}
      answers[o[1]][o[2]] = got[k]
    end
    for _, cell in ipairs(cells) do
      if cell.waiting then step(cell, answers[cell]) end
    end
  end

  local report = { ok = true, passed = 0, failed = 0, results = {},
                   duration_ms = math.floor((bgrun.now() - t0) * 1000 + 0.5) }
  for _, cell in ipairs(cells) do
    local r = cell.row
    report.results[#report.results + 1] = r
    if r.ok then report.passed = report.passed + 1 else report.failed = report.failed + 1 end
  end
  report.ok = report.failed == 0
  for _, r in ipairs(report.results) do
    local fields = { check = r.check, target = r.target, latency_ms = r.latency_ms }
    if r.ok then log.debug("check passed", fields) else
      fields.reason = r.reason
      log.warn("check failed", fields)
    end
  end
  return report
end

------------------------------------------------------------------ report

local function pad(s, w) return s .. string.rep(" ", w - #s) end

---Formats the report as an aligned text table ending with a summary line.
---@param report table
---@return string
function M.format_text(report)
  local multi = false
  for _, r in ipairs(report.results) do
    if r.target ~= report.results[1].target then multi = true end
  end
  local head = { "CHECK", "TARGET", "RESULT", "LATENCY", "REASON" }
  local rows = {}
  for _, r in ipairs(report.results) do
    rows[#rows + 1] = { r.check, r.target, r.result, r.latency_ms and (r.latency_ms .. " ms") or "-", r.reason or "" }
  end
  local cols = multi and { 1, 2, 3, 4, 5 } or { 1, 3, 4, 5 }
  local width = {}
  for _, c in ipairs(cols) do
    width[c] = #head[c]
    for _, r in ipairs(rows) do width[c] = math.max(width[c], #r[c]) end
  end
  local lines = {}
  local function line(cells)
    local parts = {}
    for i, c in ipairs(cols) do parts[#parts + 1] = i == #cols and cells[c] or pad(cells[c], width[c]) end
    lines[#lines + 1] = (table.concat(parts, "  "):gsub("%s+$", ""))
  end
  if not multi and #report.results > 0 then lines[#lines + 1] = "target: " .. report.results[1].target end
  line(head)
  for _, r in ipairs(rows) do line(r) end
  lines[#lines + 1] = ("%d passed, %d failed"):format(report.passed, report.failed)
  return table.concat(lines, "\n")
end

---Prints the report to stdout: a text table, or JSON when the log format
---is json (or opts.format says so).
---@param report table
---@param opts {format: string?}?
function M.print(report, opts)
  local format = opts and opts.format or log.format()
  if format == "json" then
    print(json.encode(report))
  else
    print(M.format_text(report))
  end
end

---Raises a structured error naming the failed checks unless all passed.
---@param report table
function M.assert_ok(report)
  if report.ok then return report end
  local names, targets, ntargets = {}, {}, 0
  for _, r in ipairs(report.results) do
    if not targets[r.target] then targets[r.target], ntargets = true, ntargets + 1 end
  end
  for _, r in ipairs(report.results) do
    if not r.ok then names[#names + 1] = r.check .. (ntargets > 1 and (" @ " .. r.target) or "") end
  end
  bgrun.raise { module = "smoke", op = "smoke test", code = "failed", reason = "ChecksFailed",
                message = ("%d of %d checks failed: %s"):format(report.failed, report.passed + report.failed,
                                                                table.concat(names, ", ")),
                failed = report.failed }
end

return M
