-- docs/runbook.md cannot drift from the product: this spec extracts every
-- ```sh runbook block of it, in order, and runs each with bash (set -e,
-- pipefail) against the sandbox as ENV=local, after the runbook-env block
-- (the variables and the `k` function). Before a block, a scene prepares
-- the situation its section describes (a lock held by a gone machine, a
-- stuck rollout, a failing smoke test, a killed run…), reproducing the
-- symptom with the real playbooks; after it, a check asserts what the
-- block was meant to achieve (who serves, the schema version, the lock).
-- Blocks are keyed "SECTION#N" (section number of the heading, N-th block
-- in it); every block of the file runs, and a scene or check whose key no
-- longer exists fails the spec.
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local STATE = ROOT .. "/tests/.state/runbook"
local JOURNALS = STATE .. "/journal"
local DB = "bgrun_runbook_spec"
local NS = "physioflow"
local APP = "physioflow-api"

local function sh(cmd, timeout) return H.must(cmd, { cwd = ROOT, timeout = timeout }) end

local read, write = H.read_or_nil, H.write

---The runbook's blocks: {key=, section=, code=, env=} in order.
local function extract(path)
  local blocks, section, count = {}, "0", {}
  local inside, indent, info, lines
  for line in (assert(read(path), path) .. "\n"):gmatch("([^\n]*)\n") do
    if inside then
      local close = line:match("^(%s*)```%s*$")
      if close and #close == #indent then
        count[section] = (count[section] or 0) + (info == "runbook" and 1 or 0)
        blocks[#blocks + 1] = { section = section, env = info == "runbook-env",
                                key = section .. "#" .. (info == "runbook" and count[section] or 0),
                                code = table.concat(lines, "\n") }
        inside = false
      else
        lines[#lines + 1] = line:sub(1, #indent) == indent and line:sub(#indent + 1) or line
      end
    else
      local num = line:match("^#+%s+(%d[%d.]*)%s")
      if num then section = num:gsub("%.$", "") end
      local ind, inf = line:match("^(%s*)```sh%s+(runbook%S*)%s*$")
      if ind then inside, indent, info, lines = true, ind, inf, {} end
    end
  end
  assert(not inside, "unclosed block in " .. path)
  return blocks
end

local c = k8s.client { namespace = NS }

local function svc() return c:get("service", APP) end
local function live() return svc().spec.selector.version end
local S = H.release_state(c, APP)
local dep, holder = S.dep, S.lock_holder
local function schema_version() return H.schema_version(DB) end
local function live_tag() return dep(live()).image:match(":([^:]+)$") end
local behaviours = H.behaviours

local vars -- the variables every block gets (set up in setup())

local function run_bgrun(args, extra) return H.bgrun(args, { env = H.merge(vars, extra) }) end

-- Starts bgrun in the background; returns {pid=, rc=path of its exit code}.
local function background(args, name)
  local rc = STATE .. "/" .. name .. ".rc"
  os.remove(rc)
  local env = {}
  for k, v in pairs(vars) do env[#env + 1] = ("%s=%q"):format(k, v) end
  -- a shell waits for it and writes its exit code; bgrun is that shell's child
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = ("%q"):format(a) end
  local script = ("cd %q && { env %s %q %s >%q 2>&1; echo $? >%q; } & sleep 0.2; pgrep -P $! -x bgrun || true")
    :format(ROOT, table.concat(env, " "), BGRUN, table.concat(quoted, " "), STATE .. "/" .. name .. ".log", rc)
  local out = sh(script)
  local pid = tonumber(out:match("(%d+)"))
  return { rc = rc, pid = pid, log = STATE .. "/" .. name .. ".log" }
end

local function wait_for(what, fn, seconds)
  local deadline = bgrun.now() + (seconds or 60)
  while bgrun.now() < deadline do
    local ok, v = pcall(fn)
    if ok and v then return v end
    bgrun.sleep(0.3)
  end
  error("timed out waiting for " .. what)
end

local function exit_of(bg, seconds)
  return tonumber(wait_for("the background run to end", function() return read(bg.rc) end, seconds or 120))
end

-- What each section needs before its block runs: the situation it describes.
local scenes = {
  ["2#1"] = function() return { TAG = "v1.1.0" } end,
  ["3#1"] = function() return { TAG = "v1.2.0" } end,
  ["4#1"] = function() return { TAG = "v1.3.0" } end,
  ["4#4"] = function() return { TAG = "v1.3.1" } end,
  ["5.2#1"] = function()
    -- the last release must be a deploy-with-migration: roll the schema down, release one
    local r = run_bgrun({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert(r.code == 0, r.stderr)
    r = run_bgrun({ "playbooks/deploy-with-migration.lua", "env=local", "tag=v1.4.0" })
    assert(r.code == 0, r.stderr)
    assert(schema_version() == 11)
    return { TAG = "v1.4.0" }
  end,
  ["5.3#1"] = function()
    -- a nightly backup, then the damage
    local r = run_bgrun({ "playbooks/backup.lua", "env=local", "label=nightly" })
    assert(r.code == 0, r.stderr)
    local db <close> = postgres.connect { dbname = DB }
    db:exec("CREATE TABLE damage (x int); INSERT INTO damage VALUES (1)")
  end,
  ["6.1#1"] = function()
    -- a lock held by a machine that is gone
    local l = c:get("lease", "bgrun-deploy-lock")
    local now = os.date("!%Y-%m-%dT%H:%M:%S.000000Z")
    l.spec.holderIdentity = "ci@runner-7:4242"
    l.spec.acquireTime, l.spec.renewTime, l.spec.leaseDurationSeconds = now, now, 120
    l.metadata.annotations = l.metadata.annotations or {}
    l.metadata.annotations["bgrun.io/operation"] = "deploy v1.2.2"
    c:replace(l)
    local r = run_bgrun({ "playbooks/deploy.lua", "env=local", "tag=v1.5.0" })
    assert(r.code == 1 and r.stderr:find("LockHeld: the deploy lock bgrun-deploy-lock is held by ci@runner-7:4242",
      1, true), r.stderr)
    return { TAG = "v1.5.0" }
  end,
  ["6.2#1"] = function(ctx)
    behaviours({ ["v9.0.0"] = { never_ready = true } })
    ctx.stuck = background({ "playbooks/deploy.lua", "env=local", "tag=v9.0.0" }, "stuck")
    local idle = live() == "blue" and "green" or "blue"
    ctx.idle = idle
    wait_for("the stuck rollout", function()
      local pods = c:list("pods", { labelSelector = "app=physioflow-api,version=" .. idle })
      return dep(idle).image:match(":v9%.0%.0$") and #pods.items > 0
    end)
    return { TAG = "v9.0.0" }
  end,
  ["6.3#1"] = function()
    behaviours({ ["v9.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    local r = run_bgrun({ "playbooks/deploy.lua", "env=local", "tag=v9.1.0" })
    assert(r.code == 1 and r.stderr:find("SmokeTestFailed", 1, true), r.stderr)
    return { TAG = "v9.1.0" }
  end,
  ["6.4#1"] = function()
    behaviours({ ["v9.2.0"] = { error_logs_per_s = 4 } })
    local r = run_bgrun({ "playbooks/deploy.lua", "env=local", "tag=v9.2.0" })
    assert(r.code == 1 and r.stderr:find("[monitor", 1, true), r.stderr)
    return { TAG = "v9.2.0" }
  end,
  ["6.5#1"] = function(ctx)
    local r = run_bgrun({ "playbooks/backup.lua", "env=local", "label=before-damage" })
    assert(r.code == 0, r.stderr)
    local path = r.stdout:match("(%S+%.tar%.gz)%s*$")
    ctx.backup = path
    -- a partial download: half the file
    sh(("head -c $(( $(stat -c %%s %q) / 2 )) %q > %q.part && mv %q.part %q"):format(path, path, path, path, path))
    r = run_bgrun({ "playbooks/rollback.lua", "env=local", "backup=" .. path })
    assert(r.code == 2, r.stderr)
    local db <close> = postgres.connect { dbname = DB }
    db:exec("CREATE TABLE damage2 (x int)")
  end,
  ["6.6#1"] = function(ctx)
    behaviours({ ["v1.6.0"] = { ready_after_s = 1 } })
    ctx.before = { colour = live(), tag = live_tag() }
    local bg = background({ "playbooks/deploy.lua", "env=local", "tag=v1.6.0" }, "killed")
    -- killed once the idle colour runs the new image: something to undo
    local idle = ctx.before.colour == "blue" and "green" or "blue"
    wait_for("the new colour", function()
      return dep(idle).image:match(":v1%.6%.0$") and dep(idle).replicas > 0
    end)
    sh("kill -KILL " .. bg.pid)
    assert.equal(137, exit_of(bg))
    assert.is_not.equal("", holder())
    ctx.idle = idle
  end,
  ["7#2"] = function(ctx)
    ctx.before = { colour = live(), tag = live_tag() }
  end,
}

-- What each block must have achieved.
local checks = {
  ["1#4"] = function() assert.equal("", holder()) end,
  ["1#5"] = function() assert.equal("blue", live()); assert.equal("v1.0.0", live_tag()) end,
  ["2#1"] = function() assert.equal("green", live()); assert.equal("v1.1.0", live_tag()) end,
  ["3#1"] = function()
    assert.equal("blue", live()); assert.equal("v1.2.0", live_tag()); assert.equal(11, schema_version())
  end,
  ["4#1"] = function()
    assert.equal("blue", live())
    assert.is_table(c:get("service", APP .. "-preview"))
  end,
  ["4#3"] = function()
    assert.equal("green", live()); assert.equal("v1.3.0", live_tag())
    assert.is_nil(c:get("service", APP .. "-preview"))
  end,
  ["4#4"] = function()
    assert.equal("green", live()); assert.equal("v1.3.0", live_tag())
    assert.is_nil(c:get("service", APP .. "-preview"))
    assert.equal(0, dep("blue").replicas)
  end,
  ["5.1#1"] = function() assert.equal("blue", live()); assert.equal("v1.2.0", live_tag()) end,
  ["5.2#1"] = function(ctx)
    assert.equal(10, schema_version())
    assert.equal("10", c:get("configmap", "migration-version").data.version)
  end,
  ["5.3#1"] = function()
    local db <close> = postgres.connect { dbname = DB }
    assert.equal(0, #db:query("SELECT 1 FROM pg_tables WHERE tablename = 'damage'"))
  end,
  ["6.2#1"] = function(ctx, r)
    -- the stuck colour's pods, not ready
    assert.matches("physioflow%-api%-" .. ctx.idle .. "%-%S+%s+0/1%s", r.stdout)
  end,
  ["6.1#2"] = function()
    assert.equal("v1.5.0", live_tag())
    assert.equal("", holder())
  end,
  ["6.2#2"] = function(ctx)
    assert.equal(130, exit_of(ctx.stuck))
    assert.equal("v1.5.0", live_tag())
    assert.equal(0, dep(ctx.idle).replicas)
    behaviours({})
  end,
  ["6.3#1"] = function(_, r)
    assert.matches("clinical protocols[^\n]*FAIL", r.stdout) -- the table shows the failing check
    assert.equal("v1.5.0", live_tag())
    assert.is_nil(c:get("service", APP .. "-preview"))
  end,
  ["6.4#1"] = function(_, r)
    assert.matches("ERROR", r.stdout) -- the preview's logs show the errors the monitor counted
    assert.equal("v1.5.0", live_tag())
    assert.is_nil(c:get("service", APP .. "-preview"))
  end,
  ["6.5#1"] = function()
    local db <close> = postgres.connect { dbname = DB }
    assert.equal(0, #db:query("SELECT 1 FROM pg_tables WHERE tablename = 'damage2'"))
  end,
  ["6.6#1"] = function(ctx)
    assert.equal(ctx.before.colour, live())
    assert.equal(ctx.before.tag, live_tag())
    assert.equal("", holder())
    assert.equal(0, dep(ctx.idle).replicas)
  end,
  ["7#2"] = function(ctx)
    assert.is_not.equal(ctx.before.colour, live())
  end,
  ["7#3"] = function()
    assert.truthy(read(STATE .. "/incident-events.txt"))
    assert.truthy(read(STATE .. "/incident-pods.log"):find("GET /health", 1, true))
  end,
}

describe("docs/runbook.md, run against the sandbox", function()
  local blocks = extract(ROOT .. "/docs/runbook.md")

  setup(function()
    assert(os.getenv("KUBECONFIG") and os.getenv("SANDBOX_BEHAVIORS"), "the sandbox is not running")
    sh(('rm -rf "%s" "%s/backups/local"; mkdir -p "%s/bin" "%s"'):format(STATE, ROOT, STATE, JOURNALS))
    sh(('ln -s %q "%s/bin/bgrun"'):format(BGRUN, STATE))
    behaviours({})
    H.fresh_release(c, DB, APP, { APP .. "-preview" })
    vars = {
      ENV = "local", NAMESPACE = NS, CONTEXT = c:info().context, BUCKET = os.getenv("SANDBOX_S3_BUCKET"),
      TAG = "v1.1.0", BGRUN_PATH = "playbooks", BGRUN_JOURNAL_DIR = JOURNALS, PGDATABASE = DB,
      PATH = STATE .. "/bin:" .. os.getenv("PATH"), TMPDIR = STATE,
    }
    local r = run_bgrun({ "-q", "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
    local s = svc()
    vars.API_URL = ("http://%s:%d"):format(s.spec.clusterIP, s.spec.ports[1].port)
  end)

  teardown(function()
    behaviours({})
    proc.run({ "rm", "-rf", ROOT .. "/backups/local" })
  end)

  it("has the blocks this spec prepares and checks", function()
    local keys = {}
    for _, b in ipairs(blocks) do keys[b.key] = true end
    for k in pairs(scenes) do assert.is_true(keys[k] or false, "no block " .. k .. " in the runbook for its scene") end
    for k in pairs(checks) do assert.is_true(keys[k] or false, "no block " .. k .. " in the runbook for its check") end
    assert.equal(1, #(function() local e = {} for _, b in ipairs(blocks) do if b.env then e[#e + 1] = b end end return e end)())
    assert.is_true(#blocks >= 25, tostring(#blocks))
  end)

  local env_code
  for _, b in ipairs(blocks) do
    if b.env then env_code = b.code end
  end
  local ctx = {}
  for _, b in ipairs(blocks) do
    if not b.env then
      local first = b.code:match("^%s*([^\n]*)")
      it(("%s: %s"):format(b.key, first), function()
        local extra = scenes[b.key] and scenes[b.key](ctx) or {}
        local env = {}
        for k, v in pairs(vars) do env[k] = v end
        for k, v in pairs(extra) do env[k] = v; vars[k] = v end
        local script = STATE .. "/block.sh"
        write(script, "set -eo pipefail\n" .. env_code .. "\n" .. b.code .. "\n")
        local r = proc.run({ "bash", script }, { env = env, cwd = ROOT, timeout = 400 })
        assert(r.code == 0, ("block %s exited %d\n%s\n--- stdout\n%s\n--- stderr\n%s"):format(b.key, r.code, b.code,
          r.stdout, r.stderr))
        if checks[b.key] then checks[b.key](ctx, r) end
      end)
    end
  end
end)
