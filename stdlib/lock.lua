-- The deploy lock: one coordination.k8s.io Lease per namespace, taken the
-- way client-go's leader election takes one (create, or update guarded by
-- resourceVersion when free, expired or ours), with holder, age and an
-- explicit break.
local log = require("log")

local M = {}

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
---to whoever finds the lock busy), break_lock (take it even when held).
---Returns a handle with renew() and release(). A busy lock raises
---{code="held", reason="LockHeld", holder=, age_s=}.
---@param c any k8s client
---The handle's undo is the data `on_failure(name, handle.release, handle.undo)`
---records so that `bgrun resume` can release the lock of a killed run.
---@param opts {name: string?, namespace: string?, context: string?, duration: integer?, wait: number?, operation: string?, break_lock: boolean?, identity: string?}?
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
  while true do
    local lease = c:get("lease", name, kopts)
    if lease == nil then
      local obj = {
        apiVersion = "coordination.k8s.io/v1", kind = "Lease",
        metadata = { name = name, namespace = ns,
                     labels = { ["app.kubernetes.io/managed-by"] = "bgrun" },
                     annotations = { ["bgrun.io/operation"] = opts.operation or "deploy" } },
        spec = spec_for(nil, true),
      }
      local ok, err = pcall(c.create, c, obj, kopts)
      if ok then held = err break end
      if not (type(err) == "table" and err.code == 409) then error(err, 0) end
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
        local ok, res = pcall(c.replace, c, lease, kopts)
        if ok then held = res break end
        if not (type(res) == "table" and res.code == 409) then error(res, 0) end
        -- lost a race on the resourceVersion: look again
      elseif bgrun.now() >= deadline then
        raise { op = "acquire " .. name, code = "held", reason = "LockHeld",
                holder = info.holder, age_s = info.age_s, operation = info.operation,
                message = ("the deploy lock %s is held by %s (%s, taken %ds ago, renewed %ds ago); "
                  .. "wait for it, or break it with break-lock=true if that run is dead")
                  :format(name, tostring(info.holder), tostring(info.operation or "unknown operation"),
                          info.age_s or -1, info.renewed_ago_s or -1) }
      else
        log.info("waiting for the deploy lock", { lock = name, holder = info.holder })
        bgrun.sleep(math.min(2, math.max(0.1, deadline - bgrun.now())))
      end
    end
  end
  log.info("deploy lock taken", { lock = name, holder = me })

  local handle = { name = name, holder = me, lease = held,
                   undo = { module = "lock", action = "release", context = opts.context, namespace = ns,
                            name = name, holder = me } }
  local released = false

  ---Renews the lease; raises if somebody else took it meanwhile.
  function handle.renew()
    if released or bgrun.dry_run() then return end -- a dry run stored no lease
    local lease = c:get("lease", name, kopts)
    if lease == nil or (lease.spec or {}).holderIdentity ~= me then
      raise { op = "renew " .. name, code = "lost", reason = "LockLost",
              message = ("the deploy lock %s was taken by %s"):format(name,
                tostring(lease and lease.spec and lease.spec.holderIdentity)) }
    end
    lease.spec.renewTime = M.micro_time()
    handle.lease = c:replace(lease, kopts)
  end

  ---Releases the lease (holderIdentity emptied, guarded by resourceVersion).
  function handle.release()
    if released or bgrun.dry_run() then return end
    local lease = c:get("lease", name, kopts)
    if lease and (lease.spec or {}).holderIdentity == me then
      lease.spec.holderIdentity = ""
      lease.spec.renewTime = M.micro_time()
      c:replace(lease, kopts)
    end
    released = true
    log.info("deploy lock released", { lock = name })
  end

  return handle
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
