-- c:rollout_status is stdlib/rollout.lua on watches: its fail-fast rules
-- against the sandbox's kubelet (a crash loop, an image that cannot be
-- pulled), and the rules are the module's data, which a playbook can change.
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/k8sfix.lua")
local json = require("json")
local k8s = require("k8s")
local rollout = require("rollout")

local function behaviours(t)
  local f = assert(io.open(os.getenv("SANDBOX_BEHAVIORS"), "w"))
  f:write(json.encode(t))
  f:close()
end

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

describe("rollout_status (stdlib/rollout.lua)", function()
  local c, ns

  setup(function()
    fix.check_env()
    c = k8s.client { timeout = 20 }
    ns = fix.namespace(c)
  end)

  teardown(function()
    behaviours({})
    if c and ns then pcall(c.delete, c, "ns", ns) end
    if c then c:close() end
  end)

  it("fails fast on a crash loop of the new pods, naming the pod and container", function()
    behaviours({ ["v7.1.0"] = { crash_after_s = 0.2, never_ready = true } })
    local d = fix.deployment("crashy", { image = "registry.local/physioflow-api:v7.1.0" })
    d.spec.template.spec.containers[1].readinessProbe = { httpGet = { path = "/ready", port = 8080 }, periodSeconds = 1 }
    c:create(d, { namespace = ns })
    local t0 = bgrun.now()
    local e = catch(c.rollout_status, c, "deploy", "crashy", { namespace = ns, timeout = 90 })
    assert.equal("k8s", e.module)
    assert.equal("rollout_status deployments/crashy", e.op)
    assert.equal("pod_failing", e.code)
    assert.equal("CrashLoopBackOff", e.reason)
    assert.matches("^crashy%-", e.pod)
    assert.matches('^pod "' .. e.pod:gsub("%-", "%%-") .. '" container "api" is in CrashLoopBackOff', e.message)
    assert.is_true(bgrun.now() - t0 < 60)
  end)

  it("the rules are rollout's data: without fail-fast reasons an unpullable image waits until the timeout", function()
    c:create(fix.deployment("nopull2", { image = "registry.local/other:9" }), { namespace = ns })
    local e = catch(c.rollout_status, c, "deploy", "nopull2", { namespace = ns, timeout = 30 })
    assert.equal("pod_failing", e.code)
    assert.is_true(e.reason == "ErrImagePull" or e.reason == "ImagePullBackOff", e.reason)
    local saved = rollout.failing_reasons
    rollout.failing_reasons = {}
    local ok, err = pcall(c.rollout_status, c, "deploy", "nopull2", { namespace = ns, timeout = 2 })
    rollout.failing_reasons = saved
    assert.is_false(ok)
    assert.equal("timeout", err.code)
    assert.equal('timed out after 2s waiting for the rollout: Waiting for deployment "nopull2" rollout to finish: '
      .. "0 of 1 updated replicas are available...", err.message)
  end)

  it("returns the object of a healthy rollout", function()
    c:create(fix.deployment("fine", { replicas = 2 }), { namespace = ns })
    local d = c:rollout_status("deploy", "fine", { namespace = ns, timeout = 60 })
    assert.equal(2, d.status.availableReplicas)
    assert.equal(d.metadata.generation, d.status.observedGeneration)
  end)
end)
