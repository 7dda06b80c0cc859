-- The release flows end to end against the sandbox: deploy and
-- deploy-with-migration run as the binary, and each test checks the exit
-- code, the message and what was left behind (live colour, replicas,
-- images, schema version, ConfigMap, backups, the lock).
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_deploy_spec"
local JOURNALS = ROOT .. "/tests/.state/journal-deploy-spec"

local bgrun_run = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }).run

local behaviours = H.behaviours

local c = k8s.client { namespace = NS }

local function live_colour()
  return c:get("service", APP).spec.selector.version
end

local function dep(colour)
  local d = c:get("deployment", APP .. "-" .. colour)
  return { image = d.spec.template.spec.containers[1].image, replicas = d.spec.replicas,
           rv = d.metadata.resourceVersion }
end

local S = H.release_state(c, APP)
local lock_holder = S.lock_holder
local function schema_version() return H.schema_version(DB) end

local function files_in(dir)
  local r = proc.run({ "sh", "-c", "ls -1 " .. dir .. " 2>/dev/null" })
  local t = {}
  for l in r.stdout:gmatch("[^\n]+") do t[#t + 1] = l end
  return t
end

describe("release flows against the sandbox", function()
  setup(function()
    behaviours({})
    -- a database of our own, so other specs' schemas do not meet ours
    H.fresh_release(c, DB, APP)
    proc.run({ "rm", "-rf", ROOT .. "/backups/local", JOURNALS })
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  it("starts from blue serving v1.0.0 with the schema at 010", function()
    assert.equal("blue", live_colour())
    assert.equal(2, dep("blue").replicas)
    assert.matches(":v1%.0%.0$", dep("blue").image)
    assert.equal(10, schema_version())
  end)

  it("refuses bad input with exit 2 and changes nothing", function()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=nowhere", "tag=v2" })
    assert.equal(2, r.code)
    assert.matches("parameter 'env': 'nowhere' is not one of dev, local, prod, staging", r.stderr)
    r = bgrun_run({ "playbooks/deploy-with-migration.lua", "env=local", "tag=v2 rm" })
    assert.equal(2, r.code)
    assert.matches("parameter 'tag': 'v2 rm' does not match the pattern", r.stderr)
    assert.equal("blue", live_colour())
  end)

  it("changes nothing under --dry-run", function()
    local before_blue, before_green = dep("blue"), dep("green")
    local r = bgrun_run({ "--dry-run", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.0" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: would back up the database", r.stderr)
    assert.equal("blue", live_colour())
    assert.same(before_blue, dep("blue"))
    assert.same(before_green, dep("green"))
    assert.equal(10, schema_version())
    assert.same({}, files_in(ROOT .. "/backups/local"))
  end)

  it("migrates and deploys v2.0.0: green serves, blue scaled to 0, version recorded in three places", function()
    local r = bgrun_run({ "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.0" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("deployed physioflow%-api v2%.0%.0: blue %-> green", r.stdout)
    assert.matches("cutover %(selector patch to endpoints confirmed%)", r.stdout)
    assert.equal("green", live_colour())
    assert.matches(":v2%.0%.0$", dep("green").image)
    assert.equal(2, dep("green").replicas)
    assert.equal(0, dep("blue").replicas)
    assert.equal(11, schema_version())
    assert.equal("11", c:get("configmap", "migration-version").data.version)
    local backups = files_in(ROOT .. "/backups/local")
    assert.equal(1, #backups)
    assert.matches("%-local%-pre%-migration%-v2%.0%.0%.pinned%.tar%.gz$", backups[1])
    assert.equal("", lock_holder())
  end)

  it("refuses a release whose smoke tests fail: exit 1, the old colour keeps serving", function()
    behaviours({ ["v2.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    local r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v2.1.0" })
    assert.equal(1, r.code)
    assert.matches("%[smoke%-test physioflow%-api%-blue%] playbook failed", r.stderr)
    assert.matches("SmokeTestFailed: 2 of 18 checks failed on physioflow%-api%-blue", r.stderr)
    assert.matches("clinical protocols +physioflow%-api%-blue%-%S+ +FAIL", r.stdout)
    assert.equal("green", live_colour())
    assert.equal(0, dep("blue").replicas)
    assert.matches(":v1%.0%.0$", dep("blue").image) -- the idle colour's spec is put back
    assert.equal("", lock_holder())
  end)

  it("undoes the migration by its down scripts when the deploy after it fails", function()
    local r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(10, schema_version())
    behaviours({ ["v3.0.0"] = { fail_paths = { "/api/v1/service-codes" } } })
    r = bgrun_run({ "playbooks/deploy-with-migration.lua", "env=local", "tag=v3.0.0" })
    assert.equal(1, r.code)
    assert.matches("migrate: applied .*011_audit_logs%.sql", r.stderr)
    assert.matches("%[undo the migration to 011 %(down scripts, else restore from .*%)%] compensation done", r.stderr)
    assert.matches("migration undone by its down scripts: rows written since the migration are kept", r.stderr)
    assert.equal(10, schema_version())
    assert.equal("green", live_colour())
    assert.matches(":v2%.0%.0$", dep("green").image)
    -- no restore: the database is the same one, no copy kept aside
    local admin <close> = postgres.connect { dbname = "postgres" }
    local kept = admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1", { DB .. "_old_%" })
    assert.equal(0, #kept)
    assert.equal("", lock_holder())
  end)

  it("switches back when monitoring sees the new colour crash after the switch", function()
    behaviours({ ["v2.2.0"] = { crash_after_s = 3 } })
    local t0 = bgrun.now()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v2.2.0" })
    assert.equal(1, r.code)
    assert.matches("%[monitor physioflow%-api%-blue%] playbook failed", r.stderr)
    assert.matches("restarted", r.stderr)
    assert.matches("%[switch traffic back to green%] traffic switched back", r.stderr)
    assert.is_true(bgrun.now() - t0 < 120)
    assert.equal("green", live_colour())
    assert.equal(0, dep("blue").replicas)
    assert.equal(2, dep("green").replicas)
  end)

  it("refuses to start while another run holds the lock, naming it, and breaks it when asked", function()
    local lock = require("lock")
    -- keep=false: no keeper renewing alice's lease from this process
    local held = lock.acquire(c, { namespace = NS, identity = "alice@ci-runner-7:4242", operation = "deploy v9",
                                   keep = false })
    local before = dep("blue")
    local r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v2.3.0" })
    assert.equal(1, r.code)
    assert.matches("the deploy lock bgrun%-deploy%-lock is held by alice@ci%-runner%-7:4242 %(deploy v9", r.stderr)
    assert.same(before, dep("blue"))
    assert.equal("alice@ci-runner-7:4242", lock_holder())
    r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v2.3.0", "break-lock=true", "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("breaking the deploy lock", r.stderr)
    assert.equal("blue", live_colour())
    assert.equal("", lock_holder())
    held.release() -- a no-op now: someone else took it
  end)

  it("on SIGINT during monitoring switches back and exits 130", function()
    behaviours({})
    local live = live_colour()
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" playbooks/deploy.lua env=local tag=v2.4.0 2>"$ERR" & pid=$!; '
      .. 'for i in $(seq 100); do grep -q "healthy check=1" "$ERR" && break; sleep 0.2; done; '
      .. 'kill -INT $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, ERR = ROOT .. "/tests/.state/deploy-sigint.log", PGDATABASE = DB,
                BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, cwd = ROOT, timeout = 120 })
    local f = assert(io.open(ROOT .. "/tests/.state/deploy-sigint.log"))
    local stderr = f:read("a")
    f:close()
    assert.equal("130", r.stdout:match("rc=(%d+)"), stderr)
    assert.matches("playbook interrupted", stderr)
    assert.matches("traffic switched back", stderr)
    assert.equal(live, live_colour())
    assert.equal("", lock_holder())
  end)
  it("resume undoes what a run killed with SIGKILL after the switch had done", function()
    behaviours({})
    local live = live_colour()
    local idle = live == "blue" and "green" or "blue"
    local before = dep(idle)
    local r = proc.run({ "sh", "-c",
      '"$BGRUN" playbooks/deploy.lua env=local tag=v2.5.0 2>"$ERR" & pid=$!; '
      .. 'for i in $(seq 150); do grep -q "traffic switched" "$ERR" && break; sleep 0.2; done; '
      .. 'kill -KILL $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, ERR = ROOT .. "/tests/.state/deploy-sigkill.log", PGDATABASE = DB,
                BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, cwd = ROOT, timeout = 120 })
    assert.equal("137", r.stdout:match("rc=(%d+)"))
    -- what SIGKILL leaves: traffic on the new colour, the lock held by a dead process
    assert.equal(idle, live_colour())
    assert.matches("^bgrun@", lock_holder())

    -- without a terminal and without --yes, resume changes nothing
    r = bgrun_run({ "resume" })
    assert.equal(1, r.code)
    assert.matches("no terminal to confirm on; pass %-%-yes", r.stderr)
    assert.equal(idle, live_colour())

    r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("undid 3 change%(s%) of .*playbooks/deploy%.lua", r.stdout)
    assert.matches("%[switch traffic back to " .. live .. "%] traffic switched back", r.stderr)
    assert.equal(live, live_colour())
    assert.same({ image = before.image, replicas = before.replicas }, { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.equal("", lock_holder())

    r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code)
    assert.matches("nothing to resume", r.stdout)
  end)
  it("resume undoes the migration of a deploy-with-migration killed after it (down scripts)", function()
    behaviours({})
    local r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    local live = live_colour()
    local idle = live == "blue" and "green" or "blue"
    r = proc.run({ "sh", "-c",
      '"$BGRUN" playbooks/deploy-with-migration.lua env=local tag=v2.6.0 2>"$ERR" & pid=$!; '
      .. 'for i in $(seq 150); do grep -q "traffic switched" "$ERR" && break; sleep 0.2; done; '
      .. 'kill -KILL $pid; wait $pid; echo "rc=$?"' },
      { env = { BGRUN = BGRUN, ERR = ROOT .. "/tests/.state/deploy-sigkill-migration.log", PGDATABASE = DB,
                BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, cwd = ROOT, timeout = 120 })
    assert.equal("137", r.stdout:match("rc=(%d+)"))
    assert.equal(11, schema_version())
    assert.equal(idle, live_colour())

    r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("undid 5 change%(s%) of .*playbooks/deploy%-with%-migration%.lua", r.stdout)
    assert.matches("migrate: rolled back .*rollback/011_down%.sql", r.stderr)
    assert.not_matches("database restored", r.stderr)
    assert.equal(10, schema_version())
    assert.equal(live, live_colour())
    assert.equal("", lock_holder())
  end)
end)
