-- Safety at the seams (issue 9): an undo acts only on the state it
-- recorded and only while that state is still there, never past the
-- commit point, never under a live run. Each case runs the binary against
-- the sandbox and checks what was left behind: Service, replicas, schema
-- version and rows, ConfigMap, lock, journals.
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_safety_spec"
local STATE = ROOT .. "/tests/.state/safety"
local JOURNALS = STATE .. "/journal"
-- playbooks copied next to an environments.lua of our own (a short lease,
-- slow migrations), so that the shipped one is not found first
local PB = STATE .. "/playbooks"

local c = k8s.client { namespace = NS }

local sh, read = H.sh, H.read
-- runs of bgrun: in the foreground (opts: env, cwd, timeout), and in the
-- background (a handle with pid, err (the stderr file), wait() -> exit
-- code, stderr(), wait_for(pattern), kill(signal))
local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local child_env, bgrun_run, spawn = R.env, R.run, R.spawn

local behaviours, fault, clear_faults = H.behaviours, H.fault, H.clear_faults

local S = H.release_state(c, APP)
local live_colour, dep, lock_holder, other = S.live_colour, S.dep, S.lock_holder, H.other

local function query(sql, params)
  local db <close> = postgres.connect { dbname = DB }
  return db:query(sql, params)
end

local function schema_version()
  return query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
end

local function configmap_version()
  local cm = c:get("configmap", "migration-version")
  return cm and cm.data.version
end

local function newest_journal()
  local r = sh('ls -1t "' .. JOURNALS .. '"/*.jsonl 2>/dev/null | head -n 1')
  return (r.stdout:gsub("%s+$", ""))
end

local function databases(pattern)
  local admin <close> = postgres.connect { dbname = "postgres" }
  local out = {}
  for _, row in ipairs(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", { pattern })) do
    out[#out + 1] = row.datname
  end
  return out
end

-- migrations 001-011 of the example, plus slow ones the lock must outlive
local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s/migrations/rollback" && cp playbooks/deploy.lua playbooks/deploy-with-migration.lua "%s/" '
    .. '&& cp examples/physioflow/migrations/*.sql "%s/migrations/" '
    .. '&& cp examples/physioflow/migrations/rollback/*.sql "%s/migrations/rollback/"')
    :format(PB, PB, PB, PB, PB)).code == 0)
  local function write(path, text)
    local f = assert(io.open(path, "w"))
    f:write(text)
    f:close()
  end
  write(PB .. "/migrations/012_slow_index.sql",
    "CREATE TABLE safety_slow (id int);\nSELECT pg_sleep(10);\n")
  write(PB .. "/migrations/rollback/012_down.sql", "DROP TABLE IF EXISTS safety_slow;\n")
  write(PB .. "/migrations/013_slower_index.sql",
    "CREATE TABLE safety_slower (id int);\nSELECT pg_sleep(30);\n")
  write(PB .. "/migrations/rollback/013_down.sql", "DROP TABLE IF EXISTS safety_slower;\n")
  write(PB .. "/environments.lua", ([[
return {
  ["local"] = {
    namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
    bucket = "physioflow-backups-local", migrations = %q, backups = %q,
    rollout_timeout = 120, monitor = { window = 4, interval = 2 },
    lock_duration = 6,
  },
}
]]):format(PB .. "/migrations", STATE .. "/backups"))
end

