-- The k8s module against the sandbox cluster (KUBECONFIG and
-- SANDBOX_ADMIN_URL from `tests/sandbox/sandbox up`): every verb, each auth
-- mode, retries on injected faults, structured errors, watches that survive
-- resets and 410s, rollout status, dry-run and TLS failures.
local core = require("bgrun.core")
local fix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/k8sfix.lua")
local json = require("json")
local k8s = require("k8s")
local proc = require("proc")

local function catch(fn, ...)
  local ok, err = pcall(fn, ...)
  assert.is_false(ok, "expected an error")
  return err
end

local function cm(name, data, labels)
  return { apiVersion = "v1", kind = "ConfigMap", metadata = { name = name, labels = labels }, data = data or { k = "v" } }
end

describe("k8s", function()
  local c, ns, tmp, sb

  setup(function()
    fix.check_env()
    c = k8s.client { timeout = 20 }
    ns = fix.namespace(c)
    tmp = fix.tmpdir()
    sb = fix.sandbox()
  end)

  teardown(function()
    if c and ns then pcall(c.delete, c, "ns", ns) end
    if c then c:close() end
    if tmp then proc.run({ "rm", "-rf", tmp }) end
  end)

  describe("client", function()
    it("reads the kubeconfig: context, namespace, server", function()
      local info = c:info()
      assert.equal("sandbox", info.context)
      assert.equal("physioflow", info.namespace)
      assert.equal(sb.server, info.server)
      assert.is_false(info.in_cluster)
      assert.matches("^k8s.client %(https://", tostring(c))
      local other <close> = k8s.client { namespace = ns }
      assert.equal(ns, other:info().namespace)
    end)

    it("raises plain errors for playbook mistakes, structured ones for bad config", function()
      assert.matches("unknown option 'nosuch'", catch(k8s.client, { nosuch = 1 }))
      assert.matches("unknown kind \"widget\"", catch(c.get, c, "widget", "x"))
      assert.matches("unknown option 'colour'", catch(c.get, c, "cm", "x", { colour = "blue" }))
      assert.matches("type must be", catch(c.patch, c, "cm", "x", {}, { type = "yaml" }))
      local e = catch(k8s.client, { context = "nope" })
      assert.equal("k8s", e.module)
      assert.equal("config", e.code)
      assert.matches("context \"nope\" not found", e.message)
      e = catch(k8s.client, { kubeconfig = tmp .. "/missing" })
      assert.equal("config", e.code)
      local closed = k8s.client {}
      closed:close()
      assert.matches("closed k8s client", catch(closed.get, closed, "cm", "x"))
      closed:close() -- twice is fine
    end)

    it("resolves kinds through one table, or group/version/plural", function()
      assert.same({ group = "apps", version = "v1", plural = "deployments", kind = "Deployment", namespaced = true },
        k8s.resolve("deploy"))
      assert.equal("services", k8s.resolve("svc").plural)
      assert.equal("endpointslices", k8s.resolve("endpointslices").plural)
      assert.is_false(k8s.resolve("ns").namespaced)
      assert.equal("example.com", k8s.resolve("example.com/v1/widgets").group)
    end)
  end)

  describe("verbs", function()
    it("get returns nil for a missing object", function()
      assert.is_nil(c:get("cm", "does-not-exist", { namespace = ns }))
      assert.is_nil(c:get("apps/v1/deployments", "does-not-exist", { namespace = ns }))
    end)

    it("create, get, replace, delete a ConfigMap", function()
      local made = c:create(cm("one", { a = "1" }), { namespace = ns })
      assert.equal("one", made.metadata.name)
      assert.equal(ns, made.metadata.namespace)
      assert.is_string(made.metadata.resourceVersion)
      local got = c:get("configmap", "one", { namespace = ns })
      assert.equal("1", got.data.a)
      got.data.a = "2"
      local rep = c:replace(got)
      assert.equal("2", rep.data.a)
      assert.are_not.equal(made.metadata.resourceVersion, rep.metadata.resourceVersion)
      local del = c:delete("cm", "one", { namespace = ns })
      assert.is_table(del)
      assert.is_nil(c:get("cm", "one", { namespace = ns }))
      -- the object's own namespace is used when no option is given
      local obj = cm("two")
      obj.metadata.namespace = ns
      assert.equal(ns, c:create(obj).metadata.namespace)
      assert.is_nil(c:delete("cm", "never-there", { namespace = ns, ignore_not_found = true }))
      local e = catch(c.delete, c, "cm", "never-there", { namespace = ns })
      assert.equal(404, e.code)
      assert.equal("NotFound", e.reason)
    end)

    it("create of an existing name is a 409 AlreadyExists", function()
      c:create(cm("dup"), { namespace = ns })
      local e = catch(c.create, c, cm("dup"), { namespace = ns })
      assert.equal("k8s", e.module)
      assert.equal("create configmaps/dup", e.op)
      assert.equal(409, e.code)
      assert.equal("AlreadyExists", e.reason)
      assert.matches("already exists", e.message)
      assert.equal("dup", e.details.name)
    end)

    it("a stale replace is a 409 Conflict", function()
      local first = c:create(cm("stale", { v = "1" }), { namespace = ns })
      local fresh = c:get("cm", "stale", { namespace = ns })
      fresh.data.v = "2"
      c:replace(fresh)
      first.data.v = "3"
      local e = catch(c.replace, c, first)
      assert.equal(409, e.code)
      assert.equal("Conflict", e.reason)
      assert.equal("replace configmaps/stale", e.op)
      assert.matches("the object has been modified", e.message)
      assert.equal("k8s: replace configmaps/stale: 409 Conflict: " .. e.message, tostring(e))
      assert.equal("2", c:get("cm", "stale", { namespace = ns }).data.v)
    end)

    it("patches with merge, strategic and JSON patch, each with its content type", function()
      c:create(cm("p", { a = "1", b = "2" }), { namespace = ns })
      local m = c:patch("cm", "p", { data = { a = "10", b = json.null } }, { namespace = ns, type = "merge" })
      assert.same({ a = "10" }, m.data)
      local j = c:patch("cm", "p", { { op = "add", path = "/data/c", value = "3" } }, { namespace = ns, type = "json" })
      assert.same({ a = "10", c = "3" }, j.data)
      -- a JSON string works too, and merge is the default
      local s = c:patch("cm", "p", '{"data":{"d":"4"}}', { namespace = ns })
      assert.equal("4", s.data.d)
      -- strategic merge merges containers by name (merge patch would replace the list)
      c:create(fix.deployment("strat", { replicas = 0 }), { namespace = ns })
      local d = c:patch("deploy", "strat", {
        spec = { template = { spec = { containers = { { name = "api", image = "registry.local/physioflow-api:v2" } } } } },
      }, { namespace = ns, type = "strategic" })
      local ct = d.spec.template.spec.containers[1]
      assert.equal("registry.local/physioflow-api:v2", ct.image)
      assert.equal(8080, ct.ports[1].containerPort)
      -- a failed JSON patch test is the server's 422/409, raised
      local e = catch(c.patch, c, "cm", "p", { { op = "test", path = "/data/a", value = "nope" } },
        { namespace = ns, type = "json" })
      assert.equal("k8s", e.module)
      assert.equal("patch configmaps/p", e.op)
      assert.is_number(e.code)
    end)

    it("patches a Service selector", function()
      c:create({ apiVersion = "v1", kind = "Service", metadata = { name = "physioflow-api" },
                 spec = { selector = { app = "physioflow-api", version = "blue" },
                          ports = { { port = 80, targetPort = 8080 } } } }, { namespace = ns })
      local s = c:patch("svc", "physioflow-api", { spec = { selector = { version = "green" } } }, { namespace = ns })
      assert.same({ app = "physioflow-api", version = "green" }, s.spec.selector)
      local e = catch(c.patch, c, "svc", "nope", { spec = {} }, { namespace = ns })
      assert.equal("patch services/nope", e.op)
      assert.equal(404, e.code)
    end)

    it("lists with selectors and follows continue pages", function()
      for i = 1, 5 do
        c:create(cm("page-" .. i, { i = tostring(i) }, { group = "paged", odd = tostring(i % 2 == 1) }), { namespace = ns })
      end
      local l = c:list("cm", { namespace = ns, labelSelector = "group=paged", limit = 2 })
      assert.equal(5, #l.items)
      assert.is_nil(l.metadata.continue)
      assert.is_string(l.metadata.resourceVersion)
      local names = {}
      for _, it in ipairs(l.items) do names[#names + 1] = it.metadata.name end
      table.sort(names)
      assert.same({ "page-1", "page-2", "page-3", "page-4", "page-5" }, names)
      assert.equal(3, #c:list("cm", { namespace = ns, labelSelector = "group=paged,odd=true" }).items)
      local one = c:list("cm", { namespace = ns, fieldSelector = "metadata.name=page-4" })
      assert.equal(1, #one.items)
      assert.equal("page-4", one.items[1].metadata.name)
      -- namespace=false lists across namespaces
      local all = c:list("v1/configmaps", { namespace = false, labelSelector = "group=paged" })
      assert.is_true(#all.items >= 5)
      -- an empty list keeps items as an (empty) array
      local none = c:list("cm", { namespace = ns, labelSelector = "group=none" })
      assert.equal(0, #none.items)
      assert.equal("[]", json.encode(none.items))
    end)

    it("scales through the scale subresource", function()
      c:create(fix.deployment("scaled", { replicas = 0 }), { namespace = ns })
      local s = c:scale("deployment", "scaled", 2, { namespace = ns })
      assert.equal("Scale", s.kind)
      assert.equal(2, s.spec.replicas)
      assert.equal(2, c:get("deploy", "scaled", { namespace = ns }).spec.replicas)
      s = c:scale("deploy", "scaled", 0, { namespace = ns })
      assert.equal(0, s.spec.replicas or 0) -- omitempty
      local e = catch(c.scale, c, "deploy", "nope", 1, { namespace = ns })
      assert.equal(404, e.code)
      assert.matches("must not be negative", catch(c.scale, c, "deploy", "scaled", -1))
    end)

    it("reads pod logs as text", function()
      c:create(fix.deployment("logger"), { namespace = ns })
      c:rollout_status("deploy", "logger", { namespace = ns, timeout = 60 })
      local pods = c:list("pods", { namespace = ns, labelSelector = "app=logger" })
      assert.is_true(#pods.items >= 1)
      local name = pods.items[1].metadata.name
      local text = c:logs(name, { namespace = ns })
      assert.is_string(text)
      local tail = c:logs(name, { namespace = ns, container = "api", tail = 1, since = 3600 })
      assert.is_string(tail)
      assert.is_true(select(2, tail:gsub("\n", "")) <= 1)
      local e = catch(c.logs, c, "no-such-pod", { namespace = ns })
      assert.equal("logs pods/no-such-pod", e.op)
      assert.equal(404, e.code)
    end)

    it("events and leases are reachable by short name", function()
      local l = c:create({ apiVersion = "coordination.k8s.io/v1", kind = "Lease", metadata = { name = "lock" },
                           spec = { holderIdentity = "me", leaseDurationSeconds = 30 } }, { namespace = ns })
      assert.equal("me", l.spec.holderIdentity)
      assert.equal("me", c:get("lease", "lock", { namespace = ns }).spec.holderIdentity)
      assert.is_table(c:list("events", { namespace = ns }).items)
      assert.is_table(c:list("endpointslices", { namespace = ns }).items)
    end)
  end)

  describe("dry-run", function()
    after_each(function() core.set_dry_run(false) end)

    it("sends dryRun=All: the server validates, nothing is stored", function()
      c:create(cm("dry-existing", { v = "1" }), { namespace = ns })
      core.set_dry_run(true)
      local made = c:create(cm("dry-new"), { namespace = ns })
      assert.equal("dry-new", made.metadata.name)
      local p = c:patch("cm", "dry-existing", { data = { v = "2" } }, { namespace = ns })
      assert.equal("2", p.data.v)
      c:delete("cm", "dry-existing", { namespace = ns })
      -- validation still happens
      local e = catch(c.create, c, cm("dry-existing"), { namespace = ns })
      assert.equal("AlreadyExists", e.reason)
      core.set_dry_run(false)
      assert.is_nil(c:get("cm", "dry-new", { namespace = ns }))
      assert.equal("1", c:get("cm", "dry-existing", { namespace = ns }).data.v)
    end)

    it("logs the change it would make", function()
      local r = fix.run({ "--dry-run", fix.fixtures .. "/k8s_dryrun.lua", "ns=" .. ns })
      assert.equal(0, r.code, r.stderr)
      assert.matches("dry%-run: would patch configmaps/dry%-logged", r.stderr)
      assert.matches('"body":"{\\"data\\":{\\"v\\":\\"9\\"}}"', r.stderr, 1, true)
      assert.is_nil(c:get("cm", "dry-logged", { namespace = ns }))
    end)
  end)

  describe("retries and errors", function()
    it("a get survives three injected 500s", function()
      c:create(cm("flaky"), { namespace = ns })
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/flaky"
      local before = fix.stats()["GET " .. path] or 0
      fix.fault { method = "GET", path = path .. "$", status = 500, count = 3 }
      local got = c:get("cm", "flaky", { namespace = ns })
      assert.equal("flaky", got.metadata.name)
      assert.equal(before + 4, fix.stats()["GET " .. path])
    end)

    it("a get survives dropped connections", function()
      c:create(cm("dropped"), { namespace = ns })
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/dropped"
      local before = fix.stats()["GET " .. path] or 0
      fix.fault { method = "GET", path = path .. "$", reset = true, count = 2 }
      assert.equal("dropped", c:get("cm", "dropped", { namespace = ns }).metadata.name)
      assert.equal(before + 3, fix.stats()["GET " .. path])
    end)

    it("gives up after the retries with the server's error", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/down"
      -- exactly the three attempts a client with retries=2 makes; every fault
      -- here names this spec's namespace and is used up, since the sandbox
      -- may be shared
      fix.fault { method = "GET", path = path .. "$", status = 503, count = 3, retry_after = 0 }
      local quick <close> = k8s.client { retries = 2 }
      local e = catch(quick.get, quick, "cm", "down", { namespace = ns })
      assert.equal(503, e.code)
      assert.equal("get configmaps/down", e.op)
    end)

    it("honours Retry-After on 429", function()
      c:create(cm("busy"), { namespace = ns })
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/busy"
      fix.fault { method = "GET", path = path .. "$", status = 429, count = 1, retry_after = 1 }
      local t0 = bgrun.now()
      assert.is_table(c:get("cm", "busy", { namespace = ns }))
      assert.is_true(bgrun.now() - t0 >= 0.9)
    end)

    it("never retries a patch once it may have reached the server", function()
      c:create(cm("once"), { namespace = ns })
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/once"
      local before = fix.stats()["PATCH " .. path] or 0
      fix.fault { method = "PATCH", path = path .. "$", status = 500, count = 1 }
      local e = catch(c.patch, c, "cm", "once", { data = { x = "1" } }, { namespace = ns })
      assert.equal(500, e.code)
      assert.equal("InternalError", e.reason)
      assert.equal(before + 1, fix.stats()["PATCH " .. path])
      -- a dropped connection on create is not retried either
      local cpath = "/api/v1/namespaces/" .. ns .. "/configmaps"
      local cbefore = fix.stats()["POST " .. cpath] or 0
      fix.fault { method = "POST", path = cpath .. "$", reset = true, count = 1 }
      e = catch(c.create, c, cm("reset"), { namespace = ns })
      assert.equal("connection", e.code)
      assert.matches(sb.server, e.message, 1, true)
      assert.equal(cbefore + 1, fix.stats()["POST " .. cpath])
    end)

    it("every call has a timeout", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps/slow"
      fix.fault { method = "GET", path = path .. "$", delay_ms = 3000, count = 1 }
      local impatient <close> = k8s.client { timeout = 0.5, retries = 0 }
      local t0 = bgrun.now()
      local e = catch(impatient.get, impatient, "cm", "slow", { namespace = ns })
      assert.equal("timeout", e.code)
      assert.equal("Timeout", e.reason)
      assert.is_true(bgrun.now() - t0 < 2.5)
    end)

    it("a refused connection names the server", function()
      local path = fix.kubeconfig(tmp, "{server: 'https://127.0.0.1:1'}", "{token: abc}", "refused")
      local r <close> = k8s.client { kubeconfig = path, retries = 1 }
      local e = catch(r.get, r, "cm", "x")
      assert.equal("connection", e.code)
      assert.equal("ConnectionError", e.reason)
      assert.matches("https://127.0.0.1:1", e.message, 1, true)
    end)
  end)

  describe("auth", function()
    it("bearer token from the kubeconfig; 401 names context and user, never the token", function()
      assert.is_table(c:list("ns"))
      local path = fix.kubeconfig(tmp, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        "{token: not-the-right-token-1234}", "badtoken")
      local b <close> = k8s.client { kubeconfig = path }
      local e = catch(b.get, b, "cm", "x")
      assert.equal(401, e.code)
      assert.equal("Unauthorized", e.reason)
      assert.matches('context "test", user "u"', e.message, 1, true)
      assert.is_nil(tostring(e):find("not-the-right-token-1234", 1, true))
    end)

    it("tokenFile, relative to the kubeconfig, re-read after a 401", function()
      local dir = tmp .. "/tf"
      proc.run({ "mkdir", "-p", dir .. "/creds" })
      fix.write(dir .. "/ca.crt", fix.read(sb.dir .. "/ca.crt"))
      fix.write(dir .. "/creds/token", "stale-token-5678\n")
      local path = fix.kubeconfig(dir, ("{server: '%s', certificate-authority: ca.crt}"):format(sb.server),
        "{tokenFile: creds/token}")
      local t <close> = k8s.client { kubeconfig = path }
      local e = catch(t.get, t, "cm", "x", { namespace = ns })
      assert.equal(401, e.code)
      -- the token rotates: the next 401 re-reads the file and succeeds
      fix.write(dir .. "/creds/token", sb.token .. "\n")
      assert.is_nil(t:get("cm", "x", { namespace = ns }))
    end)

    it("client certificate files and data", function()
      local path = fix.kubeconfig(tmp, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        ("{client-certificate: %s/client.crt, client-key: %s/client.key}"):format(sb.dir, sb.dir), "certfiles")
      local f <close> = k8s.client { kubeconfig = path }
      assert.is_nil(f:get("cm", "x", { namespace = ns }))
      local d <close> = k8s.client { kubeconfig = sb.dir .. "/kubeconfig-cert" }
      assert.is_table(d:list("cm", { namespace = ns }))
    end)

    it("exec plugins: cached until expiry, re-run after a 401", function()
      local dir = tmp .. "/exec"
      proc.run({ "mkdir", "-p", dir })
      local count = dir .. "/count"
      -- the first run hands out a bad token, later runs the real one
      fix.write(dir .. "/plugin.sh", table.concat({
        "#!/bin/sh",
        "echo run >> " .. count,
        "n=$(wc -l < " .. count .. ")",
        'case "$KUBERNETES_EXEC_INFO" in *\'"kind":"ExecCredential"\'*) ;; *) echo "no exec info" >&2; exit 3;; esac',
        '[ "$PLUGIN_MODE" = test ] || exit 4',
        'if [ "$n" -eq 1 ]; then tok=bad-exec-token-0000; else tok="$1"; fi',
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"2099-01-01T00:00:00Z"}}\\n\' "$tok"',
        "",
      }, "\n"), "755")
      local path = fix.kubeconfig(dir, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        ("{exec: {apiVersion: client.authentication.k8s.io/v1, command: ./plugin.sh, args: ['%s'], "
         .. "env: [{name: PLUGIN_MODE, value: test}], interactiveMode: Never}}"):format(sb.token))
      local x <close> = k8s.client { kubeconfig = path }
      for _ = 1, 3 do assert.is_nil(x:get("cm", "x", { namespace = ns })) end
      local runs = select(2, fix.read(count):gsub("run", ""))
      assert.equal(2, runs) -- one bad token, one re-run after the 401, then cached
    end)

    it("exec plugins: an expired credential is fetched again", function()
      local dir = tmp .. "/exec-expired"
      proc.run({ "mkdir", "-p", dir })
      local count = dir .. "/count"
      fix.write(dir .. "/plugin.sh", table.concat({
        "#!/bin/sh",
        "echo run >> " .. count,
        'printf \'{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","status":{"token":"%s","expirationTimestamp":"2000-01-01T00:00:00Z"}}\\n\' "$1"',
        "",
      }, "\n"), "755")
      local path = fix.kubeconfig(dir, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        ("{exec: {apiVersion: client.authentication.k8s.io/v1beta1, command: ./plugin.sh, args: ['%s']}}"):format(sb.token))
      local x <close> = k8s.client { kubeconfig = path }
      for _ = 1, 3 do assert.is_nil(x:get("cm", "x", { namespace = ns })) end
      assert.equal(3, select(2, fix.read(count):gsub("run", "")))
    end)

    it("exec plugin failures are structured auth errors", function()
      local path = fix.kubeconfig(tmp, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        "{exec: {apiVersion: client.authentication.k8s.io/v1, command: /bin/false, interactiveMode: Never}}", "execfail")
      local x <close> = k8s.client { kubeconfig = path }
      local e = catch(x.get, x, "cm", "x")
      assert.equal("auth", e.code)
      assert.matches("exec plugin /bin/false failed", e.message, 1, true)
    end)

    it("in-cluster: service-account token, CA and namespace", function()
      local sa = tmp .. "/sa"
      proc.run({ "mkdir", "-p", sa, tmp .. "/home" })
      fix.write(sa .. "/token", sb.token .. "\n")
      fix.write(sa .. "/ca.crt", fix.read(sb.dir .. "/ca.crt"))
      fix.write(sa .. "/namespace", ns .. "\n")
      local host, port = sb.server:match("^https://([^:/]+):(%d+)")
      local r = fix.run({ fix.fixtures .. "/k8s_info.lua" }, {
        KUBECONFIG = false, HOME = tmp .. "/home",
        KUBERNETES_SERVICE_HOST = host, KUBERNETES_SERVICE_PORT = port,
        BGRUN_SERVICEACCOUNT_DIR = sa,
      })
      assert.equal(0, r.code, r.stderr)
      assert.matches("in_cluster=true namespace=" .. ns:gsub("%-", "%%-") .. " server=https://", r.stdout)
      -- in_cluster = true wins over a kubeconfig; the directory as an option
      local r3 = fix.run({ fix.fixtures .. "/k8s_info.lua", "sa=" .. sa }, {
        KUBERNETES_SERVICE_HOST = host, KUBERNETES_SERVICE_PORT = port,
      })
      assert.equal(0, r3.code, r3.stderr)
      assert.matches("in_cluster=true namespace=" .. ns:gsub("%-", "%%-"), r3.stdout)
      -- not in a cluster, no kubeconfig
      local r2 = fix.run({ fix.fixtures .. "/k8s_info.lua" }, {
        KUBECONFIG = false, HOME = tmp .. "/home", KUBERNETES_SERVICE_HOST = false,
      })
      assert.equal(1, r2.code)
      assert.matches("not in a cluster", r2.stderr)
    end)
  end)

  describe("configuration", function()
    it("merges KUBECONFIG files, first definition wins, missing files skipped", function()
      local dir = tmp .. "/merge"
      proc.run({ "mkdir", "-p", dir })
      -- a.yaml only names a context (with its namespace) over b's cluster and user
      fix.write(dir .. "/a.yaml", table.concat({
        "current-context: merged",
        "contexts:",
        "- name: merged",
        ("  context: {cluster: sandbox, user: sandbox-admin, namespace: %s}"):format(ns),
        "- name: sandbox",
        "  context: {cluster: nowhere, user: nobody}",
        "",
      }, "\n"))
      local list = dir .. "/missing.yaml:" .. dir .. "/a.yaml:" .. os.getenv("KUBECONFIG")
      local r = fix.run({ fix.fixtures .. "/k8s_info.lua" }, { KUBECONFIG = list })
      assert.equal(0, r.code, r.stderr)
      assert.matches("in_cluster=false namespace=" .. ns:gsub("%-", "%%-"), r.stdout)
      -- the first file's "sandbox" context (a broken one) shadows the second's
      local x = catch(k8s.client, { kubeconfig = list, context = "sandbox" })
      assert.equal("config", x.code)
      assert.matches('cluster "nowhere" not found', x.message, 1, true)
    end)

    it("registers credentials as secrets", function()
      local log = require("log")
      assert.is_nil(log.redact("token " .. sb.token):find(sb.token, 1, true))
      local path = fix.kubeconfig(tmp, ("{server: '%s', certificate-authority-data: %s}"):format(sb.server, sb.ca_data),
        "{username: admin, password: pa55w0rd-never-shown}", "basic")
      local b <close> = k8s.client { kubeconfig = path }
      assert.is_nil(log.redact("pw pa55w0rd-never-shown"):find("pa55w0rd", 1, true))
    end)
  end)

  describe("TLS", function()
    it("a server certificate from another CA fails clearly", function()
      local other = proc.run({ "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", tmp .. "/other.key",
        "-out", tmp .. "/other.crt", "-days", "1", "-subj", "/CN=other-ca" })
      assert.equal(0, other.code, other.stderr)
      local path = fix.kubeconfig(tmp, ("{server: '%s', certificate-authority: other.crt}"):format(sb.server),
        ("{token: %s}"):format(sb.token), "wrongca")
      local w <close> = k8s.client { kubeconfig = path }
      local t0 = bgrun.now()
      local e = catch(w.get, w, "cm", "x")
      assert.equal("tls", e.code)
      assert.equal("TLSError", e.reason)
      assert.matches("TLS failure talking to " .. sb.server, e.message, 1, true)
      assert.is_true(bgrun.now() - t0 < 5) -- not retried
      assert.is_nil(tostring(e):find(sb.token, 1, true))
    end)

    it("insecure-skip-tls-verify and tls-server-name", function()
      local path = fix.kubeconfig(tmp, ("{server: '%s', insecure-skip-tls-verify: true}"):format(sb.server),
        ("{token: %s}"):format(sb.token), "insecure")
      local i <close> = k8s.client { kubeconfig = path }
      assert.is_nil(i:get("cm", "x", { namespace = ns }))
      local port = sb.server:match(":(%d+)$")
      path = fix.kubeconfig(tmp, ("{server: 'https://127.0.0.1:%s', certificate-authority-data: %s, tls-server-name: localhost}")
        :format(port, sb.ca_data), ("{token: %s}"):format(sb.token), "sni")
      local s <close> = k8s.client { kubeconfig = path }
      assert.is_nil(s:get("cm", "x", { namespace = ns }))
    end)
  end)

  describe("watch", function()
    it("lists first, then streams ADDED, MODIFIED, DELETED; ends at its timeout", function()
      c:create(cm("w-pre", nil, { watch = "basic" }), { namespace = ns })
      local seen = {}
      local step = 0
      for ev, obj in c:watch("cm", { namespace = ns, labelSelector = "watch=basic", timeout = 10 }) do
        seen[#seen + 1] = ev .. " " .. obj.metadata.name
        step = step + 1
        if step == 1 then
          c:create(cm("w-new", nil, { watch = "basic" }), { namespace = ns })
        elseif step == 2 then
          c:patch("cm", "w-new", { data = { k = "changed" } }, { namespace = ns })
        elseif step == 3 then
          c:delete("cm", "w-new", { namespace = ns })
        elseif step == 4 then
          break
        end
      end
      assert.same({ "ADDED w-pre", "ADDED w-new", "MODIFIED w-new", "DELETED w-new" }, seen)
      -- a quiet watch returns at its timeout
      local t0 = bgrun.now()
      local n = 0
      for _ in c:watch("cm", { namespace = ns, labelSelector = "watch=quiet", timeout = 1 }) do n = n + 1 end
      assert.equal(0, n)
      assert.is_true(bgrun.now() - t0 >= 0.9 and bgrun.now() - t0 < 5)
    end)

    it("resumes after a connection reset mid-stream, losing and repeating nothing", function()
      local label = "watch=reset"
      local w = c:watch("cm", { namespace = ns, labelSelector = label, timeout = 30, send_initial = false })
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps"
      local before = fix.stats()["GET " .. path] or 0
      fix.fault { method = "GET", path = path .. "%?.*watch=true", reset = true, delay_ms = 700, count = 1 }
      local want, got = {}, {}
      local total = 40
      for i = 1, total do
        want[#want + 1] = "r-" .. i
      end
      -- create objects while reading, so the cut lands mid-stream
      local created = 0
      local t0 = bgrun.now()
      while #got < total and bgrun.now() - t0 < 25 do
        if created < total then
          created = created + 1
          c:create(cm("r-" .. created, nil, { watch = "reset" }), { namespace = ns })
          bgrun.sleep(0.03)
        end
        -- drain what has arrived, waiting at most a moment for each event
        local ev, obj = w:next_event(0.02)
        while ev do
          got[#got + 1] = obj.metadata.name
          assert.equal("ADDED", ev)
          ev, obj = w:next_event(0.02)
        end
      end
      w:close()
      assert.same(want, got)
      -- it did reconnect: the watch was requested more than once
      local watches = (fix.stats()["GET " .. path] or 0) - before
      assert.is_true(watches >= 2, "expected a reconnect, saw " .. watches .. " requests")
    end)

    it("reconnects when the server ends the stream (timeoutSeconds), without repeats", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps"
      local before = fix.stats()["GET " .. path] or 0
      local w <close> = c:watch("cm", { namespace = ns, labelSelector = "watch=cycle", send_initial = false,
                                         server_timeout = 1, timeout = 20 })
      local got = {}
      for i = 1, 3 do
        c:create(cm("cycle-" .. i, nil, { watch = "cycle" }), { namespace = ns })
        local ev, obj = w:next_event(5)
        got[#got + 1] = ev .. " " .. obj.metadata.name
        bgrun.sleep(1.3) -- the server closes the stream meanwhile
      end
      assert.is_nil(w:next_event(0.5))
      assert.same({ "ADDED cycle-1", "ADDED cycle-2", "ADDED cycle-3" }, got)
      assert.is_true((fix.stats()["GET " .. path] or 0) - before >= 3)
    end)

    it("relists after an HTTP 410, emitting what changed meanwhile, and resumes", function()
      local path = "/api/v1/namespaces/" .. ns .. "/configmaps"
      c:create(cm("g-0", nil, { watch = "gone" }), { namespace = ns })
      c:create(cm("g-1", nil, { watch = "gone" }), { namespace = ns })
      local w <close> = c:watch("cm", { namespace = ns, labelSelector = "watch=gone", timeout = 20 })
      local first = {}
      for _ = 1, 2 do
        local ev, obj = w:next_event(5)
        first[#first + 1] = ev .. " " .. obj.metadata.name
      end
      table.sort(first)
      assert.same({ "ADDED g-0", "ADDED g-1" }, first)
      -- the first watch request is answered 410; what changed meanwhile
      -- comes out of the relist as synthetic events, then the stream resumes
      fix.fault { method = "GET", path = path .. "%?.*watch=true", status = 410, count = 1 }
      c:patch("cm", "g-1", { data = { k = "v2" } }, { namespace = ns })
      c:delete("cm", "g-0", { namespace = ns })
      local ev, obj = w:next_event(10)
      assert.equal("MODIFIED", ev)
      assert.equal("g-1", obj.metadata.name)
      assert.equal("v2", obj.data.k)
      ev, obj = w:next_event(10)
      assert.equal("DELETED", ev)
      assert.equal("g-0", obj.metadata.name)
      c:create(cm("g-2", nil, { watch = "gone" }), { namespace = ns })
      ev, obj = w:next_event(10)
      assert.equal("ADDED", ev)
      assert.equal("g-2", obj.metadata.name)
      assert.is_nil(w:next_event(0.5))
    end)

    it("relists after a 410 ERROR event (resourceVersion too old)", function()
      c:create(cm("old-1", nil, { watch = "old" }), { namespace = ns })
      local seen = {}
      for ev, obj in c:watch("cm", { namespace = ns, labelSelector = "watch=old", resourceVersion = "1", timeout = 10 }) do
        seen[#seen + 1] = ev .. " " .. obj.metadata.name
        break
      end
      assert.same({ "ADDED old-1" }, seen)
    end)

    it("passes bookmarks silently and remembers where to resume", function()
      -- kube-apiserver sends a watch a bookmark about once a minute and
      -- always 2 s before the stream's timeoutSeconds (a 10 s stream gets
      -- one at about 8 s), but only when its watch cache has moved past
      -- where the stream began: a change made before the stream opened
      -- is already behind it. So the watch's resource version moves on only
      -- through changes the watch does not select made while it streams.
      local w <close> = c:watch("cm", { namespace = ns, labelSelector = "watch=bm", timeout = 60, send_initial = false,
        server_timeout = 10 })
      local rv0 = w:resource_version()
      assert.is_string(rv0)
      c:create(cm("bm-other", nil, { watch = "not-bm" }), { namespace = ns })
      local t0, n = bgrun.now(), 0
      while w:resource_version() == rv0 and bgrun.now() - t0 < 40 do
        assert.is_nil(w:next_event(1)) -- no BOOKMARK ever comes out
        n = n + 1
        c:patch("cm", "bm-other", { data = { n = tostring(n) } }, { namespace = ns })
      end
      local rv1 = w:resource_version()
      assert.are_not.equal(rv0, rv1)
      -- the resumed stream (from the bookmark's version) still delivers
      c:create(cm("bm-1", nil, { watch = "bm" }), { namespace = ns })
      local ev, obj = w:next_event(15)
      assert.equal("ADDED", ev)
      assert.equal("bm-1", obj.metadata.name)
      assert.is_nil(w:next_event(0.5))
    end)

    it("ends with 'interrupted' on SIGINT", function()
      local r = proc.run({ "timeout", "--preserve-status", "-s", "INT", "2", fix.bgrun, fix.fixtures .. "/k8s_watch_forever.lua",
        "ns=" .. ns }, { timeout = 20 })
      assert.equal(130, r.code, r.stderr)
      assert.matches("interrupted", r.stderr)
    end)
  end)

  describe("rollout_status", function()
    it("returns as soon as the Deployment is rolled out", function()
      c:create(fix.deployment("roll", { replicas = 2 }), { namespace = ns })
      local d = c:rollout_status("deploy", "roll", { namespace = ns, timeout = 60 })
      assert.equal("roll", d.metadata.name)
      assert.equal(2, d.status.availableReplicas)
      -- a new image rolls out again
      c:patch("deploy", "roll", { spec = { template = { spec = { containers = {
        { name = "api", image = "registry.local/physioflow-api:v2" } } } } } }, { namespace = ns, type = "strategic" })
      d = c:rollout_status("deploy", "roll", { namespace = ns, timeout = 60 })
      assert.equal(2, d.status.updatedReplicas)
      assert.equal("registry.local/physioflow-api:v2", d.spec.template.spec.containers[1].image)
    end)

    it("fails with ProgressDeadlineExceeded", function()
      c:create(fix.deployment("stuck", { image = "registry.local/other:1", deadline = 3 }), { namespace = ns })
      local e = catch(c.rollout_status, c, "deploy", "stuck", { namespace = ns, timeout = 60, fail_fast = false })
      assert.equal("k8s", e.module)
      assert.equal("rollout_status deployments/stuck", e.op)
      assert.equal("progress_deadline", e.code)
      assert.equal("ProgressDeadlineExceeded", e.reason)
      assert.equal('deployment "stuck" exceeded its progress deadline', e.message)
    end)

    it("fails fast when a new pod cannot pull its image", function()
      c:create(fix.deployment("nopull", { image = "registry.local/other:2" }), { namespace = ns })
      local t0 = bgrun.now()
      local e = catch(c.rollout_status, c, "deploy", "nopull", { namespace = ns, timeout = 60 })
      assert.equal("pod_failing", e.code)
      assert.is_true(e.reason == "ErrImagePull" or e.reason == "ImagePullBackOff", e.reason)
      assert.matches("registry.local/other:2", e.message, 1, true)
      assert.is_true(bgrun.now() - t0 < 20)
    end)

    it("times out with code 'timeout'", function()
      c:create(fix.deployment("slowpoke", { image = "registry.local/other:3" }), { namespace = ns })
      local t0 = bgrun.now()
      local e = catch(c.rollout_status, c, "deploy", "slowpoke", { namespace = ns, timeout = 1.5, fail_fast = false })
      assert.equal("timeout", e.code)
      assert.equal("Timeout", e.reason)
      assert.matches("Waiting for deployment", e.message)
      local took = bgrun.now() - t0
      assert.is_true(took >= 1.4 and took < 5, tostring(took))
    end)

    it("raises NotFound for a missing Deployment", function()
      local e = catch(c.rollout_status, c, "deploy", "ghost", { namespace = ns, timeout = 5 })
      assert.equal(404, e.code)
      assert.equal("NotFound", e.reason)
      assert.equal("rollout_status deployments/ghost", e.op)
      assert.matches("rollout_status works on", catch(c.rollout_status, c, "svc", "x"))
    end)
  end)
end)
