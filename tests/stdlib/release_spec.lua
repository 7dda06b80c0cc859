-- release.client: an environment's k8s client on its own context, no
-- cluster needed (a client connects on its first call).
local release = require("release")

local DIR = os.tmpname()
os.remove(DIR)
assert(os.execute("mkdir -p " .. DIR))
local KC = DIR .. "/config"
local f = assert(io.open(KC, "w"))
f:write([[
apiVersion: v1
kind: Config
current-context: everyday
clusters:
- name: c1
  cluster: { server: "https://127.0.0.1:1" }
- name: c2
  cluster: { server: "https://127.0.0.2:2" }
users:
- name: u
  user: { token: t0ken-not-shown }
contexts:
- name: everyday
  context: { cluster: c1, user: u, namespace: default }
- name: prod-admin
  context: { cluster: c2, user: u, namespace: physioflow-prod }
]])
f:close()

local function failure(fn)
  local ok, err = pcall(fn)
  assert.is_false(ok)
  return err
end

describe("release.client", function()
  teardown(function() os.execute("rm -rf " .. DIR) end)

  it("uses the environment's context, never the current one", function()
    local c = release.client("prod", { context = "prod-admin", namespace = "physioflow-prod", kubeconfig = KC })
    local i = c:info()
    assert.equal("prod-admin", i.context)
    assert.equal("https://127.0.0.2:2", i.server)
    assert.equal("physioflow-prod", i.namespace)
    c:close()
  end)

  it("lets local use the current context", function()
    local c = release.client("local", { namespace = "physioflow", kubeconfig = KC })
    assert.equal("everyday", c:info().context)
    c:close()
  end)

  it("refuses a non-local environment without a context: usage, NoContext", function()
    for _, ctx in ipairs({ false, "" }) do
      local err = failure(function() release.client("staging", { context = ctx or nil, kubeconfig = KC }) end)
      assert.equal("usage", err.code)
      assert.equal("NoContext", err.reason)
      assert.matches("environment staging names no kubeconfig context", tostring(err), 1, true)
    end
  end)

  it("refuses a context missing from the kubeconfig, naming the environment, the context and the files", function()
    local err = failure(function() release.client("prod", { context = "physioflow-prod", kubeconfig = KC }) end)
    assert.equal("usage", err.code)
    assert.equal("UnknownContext", err.reason)
    assert.matches(('environment prod: context "physioflow-prod" is not in the kubeconfig (files read: %s)')
      :format(KC), tostring(err), 1, true)
  end)

  it("refuses a non-local environment when no kubeconfig exists, rather than take a service account", function()
    local err = failure(function()
      release.client("prod", { context = "physioflow-prod", kubeconfig = "/nonexistent/kubeconfig" })
    end)
    assert.equal("usage", err.code)
    assert.equal("UnknownContext", err.reason)
    assert.matches('environment prod: context "physioflow-prod" is not in the kubeconfig (no kubeconfig found: '
      .. "/nonexistent/kubeconfig; inside the cluster, set BGRUN_IN_CLUSTER=prod to use the pod's service account)",
      tostring(err), 1, true)
  end)
end)
