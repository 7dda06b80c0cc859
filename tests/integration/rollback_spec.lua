-- playbooks/rollback.lua's safety at the seams, against the sandbox, run as
-- the binary: a backup of another database (by name, by system
-- identifier) is refused before anything changes (exit 2); the database
-- and the maintenance database are checked before the API is scaled
-- down; a failure after the swap swaps the old database back (the
-- restored one kept aside), in-process and through `bgrun resume` of a
-- killed run, unless the world has changed since (exit 3, nothing done);
-- a killed restore leaves a `_restore_` database and a scratch folder
-- that `bgrun resume` removes; the restore undo of deploy-with-migration
-- checks the live database against what the run recorded.
local archive = require("archive")
local backup = require("backup")
local http = require("http")
local json = require("json")
local k8s = require("k8s")
local postgres = require("postgres")
local proc = require("proc")
local restore = require("restore")
local pgfix = dofile((os.getenv("BGRUN_ROOT") or ".") .. "/tests/integration/fixtures/pgfix.lua")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local BGRUN = H.BGRUN
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_rollback_spec"
local OTHER = "bgrun_rollback_spec_other"
local ADMIN_URL = assert(os.getenv("SANDBOX_ADMIN_URL"))

local sh = H.must

local TMP = (sh("mktemp -d -t bgrun-rollback-spec-XXXXXX"):gsub("%s+$", ""))
local PB = TMP .. "/playbooks"
local JOURNALS = TMP .. "/journal"
local SCRATCH = TMP .. "/tmp" -- TMPDIR of the runs: their restore scratch folders go here

local R = H.runner { PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS, TMPDIR = SCRATCH }
local run_env = R.env
local function bgrun_run(args, extra) return R.run(args, { env = extra }) end

