-- The in-cluster kit (examples/physioflow/deploy/) against the sandbox's
-- RBAC: the ServiceAccount, Role and RoleBinding applied with kubectl, a
-- token from the TokenRequest API (`kubectl create token`), and bgrun run
-- as a pod would run it — KUBERNETES_SERVICE_HOST/PORT, a service-account
-- directory with token, ca.crt and namespace, no kubeconfig, and
-- BGRUN_IN_CLUSTER naming the environment. Deploy (smoke tests through the
-- pods proxy), backup, rollback, preview/promote/switch-back/abort and a
-- canary pass with that token alone (deploy-with-migration and
-- rollback-release from a kubeconfig holding only the token); a Role
-- missing one rule makes the run fail naming the verb, resource and
-- namespace, with nothing left half-switched. The Job and CronJob are
-- checked by the API server (dry-run) and by kubectl.
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local KIT = ROOT .. "/examples/physioflow/deploy"
local NS = "bgrun-lp-" .. bgrun.pid()
local APP = "physioflow-api"
local DB = "bgrun_least_privilege_spec"
local STATE = ROOT .. "/tests/.state/least-privilege"
local PB = STATE .. "/playbooks"
local SA_DIR = STATE .. "/serviceaccount"
local USER = "system:serviceaccount:" .. NS .. ":bgrun"

local admin = k8s.client { namespace = NS }

local sh, read, write = H.sh, H.read, H.write

local function kubectl(args, stdin)
  local argv = { "kubectl", "-n", NS }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { stdin = stdin, timeout = 60 })
end

-- bgrun as the Job's pod runs it: the service account, no kubeconfig.
local host, port
local function in_pod(args, extra)
  local env = { KUBECONFIG = false, HOME = STATE .. "/home", KUBERNETES_SERVICE_HOST = host,
                KUBERNETES_SERVICE_PORT = port, BGRUN_SERVICEACCOUNT_DIR = SA_DIR, BGRUN_IN_CLUSTER = "local",
                BGRUN_PATH = PB, BGRUN_JOURNAL_DIR = STATE .. "/journal", PGDATABASE = DB }
  return H.bgrun(args, { env = H.merge(env, extra) })
end

-- The kit's Role, with fn(rules) applied (nil: as shipped).
local function apply_role(fn)
  local r = kubectl({ "apply", "--validate=false", "-f", KIT .. "/rbac.yaml" })
  assert(r.code == 0, r.stderr)
  if fn then
    local role = admin:get("rbac.authorization.k8s.io/v1/roles", "bgrun")
    fn(role.rules)
    admin:replace(role)
  end
end

local function drop_verb(resource, verb)
  return function(rules)
    local hit = false
    for _, rule in ipairs(rules) do
      if rule.resources[1] == resource and #rule.resources == 1 then
        for i = #rule.verbs, 1, -1 do
          if rule.verbs[i] == verb then table.remove(rule.verbs, i); hit = true end
        end
      end
    end
    assert(hit, "the kit's Role grants no " .. verb .. " on " .. resource)
  end
end

