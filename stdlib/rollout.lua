-- Rollout status as policy teams can edit: kubectl's `rollout status` rules
-- for Deployments, StatefulSets and DaemonSets (M.evaluate), and bgrun's
-- fail-fast rules on the new pods of a Deployment (M.pod_failure: a crash
-- loop or an image that cannot be pulled fails the wait at once instead of
-- at the progress deadline). M.status waits on watches: the object's, and
-- for a Deployment its pods'. `c:rollout_status(kind, name, opts)` calls
-- M.status.
local k8s = require("k8s")
local log = require("log")

local M = {}

---Waiting reasons of a container that will not come up by itself, in the
---order they are looked for. Edit to fail fast on more (or fewer) reasons.
M.failing_reasons = { "CrashLoopBackOff", "ImagePullBackOff", "ErrImagePull", "CreateContainerConfigError",
                      "InvalidImageName" }

---The longest M.status waits on one watch before looking at the other
---(the object's and its pods'), in seconds: how late a pod failure can be
---seen. Not a poll: nothing is requested, both watches stream.
M.slice = 0.2

---Default timeout of M.status, in seconds.
M.default_timeout = 600

local REVISION = "deployment.kubernetes.io/revision"
local KINDS = { deployments = true, statefulsets = true, daemonsets = true }

local function int(v)
  return math.tointeger(tonumber(v)) or 0
end

local function deployment_status(d, revision)
  local name = d.metadata.name
  local status = d.status or {}
  if revision and revision > 0 then
    local have = int(((d.metadata.annotations or {})[REVISION]))
    if have ~= revision then
      return "failed", ("desired revision (%d) is different from the running revision (%d)"):format(revision, have)
    end
  end
  if int(d.metadata.generation) > int(status.observedGeneration) then
    return "wait", "Waiting for deployment spec update to be observed..."
  end
  for _, cond in ipairs(status.conditions or {}) do
    if cond.type == "Progressing" and cond.reason == "ProgressDeadlineExceeded" then
      return "failed", ('deployment "%s" exceeded its progress deadline'):format(name)
    end
  end
  local want = (d.spec or {}).replicas
  local updated, replicas, available = int(status.updatedReplicas), int(status.replicas), int(status.availableReplicas)
  if math.type(want) == "integer" and updated < want then
    return "wait", ('Waiting for deployment "%s" rollout to finish: %d out of %d new replicas have been updated...')
      :format(name, updated, want)
  end
  if replicas > updated then
    return "wait", ('Waiting for deployment "%s" rollout to finish: %d old replicas are pending termination...')
      :format(name, replicas - updated)
  end
  if available < updated then
    return "wait", ('Waiting for deployment "%s" rollout to finish: %d of %d updated replicas are available...')
      :format(name, available, updated)
  end
  return "done", ('deployment "%s" successfully rolled out'):format(name)
end

local function daemonset_status(d)
  local name, status = d.metadata.name, d.status or {}
  local strategy = ((d.spec or {}).updateStrategy or {}).type
  if strategy and strategy ~= "RollingUpdate" then
    return "failed", "rollout status is only available for RollingUpdate strategy type"
  end
  if int(d.metadata.generation) > int(status.observedGeneration) then
    return "wait", "Waiting for daemon set spec update to be observed..."
  end
  local desired, updated, avail = int(status.desiredNumberScheduled), int(status.updatedNumberScheduled),
    int(status.numberAvailable)
  if updated < desired then
    return "wait", ('Waiting for daemon set "%s" rollout to finish: %d out of %d new pods have been updated...')
      :format(name, updated, desired)
  end
  if avail < desired then
    return "wait", ('Waiting for daemon set "%s" rollout to finish: %d of %d updated pods are available...')
      :format(name, avail, desired)
  end
  return "done", ('daemon set "%s" successfully rolled out'):format(name)
end

