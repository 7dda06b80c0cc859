-- Health analysis of a colour that just took traffic, from pod signals, as
-- Lua code teams can edit. No metrics stack required. Two kinds of signal:
--
-- * Events, from one watch on the colour's pods: a container restart, a pod
--   leaving Ready, a pod going away. Each fails the monitor as soon as the
--   API server reports it: the watch is what wakes us, not a timer.
-- * Periodic checks every `interval`: the health endpoint through the
--   Service, the count of ready pods against the wanted replicas, error
--   lines in recent logs. Failed checks are tolerated as in Argo Rollouts'
--   analysis: up to `failure_limit` of them, or, with `consecutive`, until
--   that many fail in a row.
-- * Metric analysis (opts.metrics, see stdlib/metrics.lua): PromQL queries
--   against Prometheus, each measured every `interval` (its own or the
--   monitor's) and judged by its condition with Argo Rollouts' semantics:
--   a query failing more than its failure_limit, or inconclusive more than
--   its inconclusive_limit (unless inconclusive = "pass"), fails the
--   monitor at once. The measurements are in the result (`analysis`).
--
-- bgrun is single-threaded: the watch is read with a timeout that ends at
-- the next periodic check, so both run in one loop. A check that is running
-- (a slow health probe) delays the events behind it by at most its timeout.
local http = require("http")
local log = require("log")
local metrics = require("metrics")

local M = {}

M.defaults = {
  window = 300,          -- seconds to watch after the switch
  interval = 10,         -- seconds between periodic checks
  max_error_lines = 5,   -- error lines tolerated per check (fewer than this)
  error_pattern = "ERROR",
  health_path = "/health",
  health_timeout = 5,    -- seconds the health endpoint has to answer 200
  health_access = "service", -- "service": the Service's cluster IP; "proxy": the API server's services proxy
  failure_limit = 0,     -- failed periodic checks tolerated in total
  consecutive = nil,     -- when set: fail only after this many failed checks in a row
  max_restarts = 0,      -- new restarts tolerated (per pod)
  tolerate_restarts = false, -- true: restarts (and the unreadiness they cause) never fail the monitor
  tolerate_unready = false,  -- true: a pod leaving Ready is left to the periodic ready count
  tolerate_pod_loss = false, -- true: a pod going away is left to the periodic ready count
  metrics = nil,         -- a metric analysis (stdlib/metrics.lua): prometheus, queries, inconclusive
}

local NUMBERS = { "window", "interval", "failure_limit", "max_restarts", "max_error_lines", "health_timeout" }

---Checks monitor options before anything changes (the deploy calls it
---first): numbers, and the metric analysis. Bad input raises a structured
---error with code "usage" (exit 2) naming it, e.g. "monitor.metrics query
---1 (error-rate): query is missing (a PromQL expression)".
---@param opts table? the environment's monitor table
function M.validate(opts)
  if opts == nil or opts == false then return end
  if type(opts) ~= "table" then
    error(bgrun.error { module = "monitor", op = "check options", code = "usage", reason = "Invalid",
                        message = "monitor must be a table (or false)" }, 0)
  end
  for _, k in ipairs(NUMBERS) do
    local v = opts[k]
    if v ~= nil and (type(v) ~= "number" or v < 0) then
      error(bgrun.error { module = "monitor", op = "check options", code = "usage", reason = "Invalid",
                          message = ("monitor.%s must be a number >= 0"):format(k) }, 0)
    end
  end
  if opts.health_access ~= nil and opts.health_access ~= "service" and opts.health_access ~= "proxy" then
    error(bgrun.error { module = "monitor", op = "check options", code = "usage", reason = "Invalid",
                        message = ("monitor.health_access %q is not one of service, proxy")
                          :format(tostring(opts.health_access)) }, 0)
  end
  if opts.metrics ~= nil then metrics.validate(opts.metrics, "monitor.metrics") end
end

-- The caller's table merged over the defaults, in a table of our own: a
-- playbook's environment table is never written to.
local function options(opts)
  local o = {}
  for k, v in pairs(M.defaults) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  if type(o.selector) ~= "string" then error("monitor: opts.selector must be a string", 3) end
  for _, k in ipairs(NUMBERS) do
    if type(o[k]) ~= "number" or o[k] < 0 then error(("monitor: opts.%s must be a number >= 0"):format(k), 3) end
  end
  if o.interval <= 0 then error("monitor: opts.interval must be > 0", 3) end
  if o.consecutive ~= nil and (math.type(o.consecutive) ~= "integer" or o.consecutive < 1) then
    error("monitor: opts.consecutive must be an integer >= 1", 3)
  end
  if o.metrics ~= nil then metrics.validate(o.metrics, "monitor.metrics") end
  return o
end

-- A container of the pod has exited (before the kubelet restarts it, or
-- for good).
local function terminated(pod)
  for _, cs in ipairs((pod.status or {}).containerStatuses or {}) do
    if (cs.state or {}).terminated then return true end
  end
  return false
end

local function restarts_of(pod)
  local n = 0
  for _, cs in ipairs((pod.status or {}).containerStatuses or {}) do
    n = n + (cs.restartCount or 0)
  end
  return n
end

local function is_ready(pod)
  for _, cond in ipairs((pod.status or {}).conditions or {}) do
    if cond.type == "Ready" then return cond.status == "True" end
  end
  return false
end

-- Why a pod's containers are not running well, as the kubelet says it:
-- "exit code 1: Error", "CrashLoopBackOff", "readiness probe failing".
local function why(pod)
  for _, cs in ipairs((pod.status or {}).containerStatuses or {}) do
    local last = (cs.lastState or {}).terminated
    local waiting = (cs.state or {}).waiting
    local term = (cs.state or {}).terminated
    if term then return ("exit code %s: %s"):format(tostring(term.exitCode), tostring(term.reason)) end
    if last and waiting then
      return ("exit code %s: %s, now %s"):format(tostring(last.exitCode), tostring(last.reason), tostring(waiting.reason))
    end
    if waiting then return tostring(waiting.reason) end
  end
  return "readiness probe failing"
end

---Restart counts of the pods matching selector, keyed by pod name: the
---baseline that later checks compare against.
---@param c any k8s client
---@param opts {namespace: string?, selector: string}
---@return table<string, integer>
function M.baseline(c, opts)
  local base = {}
  for _, pod in ipairs(c:list("pods", { namespace = opts.namespace, labelSelector = opts.selector }).items or {}) do
    base[pod.metadata.name] = restarts_of(pod)
  end
  return base
end

-- A pod already being deleted when the monitor looks first: a scale-down's
-- (a preStop hook keeps it a while), not a failure of what is monitored.
-- It is left out; a pod deleted later is judged.
local function leaving(pod)
  return pod.metadata.deletionTimestamp ~= nil
end

-- What a pod's new state means, compared with what we knew of it (prev,
-- nil for a pod first seen). Returns seen (a table) when it must fail the
-- monitor now.
local function judge(o, ev, pod, prev)
  local name = pod.metadata.name
  if ev == "DELETED" or pod.metadata.deletionTimestamp then
    if o.tolerate_pod_loss then return nil end
    return { signal = "pod_gone", pod = name,
             problem = ("pod %s %s"):format(name, ev == "DELETED" and "is gone" or "is being deleted") }
  end
  local restarts = restarts_of(pod) - ((o.baseline or {})[name] or 0)
  if restarts > o.max_restarts and not o.tolerate_restarts then
    return { signal = "restart", pod = name, restarts = restarts,
             problem = ("pod %s restarted %d time(s) (%s)"):format(name, restarts, why(pod)) }
  end
  local phase = (pod.status or {}).phase
  if phase == "Failed" or phase == "Succeeded" then
    return { signal = "pod_gone", pod = name, problem = ("pod %s is %s (%s)"):format(name, phase, why(pod)) }
  end
  -- a crash makes the pod unready too: tolerated restarts tolerate that
  local crashed = terminated(pod) or (prev and (restarts_of(pod) > prev.restarts or prev.crashed))
  if prev and prev.ready and not is_ready(pod) and not o.tolerate_unready
      and not (crashed and (o.tolerate_restarts or o.max_restarts > 0)) then
    return { signal = "unready", pod = name, problem = ("pod %s is no longer ready (%s)"):format(name, why(pod)) }
  end
  return nil