-- Starts bgrun ARGS, waits for text in its stderr, kills it with SIGKILL;
-- returns its stderr.
local function kill_when(args, text, extra)
  local err = TMP .. "/killed.err"
  os.remove(err)
  local env = run_env(extra)
  env.ERR, env.WANT, env.BGRUN = err, text, BGRUN
  local quoted = {}
  for _, a in ipairs(args) do quoted[#quoted + 1] = ("'%s'"):format(a) end
  local r = proc.run({ "sh", "-c",
    '"$BGRUN" ' .. table.concat(quoted, " ") .. ' 2>"$ERR" & pid=$!; '
    .. 'for i in $(seq 600); do grep -qF "$WANT" "$ERR" && break; sleep 0.1; done; '
    .. 'kill -KILL $pid; wait $pid; echo "rc=$?"' }, { env = env, cwd = ROOT, timeout = 120 })
  local f = io.open(err)
  local stderr = f and f:read("a") or ""
  if f then f:close() end
  assert(r.stdout:match("rc=137"), "killed by SIGKILL: " .. r.stdout .. stderr)
  assert(stderr:find(text, 1, true), "reached '" .. text .. "' before the kill:\n" .. stderr)
  return stderr
end

local c = k8s.client { namespace = NS }

local function dep(colour)
  local d = c:get("deployment", APP .. "-" .. colour)
  return { replicas = d.spec.replicas, ready = d.status.readyReplicas or 0 }
end

local function admin()
  return postgres.connect { dbname = "postgres" }
end

local function oid(name)
  local a <close> = admin()
  return restore.oid_of(a, name)
end

-- databases whose names start with prefix, sorted
local dbs_like = H.databases_like

local function query(dbname, sql)
  local db <close> = postgres.connect { dbname = dbname }
  return db:query(sql)
end

local function schema_version(dbname)
  return query(dbname or DB, "SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
end

local function lease_free()
  local l = c:get("lease", "bgrun-deploy-lock")
  return l == nil or (l.spec.holderIdentity or "") == ""
end

local function state()
  return { blue = dep("blue"), green = dep("green"), oid = oid(DB), version = schema_version(),
           cm = c:get("configmap", "migration-version").data.version, lease_free = lease_free(),
           dbs = dbs_like(DB .. "_") }
end

local function scratch_left()
  return (sh(("ls -A %q"):format(SCRATCH)):gsub("%s+$", ""))
end

-- a backup whose metadata.json has been changed by edit(metadata)
local function tampered(src, name, edit)
  local dir = TMP .. "/tamper-" .. name
  archive.extract(src, dir)
  local f = assert(io.open(dir .. "/metadata.json"))
  local m = json.decode(f:read("a"))
  f:close()
  edit(m)
  f = assert(io.open(dir .. "/metadata.json", "w"))
  f:write(json.encode(m))
  f:close()
  local entries = {}
  for _, n in ipairs({ "metadata.json", "schema.sql", "data.sql", "full_backup.dump" }) do
    entries[#entries + 1] = { name = n, path = dir .. "/" .. n }
  end
  local out = TMP .. "/" .. name .. ".tar.gz"
  archive.create(out, entries)
  return out
end

local function faults(body)
  http.request { method = "DELETE", url = ADMIN_URL .. "/faults" }
  if body then
    local f = http.post(ADMIN_URL .. "/faults", { json = body })
    assert(f.status == 201, f.body)
  end
end

describe("rollback playbook at the seams", function()
  local at10 -- a backup of DB at schema 010 (path)

  setup(function()
    pgfix.drop_like(DB)
    local a <close> = admin()
    a:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    a:exec("CREATE DATABASE " .. postgres.quote_ident(OTHER))
    H.delete_release(c, APP)
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
    c:patch("configmap", "migration-version", { data = { version = "10" } }, { type = "merge" })
    sh(("mkdir -p %q %q && cp %q %q"):format(PB, SCRATCH, ROOT .. "/playbooks/rollback.lua", PB))
    local f = assert(io.open(PB .. "/environments.lua", "w"))
    f:write(([[
local envs = dofile(%q)
for name, e in pairs(envs) do e.backups = %q .. "/backups/" .. name end
envs["local"].maintenance_db = os.getenv("SPEC_MAINTENANCE_DB")
return envs
]]):format(ROOT .. "/playbooks/environments.lua", TMP))
    f:close()
    at10 = backup.create { env = "local", database = { dbname = DB }, dir = TMP .. "/taken", label = "spec-rb",
                           version = 10 }.path
  end)

  teardown(function()
    faults(nil)
    pgfix.drop_like(DB)
    sh(("rm -rf %q"):format(TMP))
  end)

  it("records the database's identity in the backup's metadata", function()
    local m = backup.verify(at10)
    assert.equal(DB, m.database.name)
    assert.equal(DB, m.database_identity.database)
    assert.equal(oid(DB), m.database_identity.oid)
    local db <close> = postgres.connect { dbname = DB }
    local id = backup.identity(db)
    assert.same(id, m.database_identity)
    assert.is_true(id.system_identifier == nil or id.system_identifier:match("^%d+$") ~= nil)
  end)

  it("refuses a backup of another database before anything changes: exit 2, both named", function()
    local other = backup.create { env = "local", database = { dbname = OTHER }, dir = TMP .. "/taken",
                                  label = "spec-other", version = 0 }
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. other.path })
    assert.equal(2, r.code, r.stderr)
    assert.matches("%[check the database%] step failed", r.stderr)
    assert.truthy(r.stderr:find(("WrongDatabase: %s cannot roll back database %s: it is a backup of database %s, not %s")
      :format(other.path, DB, OTHER, DB), 1, true), r.stderr)
    assert.is_nil(r.stderr:find("scale the API", 1, true))
    assert.is_nil(r.stderr:find("take the deploy lock", 1, true))
    assert.same(before, state())
    assert.equal("", scratch_left())
  end)

  it("refuses a backup from another cluster (system identifier) when both are known: exit 2", function()
    local bad = tampered(at10, "other-cluster", function(m) m.database_identity.system_identifier = "1234567890123" end)
    -- the identity check itself, with both identifiers known
    local m = backup.verify(bad)
    assert.equal("it is a backup of database " .. DB .. " on the cluster with system identifier 1234567890123, and "
      .. DB .. " is on 999", backup.identity_mismatch(m, { database = DB, system_identifier = "999", oid = 1 }))
    assert.is_nil(backup.identity_mismatch(m, { database = DB, oid = 1 }))
    -- a different OID alone is fine: a restore by rename changes it
    local good = backup.verify(at10)
    assert.is_nil(backup.identity_mismatch(good, { database = DB, oid = -1,
      system_identifier = good.database_identity.system_identifier }))
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. bad })
    local db <close> = postgres.connect { dbname = DB }
    if backup.identity(db).system_identifier then
      assert.equal(2, r.code, r.stderr)
      assert.matches("WrongDatabase: .* on the cluster with system identifier 1234567890123, and " .. DB .. " is on %d+",
        r.stderr)
      assert.same(before, state())
    else
      -- this role may not read pg_control_system(): the name decides
      assert.equal(0, r.code, r.stderr)
    end
  end)

  it("checks credentials and the maintenance database before scaling anything down: exit 1, untouched", function()
    local before = state()
    local r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. at10 }, { PGPASSWORD = "not-the-password" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[check the database%] step failed", r.stderr)
    assert.matches("password authentication failed", r.stderr)
    assert.is_nil(r.stderr:find("not-the-password", 1, true))
    assert.is_nil(r.stderr:find("scale the API", 1, true))
    assert.same(before, state())
    r = bgrun_run({ PB .. "/rollback.lua", "env=local", "backup=" .. at10 },
                  { SPEC_MAINTENANCE_DB = "bgrun_no_such_maintenance_db" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[check the database%] step failed", r.stderr)
    assert.matches("bgrun_no_such_maintenance_db", r.stderr)
    assert.is_nil(r.stderr:find("scale the API", 1, true))
    assert.same(before, state())
  end)

  it("swaps the old database back when a step after the swap fails: exit 1, restored one kept aside", function()
    query(DB, "CREATE TABLE IF NOT EXISTS spec_marker (note text)")
    query(DB, "INSERT INTO spec_marker VALUES ('written after the backup')")
    local before = state()
    faults { method = "PATCH", path = "/configmaps/migration-version$", status = 500, count = -1 }
    local ok, r = pcall(bgrun_run, { PB .. "/rollback.lua", "env=local", "backup=" .. at10 })
    faults(nil)
    assert(ok, r)
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[restore%] step done", r.stderr)
    assert.matches("%[record the migration version%] step failed", r.stderr)
    assert.matches("the replaced database is back in place", r.stderr)
    assert.is_nil(r.stderr:find("compensation failed", 1, true))
    -- the live database is the one from before, rows written after the backup included
    assert.equal(before.oid, oid(DB))
    assert.equal(1, #query(DB, "SELECT * FROM spec_marker"))
    local aside = dbs_like(DB .. "_aside_")
    assert.equal(1, #aside)
    assert.equal(10, schema_version(aside[1]))
    assert.same({}, dbs_like(DB .. "_restore_"))
    assert.same({}, dbs_like(DB .. "_old_"))
    assert.same(before.blue, dep("blue"))
    assert.is_true(lease_free())
    assert.equal("", scratch_left())
  end)

  it("swaps back through `bgrun resume` after a kill past the swap, unless the world changed since", function()
    local before = state()
    -- the ConfigMap read stalls: the run sits after the swap until killed
    faults { method = "GET", path = "/configmaps/migration-version$", delay_ms = 20000, count = 1 }
    local stderr = kill_when({ PB .. "/rollback.lua", "env=local", "backup=" .. at10 },
                             "[record the migration version] step started")
    faults(nil)
    assert.matches("%[restore%] step done", stderr)
    local swapped_in = oid(DB)
    assert.are_not.equal(before.oid, swapped_in)
    assert.equal(0, dep("blue").replicas)
    local old = dbs_like(DB .. "_old_")
    assert.equal(1, #old)
    assert.equal(before.oid, oid(old[1]))

    local r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("the replaced database is back in place", r.stderr)
    assert.equal(before.oid, oid(DB))
    assert.same({}, dbs_like(DB .. "_old_"))
    local found = false
    for _, name in ipairs(dbs_like(DB .. "_aside_")) do found = found or oid(name) == swapped_in end
    assert.is_true(found, "the restored database is kept aside")
    assert.equal(before.blue.replicas, dep("blue").replicas)
    assert.is_true(lease_free(), "the lock is released")

    -- again, but another restore replaces the database before the resume
    faults { method = "GET", path = "/configmaps/migration-version$", delay_ms = 20000, count = 1 }
    kill_when({ PB .. "/rollback.lua", "env=local", "backup=" .. at10 }, "[record the migration version] step started")
    faults(nil)
    local kept = dbs_like(DB .. "_old_")[1]
    restore.restore { path = at10, database = { dbname = DB } }
    local live = oid(DB)
    local dbs = dbs_like(DB .. "_")
    r = bgrun_run({ "--yes", "resume" })
    assert.equal(3, r.code, r.stderr)
    assert.truthy(r.stderr:find(("WorldChanged: database %s is OID %d, not the restored one"):format(DB, live), 1, true),
      r.stderr)
    assert.truthy(r.stderr:find("not swapping " .. kept .. " back", 1, true), r.stderr)
    assert.equal(live, oid(DB))
    assert.same(dbs, dbs_like(DB .. "_"))
    -- older undos that change the release are skipped after that; the lock is released
    assert.matches("%[bring the API back%] undo skipped: a newer change could not be undone", r.stderr)
    assert.equal(0, dep("blue").replicas)
    assert.is_true(lease_free(), "the lock is released")
    require("release").scale_all(c, NS, { [APP .. "-blue"] = 2 }, 120)
  end)

  it("leaves no `_restore_` database or scratch folder from a killed restore once resumed", function()
    -- pg_restore that takes its time, so the kill lands during it
    local bin = TMP .. "/slowbin"
    -- (it waits for as long as bgrun lives, then gives up: nothing outlives the kill)
    sh(("mkdir -p %q && printf '#!/bin/sh\\nwhile kill -0 $PPID 2>/dev/null; do sleep 0.1; done\\nexit 1\\n' > %q && chmod +x %q")
      :format(bin, bin .. "/pg_restore", bin .. "/pg_restore"))
    local before = state()
    kill_when({ PB .. "/rollback.lua", "env=local", "backup=" .. at10 }, "restoring into a fresh database",
              { PATH = bin .. ":" .. os.getenv("PATH") })
    assert.equal(1, #dbs_like(DB .. "_restore_"))
    local left = scratch_left()
    assert.matches("^bgrun%-restore%-", left)
    assert.equal("700", sh(("stat -c %%a %q"):format(SCRATCH .. "/" .. left)):gsub("%s+$", ""))
    local r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.same({}, dbs_like(DB .. "_restore_"))
    assert.equal("", scratch_left())
    assert.equal(before.oid, oid(DB))
    assert.equal(before.blue.replicas, dep("blue").replicas)
    assert.is_true(lease_free())
  end)

  it("does not drop a database the journal names unless it is the `_restore_` one it recorded", function()
    local e = select(2, pcall(restore.undo.cleanup, { target = DB, fresh = DB, stamp = "20260101000000_1" }))
    assert.equal("world_changed", e.code)
    assert.matches("is not a restore database bgrun recorded", e.message)
    e = select(2, pcall(restore.undo.cleanup, { work = TMP }))
    assert.equal("world_changed", e.code)
    assert.is_truthy(oid(DB))
    assert.truthy(io.open(TMP .. "/taken"))
  end)

  it("restore undo with expect: does nothing when the live database moved on, restores when it did not", function()
    local db = postgres.connect { dbname = DB }
    local id = backup.identity(db)
    db:close()
    local live = oid(DB)
    local dbs = dbs_like(DB .. "_")
    local ok, e = pcall(restore.undo.restore, { module = "restore", action = "restore", path = at10,
                                                database = { dbname = DB },
                                                expect = { version = 11, identity = id } })
    assert.is_false(ok)
    assert.equal("world_changed", e.code)
    assert.equal("WorldChanged", e.reason)
    assert.equal(("database %s changed since this run recorded it: found schema version 10, expected schema version 11; "
      .. "not restoring"):format(DB), e.message:match("^(.-not restoring)"))
    ok, e = pcall(restore.undo.restore, { path = at10, database = { dbname = DB },
                                          expect = { version = 10, identity = { oid = id.oid + 1 } } })
    assert.is_false(ok)
    assert.matches(("found OID %d, expected OID %d; not restoring"):format(id.oid, id.oid + 1), e.message)
    assert.equal(live, oid(DB))
    assert.same(dbs, dbs_like(DB .. "_"))
    restore.undo.restore { path = at10, database = { dbname = DB }, expect = { version = 10, identity = id } }
    assert.are_not.equal(live, oid(DB))
    assert.equal(10, schema_version())
  end)
end)
