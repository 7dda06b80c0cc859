-- The deploy lock: one coordination.k8s.io Lease per namespace, taken the
-- way client-go's leader election takes one (create, or update guarded by
-- resourceVersion when free, expired or ours), with holder, age and an
-- explicit break.
local json = require("json")
local log = require("log")

local M = {}

-- The keeper renews the lease every RENEW seconds and retries a failed
-- renewal every RETRY seconds: transient API errors are ridden out for the
-- whole lease duration. Only another holder stops the run.
M.RENEW = 10
M.RETRY = 2

M.DEFAULT_NAME = "bgrun-deploy-lock"

local function raise(t)
  t.module = t.module or "lock"
  error(bgrun.error(t), 2)
end

---MicroTime as the API server writes it: 2026-01-02T03:04:05.000000Z
---@param t integer? epoch seconds (now)
---@return string
function M.micro_time(t)
  return os.date("!%Y-%m-%dT%H:%M:%S.000000Z", t or os.time())
end

-- days from civil (Howard Hinnant), so parsing needs no local time zone
local function days_from_civil(y, m, d)
  y = m <= 2 and y - 1 or y
  local era = (y >= 0 and y or y - 399) // 400
  local yoe = y - era * 400
  local doy = (153 * (m + (m > 2 and -3 or 9)) + 2) // 5 + d - 1
  local doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
  return era * 146097 + doe - 719468
end

---Epoch seconds of an RFC 3339 time (fractions and offsets honoured).
---@param s string
---@return integer?
function M.parse_time(s)
  if type(s) ~= "string" then return nil end
  local y, mo, d, h, mi, sec, rest = s:match("^(%d+)-(%d+)-(%d+)T(%d+):(%d+):(%d+)(.*)$")
  if not y then return nil end
  local t = days_from_civil(tonumber(y), tonumber(mo), tonumber(d)) * 86400
    + tonumber(h) * 3600 + tonumber(mi) * 60 + tonumber(sec)
  rest = rest:gsub("^%.%d+", "")
  local sign, oh, om = rest:match("^([+-])(%d%d):(%d%d)$")
  if sign then
    local off = tonumber(oh) * 3600 + tonumber(om) * 60
    t = sign == "+" and t - off or t + off
  elseif rest ~= "Z" and rest ~= "" then
    return nil
  end
  return t
end

---Who we are, as written into holderIdentity.
---@return string
function M.identity()
  return ("%s@%s:%d"):format(os.getenv("USER") or os.getenv("LOGNAME") or "bgrun", bgrun.hostname(), bgrun.pid())
end

-- An API error worth trying again: the server or the network, not us.
local function transient(err)
  if type(err) ~= "table" then return false end
  local code = err.code
  return code == 429 or (type(code) == "number" and code >= 500) or code == "timeout" or code == "connection"
    or err.reason == "Timeout"
end
M.transient = transient

local function describe_holder(lease, now)
  local spec = lease.spec or {}
  local acquired = M.parse_time(spec.acquireTime)
  local renewed = M.parse_time(spec.renewTime)
  local annotations = (lease.metadata or {}).annotations or {}
  return {
    holder = spec.holderIdentity,
    operation = annotations["bgrun.io/operation"],
    age_s = acquired and (now - acquired) or nil,
    renewed_ago_s = renewed and (now - renewed) or nil,
    expires_in_s = renewed and (renewed + (spec.leaseDurationSeconds or 0) - now) or nil,
  }
end