local function statefulset_status(s)
  local status, spec = s.status or {}, s.spec or {}
  local strategy = (spec.updateStrategy or {}).type
  if strategy and strategy ~= "RollingUpdate" then
    return "failed", "rollout status is only available for RollingUpdate strategy type"
  end
  if int(status.observedGeneration) == 0 or int(s.metadata.generation) > int(status.observedGeneration) then
    return "wait", "Waiting for statefulset spec update to be observed..."
  end
  local want = math.type(spec.replicas) == "integer" and spec.replicas or 1
  local ready = int(status.readyReplicas)
  if ready < want then
    return "wait", ("Waiting for %d pods to be ready..."):format(want - ready)
  end
  local partition = ((spec.updateStrategy or {}).rollingUpdate or {}).partition
  if strategy and math.type(partition) == "integer" and math.type(spec.replicas) == "integer" and partition > 0 then
    local upd = int(status.updatedReplicas)
    if upd < want - partition then
      return "wait", ("Waiting for partitioned roll out to finish: %d out of %d new pods have been updated...")
        :format(upd, want - partition)
    end
    return "done", ("partitioned roll out complete: %d new pods have been updated..."):format(upd)
  end
  if status.updateRevision and status.currentRevision and status.updateRevision ~= status.currentRevision then
    return "wait", ("waiting for statefulset rolling update to complete %d pods at revision %s...")
      :format(int(status.updatedReplicas), status.updateRevision)
  end
  return "done", ("statefulset rolling update complete %d pods at revision %s...")
    :format(int(status.currentReplicas), status.currentRevision or "")
end

---kubectl's rollout rule for a Deployment, DaemonSet or StatefulSet (by
---obj.kind; no kind is a Deployment): "wait", "done" or "failed", and
---kubectl's message. revision > 0 also checks the Deployment's
---deployment.kubernetes.io/revision annotation.
---@param obj table
---@param revision integer?
---@return "wait"|"done"|"failed" state
---@return string message
function M.evaluate(obj, revision)
  local kind = obj.kind
  obj.metadata = obj.metadata or {}
  if kind == nil or kind == "Deployment" then return deployment_status(obj, revision) end
  if kind == "DaemonSet" then return daemonset_status(obj) end
  if kind == "StatefulSet" then return statefulset_status(obj) end
  return "failed", ("no status viewer has been implemented for %s"):format(kind)
end

---A pod that cannot come up: the first container (init containers first)
---waiting for one of M.failing_reasons. Returns the reason and a message
---naming the pod and container, or nil.
---@param pod table
---@return string? reason
---@return string? message
function M.pod_failure(pod)
  local status = pod.status or {}
  for _, list in ipairs({ status.initContainerStatuses or {}, status.containerStatuses or {} }) do
    for _, cs in ipairs(list) do
      local waiting = (cs.state or {}).waiting or {}
      for _, bad in ipairs(M.failing_reasons) do
        if waiting.reason == bad then
          return bad, ('pod "%s" container "%s" is in %s%s'):format((pod.metadata or {}).name or "", cs.name or "", bad,
            waiting.message and (": " .. waiting.message) or "")
        end
      end
    end
  end
  return nil
end

