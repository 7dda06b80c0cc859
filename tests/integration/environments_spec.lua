-- Environments and targeting against the sandbox: the headline command
-- deploys to prod through prod's own kubeconfig context; a non-local
-- environment without a context, or with one the kubeconfig lacks, is
-- refused before anything is touched; the confirmation prompt and
-- --dry-run name the cluster (context, server, namespace, live colour and
-- version, target version).
--
-- prod is the shipped entry (context physioflow-prod, namespace
-- physioflow-prod) with the sandbox's database and a short monitor; the
-- context is added by a kubeconfig of this spec's own, listed in KUBECONFIG
-- before the sandbox's (so it also checks that the files are merged and
-- all named in a refusal). The runs are the commands as a user types them,
-- from a directory whose playbooks/ holds the shipped playbooks and that
-- environments file.
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")
local yaml = require("yaml")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local STATE = ROOT .. "/tests/.state/environments-spec"
local WORK = STATE .. "/work"          -- the runs' working directory
local KC = STATE .. "/kubeconfig-prod" -- adds the physioflow-prod context
local SANDBOX_KC = assert(os.getenv("KUBECONFIG"), "run inside the sandbox (KUBECONFIG)")
local KUBECONFIG = KC .. ":" .. SANDBOX_KC
local NS = "physioflow-prod"
local APP = "physioflow-api"
local DB = "bgrun_environments_spec"

local function sh(cmd) return proc.run({ "sh", "-c", cmd }) end

local function child_env()
  return { PGDATABASE = DB, KUBECONFIG = KUBECONFIG, BGRUN_JOURNAL_DIR = STATE .. "/journal" }
end

local function bgrun_run(args, opts)
  opts = opts or {}
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { env = opts.env or child_env(), cwd = opts.cwd or WORK, timeout = 240,
                          stdin = opts.stdin })
end

local write = H.write

local c      -- on the prod context, made in setup
local server -- the sandbox API server's URL

local function snapshot()
  local s = { lease = c:get("lease", "bgrun-deploy-lock") ~= nil }
  local svc = c:get("service", APP)
  s.selector = svc and svc.spec.selector.version
  s.svc_rv = svc and svc.metadata.resourceVersion
  for _, colour in ipairs({ "blue", "green" }) do
    local d = c:get("deployment", APP .. "-" .. colour)
    s[colour] = d and (d.spec.template.spec.containers[1].image .. " x" .. tostring(d.spec.replicas)
                       .. " rv" .. d.metadata.resourceVersion)
  end
  return s
end

local function prompt_line(tag, live)
  return ("Deploy %s to prod (context physioflow-prod, %s, namespace physioflow-prod; live: %s)?")
    :format(tag, server, live)
end

