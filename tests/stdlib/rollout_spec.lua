-- stdlib/rollout.lua without a cluster: kubectl's rollout rules fed with
-- object snapshots, the fail-fast pod rules, and rollout.status driven by
-- a scripted client (its watches replay events).
local rollout = require("rollout")

local function deploy(status, meta, spec)
  meta = meta or {}
  meta.name = meta.name or "web"
  meta.generation = meta.generation or 2
  return { kind = "Deployment", metadata = meta, spec = spec or { replicas = 3 }, status = status }
end

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

describe("rollout.evaluate", function()
  it("waits for the spec update to be observed", function()
    assert.same({ "wait", "Waiting for deployment spec update to be observed..." },
      { rollout.evaluate(deploy({ observedGeneration = 1 })) })
  end)

  it("counts updated, old and available replicas as kubectl does", function()
    assert.same({ "wait", 'Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...' },
      { rollout.evaluate(deploy({ observedGeneration = 2, updatedReplicas = 1, replicas = 3 })) })
    assert.same({ "wait", 'Waiting for deployment "web" rollout to finish: 1 old replicas are pending termination...' },
      { rollout.evaluate(deploy({ observedGeneration = 2, updatedReplicas = 3, replicas = 4 })) })
    -- readyReplicas is not consulted: availableReplicas is
    assert.same({ "wait", 'Waiting for deployment "web" rollout to finish: 2 of 3 updated replicas are available...' },
      { rollout.evaluate(deploy({ observedGeneration = 2, updatedReplicas = 3, replicas = 3, readyReplicas = 3,
                                  availableReplicas = 2 })) })
  end)

  it("is done when all are updated and available; checks the revision when asked", function()
    local d = deploy({ observedGeneration = 2, updatedReplicas = 3, replicas = 3, availableReplicas = 3 },
      { annotations = { ["deployment.kubernetes.io/revision"] = "4" } })
    assert.same({ "done", 'deployment "web" successfully rolled out' }, { rollout.evaluate(d) })
    assert.equal("done", (rollout.evaluate(d, 4)))
    assert.same({ "failed", "desired revision (5) is different from the running revision (4)" }, { rollout.evaluate(d, 5) })
  end)

  it("scaled to zero: missing status integers mean 0, and that is done", function()
    assert.equal("done", (rollout.evaluate(deploy({ observedGeneration = 5 }, { generation = 5 }, { replicas = 0 }))))
  end)

  it("fails on ProgressDeadlineExceeded", function()
    assert.same({ "failed", 'deployment "web" exceeded its progress deadline' },
      { rollout.evaluate(deploy({ observedGeneration = 2, updatedReplicas = 1, conditions = {
        { type = "Available", status = "False" },
        { type = "Progressing", status = "False", reason = "ProgressDeadlineExceeded" } } })) })
  end)

  it("follows DaemonSets and StatefulSets", function()
    local ds = { kind = "DaemonSet", metadata = { name = "agent", generation = 1 }, status = { observedGeneration = 1,
      desiredNumberScheduled = 3, updatedNumberScheduled = 3, numberAvailable = 2 } }
    assert.same({ "wait", 'Waiting for daemon set "agent" rollout to finish: 2 of 3 updated pods are available...' },
      { rollout.evaluate(ds) })
    ds.status.numberAvailable = 3
    assert.same({ "done", 'daemon set "agent" successfully rolled out' }, { rollout.evaluate(ds) })
    ds.spec = { updateStrategy = { type = "OnDelete" } }
    assert.same({ "failed", "rollout status is only available for RollingUpdate strategy type" }, { rollout.evaluate(ds) })

    local sts = { kind = "StatefulSet", metadata = { name = "db", generation = 1 },
      spec = { replicas = 2, updateStrategy = { type = "RollingUpdate" } },
      status = { observedGeneration = 1, readyReplicas = 2, currentRevision = "db-1", updateRevision = "db-1",
                 currentReplicas = 2 } }
    assert.same({ "done", "statefulset rolling update complete 2 pods at revision db-1..." }, { rollout.evaluate(sts) })
    sts.status.updateRevision, sts.status.updatedReplicas = "db-2", 1
    assert.same({ "wait", "waiting for statefulset rolling update to complete 1 pods at revision db-2..." },
      { rollout.evaluate(sts) })
    sts.spec.updateStrategy.rollingUpdate = { partition = 1 }
    assert.same({ "done", "partitioned roll out complete: 1 new pods have been updated..." }, { rollout.evaluate(sts) })
    sts.status.readyReplicas = 1
    assert.same({ "wait", "Waiting for 1 pods to be ready..." }, { rollout.evaluate(sts) })
    assert.same({ "failed", "no status viewer has been implemented for Job" },
      { rollout.evaluate({ kind = "Job", metadata = {} }) })
  end)
end)

