-- The CI examples, run for real against the sandbox: the steps of
-- examples/ci/github/deploy.yml and the deploy jobs of
-- examples/ci/gitlab/.gitlab-ci.yml, parsed with bgrun's yaml module and
-- run the way the two CI systems run them (GitHub: each `run:` in
-- `bash --noprofile --norc -eo pipefail`, the job's and step's `env:`, the
-- ${{ }} expressions filled in, $GITHUB_ENV carried to later steps; GitLab:
-- `extends` resolved, before_script and script in one `bash -eo pipefail`,
-- after_script in another), in a clean environment holding only what the
-- CI system and the project's settings would give.
--
-- The stand-ins: GitHub's OIDC token endpoint is a small server of this
-- spec that hands out the sandbox's web identity token, only for the
-- `sts.amazonaws.com` audience and the request token; GitLab's `id_tokens`
-- variable holds that token too; the sandbox's fake STS exchanges it for
-- keys the S3 store accepts (AWS_ENDPOINT_URL_STS, AWS_ENDPOINT_URL_S3 point
-- at the sandbox, as an endpoint override would). The kubeconfig secret is
-- the sandbox's cluster under the context environments.lua names for
-- staging (physioflow-staging), its current context left on the sandbox's
-- own. The checkout is a folder whose playbooks/ holds the shipped
-- playbooks and an environments.lua that puts `staging` on the sandbox's
-- database, bucket and a namespace of this spec (smoke tests through the
-- API server's pod proxy, the non-local default). The "Build and install
-- bgrun" step is not run: bgrun is the binary under test.
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")
local s3 = require("s3")
local yaml = require("yaml")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local SANDBOX_KC = assert(os.getenv("KUBECONFIG"), "run inside the sandbox (KUBECONFIG)")
local BUCKET = assert(os.getenv("SANDBOX_S3_BUCKET"))
local STS = assert(os.getenv("SANDBOX_STS_URL"))
local FAKE = assert(os.getenv("SANDBOX_AWS_FAKE_URL"))
local WEB_TOKEN = assert(io.open(assert(os.getenv("SANDBOX_WEB_IDENTITY_TOKEN_FILE")))):read("l")
local GITHUB_WF = ROOT .. "/examples/ci/github/deploy.yml"
local GITLAB_CI = ROOT .. "/examples/ci/gitlab/.gitlab-ci.yml"
local APP = "physioflow-api"
local DB = "bgrun_ci_examples_spec"
local ROLE = "arn:aws:iam::000000000000:role/physioflow-deploy"
local REQUEST_TOKEN = "github-request-token-for-the-spec"
dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/sweep/sweep.lua").register("ci spec OIDC request token", REQUEST_TOKEN)

local function sh(cmd) return (H.must(cmd, { timeout = 60 }):gsub("%s+$", "")) end

local write, read = H.write, H.read_or_nil

local function b64(text)
  local r = proc.run({ "base64", "-w0" }, { stdin = text })
  assert(r.code == 0, r.stderr)
  return r.stdout
end

-- the error messages of a --log-format json run, one a line
local function json_errors(stderr)
  local t = {}
  for line in stderr:gmatch("[^\n]+") do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" and ev.level == "error" then
      t[#t + 1] = ev.message .. ": " .. tostring(ev.fields and ev.fields.error)
    end
  end
  return table.concat(t, "\n")
end

local function mode(path) return sh(("stat -c %%a %q"):format(path)) end
local function exists(path) return proc.run({ "test", "-e", path }).code == 0 end

local TMP = sh("mktemp -d -t bgrun-ci-examples-XXXXXX")
local CHECKOUT = TMP .. "/checkout"
local BIN = TMP .. "/bin"                 -- bgrun on the runner's PATH
local PID = sh("echo $PPID")
local NS = "bgrun-ci-" .. PID
local JOB_ID = "9" .. PID                  -- GitLab's CI_JOB_ID

-- What a runner's environment holds besides the CI system's variables:
-- PATH with bgrun, HOME, and the sandbox's endpoints and database address.
local function base_env()
  local e = {
    PATH = BIN .. ":/usr/local/bin:/usr/bin:/bin", HOME = TMP .. "/home", LANG = "C.UTF-8",
    PGHOST = os.getenv("PGHOST"), PGPORT = os.getenv("PGPORT"), PGUSER = os.getenv("PGUSER"),
    AWS_ENDPOINT_URL_S3 = os.getenv("AWS_ENDPOINT_URL_S3"), AWS_ENDPOINT_URL_STS = STS,
    AWS_EC2_METADATA_DISABLED = "true",
  }
  for _, k in ipairs({ "ASAN_OPTIONS", "UBSAN_OPTIONS", "LSAN_OPTIONS" }) do e[k] = os.getenv(k) end
  return e
end

local function run_script(script, env, cwd)
  local file = TMP .. "/script.sh"
  write(file, script)
  local argv = { "env", "-i" }
  for k, v in pairs(env) do argv[#argv + 1] = k .. "=" .. v end
  for _, a in ipairs({ "bash", "--noprofile", "--norc", "-eo", "pipefail", file }) do argv[#argv + 1] = a end
  return proc.run(argv, { cwd = cwd, timeout = 300 })
end

-- the sandbox's cluster and user, under the context environments.lua names
-- for staging; `without_context` leaves the sandbox's kubeconfig as it is
local function kubeconfig(without_context)
  local kc = yaml.load_file(SANDBOX_KC)[1]
  if without_context then return read(SANDBOX_KC) end
  local sb = kc.contexts[1].context
  kc.contexts[#kc.contexts + 1] = { name = "physioflow-staging",
    context = { cluster = sb.cluster, user = sb.user, namespace = NS } }
  return json.encode(kc)  -- JSON is YAML
end

local function sts_count()
  local r = proc.run({ "curl", "-s", "--max-time", "5", FAKE .. "/counts" })
  return json.decode(r.stdout)["sts:AssumeRoleWithWebIdentity"] or 0
end

local c = k8s.client { namespace = NS }
local bucket = s3.bucket { bucket = BUCKET }

local function live()
  local svc = c:get("service", APP)
  local colour = svc.spec.selector.version
  local d = c:get("deployment", APP .. "-" .. colour)
  return colour, d.spec.template.spec.containers[1].image:match(":([^:]+)$"), d.spec.replicas
end

local function schema_version() return H.schema_version(DB) end

local function keys(prefix)
  local t = {}
  for _, o in ipairs(bucket:list(prefix)) do t[o.key] = true end
  return t
end

local oidc_pid, oidc_url
local keys_at_start  -- the bucket's staging/ keys before the spec

describe("CI examples", function()
  setup(function()
    sh(("mkdir -p %q/playbooks %q %q/home"):format(CHECKOUT, BIN, TMP))
    sh(("ln -s %q %q/bgrun"):format(BGRUN, BIN))
    sh(("cp %q/playbooks/*.lua %q/playbooks/ && ln -s %q/examples %q/examples"):format(ROOT, CHECKOUT, ROOT, CHECKOUT))
    write(CHECKOUT .. "/playbooks/environments.lua", ([[
local envs = dofile(%q)
-- the shipped staging (its context, the pod proxy for smoke tests) on the
-- sandbox's database, bucket and a namespace of the spec, with a short monitor
envs.staging.namespace = %q
envs.staging.database = { dbname = %q }
envs.staging.bucket = %q
envs.staging.monitor = { window = 3, interval = 1 }
envs.staging.retire_delay = 0
envs.staging.rollout_timeout = 120
return envs
]]):format(ROOT .. "/playbooks/environments.lua", NS, DB, BUCKET))

    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    keys_at_start = keys("staging/")

    -- the example app in the spec's namespace, blue serving v1.2.2, schema at 010
    write(TMP .. "/setup-kubeconfig", kubeconfig())
    local r = proc.run({ BGRUN, ROOT .. "/examples/physioflow/setup.lua", "env=staging", "tag=v1.2.2", "to=010" },
      { cwd = CHECKOUT, timeout = 240,
        env = { KUBECONFIG = TMP .. "/setup-kubeconfig", PGDATABASE = DB, BGRUN_PATH = CHECKOUT .. "/playbooks",
                BGRUN_JOURNAL_DIR = TMP .. "/setup-journal" } })
    assert(r.code == 0, r.stderr)

    -- GitHub's OIDC token endpoint: the token for the STS audience only,
    -- and only with the job's request token
    write(TMP .. "/oidc.py", [[
import http.server, json, sys, urllib.parse
token, request_token, portfile = open(sys.argv[1]).read().strip(), sys.argv[2], sys.argv[3]
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        ok = (self.headers.get("Authorization") == "bearer " + request_token
              and q.get("audience") == ["sts.amazonaws.com"] and q.get("api-version") == ["2.0"])
        body = json.dumps({"value": token} if ok else {"message": "refused"}).encode()
        self.send_response(200 if ok else 403)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
s = http.server.HTTPServer(("127.0.0.1", 0), H)
open(portfile + ".tmp", "w").write(str(s.server_address[1]))
import os; os.rename(portfile + ".tmp", portfile)
s.serve_forever()
]])
    oidc_pid = sh(("python3 %q %q %q %q >/dev/null 2>&1 & echo $!"):format(TMP .. "/oidc.py",
      os.getenv("SANDBOX_WEB_IDENTITY_TOKEN_FILE"), REQUEST_TOKEN, TMP .. "/oidc.port"))
    sh(("for i in $(seq 100); do [ -s %q ] && exit 0; sleep 0.05; done; exit 1"):format(TMP .. "/oidc.port"))
    oidc_url = "http://127.0.0.1:" .. read(TMP .. "/oidc.port") .. "/token?api-version=2.0"
  end)

  teardown(function()
    if oidc_pid then proc.run({ "kill", oidc_pid }) end
    pcall(c.delete, c, "namespace", NS)
    if keys_at_start then
      for k in pairs(keys("staging/")) do
        if not keys_at_start[k] then bucket:delete(k) end
      end
    end
    c:close()
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    proc.run({ "rm", "-rf", TMP })
  end)

  describe("GitHub Actions", function()
    local wf = yaml.load_file(GITHUB_WF)[1]
    local job = wf.jobs.deploy

    -- ${{ }} as GitHub fills them in, for the expressions the workflow uses;
    -- anything else fails the spec, so a new expression gets a stand-in here
    local function expand(s, ctx)
      return (s:gsub("%${{%s*(.-)%s*}}", function(expr)
        local v = ctx[expr]
        assert(v ~= nil, "no stand-in for the expression ${{ " .. expr .. " }}")
        return tostring(v)
      end))
    end

    local function context(inputs, runner_temp, kc)
      local ctx = { ["github.run_id"] = "4242", ["runner.temp"] = runner_temp,
                    ["vars.AWS_ROLE_ARN"] = ROLE, ["vars.AWS_REGION"] = os.getenv("AWS_REGION"),
                    ["secrets.PGPASSWORD"] = os.getenv("PGPASSWORD"), ["secrets.KUBECONFIG"] = kc }
      for k, v in pairs(inputs) do ctx["inputs." .. k] = v end
      return ctx
    end

    local function step(name)
      for _, s in ipairs(job.steps) do if s.name == name then return s end end
      error("no step " .. name)
    end

    -- Runs the job's run: steps (but the build) as the runner does; returns
    -- the runner folder and the results by step name. `upto` stops before
    -- the clean-up step, to look at the files first.
    local function run_job(inputs, kc, upto)
      local runner = sh("mktemp -d " .. TMP .. "/runner-XXXXXX")
      sh(("mkdir -p %q/temp && touch %q/env %q/summary %q/output"):format(runner, runner, runner, runner))
      local ctx = context(inputs, runner .. "/temp", kc)
      local results = {}
      for _, s in ipairs(job.steps) do
        if upto and s.name == upto then break end
        if s.run and s.name ~= "Build and install bgrun" then
          local env = base_env()
          env.RUNNER_TEMP = runner .. "/temp"
          env.GITHUB_ENV, env.GITHUB_STEP_SUMMARY, env.GITHUB_OUTPUT =
            runner .. "/env", runner .. "/summary", runner .. "/output"
          env.GITHUB_WORKSPACE = CHECKOUT
          env.ACTIONS_ID_TOKEN_REQUEST_URL, env.ACTIONS_ID_TOKEN_REQUEST_TOKEN = oidc_url, REQUEST_TOKEN
          for k, v in pairs(job.env or {}) do env[k] = expand(tostring(v), ctx) end
          for k, v in pairs(s.env or {}) do env[k] = expand(tostring(v), ctx) end
          for line in (read(runner .. "/env") or ""):gmatch("[^\n]+") do
            local k, v = line:match("^([%w_]+)=(.*)$")
            if k then env[k] = v end
          end
          local r = run_script(expand(s.run, ctx), env, CHECKOUT)
          results[s.name] = r
          if r.code ~= 0 and not (s["if"] or ""):match("always") then
            results.failed = s.name
            break
          end
        end
      end
      return runner, results
    end

    it("asks for the OIDC token and offers dev, staging and prod, each naming its kubeconfig context", function()
      assert.equal("write", wf.permissions["id-token"])
      assert.equal("read", wf.permissions.contents)
      assert.is_false(wf.concurrency["cancel-in-progress"])
      local shipped = dofile(ROOT .. "/playbooks/environments.lua")
      local options = wf.on.workflow_dispatch.inputs.env.options
      assert.same({ "dev", "staging", "prod" }, options)
      for _, e in ipairs(options) do
        assert.is_string(shipped[e] and shipped[e].context, e .. " names no context")
      end
      assert.equal("${{ vars.AWS_ROLE_ARN }}", job.env.AWS_ROLE_ARN)
      assert.equal("${{ secrets.KUBECONFIG }}", step("Kubeconfig from the environment's secret").env.KUBECONFIG_DATA)
      -- the build step installs the image's build packages, and they exist
      assert.matches("deploy/image/build-packages.txt", step("Build and install bgrun").run, 1, true)
      assert.truthy(read(ROOT .. "/deploy/image/build-packages.txt"))
    end)

    it("deploys staging with deploy-with-migration: S3 keys by web identity, the kubeconfig's context, exit 0", function()
      local sts_before, keys_before = sts_count(), keys("staging/")
      local runner, res = run_job({ env = "staging", tag = "v1.2.3", migrate = true }, kubeconfig(),
                                  "Remove the credential files")
      assert.is_nil(res.failed, res.failed and (res[res.failed].stdout .. res[res.failed].stderr))
      local out = res.Deploy.stdout .. res.Deploy.stderr

      -- the credential files: 0600, where the variables say
      local envfile = read(runner .. "/env")
      local token_file = runner .. "/temp/aws-web-identity-token"
      assert.matches("AWS_WEB_IDENTITY_TOKEN_FILE=" .. token_file, envfile, 1, true)
      assert.matches("KUBECONFIG=" .. runner .. "/temp/kubeconfig", envfile, 1, true)
      assert.equal(WEB_TOKEN, (read(token_file):gsub("%s+$", "")))
      assert.equal("600", mode(token_file))
      assert.equal("600", mode(runner .. "/temp/kubeconfig"))

      -- the release: migrated, switched, backed up through web identity
      local colour, tag, replicas = live()
      assert.equal("green", colour)
      assert.equal("v1.2.3", tag)
      assert.equal(2, replicas)
      assert.equal(11, schema_version())
      assert.equal(sts_before + 1, sts_count())
      local new = {}
      for k in pairs(keys("staging/")) do if not keys_before[k] then new[#new + 1] = k end end
      assert.equal(1, #new, "one new backup in the bucket")
      assert.matches("^staging/.*%-staging%-.*pinned%.tar%.gz$", new[1])

      -- JSON logs, a report, the journal kept for the artifact, the summary, no secret
      local n = 0
      for line in res.Deploy.stderr:gmatch("[^\n]+") do
        if line:sub(1, 1) == "{" then n = n + 1; assert.is_table(json.decode(line)) end
      end
      assert.is_true(n > 10, "JSON log lines")
      assert.equal(0, json.decode(read(runner .. "/temp/bgrun-report.json")).exit)
      assert.is_true(exists(runner .. "/temp/bgrun-journal"))
      assert.equal("Deployed v1.2.3 to staging.\n", read(runner .. "/summary"))
      assert.is_nil(out:find("::error", 1, true))
      assert.is_nil(out:find(WEB_TOKEN, 1, true))
      assert.is_nil(out:find(os.getenv("PGPASSWORD"), 1, true))

      -- the clean-up step removes both credential files
      local env = base_env()
      env.RUNNER_TEMP = runner .. "/temp"
      local r = run_script(step("Remove the credential files").run, env, CHECKOUT)
      assert.equal(0, r.code, r.stderr)
      assert.is_false(exists(token_file))
      assert.is_false(exists(runner .. "/temp/kubeconfig"))
    end)

    it("a kubeconfig secret without staging's context: exit 2 annotated, naming the context and file, nothing changed", function()
      local before = { live() }
      local sts_before = sts_count()
      local runner, res = run_job({ env = "staging", tag = "v1.2.9", migrate = false }, kubeconfig(true))
      assert.equal("Deploy", res.failed, res.Deploy and (res.Deploy.stdout .. res.Deploy.stderr))
      local r = res.Deploy
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches("::error title=bad input (exit 2)::nothing was changed", r.stdout, 1, true)
      assert.matches(('environment staging: context "physioflow-staging" is not in the kubeconfig (files read: %s)')
        :format(runner .. "/temp/kubeconfig"), json_errors(r.stderr), 1, true)
      assert.same(before, { live() })
      assert.equal(sts_before, sts_count())
      assert.equal("", read(runner .. "/summary"))
    end)

    it("a wrong OIDC audience or request token is refused before bgrun runs", function()
      local s = step("S3 credentials by OIDC web identity")
      local env = base_env()
      local runner = sh("mktemp -d " .. TMP .. "/runner-XXXXXX")
      env.RUNNER_TEMP, env.GITHUB_ENV = runner, runner .. "/env"
      env.ACTIONS_ID_TOKEN_REQUEST_URL, env.ACTIONS_ID_TOKEN_REQUEST_TOKEN = oidc_url, "not-the-request-token"
      local r = run_script(s.run, env, CHECKOUT)
      assert.is_not.equal(0, r.code)
      assert.is_nil(read(runner .. "/env"))
    end)
  end)

  describe("GitLab CI", function()
    local ci = yaml.load_file(GITLAB_CI)[1]

    -- a job with its `extends` chain merged as GitLab does: mappings
    -- deeply, everything else replaced by the child
    local function merge(base, over)
      local t = {}
      for k, v in pairs(base) do t[k] = v end
      for k, v in pairs(over) do
        if type(v) == "table" and type(t[k]) == "table" and #v == 0 and next(v) ~= nil and #t[k] == 0 then
          t[k] = merge(t[k], v)
        else
          t[k] = v
        end
      end
      return t
    end
    local function resolve(name)
      local j = assert(ci[name], "no job " .. name)
      if not j.extends then return j end
      local parent = resolve(type(j.extends) == "table" and j.extends[1] or j.extends)
      local own = {}
      for k, v in pairs(j) do if k ~= "extends" then own[k] = v end end
      return merge(parent, own)
    end

    local function job_env(job, vars)
      local env = base_env()
      for k, v in pairs(ci.variables or {}) do env[k] = tostring(v) end
      for k, v in pairs(job.variables or {}) do env[k] = tostring(v) end
      env.CI_PROJECT_DIR, env.CI_JOB_ID = CHECKOUT, JOB_ID
      env.AWS_ID_TOKEN = WEB_TOKEN  -- what `id_tokens` gives the job
      env.AWS_ROLE_ARN, env.AWS_REGION, env.PGPASSWORD = ROLE, os.getenv("AWS_REGION"), os.getenv("PGPASSWORD")
      for k, v in pairs(vars) do env[k] = v end
      return env
    end

    local function lines(t) return table.concat(t, "\n") .. "\n" end

    -- before_script + script in one shell, after_script in another
    local function run_job(name, vars)
      local job = resolve(name)
      local env = job_env(job, vars)
      local r = run_script(lines(job.before_script) .. lines(job.script), env, CHECKOUT)
      local after = run_script(lines(job.after_script), env, CHECKOUT)
      return r, after, job
    end

    it("parses; the deploy jobs take an ID token for STS, run in the image, and prod waits for a person", function()
      local staging, prod = resolve("deploy-staging"), resolve("deploy-prod")
      for _, j in ipairs({ staging, prod }) do
        assert.equal("sts.amazonaws.com", j.id_tokens.AWS_ID_TOKEN.aud)
        assert.equal("$BGRUN_IMAGE", j.image.name)
        assert.same({ "" }, j.image.entrypoint)
        assert.is_false(j.interruptible)
        assert.equal(j.variables.BGRUN_ENV, j.environment.name)
        assert.equal("deploy-" .. j.variables.BGRUN_ENV, j.resource_group)
        assert.same({ "bgrun-report.json", "bgrun-journal/" }, j.artifacts.paths)
        assert.equal("always", j.artifacts.when)
      end
      assert.equal("staging", staging.variables.BGRUN_ENV)
      assert.equal("prod", prod.variables.BGRUN_ENV)
      assert.equal("manual", prod.rules[1].when)
      assert.same({ "deploy-staging" }, prod.needs)
      local shipped = dofile(ROOT .. "/playbooks/environments.lua")
      assert.is_string(shipped.staging.context)
      assert.is_string(shipped.prod.context)
    end)

    it("its scripts pass shellcheck as bash", function()
      local job = resolve("deploy-staging")
      local script = "#!/bin/bash\n" .. lines(job.before_script) .. lines(job.script)
      local r = proc.run({ "shellcheck", "-s", "bash", "-" }, { stdin = script })
      assert.equal(0, r.code, r.stdout .. r.stderr)
    end)

    it("every bgrun command in it, and in the GitHub workflow, is a real playbook with real options", function()
      local scripts = {}
      for _, name in ipairs({ "deploy-staging", "deploy-prod" }) do
        for _, block in ipairs(resolve(name).script) do scripts[#scripts + 1] = block end
      end
      for _, s in ipairs(yaml.load_file(GITHUB_WF)[1].jobs.deploy.steps) do scripts[#scripts + 1] = s.run end
      local help = proc.run({ BGRUN, "--help" }).stdout
      local n = 0
      for _, block in ipairs(scripts) do
        for cmd in block:gmatch("bgrun (playbooks/[^\n]+)") do
          n = n + 1
          local playbook = cmd:match("^(playbooks/[%w_-]+%.lua)")
          assert.is_truthy(read(ROOT .. "/" .. playbook), playbook)
          assert.matches(" %-%-yes", cmd)
          assert.matches(" %-%-log%-format json", cmd)
          for opt in cmd:gmatch("%s(%-%-[%w-]+)") do
            assert.is_truthy(help:find("  " .. opt .. " ", 1, true), opt .. " is not in bgrun --help")
          end
          -- its parameters are the playbook's
          local described = proc.run({ BGRUN, "--describe", ROOT .. "/" .. playbook }).stdout
          for param in cmd:gmatch("%s([%w_-]+)=") do
            assert.matches("\n%s*" .. param:gsub("%p", "%%%0") .. "%s", described, 1, false, param)
          end
        end
      end
      assert.is_true(n >= 3, "bgrun commands found: " .. n)
    end)

    it("deploy-staging deploys the tag: S3 keys by web identity, the kubeconfig from the secret, exit 0", function()
      local before_colour = live()
      local sts_before = sts_count()
      local r, after = run_job("deploy-staging", {
        CI_COMMIT_TAG = "v1.2.4", KUBECONFIG_B64 = b64(kubeconfig()) })
      assert.equal(0, r.code, r.stdout .. r.stderr)
      assert.matches("deployed v1.2.4 to staging", r.stdout, 1, true)
      local colour, tag = live()
      assert.is_not.equal(before_colour, colour)
      assert.equal("v1.2.4", tag)
      assert.equal(0, json.decode(read(CHECKOUT .. "/bgrun-report.json")).exit)
      assert.is_true(exists(CHECKOUT .. "/bgrun-journal"))
      assert.is_nil((r.stdout .. r.stderr):find(WEB_TOKEN, 1, true))
      -- deploy.lua takes no backup: no STS call, no key needed
      assert.equal(sts_before, sts_count())
      -- after_script removed the job's credential files
      assert.equal(0, after.code, after.stderr)
      assert.is_false(exists("/tmp/bgrun-secrets-" .. JOB_ID))
    end)

    it("deploy-staging with a kubeconfig lacking the context: exit 2, naming it, nothing changed", function()
      local before = { live() }
      local r = run_job("deploy-staging", {
        CI_COMMIT_TAG = "v1.2.5", KUBECONFIG_B64 = b64(kubeconfig(true)) })
      assert.equal(2, r.code, r.stdout .. r.stderr)
      assert.matches("bad input (exit 2), nothing changed", r.stdout, 1, true)
      assert.matches('environment staging: context "physioflow-staging" is not in the kubeconfig (files read: /tmp/bgrun-secrets-'
        .. JOB_ID .. '/kubeconfig)', json_errors(r.stderr), 1, true)
      assert.same(before, { live() })
    end)
  end)
end)
