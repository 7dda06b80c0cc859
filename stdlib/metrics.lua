-- Metric analysis: PromQL queries against a Prometheus HTTP API
-- (/api/v1/query), each judged by a condition, with the semantics of Argo
-- Rollouts' AnalysisTemplate (successCondition, failureCondition,
-- failureLimit, inconclusiveLimit, interval, count, initialDelay).
--
-- API (the monitor and the canary rely on it):
--
--   local metrics = require("metrics")
--   metrics.validate(cfg [, where])  -- checks a config; raises code "usage"
--                                    -- (exit 2) naming the input
--   local a = metrics.analysis(cfg, { colour =, tag =, namespace =, app =,
--                                     interval =, start =, deadline =,
--                                     where = "monitor.metrics" })
--                  -- vars fill the query templates; interval is the
--                  -- default between measurements; start and deadline
--                  -- (bgrun.now() times) the window
--   a:next_at()    -- bgrun.now() time of the next measurement due, or nil
--                  -- when nothing is left to measure before the deadline
--   a:measure()    -- takes the measurements due now; returns nil, or a
--                  -- failure {metric =, phase =, message =} that must stop
--                  -- the release (Failed; Inconclusive unless the config
--                  -- says inconclusive = "pass")
--   a:finish()     -- at the window's end: the final verdict, same shape
--   a.result       -- what the run report carries: {phase = "Running" |
--                  -- "Successful" | "Failed" | "Inconclusive", passed =,
--                  -- inconclusive = "fail" | "pass",
--                  -- metrics = {{name =, query =, condition =, phase =,
--                  -- message =, successful =, failed =, inconclusive =,
--                  -- errors =, measurements = {{at =, phase =, value =,
--                  -- values =, message =}}}}}
--
-- monitor.watch(c, {metrics = cfg, colour =, tag =, ...}) drives it: one
-- loop waits for the pod events, the periodic checks and the measurements.
-- The canary runs the same monitor.watch for `pause` seconds per step.
--
-- The config (Lua data in environments.lua, the env's monitor.metrics):
--
--   metrics = {
--     prometheus = { url = "http://prometheus.example.invalid:9090",
--                    bearer_token = os.getenv("PROMETHEUS_TOKEN"),  -- or bearer_token_file
--                    -- basic_auth = { username = "u", password = os.getenv("P") },  -- or password_file
--                    timeout = 10 },
--     inconclusive = "fail",           -- or "pass"
--     queries = {
--       { name = "error-rate", condition = "value < 0.01", failure_limit = 1,
--         query = '(sum(rate(http_requests_total{namespace="{namespace}",version="{colour}",code=~"5.."}[1m]))'
--              .. ' or vector(0)) / sum(rate(http_requests_total{namespace="{namespace}",version="{colour}"}[1m]))' },
--     },
--   }
--
-- A measurement is Successful, Failed or Inconclusive (as Argo: a success
-- condition alone fails what it does not accept; a failure condition alone
-- passes what it does not reject; with both, a value meeting neither is
-- Inconclusive). No data (an empty result, NaN) is Inconclusive; a
-- measurement that cannot be taken (Prometheus unreachable, an error
-- answer) is an Error and counts as inconclusive too — Argo keeps those
-- apart under consecutiveErrorLimit; bgrun folds them in, so that a
-- Prometheus that is down never passes a release silently.
local digest = require("digest")
local http = require("http")
local json = require("json")
local log = require("log")

local M = {}

M.defaults = {
  failure_limit = 0,       -- failed measurements tolerated per query
  inconclusive_limit = 0,  -- inconclusive (or errored) measurements tolerated per query
  initial_delay = 0,       -- seconds before a query's first measurement
  timeout = 10,            -- seconds a query may take
  inconclusive = "fail",   -- what an inconclusive analysis does to the release
}

M.VARIABLES = { "colour", "color", "tag", "version", "namespace", "app" }

local QUERY_KEYS = {
  name = true, query = true, condition = true, success_condition = true, failure_condition = true,
  failure_limit = true, inconclusive_limit = true, interval = true, count = true, initial_delay = true,
  inconclusive = true, prometheus = true,
}
local CONFIG_KEYS = { prometheus = true, queries = true, inconclusive = true, failure_limit = true,
                      inconclusive_limit = true, interval = true, count = true, initial_delay = true }
local PROMETHEUS_KEYS = { url = true, bearer_token = true, bearer_token_file = true, basic_auth = true,
                          timeout = true, headers = true, insecure = true, ca_file = true }

local function usage(where, fmt, ...)
  error(bgrun.error {
    module = "metrics", op = "check config", code = "usage", reason = "Invalid",
    message = where .. ": " .. fmt:format(...),
  }, 0)
end

---------------------------------------------------------------------------
-- Conditions: a small expression language over `value` (alias `result`),
-- parsed once into closures; never Lua's load.
--   value < 0.01    value <= 250    value >= 0.95 and value < 2
--   not (value > 1) value * 1000 <= 250    value ~= 0 (also !=, ==)
---------------------------------------------------------------------------

local function tokenize(src)
  local toks, i, n = {}, 1, #src
  while i <= n do
    local c = src:sub(i, i)
    if c:match("%s") then
      i = i + 1
    else
      local num = src:match("^%d*%.?%d+[eE][%+%-]?%d+", i) or src:match("^%d+%.?%d*", i)
                  or src:match("^%.%d+", i)
      local word = src:match("^[%a_][%w_]*", i)
      local op = src:match("^[<>=~!]=", i) or src:match("^&&", i) or src:match("^||", i)
                 or src:match("^[<>%(%)%+%-%*/!]", i)
      if num then
        toks[#toks + 1] = { k = "num", v = tonumber(num), pos = i, text = num }
        i = i + #num
      elseif word then
        toks[#toks + 1] = { k = "word", v = word, pos = i, text = word }
        i = i + #word
      elseif op then
        toks[#toks + 1] = { k = "op", v = op, pos = i, text = op }
        i = i + #op
      else
        return nil, ("unexpected %q at column %d"):format(c, i)
      end
    end
  end
  toks[#toks + 1] = { k = "end", pos = n + 1, text = "end of condition" }
  return toks
end

local ALIASES = { ["&&"] = "and", ["||"] = "or", ["!"] = "not", ["!="] = "~=" }
local COMPARE = {
  ["<"] = function(a, b) return a < b end, ["<="] = function(a, b) return a <= b end,
  [">"] = function(a, b) return a > b end, [">="] = function(a, b) return a >= b end,
  ["=="] = function(a, b) return a == b end, ["~="] = function(a, b) return a ~= b end,
}
local ARITH = {
  ["+"] = function(a, b) return a + b end, ["-"] = function(a, b) return a - b end,
  ["*"] = function(a, b) return a * b end, ["/"] = function(a, b) return a / b end,
}

-- Recursive descent; each node is {t = "num"|"bool", f = function(v)}.
local function parse(src)
  local toks, err = tokenize(src)
  if not toks then error(err, 0) end
  local pos = 1
  local function peek()
    local t = toks[pos]
    local v = t.k ~= "num" and (ALIASES[t.v] or t.v) or nil
    return t, v
  end
  local function fail(t, what)
    error(("%s at column %d (found %s)"):format(what, t.pos, t.k == "end" and "the end" or ("%q"):format(t.text)), 0)
  end
  local expr
  local function need(node, t, typ, what)
    if node.t ~= typ then fail(t, what) end
    return node
  end
  local function atom()
    local t, v = peek()
    if t.k == "num" then
      pos = pos + 1
      local n = t.v
      return { t = "num", f = function() return n end }
    elseif t.k == "word" and (v == "value" or v == "result") then
      pos = pos + 1
      return { t = "num", f = function(x) return x end }
    elseif t.k == "word" and (v == "true" or v == "false") then
      pos = pos + 1
      local b = v == "true"
      return { t = "bool", f = function() return b end }
    elseif v == "(" then
      pos = pos + 1
      local e = expr()
      local close = peek()
      if close.v ~= ")" then fail(close, "expected ')'") end
      pos = pos + 1
      return e
    elseif v == "-" then
      pos = pos + 1
      local at = toks[pos]
      local e = need(atom(), at, "num", "expected a number after '-'")
      return { t = "num", f = function(x) return -e.f(x) end }
    elseif v == "not" then
      pos = pos + 1
      local at = toks[pos]
      local e = need(atom(), at, "bool", "expected a comparison after 'not'")
      return { t = "bool", f = function(x) return not e.f(x) end }
    end
    fail(t, t.k == "word" and ("unknown name %q (use value)"):format(t.text) or "expected value, a number or '('")
  end
  local function binary(sub, ops, typ, result)
    return function()
      local left = sub()
      while true do
        local t, op = peek()
        if t.k == "num" or not ops[op or ""] then return left end
        pos = pos + 1
        need(left, t, typ, ("'%s' needs %s on its left"):format(t.text, typ == "num" and "a number" or "a comparison"))
        local rt = toks[pos]
        local right = need(sub(), rt, typ, ("'%s' needs %s on its right"):format(t.text,
          typ == "num" and "a number" or "a comparison"))
        local l, r, f = left, right, ops[op]
        left = { t = result, f = function(x) return f(l.f(x), r.f(x)) end }
      end
    end
  end
  local term = binary(atom, { ["*"] = ARITH["*"], ["/"] = ARITH["/"] }, "num", "num")
  local sum = binary(term, { ["+"] = ARITH["+"], ["-"] = ARITH["-"] }, "num", "num")
  local function compare()
    local left = sum()
    local t, v = peek()
    if not COMPARE[v or ""] then return left end
    pos = pos + 1
    need(left, t, "num", ("'%s' needs a number on its left"):format(t.text))
    local rt = toks[pos]
    local right = need(sum(), rt, "num", ("'%s' needs a number on its right"):format(t.text))
    local f = COMPARE[v]
    local after, av = peek()
    if COMPARE[av or ""] then fail(after, "comparisons do not chain (use and)") end
    return { t = "bool", f = function(x) return f(left.f(x), right.f(x)) end }
  end
  local conj = binary(compare, { ["and"] = function(a, b) return a and b end }, "bool", "bool")
  expr = binary(conj, { ["or"] = function(a, b) return a or b end }, "bool", "bool")
  local first = toks[1]
  local e = expr()
  local t = peek()
  if t.k ~= "end" then fail(t, "unexpected text") end
  if e.t ~= "bool" then fail(first, "the condition must compare value (e.g. value < 0.01)") end
  return e.f
end

---Compiles a condition ("value < 0.01", "value <= 250", combined with
---and/or/not, arithmetic + - * /) into a function(value) -> boolean.
---Raises a plain error naming the column of a mistake.
---@param src string
---@return fun(value: number): boolean
function M.condition(src)
  if type(src) ~= "string" then error("a condition must be a string or a function", 0) end
  if src:match("^%s*$") then error("the condition is empty", 0) end
  return parse(src)
end

---------------------------------------------------------------------------
-- Configuration
---------------------------------------------------------------------------

local function check_number(where, key, v, min, integer)
  if v == nil then return end
  if type(v) ~= "number" or v ~= v or v < min or (integer and math.type(v) ~= "integer") then
    usage(where, "%s must be %s >= %s (got %s)", key, integer and "an integer" or "a number", tostring(min),
      type(v) == "string" and ("%q"):format(v) or tostring(v))
  end
end

local function check_inconclusive(where, v)
  if v ~= nil and v ~= "fail" and v ~= "pass" then
    usage(where, "inconclusive must be \"fail\" or \"pass\" (got %s)", type(v) == "string" and ("%q"):format(v) or tostring(v))
  end
end

local function read_secret_file(where, key, path)
  if type(path) ~= "string" then usage(where, "%s must be a path", key) end
  local f, err = io.open(path, "r")
  if not f then usage(where, "%s: cannot read %s (%s)", key, path, tostring(err)) end
  local s = f:read("a")
  f:close()
  s = s:gsub("%s+$", "")
  if s == "" then usage(where, "%s: %s is empty", key, path) end
  return s
end

-- The provider as requests need it: url, headers (with credentials
-- registered as secrets), timeout. Credentials never reach result tables.
local function provider(where, p)
  if type(p) ~= "table" then usage(where, "prometheus must be a table with a url") end
  for k in pairs(p) do
    if not PROMETHEUS_KEYS[k] then usage(where, "prometheus: unknown option %q", tostring(k)) end
  end
  if type(p.url) ~= "string" or not p.url:match("^https?://[^/]") then
    usage(where, "prometheus.url must be an http:// or https:// URL (got %s)",
      type(p.url) == "string" and ("%q"):format(p.url) or tostring(p.url))
  end
  local url, headers = p.url:gsub("/+$", ""), {}
  local scheme, userinfo, rest = url:match("^(https?://)([^/@]+)@(.+)$")
  local user, password
  if scheme then
    url = scheme .. rest
    user, password = userinfo:match("^([^:]*):(.*)$")
    user = user or userinfo
    if password and password ~= "" then log.secret(password) end
  end
  if p.headers ~= nil then
    if type(p.headers) ~= "table" then usage(where, "prometheus.headers must be a table") end
    for k, v in pairs(p.headers) do
      if type(k) ~= "string" or (type(v) ~= "string" and type(v) ~= "number") then
        usage(where, "prometheus.headers: each header is a name = string value")
      end
      headers[k] = tostring(v)
    end
  end
  local token = p.bearer_token
  if p.bearer_token_file ~= nil then
    if token ~= nil then usage(where, "prometheus: give bearer_token or bearer_token_file, not both") end
    token = read_secret_file(where, "prometheus.bearer_token_file", p.bearer_token_file)
  end
  if token ~= nil then
    if type(token) ~= "string" or token == "" then usage(where, "prometheus.bearer_token must be a non-empty string") end
    log.secret(token)
    headers.Authorization = "Bearer " .. token
  end
  local ba = p.basic_auth
  if ba ~= nil then
    if token ~= nil then usage(where, "prometheus: give bearer_token or basic_auth, not both") end
    if type(ba) ~= "table" or type(ba.username) ~= "string" or ba.username == "" then
      usage(where, "prometheus.basic_auth needs a username")
    end
    local pw = ba.password
    if ba.password_file ~= nil then
      if pw ~= nil then usage(where, "prometheus.basic_auth: give password or password_file, not both") end
      pw = read_secret_file(where, "prometheus.basic_auth.password_file", ba.password_file)
    end
    if type(pw) ~= "string" then usage(where, "prometheus.basic_auth needs a password (or password_file)") end
    user, password = ba.username, pw
    if pw ~= "" then log.secret(pw) end
  end
  if user and password and not headers.Authorization then
    headers.Authorization = log.secret("Basic " .. digest.base64(user .. ":" .. password))
  end
  check_number(where, "prometheus.timeout", p.timeout, 0.001)
  if p.ca_file ~= nil and type(p.ca_file) ~= "string" then usage(where, "prometheus.ca_file must be a path") end
  return { url = url, headers = headers, timeout = p.timeout or M.defaults.timeout,
           insecure = p.insecure == true, ca_file = p.ca_file,
           auth = token and "bearer" or (user and password) and "basic" or nil }
end

-- {name} variables in a query, checked against the known ones. Only
-- {letters...} count, so PromQL's own braces ({code="500"}, {2}) stay.
local function check_template(where, q)
  for k in q:gmatch("{(%a[%w_]*)}") do
    local known = false
    for _, v in ipairs(M.VARIABLES) do known = known or v == k end
    if not known then
      usage(where, "query: unknown variable {%s} (known: {colour}, {tag}, {namespace}, {app})", k)
    end
  end
end

local function render(q, vars)
  return (q:gsub("{(%a[%w_]*)}", function(k)
    if k == "color" then k = "colour" end
    if k == "version" then k = "tag" end
    return tostring(vars[k])
  end))
end

local function compile_condition(where, key, c)
  if c == nil then return nil end
  if type(c) == "function" then return c end
  if type(c) ~= "string" then usage(where, "%s must be a string like \"value < 0.01\" or a function", key) end
  local ok, f = pcall(M.condition, c)
  if not ok then usage(where, "%s %q: %s", key, c, tostring(f)) end
  return f
end

-- The checked, compiled form of a config; where names it in messages.
local function compile(cfg, where)
  where = where or "metrics"
  if type(cfg) ~= "table" then usage(where, "must be a table with prometheus and queries") end
  for k in pairs(cfg) do
    if math.type(k) ~= "integer" and not CONFIG_KEYS[k] then usage(where, "unknown option %q", tostring(k)) end
  end
  local list = cfg.queries
  if list ~= nil and #cfg > 0 then usage(where, "give the queries in queries = {...} or as the list, not both") end
  list = list or cfg
  if type(list) ~= "table" or #list == 0 then
    usage(where, "no queries: give queries = { { name =, query =, condition = }, ... }")
  end
  check_inconclusive(where, cfg.inconclusive)
  check_number(where, "failure_limit", cfg.failure_limit, 0, true)
  check_number(where, "inconclusive_limit", cfg.inconclusive_limit, 0, true)
  check_number(where, "interval", cfg.interval, 0.001)
  check_number(where, "count", cfg.count, 1, true)
  check_number(where, "initial_delay", cfg.initial_delay, 0)
  local shared = cfg.prometheus ~= nil and provider(where, cfg.prometheus) or nil
  local out, names = { inconclusive = cfg.inconclusive or M.defaults.inconclusive, queries = {} }, {}
  for i, q in ipairs(list) do
    local qwhere = ("%s query %d"):format(where, i)
    if type(q) ~= "table" then usage(qwhere, "must be a table { name =, query =, condition = }") end
    if q.name ~= nil and (type(q.name) ~= "string" or q.name == "") then usage(qwhere, "name must be a string") end
    if q.name then qwhere = ("%s query %d (%s)"):format(where, i, q.name) end
    for k in pairs(q) do
      if not QUERY_KEYS[k] then usage(qwhere, "unknown option %q", tostring(k)) end
    end
    local name = q.name or ("query " .. i)
    if names[name] then usage(qwhere, "the name %q is used twice", name) end
    names[name] = true
    if q.query == nil then usage(qwhere, "query is missing (a PromQL expression)") end
    if type(q.query) ~= "string" or q.query:match("^%s*$") then usage(qwhere, "query must be a PromQL string") end
    check_template(qwhere, q.query)
    if q.condition ~= nil and q.success_condition ~= nil then
      usage(qwhere, "give condition or success_condition, not both")
    end
    local success_src = q.condition or q.success_condition
    local success = compile_condition(qwhere, q.condition ~= nil and "condition" or "success_condition", success_src)
    local failure = compile_condition(qwhere, "failure_condition", q.failure_condition)
    if not success and not failure then
      usage(qwhere, "condition is missing (e.g. condition = \"value < 0.01\")")
    end
    for _, k in ipairs({ "failure_limit", "inconclusive_limit", "count" }) do
      check_number(qwhere, k, q[k], k == "count" and 1 or 0, true)
    end
    check_number(qwhere, "interval", q.interval, 0.001)
    check_number(qwhere, "initial_delay", q.initial_delay, 0)
    check_inconclusive(qwhere, q.inconclusive)
    local prov = q.prometheus ~= nil and provider(qwhere, q.prometheus) or shared
    if not prov then usage(qwhere, "no prometheus = { url = ... } for it (nor for the analysis)") end
    local function pick(k)
      if q[k] ~= nil then return q[k] end
      if cfg[k] ~= nil then return cfg[k] end
      return M.defaults[k]
    end
    out.queries[i] = {
      name = name, query = q.query, prometheus = prov,
      condition = type(success_src) == "string" and success_src or (success and "function" or nil),
      failure_condition = type(q.failure_condition) == "string" and q.failure_condition
                          or (failure and "function" or nil),
      success = success, failure = failure,
      failure_limit = pick("failure_limit"), inconclusive_limit = pick("inconclusive_limit"),
      interval = q.interval or cfg.interval, count = q.count or cfg.count,
      initial_delay = pick("initial_delay"), inconclusive = q.inconclusive or out.inconclusive,
    }
  end
  return out
end

---Checks a metrics config without touching the network; raises a
---structured error (code "usage", exit 2) whose message names the input:
---"monitor.metrics query 2 (latency): condition \"value <<< 1\": ...".
---@param cfg table
---@param where string? how to name the config in messages (default "metrics")
function M.validate(cfg, where)
  compile(cfg, where)
end

---------------------------------------------------------------------------
-- Measuring
---------------------------------------------------------------------------

local function form_encode(s)
  return (s:gsub("[^%w%-%._~]", function(ch) return ("%%%02X"):format(ch:byte()) end))
end

local function number_of(s)
  if s == "NaN" then return 0 / 0 end
  if s == "+Inf" or s == "Inf" then return math.huge end
  if s == "-Inf" then return -math.huge end
  return tonumber(s)
end

local function series_name(labels)
  local keys = {}
  for k in pairs(labels or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  local parts = {}
  for _, k in ipairs(keys) do parts[#parts + 1] = ("%s=%q"):format(k, tostring(labels[k])) end
  return "{" .. table.concat(parts, ",") .. "}"
end

-- Runs the query; returns the samples {{value =, labels =}} or nil and
-- why the measurement could not be taken.
function M.query(prom, query)
  local ok, resp = pcall(http.request, {
    method = "POST", url = prom.url .. "/api/v1/query", readonly = true,
    headers = (function()
      local h = { ["Content-Type"] = "application/x-www-form-urlencoded", Accept = "application/json" }
      for k, v in pairs(prom.headers) do h[k] = v end
      return h
    end)(),
    body = "query=" .. form_encode(query), timeout = prom.timeout, connect_timeout = math.min(prom.timeout, 5),
    insecure = prom.insecure or nil, ca_file = prom.ca_file,
  })
  if not ok then
    if type(resp) == "table" and resp.code == "interrupted" then error(resp, 0) end
    local reason = type(resp) == "table" and resp.reason or nil
    return nil, ("Prometheus unreachable (%s): %s"):format(tostring(reason or "error"),
      type(resp) == "table" and tostring(resp.message) or tostring(resp))
  end
  local body = type(resp.json) == "table" and resp.json or nil
  if resp.status ~= 200 then
    local detail = body and body.error or resp.body:sub(1, 200):gsub("%s+", " "):gsub("^ ", ""):gsub(" $", "")
    if resp.status == 401 or resp.status == 403 then
      return nil, ("Prometheus refused the credentials (%d): %s"):format(resp.status, detail)
    end
    return nil, ("Prometheus answered %d: %s"):format(resp.status, detail)
  end
  if not body or body.status ~= "success" or type(body.data) ~= "table" then
    return nil, "Prometheus answered 200 without a query result"
  end
  local data = body.data
  if data.resultType == "scalar" then
    return { { value = number_of(data.result[2]) } }
  elseif data.resultType == "vector" then
    local out = {}
    for _, s in ipairs(data.result or {}) do
      out[#out + 1] = { value = number_of(s.value and s.value[2]), labels = s.metric }
    end
    return out
  end
  return nil, ("the query returns a %s; it must return an instant vector or a scalar"):format(tostring(data.resultType))
end

-- Argo's EvaluateResult, on one value.
local function judge(q, v)
  local function eval(f)
    local ok, r = pcall(f, v)
    if not ok then return nil, tostring(r) end
    return r == true
  end
  local s, f
  if q.success then
    local r, err = eval(q.success)
    if err then return "Error", err end
    s = r
  end
  if q.failure then
    local r, err = eval(q.failure)
    if err then return "Error", err end
    f = r
  end
  if q.success and not q.failure then f = not s end
  if q.failure and not q.success then s = not f end
  if f then return "Failed" end
  if not s then return "Inconclusive" end
  return "Successful"
end

local function fmt_value(v)
  if v ~= v then return "NaN" end
  if v == math.huge then return "+Inf" end
  if v == -math.huge then return "-Inf" end
  return ("%.6g"):format(v)
end

-- One measurement of query q: {at, phase, value, values, message}.
local function measure_one(q, rendered)
  local m = { at = os.date("!%Y-%m-%dT%H:%M:%SZ") }
  local samples, err = M.query(q.prometheus, rendered)
  if not samples then
    m.phase, m.message = "Error", err
    return m
  end
  local numeric = {}
  for _, s in ipairs(samples) do
    if s.value == nil then
      m.phase, m.message = "Error", "Prometheus answered a sample without a value"
      return m
    end
    if s.value == s.value then numeric[#numeric + 1] = s end
  end
  if #numeric == 0 then
    m.phase = "Inconclusive"
    m.message = #samples == 0 and "no data: the query returned no series" or "no data: the query returned NaN"
    return m
  end
  local worst, why = "Successful", nil
  local rank = { Successful = 0, Inconclusive = 1, Error = 2, Failed = 3 }
  m.values = {}
  for _, s in ipairs(numeric) do
    local phase, perr = judge(q, s.value)
    local shown = fmt_value(s.value)
    if #numeric > 1 then m.values[series_name(s.labels)] = shown end
    if rank[phase] > rank[worst] then
      worst = phase
      why = perr or ((#numeric > 1 and (series_name(s.labels) .. " ") or "") .. "value " .. shown)
    end
  end
  if #numeric == 1 then m.values = nil end
  m.value = #numeric == 1 and tonumber(fmt_value(numeric[1].value)) or nil
  m.phase = worst
  if worst == "Failed" then
    m.message = ("%s does not meet %s"):format(why, q.condition and ("%q"):format(q.condition) or "the condition")
    if q.failure_condition and not q.condition then
      m.message = ("%s meets the failure condition %q"):format(why, q.failure_condition)
    end
  elseif worst == "Inconclusive" then
    m.message = ("%s meets neither condition"):format(why)
  elseif worst == "Error" then
    m.message = "the condition failed: " .. tostring(why)
  end
  return m
end

local Analysis = {}
Analysis.__index = Analysis

---A running analysis of the compiled config for one colour: vars are the
---template variables (colour, tag, namespace, app), interval the default
---between measurements, start and deadline the window (bgrun.now() times).
---@param cfg table the config (checked again here)
---@param opts {colour: string?, tag: string?, namespace: string?, app: string?, interval: number, start: number?, deadline: number, where: string?}
function M.analysis(cfg, opts)
  local c = compile(cfg, opts.where)
  local start = opts.start or bgrun.now()
  local a = setmetatable({ queries = {}, deadline = opts.deadline, inconclusive = c.inconclusive }, Analysis)
  local vars = { colour = opts.colour, tag = opts.tag, namespace = opts.namespace, app = opts.app }
  a.result = { phase = "Running", inconclusive = c.inconclusive, metrics = json.array({}) }
  for i, q in ipairs(c.queries) do
    for k in q.query:gmatch("{(%a[%w_]*)}") do
      local key = k == "color" and "colour" or k == "version" and "tag" or k
      if vars[key] == nil then
        usage(("%s query %d (%s)"):format(opts.where or "metrics", i, q.name),
          "query uses {%s} but the analysis was not given the %s", k, key)
      end
    end
    local rendered = render(q.query, vars)
    local r = {
      name = q.name, query = rendered, condition = q.condition, failure_condition = q.failure_condition,
      failure_limit = q.failure_limit, inconclusive_limit = q.inconclusive_limit, count = q.count,
      prometheus = q.prometheus.url, phase = "Pending",
      successful = 0, failed = 0, inconclusive = 0, errors = 0, measurements = json.array({}),
    }
    a.result.metrics[i] = r
    a.queries[i] = { q = q, r = r, rendered = rendered, due = start + q.initial_delay,
                     interval = q.interval or opts.interval, taken = 0, done = false }
  end
  return a
end

function Analysis:next_at()
  local best
  for _, s in ipairs(self.queries) do
    if not s.done and s.due <= self.deadline and (not best or s.due < best) then best = s.due end
  end
  return best
end

local TERMINAL = { Failed = true, Successful = true }

-- The metric's phase after a measurement, as Argo assesses it.
local function assess(s)
  local r, q = s.r, s.q
  if r.failed > q.failure_limit then
    return "Failed", ("%d of %d measurements failed (failure_limit %d); last: %s"):format(
      r.failed, s.taken, q.failure_limit, r.message or "")
  end
  if r.inconclusive + r.errors > q.inconclusive_limit then
    return "Inconclusive", ("%d of %d measurements inconclusive (inconclusive_limit %d); last: %s"):format(
      r.inconclusive + r.errors, s.taken, q.inconclusive_limit, r.message or "")
  end
  if q.count and s.taken >= q.count then return "Successful", ("count %d reached"):format(q.count) end
  return "Running"
end

local function verdict(s, phase, message)
  return { metric = s.r.name, phase = phase, message = ("metric %s %s: %s"):format(s.r.name,
    phase == "Failed" and "failed" or "is inconclusive", message), query = s.rendered }
end

---Takes every measurement due now. Returns nil, or the failure that must
---stop the release.
function Analysis:measure()
  local now = bgrun.now()
  for _, s in ipairs(self.queries) do
    if not s.done and s.due <= now and s.due <= self.deadline then
      local m = measure_one(s.q, s.rendered)
      s.taken = s.taken + 1
      local r = s.r
      r.measurements[#r.measurements + 1] = m
      if m.phase == "Successful" then r.successful = r.successful + 1
      elseif m.phase == "Failed" then r.failed = r.failed + 1
      elseif m.phase == "Inconclusive" then r.inconclusive = r.inconclusive + 1
      else r.errors = r.errors + 1 end
      r.value = m.value
      r.message = m.message
      local fields = { metric = r.name, phase = m.phase, value = m.value and fmt_value(m.value) or nil,
                       measurement = s.taken }
      if m.phase == "Successful" then
        log.info("metric measured", fields)
      else
        fields.reason = m.message
        log.warn("metric measured", fields)
      end
      local phase, why = assess(s)
      r.phase = phase
      if phase ~= "Running" then r.message = why end
      s.due = bgrun.now() + s.interval
      if TERMINAL[phase] or (s.q.count and s.taken >= s.q.count) then s.done = true end
      if phase == "Failed" then
        self.result.phase, self.result.passed = "Failed", false
        return verdict(s, "Failed", why)
      end
      if phase == "Inconclusive" then
        if s.q.inconclusive ~= "pass" then
          s.done = true
          self.result.phase, self.result.passed = "Inconclusive", false
          return verdict(s, "Inconclusive", why)
        end
        -- "pass": keep measuring; a failure later still counts
        if not s.passed_warned then
          s.passed_warned = true
          log.warn("metric inconclusive: passing, as the environment says (inconclusive = \"pass\")",
                   { metric = r.name, reason = why })
        end
      end
    end
  end
  return nil
end

---Ends the analysis at the window's end: every metric still running is
---Successful (Argo's "run terminated"), but one never measured is
---Inconclusive. Returns the failure that must stop the release, or nil.
function Analysis:finish()
  local worst, failure = "Successful", nil
  local rank = { Successful = 0, Inconclusive = 1, Failed = 2 }
  for _, s in ipairs(self.queries) do
    local r = s.r
    if r.phase == "Running" or r.phase == "Pending" then
      if s.taken == 0 then
        r.phase, r.message = "Inconclusive", "no measurement was taken in the window (initial_delay too long?)"
      else
        r.phase = "Successful"
      end
    end
    if rank[r.phase] > rank[worst] then worst = r.phase end
    if r.phase == "Failed" and not failure then failure = verdict(s, "Failed", r.message) end
    if r.phase == "Inconclusive" and s.q.inconclusive ~= "pass" and not failure then
      failure = verdict(s, "Inconclusive", r.message)
    end
  end
  self.result.phase = worst
  self.result.passed = failure == nil
  return failure
end

---What an analysis would measure, one line per query, for --dry-run:
---"error-rate every 10s from 60s for 300s: QUERY (value < 0.01, failure_limit 1, inconclusive_limit 0) at URL".
---@param cfg table
---@param opts {colour: string?, tag: string?, namespace: string?, app: string?, interval: number, window: number}
---@return string[]
function M.plan(cfg, opts)
  local t0 = bgrun.now()
  local a = M.analysis(cfg, { colour = opts.colour, tag = opts.tag, namespace = opts.namespace, app = opts.app,
                              interval = opts.interval, start = t0, deadline = t0 + opts.window })
  local lines = {}
  for _, s in ipairs(a.queries) do
    local q = s.q
    local rule = q.condition or ("failure: " .. tostring(q.failure_condition))
    if q.condition and q.failure_condition then rule = rule .. "; failure: " .. q.failure_condition end
    lines[#lines + 1] = ("%s every %s from %s for %s: %s (%s, failure_limit %d, inconclusive_limit %d%s) at %s"):format(
      q.name, bgrun.fmt_duration(s.interval), bgrun.fmt_duration(q.initial_delay), bgrun.fmt_duration(opts.window),
      s.rendered, rule, q.failure_limit, q.inconclusive_limit, q.count and (", count " .. q.count) or "",
      q.prometheus.url)
  end
  return lines
end

---Report lines of an analysis result (none for nil): one per metric,
---"metric error-rate  Successful  5 measurement(s), last 0.002 (value < 0.01)".
---@param result table? an analysis' result
---@return string[]
function M.summary(result)
  local lines = {}
  for _, r in ipairs(result and result.metrics or {}) do
    local n = #r.measurements
    local last = r.value ~= nil and (", last " .. fmt_value(r.value)) or ""
    local rule = r.condition or r.failure_condition
    lines[#lines + 1] = ("%-44s %s  %d measurement(s)%s%s%s"):format("metric " .. r.name, r.phase, n, last,
      rule and rule ~= "function" and (" (" .. rule .. ")") or "",
      (r.failed + r.inconclusive + r.errors) > 0 and (", %d failed, %d inconclusive (tolerated)")
        :format(r.failed, r.inconclusive + r.errors) or "")
  end
  return lines
end

return M