local function authz_lines(user)
  local out = {}
  for line in read(os.getenv("SANDBOX_DIR") .. "/cluster/authz.log"):gmatch("[^\n]+") do
    if line:find(" " .. user .. " ", 1, true) then out[#out + 1] = line end
  end
  return out
end

local S = H.release_state(admin, APP)
local live_colour, dep, lock_holder, other = S.live_colour, S.dep, S.lock_holder, H.other
local function schema_version() return H.schema_version(DB) end
local behaviours = H.behaviours

-- bgrun as a CI runner runs it: a kubeconfig holding only the token.
local function with_token_kubeconfig(args)
  return H.bgrun(args, { env = { KUBECONFIG = STATE .. "/kubeconfig", HOME = STATE .. "/home", BGRUN_PATH = PB,
                                 BGRUN_JOURNAL_DIR = STATE .. "/journal", PGDATABASE = DB } })
end

describe("least privilege: the in-cluster kit's Role", function()
  setup(function()
    assert(os.getenv("KUBECONFIG") and os.getenv("SANDBOX_DIR"), "run under tests/run-all or a sandbox")
    local pg <close> = postgres.connect { dbname = "postgres" }
    pg:exec("DROP DATABASE IF EXISTS " .. DB .. " WITH (FORCE)")
    pg:exec("CREATE DATABASE " .. DB)
    assert(sh(('rm -rf "%s"; mkdir -p "%s" "%s/home" "%s" && cp playbooks/*.lua "%s/" && rm -f "%s/environments.lua"')
      :format(STATE, PB, STATE, SA_DIR, PB, PB)).code == 0)
    write(PB .. "/environments.lua", ([[
return {
  ["local"] = {
    namespace = %q, app = "physioflow-api", replicas = 2, database = { dbname = %q },
    bucket = "physioflow-backups-local", migrations = "examples/physioflow/migrations", backups = %q,
    rollout_timeout = 120, monitor = { window = 4, interval = 1 }, smoke_access = "proxy",
  },
  prod = {
    context = "physioflow-prod", namespace = %q, app = "physioflow-api", replicas = 2, database = { dbname = %q },
    bucket = "physioflow-backups-local", migrations = "examples/physioflow/migrations", backups = %q,
    rollout_timeout = 120, monitor = { window = 4, interval = 1 }, smoke_access = "proxy", confirm = true,
  },
}
]]):format(NS, DB, STATE .. "/backups", NS, DB, STATE .. "/backups"))
    -- the app, installed once by an administrator (the kit does not grant it)
    local r = proc.run({ BGRUN, "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" },
                       { env = { BGRUN_PATH = PB, PGDATABASE = DB, BGRUN_JOURNAL_DIR = STATE .. "/journal" },
                         cwd = ROOT, timeout = 120 })
    assert(r.code == 0, r.stderr)
    apply_role()
    local tok = kubectl({ "create", "token", "bgrun", "--duration=2h" })
    assert(tok.code == 0, tok.stderr)
    write(SA_DIR .. "/token", tok.stdout)
    -- the projected token file a pod would have: the secrets sweep skips it
    dofile(ROOT .. "/tests/sweep/sweep.lua").register_store(SA_DIR .. "/token")
    write(SA_DIR .. "/ca.crt", read(os.getenv("SANDBOX_DIR") .. "/cluster/ca.crt"))
    write(SA_DIR .. "/namespace", NS)
    host, port = admin:info().server:match("^https://([^:/]+):(%d+)")
    -- a CI runner's kubeconfig: the API server, its CA and the token, nothing else
    write(STATE .. "/kubeconfig", ([[
apiVersion: v1
kind: Config
clusters:
- name: sandbox
  cluster: {server: %q, certificate-authority: %q}
users:
- name: bgrun-sa
  user: {tokenFile: %q}
contexts:
- name: physioflow-prod
  context: {cluster: sandbox, user: bgrun-sa, namespace: %q}
current-context: physioflow-prod
]]):format(admin:info().server, SA_DIR .. "/ca.crt", SA_DIR .. "/token", NS))
  end)

  teardown(function()
    behaviours({})
    pcall(admin.delete, admin, "namespace", NS)
    pcall(function()
      local pg <close> = postgres.connect { dbname = "postgres" }
      for _, row in ipairs(pg:query("SELECT datname FROM pg_database WHERE datname LIKE $1", { DB .. "%" })) do
        pg:exec("DROP DATABASE " .. postgres.quote_ident(row.datname) .. " WITH (FORCE)")
      end
    end)
  end)

  -- each case starts from a settled namespace: no pod of an earlier case
  -- still terminating (a monitor would see it go)
  local function settle()
    local deadline = bgrun.now() + 60
    repeat
      local busy = false
      for _, p in ipairs(admin:list("pods").items) do
        if p.metadata.deletionTimestamp then busy = true end
      end
      if not busy then return end
      bgrun.sleep(0.2)
    until bgrun.now() > deadline
    error("pods still terminating after 60 s")
  end

  before_each(function()
    apply_role()
    settle()
  end)

  it("is what kubectl applies: a ServiceAccount, a Role and its RoleBinding", function()
    local sa = admin:get("serviceaccount", "bgrun")
    assert.is_not_nil(sa)
    local rb = admin:get("rbac.authorization.k8s.io/v1/rolebindings", "bgrun")
    assert.same({ apiGroup = "rbac.authorization.k8s.io", kind = "Role", name = "bgrun" }, rb.roleRef)
    assert.same({ { kind = "ServiceAccount", name = "bgrun" } }, rb.subjects)
    -- kubectl auth can-i, as the ServiceAccount (a kubeconfig holding only its token)
    local function can(...)
      local argv = { "kubectl", "-n", NS, "auth", "can-i", ... }
      local r = proc.run(argv, { env = { KUBECONFIG = STATE .. "/kubeconfig" }, timeout = 30 })
      return r.stdout:match("^(%a+)") or r.stderr, r.code
    end
    assert.same({ "yes", 0 }, { can("patch", "services/physioflow-api") })
    assert.same({ "yes", 0 }, { can("patch", "deployments.apps/physioflow-api-green", "--subresource=scale") })
    assert.same({ "yes", 0 }, { can("get", "pods", "--subresource=log") })
    assert.same({ "no", 1 }, { can("patch", "services/kubernetes") })
    assert.same({ "no", 1 }, { can("delete", "deployments.apps/physioflow-api-blue") })
    assert.same({ "no", 1 }, { can("get", "secrets/physioflow-db") })
    assert.same({ "no", 1 }, { can("list", "namespaces") })
    -- nothing cluster-wide, no Secrets, delete only on the preview Service
    for _, rule in ipairs(admin:get("rbac.authorization.k8s.io/v1/roles", "bgrun").rules) do
      for _, res in ipairs(rule.resources) do
        assert.is_nil(res:find("secret"), "the Role grants " .. res)
        assert.not_equal("*", res)
      end
      for _, v in ipairs(rule.verbs) do
        assert.not_equal("*", v)
        if v == "delete" then assert.same({ "physioflow-api-preview" }, rule.resourceNames) end
      end
    end
  end)

  it("runs deploy (smoke tests through the pods proxy), backup and rollback with the Role's token alone", function()
    local before = #authz_lines(USER)
    local live = live_colour()
    local idle = other(live)
    local r = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.1.0" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("via the API server proxy", r.stdout .. r.stderr)
    assert.matches("context in%-cluster", r.stderr)
    assert.equal(idle, live_colour())
    assert.same({ image = "registry.physioflow.internal/physioflow-api:v1.1.0", replicas = 2 }, dep(idle))
    assert.equal(0, dep(live).replicas)
    assert.equal("", lock_holder())

    local b = in_pod({ PB .. "/backup.lua", "env=local", "label=least-privilege" })
    assert.equal(0, b.code, b.stderr)
    local path = b.stdout:match("([^\n]+%.tar%.gz)\n?$")
    assert.is_not_nil(path, b.stdout)

    local rb = in_pod({ "--yes", PB .. "/rollback.lua", "env=local", "backup=" .. path })
    assert.equal(0, rb.code, rb.stderr)
    assert.equal(10, schema_version())
    assert.equal("10", admin:get("configmap", "migration-version").data.version)
    assert.equal(2, dep(idle).replicas)

    -- every request came from the service account, and none was refused
    local lines = { table.unpack(authz_lines(USER), before + 1) }
    local seen = {}
    for _, l in ipairs(lines) do
      assert.matches("^allow ", l)
      seen[l:match("^allow %S+ (%S+ %S+)")] = true
    end
    for _, want in ipairs({ "update leases.coordination.k8s.io", "patch services", "patch deployments/scale.apps",
                            "get pods/proxy", "create pods/proxy", "get services/proxy", "get pods/log", "watch pods",
                            "list deployments.apps", "patch configmaps" }) do
      assert.is_true(seen[want] ~= nil, "no " .. want .. " by the service account in " .. table.concat(lines, "\n"))
    end
  end)

  it("without patch on services: the switch fails naming verb, resource and namespace; traffic stays, exit 1", function()
    apply_role(drop_verb("services", "patch"))
    local live = live_colour()
    local idle = other(live)
    local idle_before = dep(idle)
    local report = STATE .. "/report-403.json"
    local r = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.2.0", "--report", report })
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[switch traffic to " .. idle .. "%] step failed", r.stderr)
    local want = ('k8s: patch services/physioflow-api: 403 Forbidden: services "physioflow-api" is forbidden: '
      .. 'User "%s" cannot patch resource "services" in API group "" in the namespace "%s" '
      .. '(server https://%s:%s, context "in-cluster", user "serviceaccount")'):format(USER, NS, host, port)
    assert.is_truthy(r.stderr:find(want, 1, true), r.stderr)
    assert.matches("run report: failed, cleaned up %(exit 1%)", r.stderr)
    local rep = json.decode(read(report))
    assert.equal(1, rep.exit)
    assert.equal("failed, cleaned up", rep.status)
    assert.equal(want, rep.error)
    assert.equal("switch traffic to " .. idle, rep.failed_step)
    -- nothing half-switched: the old colour serves, the new one is back to 0, the lock is free
    assert.equal(live, live_colour())
    assert.equal(2, dep(live).replicas)
    assert.equal(idle_before.replicas, dep(idle).replicas)
    assert.equal("", lock_holder())
  end)

  it("without get on leases: refused at the lock, before anything changes", function()
    apply_role(drop_verb("leases", "get"))
    local live = live_colour()
    local before = { [live] = dep(live), [other(live)] = dep(other(live)) }
    local r = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.3.0" })
    assert.equal(1, r.code, r.stderr)
    assert.is_truthy(r.stderr:find(('leases.coordination.k8s.io "bgrun-deploy-lock" is forbidden: User "%s" cannot get '
      .. 'resource "leases" in API group "coordination.k8s.io" in the namespace "%s"'):format(USER, NS), 1, true), r.stderr)
    assert.equal(live, live_colour())
    assert.same(before[live], dep(live))
    assert.same(before[other(live)], dep(other(live)))
    assert.equal("", lock_holder())
  end)

  it("runs preview, promote, switch-back and abort with the Role's token alone", function()
    local live = live_colour()
    local idle = other(live)
    local p = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.4.0", "preview=true" })
    assert.equal(0, p.code, p.stderr)
    assert.is_not_nil(admin:get("service", APP .. "-preview"))
    assert.equal(live, live_colour())
    local pr = in_pod({ PB .. "/promote.lua", "env=local" })
    assert.equal(0, pr.code, pr.stderr)
    assert.equal(idle, live_colour())
    assert.is_nil(admin:get("service", APP .. "-preview"))
    local sb = in_pod({ PB .. "/switch-back.lua", "env=local" })
    assert.equal(0, sb.code, sb.stderr)
    assert.equal(live, live_colour())
    -- switch-back leaves the colour it left running; the abort gives it back as it was
    local left = dep(idle)
    local p2 = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.5.0", "preview=true" })
    assert.equal(0, p2.code, p2.stderr)
    assert.equal("registry.physioflow.internal/physioflow-api:v1.5.0", dep(idle).image)
    local ab = in_pod({ PB .. "/abort.lua", "env=local" })
    assert.equal(0, ab.code, ab.stderr)
    assert.is_nil(admin:get("service", APP .. "-preview"))
    assert.equal(live, live_colour())
    assert.same(left, dep(idle))
    assert.equal("", lock_holder())
  end)

  it("runs a canary release with the Role's token alone", function()
    local live = live_colour()
    local idle = other(live)
    local r = in_pod({ PB .. "/canary.lua", "env=local", "tag=v1.7.0", "steps=50,100", "pause=0" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(idle, live_colour())
    assert.same({ image = "registry.physioflow.internal/physioflow-api:v1.7.0", replicas = 2 }, dep(idle))
    assert.equal(0, dep(live).replicas)
    assert.equal("", lock_holder())
  end)

  it("runs deploy-with-migration and rollback-release from a kubeconfig holding only the token (a CI runner)", function()
    local live = live_colour()
    local idle = other(live)
    -- the ConfigMap is created by the run when missing
    admin:delete("configmap", "migration-version")
    local d = with_token_kubeconfig({ PB .. "/deploy-with-migration.lua", "env=prod", "tag=v2.0.0", "to=011", "--yes" })
    assert.equal(0, d.code, d.stderr)
    assert.matches("context physioflow%-prod, https://", d.stderr)
    assert.equal(11, schema_version())
    assert.equal(idle, live_colour())
    assert.equal("11", admin:get("configmap", "migration-version").data.version)
    local r = with_token_kubeconfig({ PB .. "/rollback-release.lua", "env=prod", "--yes" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(10, schema_version())
    assert.equal(live, live_colour())
    assert.equal("10", admin:get("configmap", "migration-version").data.version)
    assert.equal("", lock_holder())
  end)

  it("names the failing pod of a crashing rollout through the Role (ReplicaSets and pods listed), exit 1", function()
    behaviours({ ["v1.6.0"] = { crash_after_s = 0.2 } })
    local live = live_colour()
    local r = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v1.6.0" })
    behaviours({})
    assert.equal(1, r.code, r.stderr)
    assert.matches("CrashLoopBackOff", r.stderr)
    assert.is_nil(r.stderr:find("Forbidden", 1, true), r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(other(live)).replicas)
    assert.equal("", lock_holder())
  end)

  it("uses every rule it grants: each verb of the Role was requested by the runs above", function()
    -- a switch's confirmation watches the EndpointSlices (a list, then a
    -- watch, by label) only when its list does not show the new colour's
    -- pods yet, which depends on the endpointslice controller's timing: do
    -- what it does
    write(STATE .. "/confirm.lua", ([[
return playbook { description = "confirm the live colour's endpoints", run = function()
  local c = require("k8s").client { in_cluster = true }
  local live = c:get("service", "physioflow-api", { namespace = %q }).spec.selector.version
  require("bluegreen").confirm_switch(c, { app = "physioflow-api", namespace = %q, colour = live, timeout = 5 })
  -- the whole of it: the list, then the watch until the timeout ends the iteration
  for _ in c:watch("endpointslices", { namespace = %q, labelSelector = "kubernetes.io/service-name=physioflow-api",
                                       timeout = 1 }) do
  end
end }
]]):format(NS, NS, NS))
    local w = in_pod({ STATE .. "/confirm.lua" })
    assert.equal(0, w.code, w.stderr)
    local used = {}
    for _, l in ipairs(authz_lines(USER)) do
      local decision, verb, what = l:match("^(%S+) %S+ (%S+) (%S+)")
      if decision == "allow" then used[verb .. " " .. what] = true end
    end
    local unused = {}
    for _, rule in ipairs(admin:get("rbac.authorization.k8s.io/v1/roles", "bgrun").rules) do
      for _, res in ipairs(rule.resources) do
        local group = rule.apiGroups[1]
        local what = res .. (group ~= "" and ("." .. group) or "")
        for _, verb in ipairs(rule.verbs) do
          local key = verb .. " " .. what
          if not used[key] then unused[#unused + 1] = key end
        end
      end
    end
    assert.same({}, unused)
  end)

  it("a 403 names verb, resource and namespace in the error's fields, and in its message whoever refused", function()
    write(STATE .. "/forbidden.lua", ([[
return playbook { description = "forbidden requests", run = function()
  local c = require("k8s").client { in_cluster = true }
  for _, call in ipairs({ function() return c:get("deployment", "physioflow-api-blue", { namespace = %q }) end,
                          function() return c:delete("deployment", "physioflow-api-blue", { namespace = %q }) end }) do
    local ok, e = pcall(call)
    assert(not ok)
    print(e.code, e.reason, e.verb, e.group, e.resource, e.namespace)
    print(e.message)
  end
end }
]]):format(NS, NS))
    -- the first: a policy in front of the API server refuses with words of its own
    local f = require("http").post(os.getenv("SANDBOX_ADMIN_URL") .. "/faults", {
      headers = { ["Content-Type"] = "application/json" },
      body = json.encode { method = "GET", path = "deployments/physioflow-api-blue$", status = 403, count = 1,
                           message = "denied by the cluster's admission policy" } })
    assert.equal(201, f.status, f.body)
    local r = in_pod({ STATE .. "/forbidden.lua" })
    assert.equal(0, r.code, r.stderr)
    local esc = NS:gsub("%-", "%%-")
    local lines = {}
    for l in r.stdout:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("403\tForbidden\tget\tapps\tdeployments\t" .. NS, lines[1])
    assert.matches("^cannot get deployments %(API group apps%) in namespace " .. esc
      .. ': deployments%.apps "physioflow%-api%-blue" is forbidden: denied by the cluster\'s admission policy '
      .. "%(server https://", lines[2])
    -- the second: RBAC's own message already names them, and is kept as it is
    assert.equal("403\tForbidden\tdelete\tapps\tdeployments\t" .. NS, lines[3])
    assert.matches('^deployments%.apps "physioflow%-api%-blue" is forbidden: User "' .. USER:gsub("%-", "%%-")
      .. '" cannot delete resource "deployments" in API group "apps" in the namespace "' .. esc .. '" %(server', lines[4])
  end)

  it("BGRUN_IN_CLUSTER: another environment, a kubeconfig in the pod, or no BGRUN_IN_CLUSTER is refused (exit 2)", function()
    write(PB .. "/environments.lua", read(PB .. "/environments.lua"):gsub("^return {", ([[
return {
  staging = { context = "physioflow-staging", namespace = %q, app = "physioflow-api", replicas = 2,
              database = {}, migrations = "examples/physioflow/migrations", backups = %q },]]):format(NS, STATE .. "/b")))
    local r = in_pod({ PB .. "/deploy.lua", "env=staging", "tag=v9" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("environment staging: this process runs bgrun inside the cluster for local %(BGRUN_IN_CLUSTER=local%), "
      .. "not for staging", r.stderr)
    -- a pod (a CI runner in some cluster) without BGRUN_IN_CLUSTER and without a kubeconfig: the
    -- environment's context is not there, and its service account is not taken instead
    local n = in_pod({ PB .. "/deploy.lua", "env=prod", "tag=v9", "--yes" }, { BGRUN_IN_CLUSTER = false })
    assert.equal(2, n.code, n.stderr)
    assert.is_truthy(n.stderr:find('environment prod: context "physioflow-prod" is not in the kubeconfig (no kubeconfig '
      .. "found: " .. STATE .. "/home/.kube/config; inside the cluster, set BGRUN_IN_CLUSTER=prod to use the pod's "
      .. "service account)", 1, true), n.stderr)
    local k = in_pod({ PB .. "/deploy.lua", "env=local", "tag=v9" }, { KUBECONFIG = os.getenv("KUBECONFIG") })
    assert.equal(2, k.code, k.stderr)
    assert.is_truthy(k.stderr:find("environment local runs inside the cluster: a kubeconfig is present ("
      .. os.getenv("KUBECONFIG") .. ")", 1, true), k.stderr)
    assert.equal("", lock_holder())
  end)

  it("the Job and the CronJob: accepted by the API server (dry-run), every 6 hours, as the bgrun ServiceAccount", function()
    local j = kubectl({ "create", "--validate=false", "--dry-run=server", "-o", "json", "-f", KIT .. "/job-deploy.yaml" })
    assert.equal(0, j.code, j.stderr)
    local job = json.decode(j.stdout)
    local pod = job.spec.template.spec
    assert.equal("bgrun", pod.serviceAccountName)
    assert.equal("Never", pod.restartPolicy)
    assert.same({ "playbooks/deploy.lua", "env=prod", "tag=v1.2.3", "--yes", "--log-format", "json" },
      pod.containers[1].args)
    assert.equal("BGRUN_IN_CLUSTER", pod.containers[1].env[1].name)
    assert.equal("prod", pod.containers[1].env[1].value)
    assert.is_nil(admin:list("batch/v1/jobs").items[1]) -- a dry run stores nothing

    local cj = kubectl({ "apply", "--validate=false", "-o", "json", "-f", KIT .. "/cronjob-backup.yaml" })
    assert.equal(0, cj.code, cj.stderr)
    local stored = admin:get("batch/v1/cronjobs", "bgrun-backup")
    assert.equal("0 */6 * * *", stored.spec.schedule)
    assert.equal("Forbid", stored.spec.concurrencyPolicy)
    local tpl = stored.spec.jobTemplate.spec.template.spec
    assert.equal("bgrun", tpl.serviceAccountName)
    assert.same({ "playbooks/backup.lua", "env=prod", "label=scheduled", "local=false", "--log-format", "json" },
      tpl.containers[1].args)
    -- the API server checks what it is given: a schedule that is not cron is refused
    local bad = read(KIT .. "/cronjob-backup.yaml"):gsub('schedule: "0 %*/6 %* %* %*"', 'schedule: "every 6 hours"')
    local b = kubectl({ "apply", "--validate=false", "--dry-run=server", "-f", "-" }, bad)
    assert.equal(1, b.code)
    assert.matches('spec%.schedule: Invalid value: "every 6 hours"', b.stderr)
    -- and kubectl parses all three files on its own
    local c = kubectl({ "create", "--validate=false", "--dry-run=client", "-f", KIT })
    assert.equal(0, c.code, c.stderr)
    assert.matches("cronjob.batch/bgrun%-backup", c.stdout)
  end)
end)