describe("environments and targeting", function()
  setup(function()
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. WORK .. '/playbooks"')
    -- the sandbox's cluster and user, under the context name prod expects
    local sb = yaml.load_file(SANDBOX_KC)[1]
    local sbctx
    for _, x in ipairs(sb.contexts) do if x.name == sb["current-context"] then sbctx = x.context end end
    write(KC, ([[
apiVersion: v1
kind: Config
contexts:
- name: physioflow-prod
  context:
    cluster: %s
    user: %s
    namespace: physioflow-prod
]]):format(sbctx.cluster, sbctx.user))
    assert(sh(('cp "%s"/playbooks/*.lua "%s/playbooks/"'):format(ROOT, WORK)).code == 0)
    write(WORK .. "/playbooks/environments.lua", ([[
local envs = dofile(%q)
-- the shipped prod, on the sandbox's database, with a short monitor
envs.prod.database = {}
envs.prod.replicas = 2
envs.prod.monitor = { window = 4, interval = 1 }
envs.prod.retire_delay = 0
envs.prod.rollout_timeout = 120
envs.prod.backups = %q
local function like_prod(changes)
  local e = {}
  for k, v in pairs(envs.prod) do e[k] = v end
  for k, v in pairs(changes) do e[k] = v end
  return e
end
envs.nocontext = like_prod { context = false }
envs.elsewhere = like_prod { context = "no-such-context" }
return envs
]]):format(ROOT .. "/playbooks/environments.lua", STATE .. "/backups"))

    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))

    c = k8s.client { kubeconfig = KUBECONFIG, context = "physioflow-prod", namespace = NS }
    server = c:info().server
    if c:get("namespace", NS) then
      H.delete_release(c, APP, { APP .. "-preview" })
    end
    -- the example app in physioflow-prod, blue serving v1.2.2
    local env = child_env()
    env.BGRUN_PATH = WORK .. "/playbooks"
    local r = bgrun_run({ ROOT .. "/examples/physioflow/setup.lua", "env=prod", "tag=v1.2.2", "to=010" },
                        { env = env, cwd = ROOT })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    if c then c:close() end
  end)

  it("refuses a non-local environment that names no context: exit 2, nothing changed", function()
    local before = snapshot()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=nocontext", "tag=v1.2.3", "--yes" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("environment nocontext names no kubeconfig context", r.stderr, 1, true)
    assert.matches("never acts on nocontext through the current context", r.stderr, 1, true)
    assert.matches("bad input (exit 2)", r.stderr, 1, true)
    assert.same(before, snapshot())
  end)

  it("refuses a context missing from the kubeconfig, naming the environment, the context and the files read", function()
    local before = snapshot()
    for _, extra in ipairs({ { "--yes" }, { "--dry-run" } }) do
      local args = { "playbooks/deploy.lua", "env=elsewhere", "tag=v1.2.3" }
      for _, a in ipairs(extra) do args[#args + 1] = a end
      local r = bgrun_run(args)
      assert.equal(2, r.code, r.stderr)
      assert.matches(('environment elsewhere: context "no-such-context" is not in the kubeconfig (files read: %s, %s)')
        :format(KC, SANDBOX_KC), r.stderr, 1, true)
      assert.matches("UnknownContext", r.stderr, 1, true)
    end
    assert.same(before, snapshot())
  end)

  it("the same refusals from promote, abort, switch-back and rollback-release", function()
    local before = snapshot()
    for _, pb in ipairs({ "promote", "abort", "switch-back", "rollback-release" }) do
      local r = bgrun_run({ "playbooks/" .. pb .. ".lua", "env=nocontext", "--yes" })
      assert.equal(2, r.code, pb .. ": " .. r.stderr)
      assert.matches("environment nocontext names no kubeconfig context", r.stderr, 1, true)
      r = bgrun_run({ "playbooks/" .. pb .. ".lua", "env=elsewhere", "--yes" })
      assert.equal(2, r.code, pb .. ": " .. r.stderr)
      assert.matches('context "no-such-context" is not in the kubeconfig', r.stderr, 1, true)
    end
    assert.same(before, snapshot())
  end)

  it("asks, naming context, server, namespace, live colour and version and the target; no terminal: exit 1, nothing changed", function()
    local before = snapshot()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=prod", "tag=v1.2.3" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("ConfirmationRequired: " .. prompt_line("v1.2.3", "blue v1.2.2")
      .. ": no terminal to confirm on; pass --yes", r.stderr, 1, true)
    assert.same(before, snapshot())
  end)

  it("--dry-run names the same and changes nothing", function()
    local before = snapshot()
    local r = bgrun_run({ "--dry-run", "playbooks/deploy.lua", "env=prod", "tag=v1.2.3" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry-run: would ask for confirmation", r.stderr, 1, true)
    assert.matches(prompt_line("v1.2.3", "blue v1.2.2"), r.stderr, 1, true)
    assert.same(before, snapshot())
  end)

  it("env=production is not an environment: exit 2, naming the known ones, nothing changed", function()
    local before = snapshot()
    -- the shipped playbooks and environments, from the repository
    local r = bgrun_run({ "playbooks/deploy.lua", "env=production", "tag=v1.2.3", "--yes" }, { cwd = ROOT })
    assert.equal(2, r.code, r.stderr)
    assert.matches("parameter 'env': 'production' is not one of dev, local, prod, staging", r.stderr, 1, true)
    assert.same(before, snapshot())
  end)

  it("the headline command, answered y on a terminal, deploys v1.2.3 to prod through the prod context", function()
    local other = k8s.client { namespace = "physioflow" }
    local local_svc = other:get("service", APP)
    local local_rv = local_svc and local_svc.metadata.resourceVersion
    local r = proc.run({ "script", "-qec", BGRUN .. " playbooks/deploy.lua env=prod tag=v1.2.3", "/dev/null" },
                       { env = child_env(), cwd = WORK, timeout = 240, stdin = "y\n" })
    assert.equal(0, r.code, r.stdout .. r.stderr)
    local out = r.stdout .. r.stderr
    assert.matches(prompt_line("v1.2.3", "blue v1.2.2") .. " [y/N]", out, 1, true)
    assert.matches("playbook succeeded", out, 1, true)
    local s = snapshot()
    assert.equal("green", s.selector)
    assert.matches(":v1%.2%.3 x2 ", s.green)
    assert.matches(":v1%.2%.2 x0 ", s.blue)
    local l = c:get("lease", "bgrun-deploy-lock")
    assert.equal("", l and l.spec.holderIdentity or "")  -- released
    -- the sandbox's own namespace was not touched
    local after = other:get("service", APP)
    assert.equal(local_rv, after and after.metadata.resourceVersion)
    other:close()
  end)

  it("a later prompt names what is live now, from --yes too", function()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=prod", "tag=v1.2.4", "--yes", "--dry-run" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("confirmed by --yes", r.stderr, 1, true)
    assert.matches(prompt_line("v1.2.4", "green v1.2.3"), r.stderr, 1, true)
  end)
end)
