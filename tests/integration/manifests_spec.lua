-- stdlib/manifests.lua against the sandbox cluster: server-side apply as
-- field manager "bgrun", resource paths from the kind table (an Ingress is
-- "ingresses"), discovery for kinds the table does not know, and the API
-- server's 409 Conflict when another manager owns a field and force=false.
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/k8sfix.lua")
local k8s = require("k8s")
local manifests = require("manifests")

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function ingress(host)
  return {
    apiVersion = "networking.k8s.io/v1", kind = "Ingress", metadata = { name = "web" },
    spec = { rules = { { host = host, http = { paths = { {
      path = "/", pathType = "Prefix",
      backend = { service = { name = "web", port = { number = 80 } } } } } } } } },
  }
end

local function managers(obj)
  local out = {}
  for _, m in ipairs(obj.metadata.managedFields or {}) do out[#out + 1] = m.manager .. ":" .. m.operation end
  table.sort(out)
  return table.concat(out, ",")
end

describe("manifests", function()
  local c, ns

  setup(function()
    fix.check_env()
    c = k8s.client { timeout = 20 }
    ns = fix.namespace(c)
  end)

  teardown(function()
    if c and ns then pcall(c.delete, c, "ns", ns) end
    if c then c:close() end
  end)

  it("creates an Ingress, then applies over the existing one at networking.k8s.io/v1/ingresses", function()
    local n = manifests.apply(c, { ingress("a.example.invalid") }, { namespace = ns })
    assert.same({ created = 1, replaced = 0 }, n)
    n = manifests.apply(c, { ingress("b.example.invalid") }, { namespace = ns })
    assert.same({ created = 0, replaced = 1 }, n)
    local got = c:get("networking.k8s.io/v1/ingresses", "web", { namespace = ns })
    assert.equal("b.example.invalid", got.spec.rules[1].host)
    assert.equal("bgrun:Apply", managers(got))
  end)

  it("keeps what other managers own and drops what bgrun no longer applies", function()
    local svc = {
      apiVersion = "v1", kind = "Service", metadata = { name = "svc", labels = { tier = "web", old = "yes" } },
      spec = { selector = { app = "web" }, ports = { { port = 80, targetPort = 8080 } } },
    }
    manifests.apply(c, { svc }, { namespace = ns })
    local first = c:get("svc", "svc", { namespace = ns })
    c:patch("svc", "svc", { metadata = { annotations = { note = "kept" } } }, { namespace = ns, fieldManager = "someone" })
    svc.metadata.labels.old = nil
    manifests.apply(c, { svc }, { namespace = ns })
    local got = c:get("svc", "svc", { namespace = ns })
    assert.equal(first.spec.clusterIP, got.spec.clusterIP)
    assert.equal("kept", got.metadata.annotations.note)
    assert.same({ tier = "web" }, got.metadata.labels)
    assert.equal("bgrun:Apply,someone:Update", managers(got))
  end)

  it("force=false: a field another manager set is a 409 Conflict naming the manager and the field; nothing changes", function()
    local cm = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "conf" }, data = { mode = "a" } }
    manifests.apply(c, { cm }, { namespace = ns })
    c:patch("cm", "conf", { data = { mode = "b" } }, { namespace = ns, fieldManager = "kubectl-edit" })
    cm.data.mode = "c"
    local e = catch(manifests.apply, c, { cm }, { namespace = ns, force = false })
    assert.equal(409, e.code)
    assert.equal("Conflict", e.reason)
    assert.equal("Apply failed with 1 conflict: conflict with \"kubectl-edit\" using v1: .data.mode", e.message)
    assert.equal("b", c:get("cm", "conf", { namespace = ns }).data.mode)
    -- the default (force) takes the field over
    manifests.apply(c, { cm }, { namespace = ns })
    local got = c:get("cm", "conf", { namespace = ns })
    assert.equal("c", got.data.mode)
    assert.equal("bgrun:Apply", managers(got))
  end)

  it("resolves kinds from the kind table, and unknown kinds through discovery or a clear error", function()
    local r = manifests.resource("Ingress", "networking.k8s.io/v1")
    assert.same({ group = "networking.k8s.io", version = "v1", plural = "ingresses", kind = "Ingress", namespaced = true }, r)
    assert.equal("networking.k8s.io/v1/ingresses", manifests.kind_path(r))
    assert.is_nil(k8s.resource_for("Widget", "v1"))
    -- discovery answers for a kind the table lacks (the served EndpointSlice, looked up as if unknown)
    local d = manifests.discover(c, "EndpointSlice", "discovery.k8s.io/v1")
    assert.same({ group = "discovery.k8s.io", version = "v1", plural = "endpointslices", kind = "EndpointSlice",
                  namespaced = true }, d)
    local e = catch(manifests.resource, "Widget", "example.invalid/v1")
    assert.equal("usage", e.code)
    assert.equal("unknown kind Widget (apiVersion example.invalid/v1): not in the kind table and no client to ask the API server",
      e.message)
    e = catch(manifests.apply, c, { { apiVersion = "v1", kind = "Widget", metadata = { name = "w" } } }, { namespace = ns })
    assert.equal("usage", e.code)
    assert.equal("unknown kind Widget (apiVersion v1): the API server's v1 has no such kind", e.message)
    e = catch(manifests.apply, c, { { apiVersion = "example.invalid/v1", kind = "Widget", metadata = { name = "w" } } })
    assert.equal("unknown kind Widget (apiVersion example.invalid/v1): the API server does not serve example.invalid/v1",
      e.message)
  end)

  it("a bad document among good ones changes nothing", function()
    local e = catch(manifests.apply, c, {
      { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "first" }, data = { a = "1" } },
      { apiVersion = "v1", kind = "Gadget", metadata = { name = "g" } },
    }, { namespace = ns })
    assert.matches("unknown kind Gadget", e.message)
    assert.is_nil(c:get("cm", "first", { namespace = ns }))
  end)
end)
