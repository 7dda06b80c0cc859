-- stdlib/manifests.lua without a cluster: resource paths from the kind
-- table's plurals, discovery for kinds it lacks (a scripted client), the
-- refusals naming the kind, and the server-side apply requests it sends.
local manifests = require("manifests")
local json = require("json")

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

-- answers GET /apis/... from docs; records c:get and c:patch calls
local function client(docs, existing)
  local c = { calls = {} }
  function c:request(req)
    self.calls[#self.calls + 1] = req.method .. " " .. req.path
    local doc = docs[req.path]
    if not doc then return { status = 404, body = "{}" } end
    return { status = 200, body = json.encode(doc) }
  end
  function c:get(kind, name, opts)
    self.calls[#self.calls + 1] = ("get %s %s %s"):format(kind, name, tostring(opts.namespace))
    return (existing or {})[name]
  end
  function c:patch(kind, name, patch, opts)
    self.calls[#self.calls + 1] = ("patch %s %s %s %s %s force=%s"):format(kind, name, tostring(opts.namespace), opts.type,
      opts.fieldManager, tostring(opts.force))
    self.sent = patch
    return patch
  end
  return c
end

describe("manifests.resource", function()
  it("takes plurals from the kind table, not kind..'s'", function()
    local cases = {
      { "Ingress", "networking.k8s.io/v1", "networking.k8s.io/v1/ingresses" },
      { "NetworkPolicy", "networking.k8s.io/v1", "networking.k8s.io/v1/networkpolicies" },
      { "Endpoints", "v1", "v1/endpoints" },
      { "Service", "v1", "v1/services" },
      { "Deployment", "apps/v1", "apps/v1/deployments" },
      { "HorizontalPodAutoscaler", "autoscaling/v2", "autoscaling/v2/horizontalpodautoscalers" },
      { "PodDisruptionBudget", "policy/v1", "policy/v1/poddisruptionbudgets" },
      { "StorageClass", "storage.k8s.io/v1", "storage.k8s.io/v1/storageclasses" },
    }
    for _, case in ipairs(cases) do
      assert.equal(case[3], manifests.kind_path(manifests.resource(case[1], case[2])), case[1])
    end
    assert.is_false(manifests.resource("Namespace", "v1").namespaced)
    assert.is_true(manifests.resource("ConfigMap").namespaced) -- apiVersion defaults to v1
  end)

  it("asks the API server's discovery for kinds the table lacks", function()
    local c = client { ["/apis/monitoring.coreos.com/v1"] = { resources = {
      { name = "servicemonitors/status", kind = "ServiceMonitor", namespaced = true },
      { name = "servicemonitors", kind = "ServiceMonitor", namespaced = true },
      { name = "prometheuses", kind = "Prometheus", namespaced = true },
    } }, ["/api/v1"] = { resources = { { name = "bindings", kind = "Binding", namespaced = true } } } }
    assert.same({ group = "monitoring.coreos.com", version = "v1", plural = "prometheuses", kind = "Prometheus",
                  namespaced = true }, manifests.resource("Prometheus", "monitoring.coreos.com/v1", c))
    assert.equal("monitoring.coreos.com/v1/servicemonitors",
      manifests.kind_path(manifests.resource("ServiceMonitor", "monitoring.coreos.com/v1", c)))
    assert.equal("v1/bindings", manifests.kind_path(manifests.resource("Binding", "v1", c)))
    assert.same({ "GET /apis/monitoring.coreos.com/v1", "GET /apis/monitoring.coreos.com/v1", "GET /api/v1" }, c.calls)
  end)

  it("raises code usage naming the kind when nobody knows it", function()
    local e = catch(manifests.resource, "Widget", "example.invalid/v1", client {})
    assert.same({ "manifests", "usage", "resource Widget",
                  "unknown kind Widget (apiVersion example.invalid/v1): the API server does not serve example.invalid/v1" },
                { e.module, e.code, e.op, e.message })
    e = catch(manifests.resource, "Widget", "v1", client { ["/api/v1"] = { resources = {} } })
    assert.equal("unknown kind Widget (apiVersion v1): the API server's v1 has no such kind", e.message)
    e = catch(manifests.resource, "Widget", "v1")
    assert.equal("unknown kind Widget (apiVersion v1): not in the kind table and no client to ask the API server", e.message)
    e = catch(manifests.resource, nil, "v1")
    assert.equal("an object has no kind", e.message)
    e = catch(manifests.resource, "Thing", "a/b/c")
    assert.equal("usage", e.code)
  end)
end)

describe("manifests.apply", function()
  it("sends each object as a server-side apply of field manager bgrun, forced unless force=false", function()
    local c = client({}, { web = { metadata = { name = "web" } } })
    local n = manifests.apply(c, {
      { apiVersion = "networking.k8s.io/v1", kind = "Ingress", metadata = { name = "web", resourceVersion = "7" },
        status = { loadBalancer = {} } },
      { apiVersion = "v1", kind = "Namespace", metadata = { name = "pf", namespace = "ignored" } },
    }, { namespace = "pf" })
    assert.same({ created = 1, replaced = 1 }, n)
    assert.same({
      "get networking.k8s.io/v1/ingresses web pf", "patch networking.k8s.io/v1/ingresses web pf apply bgrun force=true",
      "get v1/namespaces pf nil", "patch v1/namespaces pf nil apply bgrun force=true",
    }, c.calls)
    c = client({})
    local obj = { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "conf" }, data = { a = "1" } }
    manifests.apply(c, { obj }, { namespace = "pf", force = false, field_manager = "team-x" })
    assert.same({ "get v1/configmaps conf pf", "patch v1/configmaps conf pf apply team-x force=nil" }, c.calls)
    assert.is_nil(c.sent.metadata.resourceVersion)
    assert.equal("pf", c.sent.metadata.namespace)
  end)

  it("refuses a document without a name or of an unknown kind before sending anything", function()
    local c = client({})
    local e = catch(manifests.apply, c, { { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "ok" } },
                                          { apiVersion = "v1", kind = "ConfigMap", metadata = {} } })
    assert.equal("object 2 (ConfigMap) has no metadata.name", e.message)
    e = catch(manifests.apply, c, { "text" })
    assert.equal("object 1 is not a table", e.message)
    assert.same({}, c.calls)
  end)
end)
