-- Rolling a whole release back, and undoing a migration without losing
-- writes (issue 14). Each case runs the binary against the sandbox and
-- checks what was left behind: Service and its release record, replicas
-- and images, schema version and rows, ConfigMap, lock; the undo of a
-- migration runs under a loop of requests through the Service, and the
-- failed requests are counted.
local json = require("json")
local http = require("http")
local k8s = require("k8s")
local postgres = require("postgres")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_rrelease_spec"
local STATE = ROOT .. "/tests/.state/rrelease"
local JOURNALS = STATE .. "/journal"
-- playbooks copied next to an environments.lua of our own (a short
-- monitor, a migrations folder whose down scripts a case may remove)
local PB = STATE .. "/playbooks"
local MIGRATIONS = PB .. "/migrations"

local c = k8s.client { namespace = NS }

local sh, read, behaviours = H.sh, H.read, H.behaviours
-- runs of bgrun: in the foreground, and in the background (a handle with
-- pid, rc(), wait(), stderr(), stdout(), wait_for(pattern))
local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = PB, BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local bgrun_run, spawn = R.run, R.spawn

local fault, clear_faults = H.fault, H.clear_faults

local S = H.release_state(c, APP)
local live_colour, dep, lock_holder, other = S.live_colour, S.dep, S.lock_holder, H.other

local function query(sql, params)
  local db <close> = postgres.connect { dbname = DB }
  return db:query(sql, params)
end

local function schema_version()
  return query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
end

local function add_term(name)
  query("INSERT INTO medical_terms (term_en, term_vi, category, definition) VALUES ($1, $1, 'general', 'spec')",
        { name })
end

local function has_term(name)
  return #query("SELECT 1 FROM medical_terms WHERE term_en = $1", { name }) == 1
end

local function configmap_version()
  local cm = c:get("configmap", "migration-version")
  return cm and cm.data.version
end

local function annotation(name)
  local svc = c:get("service", APP)
  local text = ((svc.metadata or {}).annotations or {})[name]
  return text and json.decode(text)
end

local function info()
  local svc = c:get("service", APP)
  local r = http.get(("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, svc.spec.ports[1].port),
                     { timeout = 5 })
  return r.json or {}
end

local function databases(pattern)
  local admin <close> = postgres.connect { dbname = "postgres" }
  local out = {}
  for _, row in ipairs(admin:query("SELECT datname FROM pg_database WHERE datname LIKE $1 ORDER BY 1", { pattern })) do
    out[#out + 1] = row.datname
  end
  return out
end

-- Sends requests through the Service while run goes on, one after the
-- other, and counts those that fail while the run's stderr shows the
-- compensation named by `window` running (from "compensation started" to
-- its end). Returns {sent, failed, in_window, failed_in_window, samples}.
local function load_during(run, window)
  local svc = c:get("service", APP)
  local url = ("http://%s:%d/api/v1/medical-terms?q=spec"):format(svc.spec.clusterIP, svc.spec.ports[1].port)
  local started = "%[" .. window .. "[^%]]*%] compensation started"
  local ended = "%[" .. window .. "[^%]]*%] compensation [df]"
  local r = { sent = 0, failed = 0, in_window = 0, failed_in_window = 0, samples = {} }
  while not run.rc() do
    local err = run.stderr()
    local inside = err:find(started) and not err:find(ended)
    local ok, res = pcall(http.get, url, { timeout = 5 })
    r.sent = r.sent + 1
    local bad = not ok or res.status ~= 200
    if bad then r.failed = r.failed + 1 end
    if inside then
      r.in_window = r.in_window + 1
      if bad then
        r.failed_in_window = r.failed_in_window + 1
        if #r.samples < 5 then r.samples[#r.samples + 1] = ok and (res.status .. " " .. res.body) or tostring(res) end
      end
    end
  end
  return r
end

local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s/rollback" && cp playbooks/*.lua "%s/" && rm -f "%s/environments.lua" '
    .. '&& cp examples/physioflow/migrations/*.sql "%s/" && cp examples/physioflow/migrations/rollback/*.sql "%s/rollback/"')
    :format(PB, MIGRATIONS, PB, PB, MIGRATIONS, MIGRATIONS)).code == 0)
  local f = assert(io.open(PB .. "/environments.lua", "w"))
  f:write(([[
return {
  ["local"] = {
    namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
    bucket = "physioflow-backups-local", migrations = %q, backups = %q,
    rollout_timeout = 120, monitor = { window = 12, interval = 1 },
  },
  prod = {
    context = %q, namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
    bucket = "physioflow-backups-local", migrations = %q, backups = %q,
    rollout_timeout = 120, monitor = { window = 12, interval = 1 }, confirm = true,
  },
}
]]):format(MIGRATIONS, STATE .. "/backups", c:info().context, MIGRATIONS, STATE .. "/backups"))
  f:close()
