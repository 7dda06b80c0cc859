-- Health analysis from pod signals, as Lua code teams can edit: every pod
-- Running and ready, no new container restarts, few error lines in recent
-- logs, the health endpoint answering. No metrics stack required.
local http = require("http")
local log = require("log")

local M = {}

M.defaults = {
  window = 300,          -- seconds to watch after the switch
  interval = 10,         -- seconds between checks
  max_error_lines = 5,   -- error lines tolerated per check (fewer than this)
  error_pattern = "ERROR",
  max_restarts = 0,      -- new restarts tolerated
  health_timeout = 5,
}

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

---One health check. Returns ok and a list of problems (strings).
---@param c any k8s client
---@param opts table selector, namespace, baseline, since (log seconds), health_url, and M.defaults' fields
---@return boolean, string[], table
function M.check(c, opts)
  local o = setmetatable(opts, { __index = M.defaults })
  local problems = {}
  local pods = c:list("pods", { namespace = o.namespace, labelSelector = o.selector }).items or {}
  if #pods == 0 then
    problems[#problems + 1] = "no pods match " .. o.selector
  end
  local errors = 0
  for _, pod in ipairs(pods) do
    local name = pod.metadata.name
    local phase = (pod.status or {}).phase
    if phase ~= "Running" then
      problems[#problems + 1] = ("pod %s is %s"):format(name, tostring(phase))
    elseif not is_ready(pod) then
      problems[#problems + 1] = ("pod %s is not ready"):format(name)
    end
    local restarts = restarts_of(pod) - ((o.baseline or {})[name] or 0)
    if restarts > o.max_restarts then
      problems[#problems + 1] = ("pod %s restarted %d time(s)"):format(name, restarts)
    end
    local ok, text = pcall(c.logs, c, name, { namespace = o.namespace, since = o.since or o.interval })
    if ok then
      for line in text:gmatch("[^\n]+") do
        if line:find(o.error_pattern) then errors = errors + 1 end
      end
    else
      log.warn("cannot read pod logs", { pod = name, error = tostring(text) })
    end
  end
  if errors >= o.max_error_lines then
    problems[#problems + 1] = ("%d error lines in the last %ds of logs (limit: fewer than %d)")
      :format(errors, o.since or o.interval, o.max_error_lines)
  end
  if o.health_url then
    local ok, resp = pcall(http.get, o.health_url, { timeout = o.health_timeout })
    if not ok then
      problems[#problems + 1] = "health endpoint: " .. tostring(resp)
    elseif resp.status ~= 200 then
      problems[#problems + 1] = ("health endpoint answered %d"):format(resp.status)
    end
  end
  return #problems == 0, problems, { pods = #pods, error_lines = errors }
end

---Checks every interval for window seconds; raises {module="monitor",
---code="unhealthy", problems=} at the first failing check. on_tick (e.g.
---renewing the deploy lock) runs before each check.
---@param c any k8s client
---@param opts table as for M.check, plus window, interval, on_tick
---@return {checks: integer, seconds: number}
function M.watch(c, opts)
  local o = setmetatable(opts, { __index = M.defaults })
  local t0 = bgrun.now()
  local checks = 0
  while true do
    if o.on_tick then o.on_tick() end
    local ok, problems, stats = M.check(c, o)
    checks = checks + 1
    if not ok then
      error(bgrun.error {
        module = "monitor", op = "watch " .. o.selector, code = "unhealthy", reason = "Unhealthy",
        problems = problems,
        message = table.concat(problems, "; "),
      }, 0)
    end
    log.info("healthy", { check = checks, pods = stats.pods, error_lines = stats.error_lines,
                          elapsed = bgrun.fmt_duration(bgrun.now() - t0) })
    local left = o.window - (bgrun.now() - t0)
    if left <= 0 then break end
    bgrun.sleep(math.min(o.interval, left))
  end
  return { checks = checks, seconds = bgrun.now() - t0 }
end

return M
