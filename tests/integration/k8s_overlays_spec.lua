-- The example's kustomize base and overlays (examples/physioflow/k8s):
-- `kubectl kustomize` (the real one) builds each overlay into the
-- environment's namespace with its labels and sizes, selectors untouched;
-- the setup playbook applies an overlay to the sandbox (dev: every kind in
-- it is one the sandbox serves) and refuses an unknown overlay or one whose
-- namespace is not the environment's, before changing anything.
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")
local yaml = require("yaml")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local K8S = ROOT .. "/examples/physioflow/k8s"
local STATE = ROOT .. "/tests/.state/overlays"
local DB = "bgrun_overlays_spec"
local APP = "physioflow-api"

local function build(overlay)
  local r = proc.run({ "kubectl", "kustomize", K8S .. "/overlays/" .. overlay }, { timeout = 60 })
  assert(r.code == 0, r.stderr)
  local by = {}
  for _, o in ipairs(yaml.decode_all(r.stdout)) do by[o.kind .. "/" .. o.metadata.name] = o end
  return by
end

local function count(t)
  local n = 0
  for _ in pairs(t) do n = n + 1 end
  return n
end

local environments = dofile(ROOT .. "/playbooks/environments.lua")

describe("kustomize overlays of the example", function()
  for _, env in ipairs({ "dev", "staging", "prod" }) do
    it(("builds %s into namespace %s with its labels, selectors untouched"):format(env, environments[env].namespace),
      function()
        local ns = environments[env].namespace
        assert.equal("physioflow-" .. env, ns)
        local objs = build(env)
        local want = { "ConfigMap/migration-version", "Service/" .. APP, "Deployment/" .. APP .. "-blue",
                       "Deployment/" .. APP .. "-green" }
        if env == "prod" then want[#want + 1] = "PodDisruptionBudget/" .. APP end
        assert.equal(#want, count(objs))
        for _, key in ipairs(want) do
          local o = assert(objs[key], key .. " missing")
          assert.equal(ns, o.metadata.namespace)
          assert.equal(env, o.metadata.labels.environment, key)
          assert.equal("physioflow", o.metadata.labels["app.kubernetes.io/part-of"], key)
          assert.equal("bgrun", o.metadata.labels["app.kubernetes.io/managed-by"], key)
        end
        -- bgrun switches spec.selector.version; the selectors stay {app, version}
        assert.are.same({ app = APP, version = "blue" }, objs["Service/" .. APP].spec.selector)
        for _, colour in ipairs({ "blue", "green" }) do
          local d = objs["Deployment/" .. APP .. "-" .. colour]
          assert.are.same({ app = APP, version = colour }, d.spec.selector.matchLabels)
          local labels = d.spec.template.metadata.labels
          assert.equal(APP, labels.app)
          assert.equal(colour, labels.version)
          assert.equal(env, labels.environment)
          assert.is_table(d.spec.template.spec.containers[1].resources.requests)
        end
        -- the serving colour as large as the environment's replicas; the idle one at 0
        assert.equal(environments[env].replicas, objs["Deployment/" .. APP .. "-blue"].spec.replicas)
        assert.equal(0, objs["Deployment/" .. APP .. "-green"].spec.replicas)
        if env == "prod" then
          assert.are.same({ app = APP }, objs["PodDisruptionBudget/" .. APP].spec.selector.matchLabels)
        end
      end)
  end
end)

describe("setup.lua overlay= against the sandbox", function()
  local c, context
  local NS = "physioflow-dev"
  local PB = STATE .. "/playbooks"

  local function run(args)
    local argv = { BGRUN }
    for _, a in ipairs(args) do argv[#argv + 1] = a end
    return proc.run(argv, { cwd = ROOT, timeout = 240, env = {
      PGDATABASE = DB, BGRUN_PATH = PB .. ":" .. ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = STATE .. "/journal" } })
  end

  setup(function()
    assert(os.getenv("KUBECONFIG"), "the sandbox is not running")
    c = k8s.client {}
    context = c:info().context
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    for _, kind in ipairs({ "deployment", "service", "configmap", "secret" }) do
      for _, name in ipairs({ APP .. "-blue", APP .. "-green", APP, "migration-version", "physioflow-db" }) do
        pcall(c.delete, c, kind, name, { namespace = NS })
      end
    end
    assert(proc.run({ "mkdir", "-p", PB }).code == 0)
    -- deploy.lua reads the environments.lua next to it: ours
    assert(proc.run({ "cp", ROOT .. "/playbooks/deploy.lua", PB .. "/" }).code == 0)
    -- dev as shipped, but through the sandbox's context
    local f = assert(io.open(PB .. "/environments.lua", "w"))
    f:write(([[
local shipped = dofile(%q)
shipped.dev.context = %q
shipped.dev.database = {}
shipped.dev.monitor = { window = 3, interval = 1 }
return shipped
]]):format(ROOT .. "/playbooks/environments.lua", context))
    f:close()
  end)

  teardown(function()
    -- the dev release's pods hold connections to our database: stop them first
    for _, kind in ipairs({ "deployment", "service", "configmap", "secret", "lease" }) do
      for _, name in ipairs({ APP .. "-blue", APP .. "-green", APP, "migration-version", "physioflow-db",
                              "bgrun-deploy-lock" }) do
        pcall(c.delete, c, kind, name, { namespace = NS })
      end
    end
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
  end)

  it("refuses an unknown overlay before changing anything (exit 2)", function()
    local r = run({ "examples/physioflow/setup.lua", "env=dev", "overlay=qa" })
    assert.equal(2, r.code)
    assert.matches("setup: overlay qa: usage BadOverlay: no overlay 'qa' in [^\n]*examples/physioflow/k8s/overlays "
      .. "%(known: dev, prod, staging%)", r.stderr)
    assert.is_nil(r.stderr:find("step started", 1, true))
    assert.is_nil(c:get("deployment", APP .. "-blue", { namespace = NS }))
  end)

  it("refuses an overlay of another namespace than the environment's (exit 2)", function()
    local r = run({ "examples/physioflow/setup.lua", "env=dev", "overlay=prod" })
    assert.equal(2, r.code)
    assert.matches("overlay prod puts ConfigMap migration%-version in namespace physioflow%-prod, but environment "
      .. "dev uses physioflow%-dev", r.stderr)
    assert.is_nil(r.stderr:find("step started", 1, true))
    assert.is_nil(c:get("secret", "physioflow-db", { namespace = NS }))
  end)

  it("applies overlay=dev: the objects kustomize built, in physioflow-dev, blue serving", function()
    local r = run({ "examples/physioflow/setup.lua", "env=dev", "overlay=dev", "tag=v1.4.0", "to=010" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("overlay built objects=4 overlay=dev", r.stderr)
    assert.matches("%[manifests %(overlay dev%)%] step done", r.stderr)
    local built = build("dev")
    for key, want in pairs(built) do
      local kind, name = key:match("^([^/]+)/(.*)$")
      local got = assert(c:get(kind:lower(), name, { namespace = NS }), key)
      assert.are.same(want.metadata.labels, got.metadata.labels, key)
    end
    local blue = c:get("deployment", APP .. "-blue", { namespace = NS })
    assert.equal(2, blue.spec.replicas)
    assert.equal(2, blue.status.readyReplicas)
    assert.matches(":v1%.4%.0$", blue.spec.template.spec.containers[1].image)
    assert.are.same({ cpu = "50m", memory = "64Mi" }, blue.spec.template.spec.containers[1].resources.requests)
    assert.equal("10", c:get("configmap", "migration-version", { namespace = NS }).data.version)
    local pods = c:list("pods", { namespace = NS, labelSelector = "app=physioflow-api,version=blue,environment=dev" })
    assert.equal(2, #pods.items)
    -- and a release runs on it: the Service switches to green
    local d = run({ PB .. "/deploy.lua", "env=dev", "tag=v1.5.0", "--yes" })
    assert.equal(0, d.code, d.stderr)
    assert.equal("green", c:get("service", APP, { namespace = NS }).spec.selector.version)
    assert.equal("dev", c:get("deployment", APP .. "-green", { namespace = NS }).spec.template.metadata.labels.environment)
  end)
end)
