-- Restoring a database from a backup without ever being without one: the
-- dump goes into a fresh database, is verified, and only then swapped in by
-- rename. The old database is kept (renamed) until somebody drops it.
local backup = require("backup")
local log = require("log")
local postgres = require("postgres")
local proc = require("proc")

local M = {}

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

-- Renames target away and fresh into its place, shutting out connections
-- first; retries while a client reconnects in between.
local function swap(admin, target, fresh, old)
  local qi = postgres.quote_ident
  admin:exec(("ALTER DATABASE %s WITH ALLOW_CONNECTIONS false"):format(qi(target)))
  local renamed = false
  local ok, err = pcall(function()
    for attempt = 1, 10 do
      admin:query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                  { target })
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

---Restores a backup (.tar.gz) over the database described by opts.database
---(conninfo table; unset fields from PG* variables). opts: path (a local
---file, or with bucket a key in it), database, maintenance_db ("postgres"),
---work_dir, bucket, s3 (extra s3.bucket options). Returns {version=,
---old_database=}. Unpacking and checksums: backup.verify (the archive
---module).
---@param opts {path: string, database: table?, maintenance_db: string?, work_dir: string?, bucket: string?, s3: table?}
---@return {version: integer, old_database: string, database: string}
function M.restore(opts)
  local dbinfo = copy(opts.database)
  local target = dbinfo.dbname or os.getenv("PGDATABASE")
  if not target then
    raise { op = "restore", code = "no_database", reason = "Invalid",
            message = "no database named: set database.dbname or PGDATABASE" }
  end
  -- the pid keeps two restores within one second apart
  local stamp = os.date("!%Y%m%d%H%M%S") .. "_" .. bgrun.pid()
  local work = opts.work_dir or ("/tmp/bgrun-restore-" .. bgrun.pid() .. "-" .. stamp)
  local ok, res = pcall(function()
    -- a bucket key is fetched first (a local path is used as it is)
    local path = opts.bucket and backup.fetch(opts.path, work .. "-fetched", { bucket = opts.bucket, s3 = opts.s3 })
                 or opts.path
    local metadata = backup.verify(path, work)
    if bgrun.dry_run() then
      log.info("dry-run: would restore into a fresh database and swap it in", { database = target,
               version = metadata.migration_version })
      return { version = metadata.migration_version, database = target }
    end
    local fresh = ("%s_restore_%s"):format(target, stamp)
    local old = ("%s_old_%s"):format(target, stamp)
    local admin_info = copy(dbinfo)
    admin_info.dbname = opts.maintenance_db or "postgres"
    local admin <close> = postgres.connect(admin_info)
    admin:exec(("CREATE DATABASE %s"):format(postgres.quote_ident(fresh)))
    local swapped = false
    local rok, rerr = pcall(function()
      local env = backup.pg_env(dbinfo)
      env.PGDATABASE = fresh
      local r = proc.run({ "pg_restore", "--no-owner", "--exit-on-error", "--dbname", fresh,
                           work .. "/full_backup.dump" }, { env = env, timeout = opts.timeout or 3600 })
      if r.code ~= 0 then
        raise { op = "pg_restore", code = "command_failed", reason = "CommandFailed", exit_code = r.code,
                message = ("pg_restore exited with %d: %s"):format(r.code, (r.stderr or ""):gsub("%s+$", "")) }
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
        pcall(admin.exec, admin, ("DROP DATABASE IF EXISTS %s"):format(postgres.quote_ident(fresh)))
      end
      error(rerr, 0)
    end
    log.info("database restored", { database = target, version = metadata.migration_version,
                                    kept_as = old })
    return { version = metadata.migration_version, old_database = old, database = target }
  end)
  proc.run({ "rm", "-rf", work, work .. "-fetched" }, { readonly = true }) -- our own scratch space
  if not ok then error(res, 0) end
  return res
end

---Undo actions `bgrun resume` runs from a journal: restore the database a
---killed run had migrated, from the backup it took first.
M.undo = {
  restore = function(d)
    M.restore { path = d.path, database = d.database, bucket = d.bucket }
  end,
}

return M
