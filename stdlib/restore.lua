-- Restoring a database from a backup without ever being without one: the
-- dump goes into a fresh database, is verified, and only then swapped in by
-- rename. The old database is kept (renamed) until somebody drops it.
--
-- Scratch space is a private 0700 folder removed on every path. While a
-- restore runs, its folder and its fresh `<db>_restore_<stamp>` database
-- are registered as compensations with undo data, so `bgrun resume` of a
-- killed run removes them. Every undo here first checks that the world is
-- still the one it recorded, and otherwise does nothing and raises
-- code "world_changed" saying why.
local backup = require("backup")
local log = require("log")
local postgres = require("postgres")

local M = {}

local qi = postgres.quote_ident

local function raise(t)
  t.module = t.module or "restore"
  error(bgrun.error(t), 2)
end

local function copy(t)
  local r = {}
  for k, v in pairs(t or {}) do r[k] = v end
  return r
end

local function schema_version(db)
  local ok, rows = pcall(db.query, db, "SELECT coalesce(max(version), 0) AS v FROM schema_migrations", nil,
                         { readonly = true })
  if not ok then return 0 end
  return rows[1].v
end

local function target_of(dbinfo)
  local target = dbinfo.dbname or os.getenv("PGDATABASE")
  if not target then
    raise { op = "restore", code = "no_database", reason = "Invalid",
            message = "no database named: set database.dbname or PGDATABASE" }
  end
  return target
end

-- A connection to the maintenance database of the server dbinfo names.
local function admin_connect(dbinfo, maintenance_db)
  local info = copy(dbinfo)
  info.dbname = maintenance_db or "postgres"
  return postgres.connect(info)
end

-- admin_connect for cleanups: a server restarting refuses connections for
-- a moment ("the database system is shutting down", "... is starting up",
-- connection refused). A cleanup waits for it, up to `seconds` (30), instead
-- of failing and leaving its half-restored database for a human. A refused
-- login or another error is not waited for.
local function admin_connect_patient(dbinfo, maintenance_db, seconds)
  local deadline = bgrun.now() + (seconds or 30)
  local pause = 0.2
  while true do
    local ok, db = pcall(admin_connect, dbinfo, maintenance_db)
    if ok then return db end
    local transient = type(db) == "table" and (db.reason == "ConnectionFailed" or db.code == "57P03")
    if not transient or bgrun.now() + pause > deadline then error(db, 0) end
    log.warn("the database server does not accept connections; waiting for it", { error = tostring(db) })
    bgrun.sleep(pause)
    pause = math.min(pause * 2, 2)
  end
end

-- The OID of database name, or nil when there is none.
local function oid_of(admin, name)
  local rows = admin:query("SELECT oid::bigint AS oid FROM pg_database WHERE datname = $1", { name },
                           { readonly = true })
  return rows[1] and rows[1].oid or nil
end
M.oid_of = oid_of

local function world_changed(op, message)
  raise { op = op, code = "world_changed", reason = "WorldChanged", message = message }
end

-- Renames target away and fresh into its place, shutting out connections
-- first; retries while a client reconnects in between.
local function swap(admin, target, fresh, old)
  admin:exec(("ALTER DATABASE %s WITH ALLOW_CONNECTIONS false"):format(qi(target)))
  local renamed = false
  local ok, err = pcall(function()
    for attempt = 1, 10 do
      -- client sessions only: autovacuum workers are superuser processes a
      -- non-superuser may not signal, and the rename stops them itself
      admin:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 "
                  .. "AND pid <> pg_backend_pid() AND backend_type = 'client backend'", { target })
      local rok, rerr = pcall(admin.exec, admin, ("ALTER DATABASE %s RENAME TO %s"):format(qi(target), qi(old)))
      if rok then renamed = true break end
      if attempt == 10 then error(rerr, 0) end
      bgrun.sleep(0.2)
    end
    admin:exec(("ALTER DATABASE %s RENAME TO %s"):format(qi(fresh), qi(target)))
  end)
  if not ok then
    -- put the original back where it was
    if renamed then pcall(admin.exec, admin, ("ALTER DATABASE %s RENAME TO %s"):format(qi(old), qi(target))) end
    pcall(admin.exec, admin, ("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true"):format(qi(target)))
    error(err, 0)
  end
  -- the kept copy must stay reachable for inspection
  admin:exec(("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true"):format(qi(old)))
