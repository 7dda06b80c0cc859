-- The switch is confirmed on discovery.k8s.io/v1 EndpointSlices (label
-- kubernetes.io/service-name), as the endpointslice controller writes them.
local bluegreen = require("bluegreen")
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/k8sfix.lua")
local k8s = require("k8s")

local function colour_deploy(colour)
  local d = fix.deployment("web-" .. colour, { replicas = 2 })
  d.metadata.labels = { app = "web", version = colour }
  d.spec.selector.matchLabels = { app = "web", version = colour }
  d.spec.template.metadata.labels = { app = "web", version = colour }
  return d
end

describe("confirm_switch on EndpointSlices", function()
  local c, ns

  setup(function()
    fix.check_env()
    c = k8s.client { timeout = 20 }
    ns = fix.namespace(c)
    for _, colour in ipairs({ "blue", "green" }) do
      c:create(colour_deploy(colour), { namespace = ns })
      c:rollout_status("deploy", "web-" .. colour, { namespace = ns, timeout = 60 })
    end
    c:create({ apiVersion = "v1", kind = "Service", metadata = { name = "web" },
               spec = { selector = { app = "web", version = "blue" }, ports = { { port = 80, targetPort = 8080 } } } },
             { namespace = ns })
  end)

  teardown(function()
    if c and ns then pcall(c.delete, c, "ns", ns) end
    if c then c:close() end
  end)

  it("confirms the colour the Service's slices serve, and follows a switch", function()
    local s = bluegreen.confirm_switch(c, { app = "web", namespace = ns, colour = "blue", timeout = 30 })
    assert.is_true(s >= 0 and s < 30)
    local slices = c:list("endpointslices", { namespace = ns, labelSelector = "kubernetes.io/service-name=web" }).items
    assert.is_true(#slices >= 1)
    local names = bluegreen.serving_pods(slices)
    assert.equal(2, #names)
    for _, n in ipairs(names) do assert.matches("^web%-blue%-", n) end

    c:patch("svc", "web", { spec = { selector = { version = "green" } } }, { namespace = ns })
    bluegreen.confirm_switch(c, { app = "web", namespace = ns, colour = "green", timeout = 30 })
    names = bluegreen.serving_pods(c:list("endpointslices", { namespace = ns,
      labelSelector = "kubernetes.io/service-name=web" }).items)
    assert.equal(2, #names)
    for _, n in ipairs(names) do assert.matches("^web%-green%-", n) end
  end)

  it("times out naming the Service and the colour when the slices serve another", function()
    local t0 = bgrun.now()
    local ok, e = pcall(bluegreen.confirm_switch, c, { app = "web", namespace = ns, colour = "blue", timeout = 1 })
    assert.is_false(ok)
    assert.equal("timeout", e.code)
    assert.equal("Timeout", e.reason)
    assert.equal("confirm switch web", e.op)
    assert.equal("endpoints of web still list pods outside blue after 1s", e.message)
    assert.is_true(bgrun.now() - t0 < 10)
  end)
end)