end

describe("rollback-release and undoing a migration", function()
  setup(function()
    behaviours({})
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

  it("refuses with exit 2 when no release is recorded, changing nothing", function()
    local live = live_colour()
    local r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("usage NoRelease: nothing to roll back: the Service physioflow%-api carries no release record "
      .. "%(annotation bgrun%.io/migration%-release%)", r.stderr)
    assert.equal(live, live_colour())
    assert.equal(10, schema_version())
    assert.equal("", lock_holder())
  end)

  it("rolls a deploy-with-migration back: database, traffic, ConfigMap, API; rows from before intact", function()
    local live = live_colour()
    local idle = other(live)
    add_term("before-release")
    local r = bgrun_run({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.0.0", "to=011",
                          "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(11, schema_version())
    -- the release record, written after the commit point
    local rec = annotation("bgrun.io/migration-release")
    assert.equal("v2.0.0", rec.tag)
    assert.equal(idle, rec.colour)
    assert.equal(live, rec.previous_colour)
    assert.equal("v1.0.0", rec.previous_tag)
    assert.matches(":v1%.0%.0$", rec.previous_image)
    assert.equal(10, rec.schema_from)
    assert.equal(11, rec.schema_to)
    assert.matches("^/.+pre%-migration%-v2%.0%.0%.pinned%.tar%.gz$", rec.backup.path)
    assert.equal("physioflow-backups-local", rec.backup.bucket)
    assert.matches("^local/", rec.backup.key)

    -- prod asks for the exact words, and there is no terminal here
    r = bgrun_run({ PB .. "/rollback-release.lua", "env=prod" })
    assert.equal(1, r.code)
    assert.matches("no terminal to confirm on; pass %-%-yes", r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(11, schema_version())

    -- a dry run describes and changes nothing
    r = bgrun_run({ "--dry-run", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: would restore into a fresh database and swap it in", r.stderr)
    assert.equal(idle, live_colour())
    assert.equal(2, dep(idle).replicas)
    assert.equal(0, dep(live).replicas)
    assert.equal(11, schema_version())
    assert.equal("11", configmap_version())
    assert.equal("v2.0.0", annotation("bgrun.io/migration-release").tag)

    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    print("# " .. r.stdout:gsub("%s+$", ""):gsub("\n", "\n# "))
    assert.matches("rolled back physioflow%-api v2%.0%.0: " .. idle .. " %-> " .. live, r.stdout)
    assert.matches("writes lost %(backup to restore%)%s+%d%d%d%d%-", r.stdout)
    assert.matches("restored from the backup: writes made between the backup and the restore are lost", r.stderr)
    assert.equal(live, live_colour())
    assert.equal(2, dep(live).replicas)
    assert.matches(":v1%.0%.0$", dep(live).image)
    assert.equal(0, dep(idle).replicas)
    assert.equal(10, schema_version())
    assert.equal("10", configmap_version())
    local i = info()
    assert.equal("v1.0.0", i.version)
    assert.equal(10, i.schema_version)
    assert.is_true(has_term("before-release"))
    assert.equal("", lock_holder())
    -- the migrated database is kept; the record is retired
    assert.equal(1, #databases(DB .. "_old_%"))
    assert.is_nil(annotation("bgrun.io/migration-release"))
    assert.equal("v2.0.0", annotation("bgrun.io/rolled-back-release").tag)

    -- twice is refused
    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(2, r.code)
    assert.matches("nothing to roll back: the Service physioflow%-api carries no release record", r.stderr)
  end)

  it("puts the release back when a step of rollback-release fails: database, traffic, ConfigMap, record", function()
    local live = live_colour()
    local idle = other(live)
    local r = bgrun_run({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.0.5", "to=011",
                          "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    add_term("during-release")
    -- the ConfigMap cannot be written (four attempts): the rollback is undone
    fault { method = "PATCH", path = "/configmaps/migration-version$", status = 500, count = 4 }
    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[record the migration version%] step failed", r.stderr)
    assert.matches("%[put the migrated database bgrun_rrelease_spec_old_[%d_]+ back%] compensation done", r.stderr)
    assert.matches("%[switch traffic back to " .. idle .. "%] compensation done", r.stderr)
    assert.not_matches("compensation failed", r.stderr)
    -- the migrated database went back before the new colour took traffic again
    local e = r.stderr
    assert.is_true(e:find("put the migrated database [^%]]+%] compensation done")
      < e:find("switch traffic back to " .. idle .. "%] compensation started"))
    assert.equal(idle, live_colour())
    assert.matches(":v2%.0%.5$", dep(idle).image)
    assert.equal(2, dep(idle).replicas)
    assert.equal(0, dep(live).replicas)
    assert.equal(11, schema_version())
    assert.equal("11", configmap_version())
    assert.is_true(has_term("during-release"))
    assert.equal("v2.0.5", annotation("bgrun.io/migration-release").tag)
    assert.equal(1, #databases(DB .. "_aside_%"))
    assert.equal("", lock_holder())
    local i = info()
    assert.equal("v2.0.5", i.version)
    assert.equal(11, i.schema_version)

    -- and once the API answers again, the rollback goes through
    clear_faults()
    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(live, live_colour())
    assert.equal(10, schema_version())
    assert.equal("10", configmap_version())
  end)

  it("resume puts the release back after rollback-release was killed past its restore", function()
    local live = live_colour()
    local idle = other(live)
    local r = bgrun_run({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.0.6", "to=011",
                          "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    -- the switch hangs (then fails): the run is killed meanwhile
    fault { method = "PATCH", path = "/services/" .. APP .. "$", status = 500, count = 1, delay_ms = 4000 }
    local run = spawn({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    run.wait_for("%[switch traffic to " .. live .. "%] step started")
    sh("kill -KILL " .. run.pid)
    assert.equal(137, run.wait())
    assert.equal(10, schema_version())
    clear_faults()
    r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("%[put the migrated database bgrun_rrelease_spec_old_[%d_]+ back%] undo done", r.stderr)
    assert.matches("traffic switched back", r.stderr)
    assert.equal(idle, live_colour())
    assert.matches(":v2%.0%.6$", dep(idle).image)
    assert.equal(2, dep(idle).replicas)
    assert.equal(0, dep(live).replicas)
    assert.equal(11, schema_version())
    assert.equal("11", configmap_version())
    assert.equal("v2.0.6", annotation("bgrun.io/migration-release").tag)
    assert.equal("", lock_holder())
    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(live, live_colour())
    assert.equal(10, schema_version())
  end)

  it("refuses with exit 2 when another release came since the recorded one, naming both", function()
    local r = bgrun_run({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v2.1.0", "to=011",
                          "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    local recorded = live_colour()
    r = bgrun_run({ "--yes", PB .. "/deploy.lua", "env=local", "tag=v2.1.1", "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    local now = live_colour()
    r = bgrun_run({ "--yes", PB .. "/rollback-release.lua", "env=local" })
    assert.equal(2, r.code, r.stderr)
    assert.matches(("the release record names physioflow%%-api v2%%.1%%.0 on %s %%([^)]*:v2%%.1%%.0%%), but the Service "
      .. "physioflow%%-api sends traffic to %s %%([^)]*:v2%%.1%%.1%%): another release came since; not rolling back")
      :format(recorded, now), r.stderr)
    assert.equal(now, live_colour())
    assert.equal(11, schema_version())
    assert.equal("", lock_holder())
    -- back to 010 for the next cases
    r = bgrun_run({ PB .. "/migrate.lua", "env=local", "action=down", "to=010" })
    assert.equal(0, r.code, r.stderr)
  end)

  it("undoes a migration by its down scripts when the monitor fails: rows written meanwhile kept, no failed request", function()
    local live = live_colour()
    behaviours({ ["v3.0.0"] = { crash_after_s = 5 } })
    local run = spawn({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v3.0.0", "to=011",
                        "skip-tests=true" })
    run.wait_for("%[migrate to 011%] step done")
    add_term("after-migration")
    local load = load_during(run, "undo the migration to 011")
    assert.equal(1, run.wait(), run.stderr())
    local err = run.stderr()
    assert.matches("traffic switched back", err)
    assert.matches("migrate: rolled back .*rollback/011_down%.sql", err)
    assert.matches("migration undone by its down scripts: rows written since the migration are kept", err)
    assert.not_matches("database restored", err)
    assert.equal(live, live_colour())
    assert.equal(10, schema_version())
    assert.is_true(has_term("after-migration"))
    assert.equal("", lock_holder())
    print(("# down-script undo under load: %d requests during the undo, %d failed (%d sent in all, %d failed)")
      :format(load.in_window, load.failed_in_window, load.sent, load.failed))
    assert.is_true(load.in_window > 0)
    assert.equal(0, load.failed_in_window, table.concat(load.samples, "\n"))
  end)

  it("restores from the backup when a down script is missing, reports the writes lost, no failed request", function()
    local live = live_colour()
    assert(sh('mv "' .. MIGRATIONS .. '/rollback/011_down.sql" "' .. STATE .. '/011_down.sql"').code == 0)
    behaviours({ ["v3.1.0"] = { crash_after_s = 5 } })
    local run = spawn({ "--yes", PB .. "/deploy-with-migration.lua", "env=local", "tag=v3.1.0", "to=011",
                        "skip-tests=true" })
    run.wait_for("%[migrate to 011%] step done")
    add_term("lost-write")
    local load = load_during(run, "undo the migration to 011")
    assert(sh('mv "' .. STATE .. '/011_down.sql" "' .. MIGRATIONS .. '/rollback/011_down.sql"').code == 0)
    assert.equal(1, run.wait(), run.stderr())
    local err = run.stderr()
    assert.matches("cannot undo the migration by its down scripts; restoring the database from the backup", err)
    assert.matches("011 has no down script", err)
    assert.matches("database restored", err)
    assert.matches("restored from the backup: writes made between the backup and the restore are lost", err)
    assert.matches("lost_from=%d%d%d%d%-%d%d%-%d%dT", err)
    assert.equal(live, live_colour())
    assert.equal(10, schema_version())
    -- the write made after the backup is the one the report warns about
    assert.is_false(has_term("lost-write"))
    assert.equal("", lock_holder())
    print(("# restore undo under load: %d requests during the undo, %d failed (%d sent in all, %d failed)")
      :format(load.in_window, load.failed_in_window, load.sent, load.failed))
    assert.is_true(load.in_window > 0)
    assert.equal(0, load.failed_in_window, table.concat(load.samples, "\n"))
  end)
end)