---Takes the lock. opts: name, namespace, duration (lease seconds, 120),
---wait (seconds to wait for a busy lock, 0), operation (what we do, shown
---to whoever finds the lock busy), break_lock (take it even when held),
---on_write (called before each create or replace of the Lease is sent).
---Returns a handle with renew() and release(). A busy lock raises
---{code="held", reason="LockHeld", holder=, age_s=}.
---@param c any k8s client
---The handle's undo is the data `on_failure(name, handle.release, handle.undo)`
---records so that `bgrun resume` can release the lock of a killed run.
---@param opts {name: string?, namespace: string?, context: string?, duration: integer?, wait: number?, operation: string?, break_lock: boolean?, identity: string?, on_write: fun()?}?
---@return {name: string, holder: string, renew: fun(), release: fun(), lease: table, undo: table}
function M.acquire(c, opts)
  opts = opts or {}
  local name = opts.name or M.DEFAULT_NAME
  local ns = opts.namespace
  local me = opts.identity or M.identity()
  local duration = opts.duration or 120
  local deadline = bgrun.now() + (opts.wait or 0)
  local kopts = { namespace = ns }

  local function spec_for(lease, takeover)
    local now = M.micro_time()
    local spec = lease and lease.spec or {}
    spec.holderIdentity = me
    spec.leaseDurationSeconds = duration
    spec.renewTime = now
    if takeover then
      spec.acquireTime = now
      spec.leaseTransitions = (spec.leaseTransitions or 0) + (lease and 1 or 0)
    end
    return spec
  end

  local held
  local errors = 0
  -- a transient API error is retried (a replace that did land shows up as
  -- our own lease, or as a 409 that makes us look again)
  local function retry_or_raise(err)
    if not transient(err) or errors >= 5 then error(err, 0) end
    errors = errors + 1
    log.warn("deploy lock: API error; retrying", { lock = name, error = tostring(err), attempt = errors })
    bgrun.sleep(math.min(2, 0.25 * 2 ^ errors))
  end
  while true do
    local gok, lease = pcall(c.get, c, "lease", name, kopts)
    if not gok then
      retry_or_raise(lease)
      goto continue
    end
    if lease == nil then
      local obj = {
        apiVersion = "coordination.k8s.io/v1", kind = "Lease",
        metadata = { name = name, namespace = ns,
                     labels = { ["app.kubernetes.io/managed-by"] = "bgrun" },
                     annotations = { ["bgrun.io/operation"] = opts.operation or "deploy" } },
        spec = spec_for(nil, true),
      }
      if opts.on_write then opts.on_write() end
      local ok, err = pcall(c.create, c, obj, kopts)
      if ok then held = err break end
      if not (type(err) == "table" and err.code == 409) then retry_or_raise(err) end
      -- someone created it first: look again
    else
      local now = os.time()
      local info = describe_holder(lease, now)
      local free = info.holder == nil or info.holder == "" or info.holder == me
        or (info.expires_in_s ~= nil and info.expires_in_s < 0)
      if free or opts.break_lock then
        if not free then
          log.warn("breaking the deploy lock", { lock = name, holder = info.holder,
                                                 age_s = info.age_s, operation = info.operation })
        end
        lease.spec = spec_for(lease, info.holder ~= me)
        lease.metadata.annotations = lease.metadata.annotations or {}
        lease.metadata.annotations["bgrun.io/operation"] = opts.operation or "deploy"
        if opts.on_write then opts.on_write() end
        local ok, res = pcall(c.replace, c, lease, kopts)
        if ok then held = res break end
        if not (type(res) == "table" and res.code == 409) then retry_or_raise(res) end
        -- lost a race on the resourceVersion: look again
      elseif bgrun.now() >= deadline then
        raise { op = "acquire " .. name, code = "held", reason = "LockHeld",
                holder = info.holder, age_s = info.age_s, operation = info.operation,
                message = ("the deploy lock %s is held by %s (%s, taken %ds ago, renewed %ds ago, expires in %ds). "
                  .. "If that run is still going, wait for it. If it was killed, run `bgrun resume` on its machine "
                  .. "first: it undoes what that run changed, then releases the lock. break-lock=true only takes "
                  .. "the lock and undoes nothing, so the killed run's changes stay half-done")
                  :format(name, tostring(info.holder), tostring(info.operation or "unknown operation"),
                          info.age_s or -1, info.renewed_ago_s or -1, math.max(0, info.expires_in_s or 0)) }
      else
        log.info("waiting for the deploy lock", { lock = name, holder = info.holder })
        bgrun.sleep(math.min(2, math.max(0.1, deadline - bgrun.now())))
      end
    end
    ::continue::
  end
  log.info("deploy lock taken", { lock = name, holder = me })

  local acquired = ((held or {}).spec or {}).acquireTime
  local handle = { name = name, holder = me, lease = held,
                   undo = { module = "lock", action = "release", context = opts.context, namespace = ns,
                            name = name, holder = me, acquired = acquired } }
  local released = false
  local core = require("bgrun.core")
  local keeper -- pid of the process renewing the lease

  local function start_keeper()
    if bgrun.dry_run() or opts.keep == false then return end
    -- several renewals and many retries fit in one lease duration
    local spec = json.encode { context = opts.context, namespace = ns, name = name, holder = me,
                               parent = bgrun.pid(),
                               renew = opts.renew or math.max(0.5, math.min(M.RENEW, duration / 4)),
                               retry = opts.retry or math.max(0.2, math.min(M.RETRY, duration / 12)) }
    local pid, err = core.spawn_self({ "-q", "--log-format", log.format(), "keep-lock", spec })
    if not pid then
      log.warn("cannot start the lock keeper: the lock is renewed between steps only", { error = tostring(err) })
      return
    end
    keeper = pid
  end

  local function stop_keeper()
    if not keeper then return end
    core.kill(keeper, "TERM")
    if not core.wait(keeper, 5) then
      core.kill(keeper, "KILL")
      core.wait(keeper, 5)
    end
    keeper = nil
  end

  start_keeper()

  ---Between steps: raises if the lock went to another holder; restarts a
  ---keeper that died. The keeper renews the lease in the background for
  ---the whole run, long steps included.
  function handle.renew()
    if released or bgrun.dry_run() then return end
    if keeper and core.wait(keeper, 0) then
      log.warn("the lock keeper stopped; starting another", { lock = name })
      keeper = nil
      local lease = c:get("lease", name, kopts)
      if lease == nil or (lease.spec or {}).holderIdentity ~= me then
        raise { op = "renew " .. name, code = "lost", reason = "LockLost",
                message = ("the deploy lock %s was taken by %s"):format(name,
                  tostring(lease and lease.spec and lease.spec.holderIdentity)) }
      end
      start_keeper()
    end
  end

  ---Releases the lease (holderIdentity emptied, guarded by resourceVersion).
  ---Called without an error (the run succeeded), it also records the run
  ---on the Lease as the namespace's last successful release, so that
  ---`bgrun resume` refuses to undo anything older. A compensation calls it
  ---with the run's error.
  ---@param failure any?
  function handle.release(failure)
    if released or bgrun.dry_run() then return end
    stop_keeper()
    for attempt = 1, 5 do
      local ok, err = pcall(function()
        local lease = c:get("lease", name, kopts)
        if lease and (lease.spec or {}).holderIdentity == me then
          lease.spec.holderIdentity = ""
          lease.spec.renewTime = M.micro_time()
          if failure == nil then
            lease.metadata.annotations = lease.metadata.annotations or {}
            lease.metadata.annotations["bgrun.io/last-release"] = json.encode {
              at = require("bgrun.core").time(), holder = me, operation = opts.operation or "deploy",
              time = os.date("!%Y-%m-%dT%H:%M:%SZ") }
          end
          c:replace(lease, kopts)
        end
      end)
      if ok then break end
      if attempt == 5 then error(err, 0) end
      log.warn("cannot release the deploy lock; retrying", { lock = name, error = tostring(err) })
      bgrun.sleep(M.RETRY)
    end
    released = true
    log.info("deploy lock released", { lock = name })
  end

  return handle