end

local function remember(pods, ev, pod)
  local name = pod.metadata.name
  if ev == "DELETED" then
    pods[name] = nil
    return
  end
  local prev = pods[name]
  local n, ready = restarts_of(pod), is_ready(pod)
  pods[name] = { pod = pod, ready = ready, restarts = n,
                 crashed = terminated(pod) or (prev ~= nil and not ready and (n > prev.restarts or prev.crashed)) }
end

-- The health probe: {url = what the report shows, get = function() ->
-- response}, or nil. health_url wins; otherwise the Service, reached as
-- health_access says: "service" (its cluster IP: for runners inside the
-- cluster network) or "proxy" (the API server's
-- services/NAME:PORT/proxy path with the k8s client's credentials: from
-- a laptop or a hosted CI runner, wherever the API is reachable).
local function health_probe(c, o)
  if o.health_url then
    return { url = o.health_url, get = function() return http.get(o.health_url, { timeout = o.health_timeout }) end }
  end
  if not o.service or o.health_path == false then return nil end
  local svc = c:get("service", o.service, { namespace = o.namespace })
  local port = svc and svc.spec and svc.spec.ports and svc.spec.ports[1] and svc.spec.ports[1].port
  if o.health_access == "proxy" then
    if not port then
      log.warn("no health probe: the Service has no port", { service = o.service })
      return nil
    end
    local ns = o.namespace or c:info().namespace
    local path = ("/api/v1/namespaces/%s/services/%s:%d/proxy%s"):format(ns, o.service, port, o.health_path)
    return { url = (c:info().server or ""):gsub("/+$", "") .. path,
             get = function() return c:request { method = "GET", path = path, timeout = o.health_timeout } end }
  end
  local ip = svc and svc.spec and svc.spec.clusterIP
  if not ip or ip == "None" or ip == "" or not port then
    log.warn("no health probe: the Service has no cluster IP and port", { service = o.service })
    return nil
  end
  local host = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
  local url = ("http://%s:%d%s"):format(host, port, o.health_path)
  return { url = url, get = function() return http.get(url, { timeout = o.health_timeout }) end }