describe("safety at the seams", function()
  setup(function()
    behaviours({})
    clear_faults()
    H.fresh_release(c, DB, APP)
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. STATE .. '"')
    write_playbooks()
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    clear_faults()
    behaviours({})
  end)

  before_each(function()
    clear_faults()
    behaviours({})
  end)

  it("case 1: resume refuses a run that a later release has replaced, and a run that is still alive", function()
    assert.equal(10, schema_version())
    local live = live_colour()
    local idle = other(live)
    local first = spawn({ "--yes", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.0", "to=011" })
    first.wait_for("%[migrate to 011%] step done")
    first.kill("KILL")
    assert.equal(137, first.wait())
    assert.equal(11, schema_version())
    local journal = newest_journal()

    -- the lock message points at resume first, and says what break-lock does
    local r = bgrun_run({ "--yes", "playbooks/deploy.lua", "env=local", "tag=v2.0.0" })
    assert.equal(1, r.code)
    assert.matches("run `bgrun resume` on its machine first: it undoes what that run changed", r.stderr)
    assert.matches("break%-lock=true only takes the lock and undoes nothing", r.stderr)

    r = bgrun_run({ "--yes", "playbooks/deploy.lua", "env=local", "tag=v2.0.0", "break-lock=true" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(idle, live_colour())
    assert.equal("", lock_holder())

    -- a plain resume finds the killed run and refuses it: a later release succeeded since
    r = bgrun_run({ "--yes", "resume" })
    assert.equal(3, r.code, r.stderr)
    assert.matches("resume refused: a later release succeeded in namespace physioflow", r.stderr)
    assert.matches("undoing this run would roll that release back", r.stderr)
    assert.matches("bgrun resume %-%-force " .. journal:gsub("%p", "%%%0"), r.stderr)
    assert.not_matches("undo started", r.stderr)
    -- nothing was touched: the new release serves on the schema it needs
    assert.equal(idle, live_colour())
    assert.equal(2, dep(idle).replicas)
    assert.matches(":v2%.0%.0$", dep(idle).image)
    assert.equal(0, dep(live).replicas)
    assert.equal(11, schema_version())
    assert.equal("", lock_holder())

    -- --force still checks the world: the Service selects the colour the
    -- old run would scale down, or a newer release than the database
    -- backup's, so nothing is undone, the database neither
    r = bgrun_run({ "--yes", "--force", "resume", journal })
    assert.equal(3, r.code)
    assert.matches("WorldChanged: the Service physioflow%-api [%w ]*sends traffic to " .. idle, r.stderr)
    assert.not_matches("database restored", r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(2, dep(idle).replicas)
    assert.equal(11, schema_version())

    -- resume JOURNAL of a run that is alive is refused, and the run goes on
    local running = spawn({ "--yes", "playbooks/deploy.lua", "env=local", "tag=v2.0.1", "skip-tests=true" })
    running.wait_for("traffic switched")
    local j2 = newest_journal()
    r = bgrun_run({ "--yes", "resume", j2 })
    assert.equal(3, r.code)
    assert.matches("resume refused: the run %(pid " .. running.pid .. " on .-%) is still alive", r.stderr)
    assert.equal(0, running.wait(), running.stderr())
    assert.equal(live, live_colour())
    assert.matches(":v2%.0%.1$", dep(live).image)
    assert.equal("", lock_holder())
  end)

  it("case 2: after the commit point a failure never restores the database under the live release", function()
    local r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    local live = live_colour()
    local idle = other(live)
    -- one 500 on the ConfigMap write: retried (the write is idempotent)
    fault { method = "PATCH", path = "/configmaps/migration-version$", status = 500, count = 1 }
    r = bgrun_run({ "--yes", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.2", "to=011",
                    "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("cannot record the migration version; retrying", r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(11, schema_version())
    assert.equal("11", configmap_version())

    -- a ConfigMap that cannot be written: exit 3, nothing rolled back,
    -- rows written after the switch are still in the live database
    r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    live, idle = live_colour(), other(live_colour())
    local run = spawn({ "--yes", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.3", "to=011",
                        "skip-tests=true" })
    -- armed once the ConfigMap has been written before the migration (that
    -- write, undone on failure, keeps it equal to the schema at every point)
    run.wait_for("%[migrate to 011%] step started")
    fault { method = "PATCH", path = "/configmaps/migration-version$", status = 500, count = -1, delay_ms = 1500 }
    run.wait_for("commit point passed")
    query("INSERT INTO audit_logs (table_name, record_id, action) VALUES ('safety', 'after-switch', 'INSERT')")
    assert.equal(3, run.wait())
    local err = run.stderr()
    assert.matches("failed after the commit point %(traffic switched and monitoring passed%): nothing of the release was undone", err)
    assert.matches("what to do: .*kubectl %-n physioflow patch configmap migration%-version", err)
    assert.not_matches("restore the database", err)
    assert.equal(idle, live_colour())
    assert.matches(":v2%.0%.3$", dep(idle).image)
    assert.equal(11, schema_version())
    assert.equal(1, #query("SELECT 1 FROM audit_logs WHERE record_id = 'after-switch'"))
    -- written before the migration, the ConfigMap already says 11: it and
    -- the schema agree even though the step after the commit failed
    assert.equal("11", configmap_version())
    assert.equal("", lock_holder())
    assert.same({}, databases(DB .. "_old_%"))
  end)

  it("case 2: a run killed after its commit point is not undone by resume", function()
    local r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    local idle = other(live_colour())
    local run = spawn({ "--yes", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.0.4", "to=011",
                        "skip-tests=true" })
    run.wait_for("%[migrate to 011%] step started")
    fault { method = "PATCH", path = "/configmaps/migration-version$", status = 500, count = -1, delay_ms = 3000 }
    run.wait_for("%[record the migration version%] step started")
    run.kill("KILL")
    assert.equal(137, run.wait())
    clear_faults()
    query("INSERT INTO audit_logs (table_name, record_id, action) VALUES ('safety', 'after-kill', 'INSERT')")
    r = bgrun_run({ "--yes", "resume" })
    assert.equal(3, r.code, r.stderr)
    assert.matches("the run had passed its commit point %(traffic switched and monitoring passed%), so the release stands; "
      .. "these steps after it did not finish: record the migration version", r.stderr)
    assert.matches("what to do: ", r.stderr)
    assert.not_matches("database restored", r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(11, schema_version())
    assert.equal(1, #query("SELECT 1 FROM audit_logs WHERE record_id = 'after-kill'"))
    assert.equal("", lock_holder())
    -- and a second resume has nothing left
    r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("nothing to resume", r.stdout)
  end)

  it("case 6: resume from another folder restores from the absolute backup path (a down script fails)", function()
    local r = bgrun_run({ "playbooks/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
    local live = live_colour()
    local run = spawn({ "--yes", "playbooks/deploy-with-migration.lua", "env=local", "tag=v2.2.0", "to=011",
                        "skip-tests=true" })
    run.wait_for("%[migrate to 011%] step done")
    run.kill("KILL")
    assert.equal(137, run.wait())
    local journal = read(newest_journal())
    assert.matches('"path":"/[^"]+%.tar%.gz"', journal)
    -- a view on its table makes 011's down script fail: the undo falls back to the backup
    query("CREATE VIEW safety_audit_view AS SELECT * FROM audit_logs")
    r = bgrun_run({ "--yes", "resume" }, { cwd = "/" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("cannot undo the migration by its down scripts; restoring the database from the backup", r.stderr)
    assert.matches("a down script failed: .*011_down%.sql", r.stderr)
    assert.matches("database restored", r.stderr)
    assert.matches("writes made between the backup and the restore are lost", r.stderr)
    assert.equal(10, schema_version())
    assert.equal(live, live_colour())
    assert.equal("", lock_holder())
  end)

  it("case 7: a Deployment PATCH never applied leaves nothing to undo (exit 1, not 3)", function()
    local live = live_colour()
    local idle = other(live)
    local before = dep(idle)
    fault { method = "PATCH", path = "/deployments/" .. APP .. "-" .. idle .. "$", status = 500, count = 1 }
    local r = bgrun_run({ "--yes", "playbooks/deploy.lua", "env=local", "tag=v2.3.0" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("nothing to undo: the deployment is as the run found it", r.stderr)
    assert.same(before, dep(idle))
    assert.equal(live, live_colour())
    assert.equal("", lock_holder())
  end)

  it("case 7: a plain resume retries compensations that failed", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v2.4.0"] = { crash_after_s = 6 } })
    local run = spawn({ "--yes", "playbooks/deploy.lua", "env=local", "tag=v2.4.0", "skip-tests=true" })
    run.wait_for("traffic switched")
    fault { method = "PATCH", path = "/services/" .. APP .. "$", status = 500, count = -1 }
    assert.equal(3, run.wait())
    assert.matches("compensation failed", run.stderr())
    assert.equal(idle, live_colour())
    clear_faults()
    local r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("traffic switched back", r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal("", lock_holder())
  end)

  it("case 7: journals are private, keep no URL credentials, and name no code", function()
    local r = bgrun_run({ "playbooks/smoke-test.lua", "url=http://alice:s3cr3t-pw@127.0.0.1:9/", "timeout=1" })
    assert.equal(1, r.code)
    local path = newest_journal()
    local text = read(path)
    assert.not_matches("s3cr3t%-pw", text)
    assert.matches("alice:%*%*%*@127%.0%.0%.1", text)
    assert.equal("600", sh('stat -c %a "' .. path .. '"').stdout:match("%d+"))
    assert.equal("700", sh('stat -c %a "' .. JOURNALS .. '"').stdout:match("%d+"))

    -- a crafted journal: its playbook's folder holds modules, its undo names one
    local evil = STATE .. "/evil"
    assert(sh('mkdir -p "' .. evil .. '"').code == 0)
    for _, m in ipairs({ "bluegreen", "evil" }) do
      local f = assert(io.open(evil .. "/" .. m .. ".lua", "w"))
      f:write(('io.open(%q, "w"):close() return { undo = { run = function() end } }'):format(evil .. "/loaded-" .. m))
      f:close()
    end
    local jdir = STATE .. "/crafted"
    assert(sh('mkdir -p "' .. jdir .. '"').code == 0)
    local f = assert(io.open(jdir .. "/20200101T000000Z-1.jsonl", "w"))
    f:write(json.encode { event = "start", playbook = evil .. "/deploy.lua", pid = 999999999, host = bgrun.hostname(),
                          started_at = 1 }, "\n")
    f:write(json.encode { event = "compensation", id = 1, name = "one", undo = { module = "evil", action = "run" } }, "\n")
    f:write(json.encode { event = "compensation", id = 2, name = "two", undo = { module = "bluegreen", action = "run" } }, "\n")
    f:close()
    r = bgrun_run({ "--yes", "resume" }, { env = { BGRUN_JOURNAL_DIR = jdir } })
    assert.equal(3, r.code)
    assert.matches("no registered undo action bluegreen%.run", r.stderr)
    assert.matches("undo skipped: a newer change could not be undone", r.stderr)
    assert.is_nil(io.open(evil .. "/loaded-evil"))
    assert.is_nil(io.open(evil .. "/loaded-bluegreen"))
  end)

  it("case 7: tags longer than OCI's 128 characters are refused with exit 2", function()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v" .. ("1"):rep(128) })
    assert.equal(2, r.code)
    assert.matches("parameter 'tag': 129 characters, at most 128 allowed", r.stderr)
    r = bgrun_run({ "--describe", "playbooks/deploy.lua" })
    assert.matches("at most 128 characters", r.stdout)
  end)
  it("case 3: the lock outlives a migration longer than the lease; a lock really lost stops the run", function()
    local live = live_colour()
    -- a 10 s migration under a 6 s lease, with transient 500s on renewals
    local first = spawn({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.1.0", "to=012",
                          "skip-tests=true" })
    first.wait_for("%[migrate to 012%] step started")
    fault { method = "PUT", path = "/leases/bgrun-deploy-lock$", status = 500, count = 2 }
    bgrun.sleep(8) -- past the lease's duration
    local r = bgrun_run({ "--yes", PB .. "/deploy.lua", "env=local", "tag=v9.9.9", "skip-tests=true" })
    assert.equal(1, r.code)
    assert.matches("the deploy lock bgrun%-deploy%-lock is held by", r.stderr)
    assert.equal(0, first.wait(), first.stderr())
    assert.matches("cannot renew the deploy lock; retrying", first.stderr())
    assert.equal(12, schema_version())
    assert.equal(other(live), live_colour())
    assert.equal("", lock_holder())

    -- another run breaks the lock during a migration: the first run stops,
    -- finds the database still at the version it started from, restores nothing
    live = live_colour()
    local slow = spawn({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.1.1", "to=013",
                         "skip-tests=true" })
    slow.wait_for("%[migrate to 013%] step started")
    r = bgrun_run({ "--yes", PB .. "/deploy.lua", "env=local", "tag=v2.1.2", "skip-tests=true", "break-lock=true" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(1, slow.wait())
    local err = slow.stderr()
    assert.matches("lock_lost LockLost: .*the deploy lock was taken by another run: stopping this one", err)
    assert.matches("nothing to restore: the database is still at the version the run found", err)
    assert.equal(12, schema_version())
    assert.equal(other(live), live_colour())
    assert.matches(":v2%.1%.2$", dep(other(live)).image)
    assert.equal("", lock_holder())
  end)

end)