describe("rollout.pod_failure", function()
  local function pod(list, name, waiting)
    return { metadata = { name = "web-1" }, status = { [list] = { { name = name, state = { waiting = waiting } } } } }
  end

  it("names the pod, the container and the reason", function()
    assert.same({ "ImagePullBackOff", 'pod "web-1" container "api" is in ImagePullBackOff: no such image' },
      { rollout.pod_failure(pod("containerStatuses", "api", { reason = "ImagePullBackOff", message = "no such image" })) })
    assert.same({ "CrashLoopBackOff", 'pod "web-1" container "init" is in CrashLoopBackOff' },
      { rollout.pod_failure(pod("initContainerStatuses", "init", { reason = "CrashLoopBackOff" })) })
    for _, r in ipairs({ "ErrImagePull", "CreateContainerConfigError", "InvalidImageName" }) do
      assert.equal(r, (rollout.pod_failure(pod("containerStatuses", "api", { reason = r }))))
    end
  end)

  it("leaves pods that are on their way alone; the rule list is editable", function()
    assert.is_nil(rollout.pod_failure(pod("containerStatuses", "api", { reason = "ContainerCreating" })))
    assert.is_nil(rollout.pod_failure({ metadata = { name = "p" } }))
    local saved = rollout.failing_reasons
    rollout.failing_reasons = { "ContainerCreating" }
    local ok, r = pcall(rollout.pod_failure, pod("containerStatuses", "api", { reason = "ContainerCreating" }))
    rollout.failing_reasons = saved
    assert.is_true(ok)
    assert.equal("ContainerCreating", r)
  end)

  it("finds the newest ReplicaSet's hash and the Deployment's selector", function()
    local d = deploy({}, { annotations = { ["deployment.kubernetes.io/revision"] = "3" } },
      { selector = { matchLabels = { version = "green", app = "web" } } })
    assert.equal("app=web,version=green", rollout.selector(d))
    local rs = function(rev, hash)
      return { metadata = { annotations = { ["deployment.kubernetes.io/revision"] = rev },
                            labels = { ["pod-template-hash"] = hash } } }
    end
    assert.equal("bbb", rollout.newest_hash(d, { rs("2", "aaa"), rs("3", "bbb") }))
    assert.is_nil(rollout.newest_hash(d, { rs("2", "aaa") }))
    assert.is_nil(rollout.selector(deploy({})))
  end)
end)