end

---The lock keeper (`bgrun keep-lock SPEC`, started by acquire): renews the
---lease every spec.renew seconds while the run lives, retrying failed
---renewals every spec.retry seconds. When another holder has the lease it
---tells the run (SIGUSR1: the run stops with its compensations) and ends.
---@param spec_json string
---@return integer exit code
function M.keep(spec_json)
  local ok, d = pcall(json.decode, spec_json or "")
  if not ok or type(d) ~= "table" then
    log.error("keep-lock: bad specification")
    return 2
  end
  local core = require("bgrun.core")
  local kopts = { namespace = d.namespace }
  local run = function()
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    local wait = d.renew
    while true do
      bgrun.sleep(wait)
      local rok, res = pcall(function()
        local lease = c:get("lease", d.name, kopts)
        if lease == nil or (lease.spec or {}).holderIdentity ~= d.holder then
          return lease and lease.spec and lease.spec.holderIdentity or "nobody (the Lease is gone)"
        end
        lease.spec.renewTime = M.micro_time()
        c:replace(lease, kopts)
        return nil
      end)
      if rok and res then
        log.error("the deploy lock was taken by another holder: stopping the run",
          { lock = d.name, holder = res, run = d.holder })
        core.kill(d.parent, "USR1")
        return 0
      elseif rok then
        wait = d.renew
      else
        if type(res) == "table" and res.code == "interrupted" then error(res, 0) end
        log.warn("cannot renew the deploy lock; retrying", { lock = d.name, error = tostring(res) })
        wait = d.retry
      end
    end
  end
  local rok, err = pcall(run)
  if rok then return err end
  if type(err) == "table" and err.code == "interrupted" then return 0 end
  log.error("keep-lock: " .. tostring(err))
  return 1