end

-- Removes what a restore left: the scratch folder, and the fresh database
-- when it is still the one recorded (its name is <target>_restore_<stamp>
-- and it never got swapped in). A run killed between the two renames of
-- the swap left no database named target: the kept one goes back.
local function cleanup(d)
  if type(d.work) == "string" then
    local base = d.work:match("^/.+/([^/]+)$")
    if not base or not base:find("^bgrun%-restore%-") or d.work:find("/%.%.?/") then
      world_changed("cleanup", ("%s is not a restore folder of bgrun's; not removing it"):format(d.work))
    end
    bgrun.rmtree(d.work)
    log.info("restore scratch folder removed", { path = d.work })
  end
  if d.fresh == nil then return end
  local target, fresh, old = d.target, d.fresh, d.old
  if type(target) ~= "string" or type(fresh) ~= "string"
    or fresh ~= ("%s_restore_%s"):format(target, tostring(d.stamp))
    or not tostring(d.stamp):match("^%d+_%d+$") then
    world_changed("cleanup", ("%s is not a restore database bgrun recorded for %s; not dropping it")
      :format(tostring(fresh), tostring(target)))
  end
  local admin <close> = admin_connect_patient(d.database or {}, d.maintenance_db)
  if old and not oid_of(admin, target) and oid_of(admin, old) then
    admin:exec(("ALTER DATABASE %s RENAME TO %s"):format(qi(old), qi(target)))
    admin:exec(("ALTER DATABASE %s WITH ALLOW_CONNECTIONS true"):format(qi(target)))
    log.warn("the swap was cut short: the original database is back in place", { database = target, was = old })
  end
  if oid_of(admin, fresh) == nil then return end
  admin:exec(("DROP DATABASE %s WITH (FORCE)"):format(qi(fresh)))
  log.info("unfinished restore database dropped", { database = fresh })
end

-- pg_restore's parallel jobs: one per core, at most 4 (the server does
-- the work; more only queue)
local function default_jobs()
  local ok, r = pcall(require("proc").run, { "nproc" }, { readonly = true, timeout = 5 })
  local n = ok and r.code == 0 and tonumber(r.stdout:match("%d+")) or 1
  return math.max(1, math.min(4, n))
end

