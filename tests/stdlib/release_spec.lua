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

describe("release.with_db", function()
  -- a scripted connect: each call takes the next outcome (an error table
  -- raised, or a handle); handles record whether they were closed
  local function scripted(outcomes)
    local calls, closed = 0, 0
    local function connect()
      calls = calls + 1
      local o = outcomes[calls]
      if type(o) == "table" and o.code then error(o, 0) end
      return setmetatable({ n = calls }, { __close = function() closed = closed + 1 end })
    end
    return connect, function() return calls, closed end
  end

  it("tries a lost connection again on a new one and closes every session", function()
    local connect, counts = scripted({ { code = "08006", reason = "connection_failure" }, "ok" })
    local got = release.with_db({}, function(db) return db.n end, { connect = connect, delay = 0 })
    assert.equal(2, got)
    local calls, closed = counts()
    assert.equal(2, calls)
    assert.equal(1, closed)
  end)

  it("tries again when fn's query loses the connection (57P01 admin shutdown), then gives up after attempts", function()
    local calls = 0
    local err = failure(function()
      release.with_db({}, function()
        calls = calls + 1
        error({ code = "57P01", reason = "admin_shutdown", message = "terminating connection" }, 0)
      end, { connect = function() return setmetatable({}, { __close = function() end }) end, attempts = 3, delay = 0 })
    end)
    assert.equal(3, calls)
    assert.equal("57P01", err.code)
  end)

  it("raises any other error at once", function()
    local calls = 0
    local err = failure(function()
      release.with_db({}, function()
        calls = calls + 1
        error({ code = "42P01", reason = "undefined_table" }, 0)
      end, { connect = function() return setmetatable({}, { __close = function() end }) end, delay = 0 })
    end)
    assert.equal(1, calls)
    assert.equal("42P01", err.code)
  end)

  it("connection_lost: class 08 and 57P01-57P03 only", function()
    assert.is_true(release.connection_lost({ code = "08001" }))
    assert.is_true(release.connection_lost({ code = "57P03" }))
    assert.is_false(release.connection_lost({ code = "57014" })) -- a cancelled statement
    assert.is_false(release.connection_lost({ code = 500 }))
    assert.is_false(release.connection_lost("08006"))
  end)
end)