-- A client whose watches replay scripted events: enough of c:get,
-- c:list and c:watch for rollout.status.
local function fake_client(script)
  local c = { calls = {} }
  local function watch(events)
    local i = 0
    local w = {}
    function w:next_event()
      i = i + 1
      local e = events[i]
      if e then return e[1], e[2] end
      return nil
    end
    function w:close() end
    return setmetatable(w, { __close = function() end })
  end
  function c:get(kind, name)
    self.calls[#self.calls + 1] = "get " .. kind .. " " .. name
    return script.object
  end
  function c:list(kind, opts)
    self.calls[#self.calls + 1] = "list " .. kind .. " " .. (opts.labelSelector or "")
    return { items = script.lists[kind] or {} }
  end
  function c:watch(kind, opts)
    self.calls[#self.calls + 1] = "watch " .. kind .. " " .. (opts.fieldSelector or opts.labelSelector or "")
    return watch(script.watches[kind] or {})
  end
  return c
end

describe("rollout.status", function()
  local annotated = { ["deployment.kubernetes.io/revision"] = "2" }
  local spec = { replicas = 2, selector = { matchLabels = { app = "web" } } }
  local function obj(status) return deploy(status, { namespace = "pf", annotations = annotated }, spec) end
  local function pod(name, hash, reason)
    return { metadata = { name = name, labels = { app = "web", ["pod-template-hash"] = hash } },
             status = { containerStatuses = { { name = "api", state = { waiting = { reason = reason } } } } } }
  end
  local rs = { { metadata = { annotations = annotated, labels = { ["pod-template-hash"] = "new" } } } }

  it("returns the object once rolled out", function()
    local done = obj({ observedGeneration = 2, updatedReplicas = 2, replicas = 2, availableReplicas = 2 })
    local c = fake_client { object = done, lists = {}, watches = { ["apps/v1/deployments"] = {
      { "ADDED", obj({ observedGeneration = 1 }) }, { "MODIFIED", done } } } }
    local got = rollout.status(c, "deploy", "web", { timeout = 5 })
    assert.equal(done, got)
    -- the pods are watched once the Deployment is seen waiting; no ReplicaSet list while no pod fails
    assert.same({ "get apps/v1/deployments web", "watch apps/v1/deployments metadata.name=web", "watch pods app=web" },
      c.calls)
  end)

  it("fails fast on a failing pod of the newest ReplicaSet only", function()
    local waiting = obj({ observedGeneration = 2, updatedReplicas = 1, replicas = 3 })
    local c = fake_client { object = waiting, lists = { replicasets = rs }, watches = {
      ["apps/v1/deployments"] = { { "ADDED", waiting } },
      pods = { { "ADDED", pod("web-old", "old", "CrashLoopBackOff") }, { "ADDED", pod("web-new", "new", "ErrImagePull") } } } }
    local e = catch(rollout.status, c, "deployment", "web", { timeout = 5 })
    assert.equal("k8s", e.module)
    assert.equal("rollout_status deployments/web", e.op)
    assert.equal("pod_failing", e.code)
    assert.equal("ErrImagePull", e.reason)
    assert.equal("web-new", e.pod)
    assert.equal('pod "web-new" container "api" is in ErrImagePull', e.message)
  end)

  it("fail_fast=false waits on; the timeout names kubectl's last message", function()
    local waiting = obj({ observedGeneration = 2, updatedReplicas = 1, replicas = 3 })
    local c = fake_client { object = waiting, lists = { replicasets = rs }, watches = {
      ["apps/v1/deployments"] = { { "ADDED", waiting } }, pods = { { "ADDED", pod("web-new", "new", "ErrImagePull") } } } }
    local e = catch(rollout.status, c, "deployment", "web", { timeout = 0.3, fail_fast = false })
    assert.equal("timeout", e.code)
    assert.equal("Timeout", e.reason)
    assert.equal('timed out after 0.3s waiting for the rollout: Waiting for deployment "web" rollout to finish: '
      .. "1 out of 2 new replicas have been updated...", e.message)
  end)

  it("raises NotFound, Deleted, ProgressDeadlineExceeded and rollout_failed", function()
    local e = catch(rollout.status, fake_client { lists = {}, watches = {} }, "deploy", "ghost", { timeout = 1 })
    assert.same({ 404, "NotFound", 'deployments.apps "ghost" not found', "rollout_status deployments/ghost" },
      { e.code, e.reason, e.message, e.op })
    local o = obj({ observedGeneration = 2 })
    e = catch(rollout.status, fake_client { object = o, lists = {}, watches = {
      ["apps/v1/deployments"] = { { "DELETED", o } } } }, "deploy", "web", { timeout = 1 })
    assert.same({ "deleted", "Deleted", 'deployments "web" was deleted while waiting for its rollout' },
      { e.code, e.reason, e.message })
    local stuck = obj({ observedGeneration = 2, conditions = { { type = "Progressing", reason = "ProgressDeadlineExceeded" } } })
    e = catch(rollout.status, fake_client { object = stuck, lists = {}, watches = {
      ["apps/v1/deployments"] = { { "ADDED", stuck } } } }, "deploy", "web", { timeout = 1 })
    assert.same({ "progress_deadline", "ProgressDeadlineExceeded", 'deployment "web" exceeded its progress deadline' },
      { e.code, e.reason, e.message })
    e = catch(rollout.status, fake_client { object = o, lists = {}, watches = {
      ["apps/v1/deployments"] = { { "ADDED", obj({ observedGeneration = 2, updatedReplicas = 2, replicas = 2,
        availableReplicas = 2 }) } } } }, "deploy", "web", { timeout = 1, revision = 7 })
    assert.same({ "rollout_failed", "RolloutFailed", "desired revision (7) is different from the running revision (2)" },
      { e.code, e.reason, e.message })
  end)

  it("refuses other kinds, unknown options and bad timeouts as playbook mistakes", function()
    local c = fake_client { lists = {}, watches = {} }
    assert.matches("rollout_status works on deployments, statefulsets and daemonsets", catch(rollout.status, c, "svc", "x"))
    assert.matches("unknown option 'colour'", catch(rollout.status, c, "deploy", "x", { colour = "blue" }))
    assert.matches("timeout must be positive", catch(rollout.status, c, "deploy", "x", { timeout = 0 }))
    assert.same({}, c.calls)
  end)
end)