end

---Undo actions `bgrun resume` runs from a journal: release the lock a
---killed run held (only if it still holds it).
M.undo = {
  release = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    local lease = c:get("lease", d.name, { namespace = d.namespace })
    if lease and (lease.spec or {}).holderIdentity == d.holder then
      lease.spec.holderIdentity = ""
      lease.spec.renewTime = M.micro_time()
      c:replace(lease, { namespace = d.namespace })
      log.info("deploy lock released", { lock = d.name, holder = d.holder })
    else
      log.info("deploy lock no longer held by the run", { lock = d.name })
    end
  end,
}

---Before `bgrun resume` undoes a run: nil when the run's deploy lock is
---still its own (or free and untouched since), else why not — another run
---took it since, or a release succeeded after this run started.
---@param d table the run's lock undo data
---@param start table the run journal's start event
---@return string?
function M.resume_check(d, start)
  local c = require("k8s").client { context = d.context, namespace = d.namespace }
  local lease = c:get("lease", d.name, { namespace = d.namespace })
  if not lease then return nil end
  local spec = lease.spec or {}
  local holder = spec.holderIdentity or ""
  if holder ~= "" and holder ~= d.holder then
    return ("the deploy lock %s is now held by %s (%s), not by this run (%s): "
      .. "another run has taken over the environment since; undoing this run would undo its work")
      :format(d.name, holder, tostring(((lease.metadata or {}).annotations or {})["bgrun.io/operation"]), d.holder)
  end
  local annotations = (lease.metadata or {}).annotations or {}
  local okj, last = pcall(json.decode, annotations["bgrun.io/last-release"] or "")
  if okj and type(last) == "table" and last.holder ~= d.holder and tonumber(last.at)
     and tonumber(start.started_at) and tonumber(last.at) > tonumber(start.started_at) then
    return ("a later release succeeded in namespace %s at %s (%s by %s) after this run started: "
      .. "undoing this run would roll that release back"):format(tostring(d.namespace), tostring(last.time),
      tostring(last.operation), tostring(last.holder))
  end
  if holder == "" and d.acquired and spec.acquireTime and spec.acquireTime ~= d.acquired then
    return ("the deploy lock %s was taken by another run (at %s) after this one took it: "
      .. "undoing this run would undo its work"):format(d.name, tostring(spec.acquireTime))
  end
  return nil
end

---What every release playbook does first: takes the environment's deploy
---lock as a named step (waiting env.lock_wait seconds, a Lease of
---env.lock_duration) and registers its release as a compensation that
---survives the commit point. Returns the handle.
---@param c any k8s client
---@param env table the environment (namespace, context, lock_wait, lock_duration)
---@param operation string what the run does, shown to whoever finds the lock busy
---@param break_lock boolean? take it even when held
---@return table handle
function M.take(c, env, operation, break_lock)
  -- The release is journalled before the Lease is written (then updated
  -- with the lease's acquire time): a run killed between the two would
  -- otherwise leave a lock held by a dead process that `bgrun resume` knows
  -- nothing about. Releasing only ever clears our own holder identity.
  local l
  local undo = { module = "lock", action = "release", context = env.context, namespace = env.namespace,
                 name = M.DEFAULT_NAME, holder = M.identity() }
  local comp = on_failure("release the deploy lock", function()
    if l then l.release() else M.undo.release(undo) end
  end, undo, { keep = true })
  local wrote = false -- a create or replace of the Lease was sent
  local ok, err = pcall(step, "take the deploy lock", function()
    l = M.acquire(c, { namespace = env.namespace, context = env.context, operation = operation,
                       break_lock = break_lock, wait = env.lock_wait or 0, duration = env.lock_duration,
                       on_write = function() wrote = true end })
    comp.update(l.undo)
  end)
  if not ok then
    -- refused before anything was written (held by another run, or the
    -- Lease could not even be read): nothing of ours to release
    if l == nil and not wrote then comp.cancel() end
    error(err, 0)
  end
  return l
end

---Who holds the lock, or nil when it is free.
---@param c any
---@param opts {name: string?, namespace: string?}?
---@return table?
function M.status(c, opts)
  opts = opts or {}
  local lease = c:get("lease", opts.name or M.DEFAULT_NAME, { namespace = opts.namespace })
  if not lease then return nil end
  local info = describe_holder(lease, os.time())
  if info.holder == nil or info.holder == "" then return nil end
  return info
end

return M