---Restores a backup (.tar.gz) over the database described by opts.database
---(conninfo table; unset fields from PG* variables). opts: path (a local
---file, or with bucket a key in it), database, maintenance_db ("postgres"),
---work_dir (where the private scratch folder goes; default TMPDIR or /tmp),
---bucket, s3 (extra s3.bucket options), jobs (pg_restore --jobs; default
---one per core up to 4), stream (with bucket: read the key from the
---bucket straight into pg_restore, nothing written locally; checksums are
---checked as it streams, before the swap), keep_old (kept databases left
---after the swap, newest first, this one always among them; default
---$BGRUN_KEEP_OLD, else 2; false: none dropped here). Returns {version=,
---old_database=, database=, oid= (of the restored database, now live),
---old_oid=, kept= (kept.prune's result)}. A local restore writes only the
---custom dump to scratch space (for pg_restore --jobs, which needs a file
---it can seek in). Unpacking and checksums: backup.verify (the archive module).
---@param opts {path: string, database: table?, maintenance_db: string?, work_dir: string?, bucket: string?, s3: table?, jobs: integer?, stream: boolean?, keep_old: integer|false|nil}
---@return {version: integer, old_database: string, database: string, oid: integer?, old_oid: integer?}
function M.restore(opts)
  local dbinfo = copy(opts.database)
  local target = target_of(dbinfo)
  local stream = opts.stream and opts.bucket ~= nil
  -- the pid keeps two restores within one second apart
  local stamp = os.date("!%Y%m%d%H%M%S") .. "_" .. bgrun.pid()
  local work, guard = nil, { cancel = function() end }
  if not stream then
    work = backup.mkdtemp(backup.abspath(opts.work_dir or os.getenv("TMPDIR") or "/tmp") .. "/bgrun-restore-",
                          "restoring " .. target)
    local undo = { module = "restore", action = "cleanup", work = work }
    guard = backup.guard("remove the restore's scratch folder " .. work, function() bgrun.rmtree(work) end, undo)
  end
  local ok, res = pcall(function()
    local metadata
    if stream then
      if bgrun.dry_run() then
        metadata = backup.verify_remote(opts.path, { bucket = opts.bucket, s3 = opts.s3 })
      end
    else
      -- a bucket key is fetched first (a local path is used as it is)
      local path = opts.bucket and backup.fetch(opts.path, work .. "/fetched", { bucket = opts.bucket, s3 = opts.s3 })
                   or opts.path
      metadata = backup.verify(path, work .. "/unpacked")
    end
    if bgrun.dry_run() then
      log.info("dry-run: would restore into a fresh database and swap it in", { database = target,
               version = metadata.migration_version })
      return { version = metadata.migration_version, database = target }
    end
    local fresh = ("%s_restore_%s"):format(target, stamp)
    local old = ("%s_old_%s"):format(target, stamp)
    local admin <close> = admin_connect(dbinfo, opts.maintenance_db)
    -- recorded before it exists: a kill right after CREATE leaves nothing unknown
    local dundo = { module = "restore", action = "cleanup", database = opts.database, maintenance_db = opts.maintenance_db,
                    target = target, fresh = fresh, old = old, stamp = stamp }
    local dguard = backup.guard("drop the unfinished database " .. fresh, function() cleanup(dundo) end, dundo)
    admin:exec(("CREATE DATABASE %s"):format(qi(fresh)))
    log.info("restoring into a fresh database", { database = fresh, version = metadata and metadata.migration_version,
                                                  streamed = stream or nil })
    local swapped = false
    local rok, rerr = pcall(function()
      local env = backup.pg_env(dbinfo)
      env.PGDATABASE = fresh
      if stream then
        -- the custom dump flows from the bucket into pg_restore; the
        -- checksums are known at the end, before anything is swapped
        metadata = backup.verify_remote(opts.path, { bucket = opts.bucket, s3 = opts.s3, restore = {
          argv = { "pg_restore", "--no-owner", "--exit-on-error", "--dbname", fresh }, env = env } })
      else
        local jobs = math.tointeger(opts.jobs) or default_jobs()
        local r = require("proc").run({ "pg_restore", "--no-owner", "--exit-on-error", "--jobs=" .. jobs,
                                        "--dbname", fresh, work .. "/unpacked/full_backup.dump" },
                                      { env = env, timeout = opts.timeout or 3600,
                                         -- how far pg_restore has read the dump (engine/progress.h)
                                         progress = { label = "restore full_backup.dump",
                                                      reads = work .. "/unpacked/full_backup.dump" } })
        if r.code ~= 0 then
          raise { op = "pg_restore", code = "command_failed", reason = "CommandFailed", exit_code = r.code,
                  message = ("pg_restore exited with %d: %s"):format(r.code, (r.stderr or ""):gsub("%s+$", "")) }
        end
      end
      local fresh_info = copy(dbinfo)
      fresh_info.dbname = fresh
      local fdb <close> = postgres.connect(fresh_info)
      local got = schema_version(fdb)
      local want = metadata.migration_version or 0
      if got ~= want then
        raise { op = "verify restore", code = "version_mismatch", reason = "VersionMismatch",
                message = ("restored schema_migrations is at %s, the backup's metadata says %s"):format(got, want) }
      end
      fdb:close()
      swap(admin, target, fresh, old)
      swapped = true
    end)
    if not rok then
      if not swapped then
        pcall(admin.exec, admin, ("DROP DATABASE IF EXISTS %s WITH (FORCE)"):format(qi(fresh)))
      end
      dguard.cancel()
      error(rerr, 0)
    end
    dguard.cancel()
    log.info("database restored", { database = target, version = metadata.migration_version,
                                    kept_as = old })
    return { version = metadata.migration_version, old_database = old, database = target,
             oid = oid_of(admin, target), old_oid = oid_of(admin, old) }
  end)
  if work then bgrun.rmtree(work) end -- our own scratch space
  guard.cancel()
  if not ok then error(res, 0) end
  -- kept databases do not pile up (stdlib/kept.lua); opts.keep_old = false
  -- leaves it to the caller (the rollback playbooks, after their checks)
  if res.old_database and opts.keep_old ~= false then
    local database = copy(dbinfo)
    database.dbname = target
    res.kept = require("kept").after_swap { database = database, maintenance_db = opts.maintenance_db,
                                            keep = opts.keep_old, just_kept = res.old_database }
  end
  return res
end

---Checks that the database named by dbinfo is still the one expect
---describes ({version=, identity={oid=}}): its schema version (the
---highest in schema_migrations) and its OID. Raises code "world_changed"
---otherwise.
---@param dbinfo table conninfo
---@param expect {version: integer?, identity: {oid: integer?, database: string?}?}
function M.check_expected(dbinfo, expect)
  local target = target_of(copy(dbinfo))
  local db <close> = postgres.connect(dbinfo)
  local found = { version = schema_version(db), identity = backup.identity(db) }
  db:close()
  local problems, wanted = {}, {}
  if expect.version ~= nil and found.version ~= expect.version then
    problems[#problems + 1] = ("schema version %s"):format(tostring(found.version))
    wanted[#wanted + 1] = ("schema version %s"):format(tostring(expect.version))
  end
  local oid = expect.identity and expect.identity.oid
  if oid ~= nil and found.identity.oid ~= oid then
    problems[#problems + 1] = ("OID %s"):format(tostring(found.identity.oid))
    wanted[#wanted + 1] = ("OID %s"):format(tostring(oid))
  end
  if #problems > 0 then
    raise { op = "restore " .. target, code = "world_changed", reason = "WorldChanged", found = found, expected = expect,
            message = ("database %s changed since this run recorded it: found %s, expected %s; not restoring. "
              .. "Another run has changed it since: look at it before restoring a backup by hand")
              :format(target, table.concat(problems, " and "), table.concat(wanted, " and ")) }
  end
end

---Swaps back a restore: the database that was replaced (kept as
---d.old) goes back in place, and the restored one is renamed aside
---(<target>_aside_<stamp>) for inspection. d: database (conninfo),
---maintenance_db, target, old, oid (of the restored database, live now),
---old_oid. Acts only when the live database is still the restored one
---(by OID) and the kept one still exists; otherwise raises
---code "world_changed" and changes nothing. Returns the aside name.
---@param d table
---@return string aside
function M.swap_back(d)
  local target, old = d.target, d.old
  local admin <close> = admin_connect_patient(d.database or {}, d.maintenance_db)
  local live, kept = oid_of(admin, target), oid_of(admin, old)
  if live == nil or live ~= d.oid then
    world_changed("swap back " .. target, ("database %s is %s, not the restored one (OID %s) this run swapped in; "
      .. "not swapping %s back"):format(target, live and ("OID " .. live) or "gone", tostring(d.oid), old))
  end
  if kept == nil or (d.old_oid and kept ~= d.old_oid) then
    world_changed("swap back " .. target, ("the replaced database %s is %s; not swapping it back over %s")
      :format(old, kept and ("OID " .. kept .. ", not " .. tostring(d.old_oid)) or "gone", target))
  end
  local aside = ("%s_aside_%s"):format(target, os.date("!%Y%m%d%H%M%S") .. "_" .. bgrun.pid())
  swap(admin, target, old, aside)
  log.warn("the replaced database is back in place; the restored one is kept aside",
           { database = target, aside = aside })
  return aside
end

---Undo actions `bgrun resume` runs from a journal.
M.undo = {
  -- restore the database a killed run had migrated, from the backup it
  -- took first; with d.expect, only while the database is still at the
  -- version and OID the run left it
  restore = function(d)
    if d.expect then M.check_expected(d.database or {}, d.expect) end
    M.restore { path = d.path, database = d.database, bucket = d.bucket, maintenance_db = d.maintenance_db,
                stream = d.stream }
  end,
  -- remove a killed restore's scratch folder and unfinished database
  cleanup = cleanup,
  -- put back the database a rollback replaced
  swap_back = function(d) M.swap_back(d) end,
}

return M
