-- Pure parts of stdlib/bluegreen.lua: image tags, and the pods a Service's
-- EndpointSlices serve (followed through a scripted client's list and watch).
local bluegreen = require("bluegreen")

describe("bluegreen.with_tag", function()
  it("replaces the tag, keeping registry ports and dropping digests", function()
    assert.equal("reg:5000/app:v2", bluegreen.with_tag("reg:5000/app:v1", "v2"))
    assert.equal("reg:5000/app:v2", bluegreen.with_tag("reg:5000/app", "v2"))
    assert.equal("app:v2", bluegreen.with_tag("app", "v2"))
    assert.equal("ghcr.io/org/app:v2", bluegreen.with_tag("ghcr.io/org/app@sha256:abc", "v2"))
    assert.equal("ghcr.io/org/app:v2", bluegreen.with_tag("ghcr.io/org/app:v1@sha256:abc", "v2"))
    assert.equal("localhost:5000/a/b/c:2.0.1-rc.1", bluegreen.with_tag("localhost:5000/a/b/c:1", "2.0.1-rc.1"))
  end)
end)

local function slice(name, eps)
  local s = { metadata = { name = name }, endpoints = {} }
  for _, e in ipairs(eps) do
    s.endpoints[#s.endpoints + 1] = { addresses = { "192.0.2.1" }, conditions = { ready = e[2] },
                                      targetRef = { kind = "Pod", name = e[1] } }
  end
  return s
end

describe("bluegreen.serving_pods", function()
  it("lists ready endpoints of every slice once, nil readiness counting as ready", function()
    assert.same({ "a", "b", "c" }, bluegreen.serving_pods({
      slice("s1", { { "b", true }, { "x", false }, { "a", nil } }),
      slice("s2", { { "c", true }, { "a", true } }),
    }))
    assert.same({}, bluegreen.serving_pods({}))
    assert.same({}, bluegreen.serving_pods({ { endpoints = { { addresses = { "192.0.2.9" } } } } }))
  end)
end)

describe("bluegreen.confirm_switch", function()
  local function client(listed, events)
    local c = { calls = {} }
    function c:list(kind, opts)
      self.calls[#self.calls + 1] = ("list %s %s"):format(kind, opts.labelSelector)
      if kind == "pods" then
        return { items = { { metadata = { name = "g1" } }, { metadata = { name = "g2" } } } }
      end
      return { metadata = { resourceVersion = "41" }, items = listed }
    end
    function c:watch(kind, opts)
      self.calls[#self.calls + 1] = ("watch %s %s from %s"):format(kind, opts.labelSelector, opts.resourceVersion)
      local i = 0
      return function()
        i = i + 1
        if events[i] then return events[i][1], events[i][2] end
      end
    end
    return c
  end

  it("settles on the slices' union, following slices added, changed and deleted", function()
    local c = client({ slice("s1", { { "b1", true }, { "g1", true } }) }, {
      { "ADDED", slice("s2", { { "g2", true } }) },
      { "MODIFIED", slice("s1", { { "b1", false }, { "g1", true } }) },
      { "ADDED", slice("s3", { { "b2", true } }) },
      { "DELETED", slice("s3", {}) },
    })
    local s = bluegreen.confirm_switch(c, { app = "web", namespace = "pf", colour = "green", timeout = 5 })
    assert.is_number(s)
    assert.same({ "list pods app=web,version=green", "list endpointslices kubernetes.io/service-name=web",
                  "watch endpointslices kubernetes.io/service-name=web from 41" }, c.calls)
  end)

  it("times out when no slice ever serves only the colour", function()
    local c = client({}, { { "ADDED", slice("s1", { { "b1", true } }) } })
    local ok, e = pcall(bluegreen.confirm_switch, c, { app = "web", namespace = "pf", colour = "green", timeout = 1 })
    assert.is_false(ok)
    assert.equal("timeout", e.code)
    assert.equal("endpoints of web still list pods outside green after 1s", e.message)
  end)
end)