---The label selector of a Deployment's pods (spec.selector.matchLabels),
---keys sorted; nil without one.
---@param d table
---@return string?
function M.selector(d)
  local ml = ((d.spec or {}).selector or {}).matchLabels
  if type(ml) ~= "table" or next(ml) == nil then return nil end
  local parts = {}
  for k, v in pairs(ml) do parts[#parts + 1] = k .. "=" .. tostring(v) end
  table.sort(parts)
  return table.concat(parts, ",")
end

---The pod-template-hash of a Deployment's newest ReplicaSet: the one whose
---revision annotation is the Deployment's. nil when none matches yet.
---@param d table
---@param replicasets table[]
---@return string?
function M.newest_hash(d, replicasets)
  local rev = ((d.metadata or {}).annotations or {})[REVISION]
  if not rev then return nil end
  for _, rs in ipairs(replicasets or {}) do
    local md = rs.metadata or {}
    if (md.annotations or {})[REVISION] == rev then return (md.labels or {})["pod-template-hash"] end
  end
  return nil
end

local function raise(t)
  t.module = "k8s"
  error(bgrun.error(t), 0)
end

local function check_opts(opts)
  local known = { namespace = true, timeout = true, revision = true, fail_fast = true }
  for k in pairs(opts) do
    if not known[k] then
      error(("bad argument #4 to 'rollout_status' (unknown option '%s')"):format(tostring(k)), 3)
    end
  end
  if opts.timeout ~= nil and (type(opts.timeout) ~= "number" or opts.timeout <= 0) then
    error("bad argument #4 to 'rollout_status' (timeout must be positive)", 3)
  end
end

-- The fail-fast side: the Deployment's pods, watched; a failing pod of the
-- newest ReplicaSet raises.
local function pod_checker(c, op, ns)
  local self = { hash = nil, rev = nil, w = nil }
  function self.follow(d)
    local rev = ((d.metadata or {}).annotations or {})[REVISION]
    if rev ~= self.rev then self.rev, self.hash = rev, nil end
    self.d = d
    if not self.w and rev then
      self.sel = M.selector(d)
      if self.sel then
        self.w = c:watch("pods", { namespace = ns, labelSelector = self.sel })
      end
    end
  end
  local function check(pod)
    local reason, message = M.pod_failure(pod)
    if not reason then return end
    local hash = ((pod.metadata or {}).labels or {})["pod-template-hash"]
    if hash and hash ~= self.hash then
      -- the newest ReplicaSet is looked up only when a pod fails
      self.hash = M.newest_hash(self.d, c:list("replicasets", { namespace = ns, labelSelector = self.sel }).items)
    end
    if hash and hash == self.hash then
      raise { op = op, code = "pod_failing", reason = reason, message = message, pod = pod.metadata.name }
    end
  end
  function self.drain(wait)
    if not self.w then return end
    local ev, pod = self.w:next_event(wait)
    while ev do
      if ev == "ADDED" or ev == "MODIFIED" then check(pod) end
      ev, pod = self.w:next_event(0.001)
    end
  end
  function self.close()
    if self.w then self.w:close() end
  end
  return self
end

---Waits on a watch until kind/name has rolled out by kubectl's rule
---(M.evaluate) and returns the object. Raises (module "k8s", op
---"rollout_status deployments/NAME"): 404 NotFound when it does not exist;
---code "deleted" when it goes away; "progress_deadline" /
---"ProgressDeadlineExceeded"; "rollout_failed"; "pod_failing" with the
---pod's waiting reason and `pod` (fail_fast, default true, Deployments);
---"timeout" after opts.timeout seconds (default 600) with kubectl's last
---message.
---@param c any k8s client
---@param kind string "deployment", "statefulset", "daemonset" (any name the kind table knows)
---@param name string
---@param opts {namespace: string?, timeout: number?, revision: integer?, fail_fast: boolean?}?
---@return table object
function M.status(c, kind, name, opts)
  opts = opts or {}
  if type(opts) ~= "table" then error("bad argument #4 to 'rollout_status' (table expected)", 2) end
  if type(name) ~= "string" then error("bad argument #3 to 'rollout_status' (string expected)", 2) end
  check_opts(opts)
  local r = k8s.resolve(kind)
  if not KINDS[r.plural] then
    error("bad argument #2 to 'rollout_status' (rollout_status works on deployments, statefulsets and daemonsets)", 2)
  end
  local path = (r.group == "" and "" or (r.group .. "/")) .. r.version .. "/" .. r.plural
  local op = ("rollout_status %s/%s"):format(r.plural, name)
  local timeout = opts.timeout or M.default_timeout
  local revision = opts.revision and math.tointeger(opts.revision) or 0
  local fail_fast = opts.fail_fast ~= false and r.plural == "deployments"
  local deadline = bgrun.now() + timeout
  -- as kubectl: the object must exist
  local obj = c:get(path, name, { namespace = opts.namespace })
  if not obj then
    raise { op = op, code = 404, reason = "NotFound",
            message = ('%s%s "%s" not found'):format(r.plural, r.group == "" and "" or ("." .. r.group), name) }
  end
  local ns = obj.metadata.namespace
  local w <close> = c:watch(path, { namespace = ns, fieldSelector = "metadata.name=" .. name, timeout = timeout })
  local pods = pod_checker(c, op, ns)
  local ok, result = pcall(function()
    local msg = "Waiting for the object to appear..."
    while true do
      local left = deadline - bgrun.now()
      if left <= 0 then break end
      local ev, o = w:next_event(pods.w and math.min(M.slice, left) or left)
      if ev == "DELETED" then
        raise { op = op, code = "deleted", reason = "Deleted",
                message = ('%s "%s" was deleted while waiting for its rollout'):format(r.plural, name) }
      elseif ev == "ADDED" or ev == "MODIFIED" then
        local state, m = M.evaluate(o, revision)
        if state == "done" then
          log.debug(m)
          return o
        elseif state == "failed" then
          local pde = m:find("progress deadline", 1, true) ~= nil
          raise { op = op, code = pde and "progress_deadline" or "rollout_failed",
                  reason = pde and "ProgressDeadlineExceeded" or "RolloutFailed", message = m }
        end
        if m ~= msg then log.debug(m) end
        msg = m
        if fail_fast then pods.follow(o) end
      end
      pods.drain(0.001)
    end
    raise { op = op, code = "timeout", reason = "Timeout",
            message = ("timed out after %gs waiting for the rollout: %s"):format(timeout, msg) }
  end)
  pods.close()
  if not ok then error(result, 0) end
  return result
end

return M