end

-- The periodic checks on the pods we know of; returns problems and stats.
local function periodic(c, o, pods, wanted, probe)
  local problems = {}
  local ready, errors, n = 0, 0, 0
  local since = math.max(1, math.ceil(o.since or o.interval))
  for name, p in pairs(pods) do
    n = n + 1
    if p.ready and not p.pod.metadata.deletionTimestamp then ready = ready + 1 end
    local ok, text = pcall(c.logs, c, name, { namespace = o.namespace, since = since })
    if ok then
      for line in text:gmatch("[^\n]+") do
        if line:find(o.error_pattern) then errors = errors + 1 end
      end
    else
      log.warn("cannot read pod logs", { pod = name, error = tostring(text) })
    end
  end
  if n == 0 then
    problems[#problems + 1] = "no pods match " .. o.selector
  elseif ready < wanted then
    problems[#problems + 1] = ("%d of %d pods ready"):format(ready, wanted)
  end
  if errors >= o.max_error_lines then
    problems[#problems + 1] = ("%d error lines in the last %ds of logs (limit: fewer than %d)")
      :format(errors, since, o.max_error_lines)
  end
  if probe then
    local ok, resp = pcall(probe.get)
    if not ok then
      problems[#problems + 1] = ("health endpoint %s: %s"):format(probe.url, tostring(resp))
    elseif resp.status ~= 200 then
      problems[#problems + 1] = ("health endpoint %s answered %d"):format(probe.url, resp.status)
    end
  end
  return problems, { pods = n, ready = ready, error_lines = errors }
end

---One periodic check on a fresh list of the pods: every pod Running and
---ready, no restarts beyond the baseline, few error lines in recent logs,
---the health endpoint answering. Returns ok and a list of problems.
---@param c any k8s client
---@param opts table selector, namespace, baseline, since (log seconds), service (health_access "service" or "proxy") or health_url, replicas, and M.defaults' fields
---@return boolean, string[], table
function M.check(c, opts)
  local o = options(opts)
  local pods, problems = {}, {}
  for _, pod in ipairs(c:list("pods", { namespace = o.namespace, labelSelector = o.selector }).items or {}) do
    if not leaving(pod) then
      local seen = judge(o, "ADDED", pod, nil)
      if seen then problems[#problems + 1] = seen.problem end
      remember(pods, "ADDED", pod)
    end
  end
  local n = 0
  for _ in pairs(pods) do n = n + 1 end
  local more, stats = periodic(c, o, pods, o.replicas or n, health_probe(c, o))
  table.move(more, 1, #more, #problems + 1, problems)
  return #problems == 0, problems, stats
end

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
function M.watch(c, opts)
  local o = options(opts)
  local t0 = bgrun.now()
  local deadline = t0 + o.window
  local probe = health_probe(c, o)
  local pods = {}
  local result = o.report or {}
  result.checks, result.failed_checks, result.events = 0, 0, 0
  local analysis
  if o.metrics ~= nil then
    analysis = metrics.analysis(o.metrics, { colour = o.colour, tag = o.tag, namespace = o.namespace, app = o.app,
                                             interval = o.interval, start = t0, deadline = deadline,
                                             where = "monitor.metrics" })
    result.analysis = analysis.result
  end
  local function fail(seen, problems, detected_at, reason)
    result.seconds = bgrun.now() - t0
    if analysis and analysis.result.phase == "Running" then analysis.result.phase = "Terminated" end
    log.warn("monitor: failure seen", { signal = seen.signal, pod = seen.pod, metric = seen.metric,
                                        problem = problems[1], elapsed = bgrun.fmt_duration(detected_at - t0) })
    error(bgrun.error {
      module = "monitor", op = "watch " .. o.selector, code = "unhealthy", reason = reason or "Unhealthy",
      problems = problems, seen = seen, detected_at = detected_at,
      analysis = analysis and analysis.result or nil,
      message = table.concat(problems, "; "),
    }, 0)
  end
  local function metric_failed(f)
    fail({ signal = "metrics", metric = f.metric, phase = f.phase }, { f.message }, bgrun.now(),
         f.phase == "Failed" and "AnalysisFailed" or "AnalysisInconclusive")
  end

  local list = c:list("pods", { namespace = o.namespace, labelSelector = o.selector })
  local found, gone_before = 0, {}
  for _, pod in ipairs(list.items or {}) do
    if leaving(pod) then
      gone_before[pod.metadata.name] = true
    else
      local seen = judge(o, "ADDED", pod, nil)
      if seen then fail(seen, { seen.problem }, bgrun.now()) end
      remember(pods, "ADDED", pod)
      found = found + 1
    end
  end
  local wanted = o.replicas or found
  local w <close> = c:watch("pods", { namespace = o.namespace, labelSelector = o.selector,
                                      resourceVersion = list.metadata and list.metadata.resourceVersion })
  log.info("monitoring", { selector = o.selector, pods = found, window = bgrun.fmt_duration(o.window),
                           interval = bgrun.fmt_duration(o.interval), health = probe and probe.url,
                           metrics = analysis and #analysis.result.metrics or nil })

  local checks, failed, in_a_row, events = 0, 0, 0, 0
  local next_check = t0
  while true do
    -- events until the next periodic check is due; measurements as they fall due
    while true do
      local due = next_check
      local m_at = analysis and analysis:next_at()
      if m_at and m_at < due then due = m_at end
      local left = due - bgrun.now()
      if left <= 0 then
        if not (m_at and m_at <= bgrun.now()) then break end
        local f = analysis:measure()
        if f then metric_failed(f) end
      else
        local ev, pod = w:next_event(left)
        if ev then
          local detected_at = bgrun.now()
          events = events + 1
          result.events = events
          if gone_before[pod.metadata.name] then
            if ev == "DELETED" then gone_before[pod.metadata.name] = nil end
          else
            local seen = judge(o, ev, pod, pods[pod.metadata.name])
            if seen then fail(seen, { seen.problem }, detected_at) end
            remember(pods, ev, pod)
          end
        end
      end
    end

    if o.on_tick then o.on_tick() end
    checks = checks + 1
    result.checks = checks
    local problems, stats = periodic(c, o, pods, wanted, probe)
    local elapsed = bgrun.fmt_duration(bgrun.now() - t0)
    if #problems == 0 then
      in_a_row = 0
      log.info("healthy", { check = checks, pods = stats.pods, ready = stats.ready,
                            error_lines = stats.error_lines, elapsed = elapsed })
    else
      failed, in_a_row = failed + 1, in_a_row + 1
      result.failed_checks = failed
      local over
      if o.consecutive then over = in_a_row >= o.consecutive else over = failed > o.failure_limit end
      if over then
        fail({ signal = "checks", failed_checks = failed, in_a_row = in_a_row }, problems, bgrun.now())
      end
      log.warn("check failed (tolerated)", { check = checks, problems = table.concat(problems, "; "),
                                             failed_checks = failed, in_a_row = in_a_row,
                                             failure_limit = not o.consecutive and o.failure_limit or nil,
                                             consecutive = o.consecutive, elapsed = elapsed })
    end
    if next_check >= deadline then break end
    next_check = math.min(t0 + checks * o.interval, deadline)
  end
  if analysis then
    local f = analysis:finish()
    if f then metric_failed(f) end
    log.info("metric analysis passed", { phase = analysis.result.phase })
  end
  result.seconds = bgrun.now() - t0
  return result
end

return M
