-- Database backups: schema.sql, data.sql, full_backup.dump (pg_dump custom
-- format) and metadata.json (environment, database, migration version,
-- sizes and sha256 of each file, tool versions, time), packed as one
-- .tar.gz by the archive module and uploaded to the environment's bucket
-- as <env>/<name>.tar.gz (pinned ones with metadata pinned=true). The last
-- `keep` backups are kept locally; pinned ones (taken before a migration)
-- are never deleted by retention.
--
-- Names are unique per run (millisecond time and the pid) and still sort
-- by time; each run works in a private 0700 folder next to the backups and
-- renames the finished archive into place, so a half-written one is never
-- listed, and a killed run's folder is removed by `bgrun resume`.
local archive = require("archive")
local digest = require("digest")
local json = require("json")
local log = require("log")
local proc = require("proc")

local M = {}

-- s3 loads libcurl: required on first use only
local function s3() return require("s3") end

M.FILES = { "schema.sql", "data.sql", "full_backup.dump" }

---metadata.json is read whole: anything larger is not one of ours.
M.METADATA_MAX = 1024 * 1024

-- work folders of backup.create start with this, next to the backups
local WORK_PREFIX = ".bgrun-backup-"
-- and backup.verify's, in TMPDIR
local VERIFY_PREFIX = "bgrun-verify-"

local function raise(t)
  t.module = t.module or "backup"
  error(bgrun.error(t), 2)
end

-- libpq variables for pg_dump/pg_restore from a conninfo table; the
-- password stays in the inherited PGPASSWORD or ~/.pgpass, never in argv.
local PGVARS = { host = "PGHOST", port = "PGPORT", dbname = "PGDATABASE", user = "PGUSER",
                 sslmode = "PGSSLMODE", service = "PGSERVICE", password = "PGPASSWORD" }

---The environment for libpq programs reaching the database described by db.
---@param db table? conninfo fields
---@return table<string, string>
function M.pg_env(db)
  local env = {}
  for k, v in pairs(db or {}) do
    if PGVARS[k] then env[PGVARS[k]] = tostring(v) end
  end
  return env
end

local function must(r, what)
  if r.code ~= 0 then
    raise { op = what, code = "command_failed", reason = "CommandFailed", exit_code = r.code,
            message = ("%s exited with %d: %s"):format(what, r.code, (r.stderr or ""):gsub("%s+$", "")) }
  end
  return r
end

local function run(argv, opts, what)
  return must(proc.run(argv, opts), what or argv[1])
end

local function file_size(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local n = f:seek("end")
  f:close()
  return n
end

---An absolute form of path (relative ones are taken from the current
---folder), so journals and later runs from elsewhere find the same file.
---@param path string
---@return string
function M.abspath(path)
  if path:sub(1, 1) == "/" then return path end
  local r = proc.run({ "realpath", "-m", "-s", "--", path }, { readonly = true })
  if r.code ~= 0 then
    raise { op = "abspath " .. path, code = "command_failed", reason = "CommandFailed",
            message = ("cannot make %s absolute: %s"):format(path, (r.stderr or ""):gsub("%s+$", "")) }
  end
  return (r.stdout:gsub("\n$", ""))
end

-- UTC time to the millisecond; names sort by it.
local function stamp_ms()
  local r = proc.run({ "date", "-u", "+%Y%m%dT%H%M%S.%3NZ" }, { readonly = true })
  local s = r.code == 0 and r.stdout:match("^(%d+T%d+%.%d%d%dZ)")
  return s or (os.date("!%Y%m%dT%H%M%S") .. ".000Z")
end

---A private 0700 folder: prefix followed by six random characters.
---@param prefix string
---@param what string for the error message
---@return string
function M.mkdtemp(prefix, what)
  local parent = prefix:match("^(.*)/[^/]*$")
  if parent and parent ~= "" then
    local ok, err = bgrun.mkdir(parent)
    if not ok then
      raise { op = "mkdir " .. parent, code = "io", reason = "IOError",
              message = ("cannot create %s for %s: %s"):format(parent, what, tostring(err)) }
    end
  end
  local dir, err = bgrun.mkdtemp(prefix)
  if not dir then
    raise { op = "mkdtemp " .. prefix, code = "io", reason = "IOError",
            message = ("cannot create a private folder for %s at %sXXXXXX: %s"):format(what, prefix, tostring(err)) }
  end
  return dir
end

---Registers the removal of scratch space (a folder, an unfinished
---database) as a compensation when running under a playbook. It is safe
---whatever else could not be undone, so it is kept (keep=true): it runs
---even after a newer compensation failed.
---@return {cancel: fun()}
function M.guard(name, fn, undo)
  if type(_G.on_failure) == "function" then return _G.on_failure(name, fn, undo, { keep = true }) end
  return { cancel = function() end }
end

local function tool_version(argv)
  local ok, r = pcall(proc.run, argv, { readonly = true, timeout = 10 })
  return ok and r.code == 0 and r.stdout:gsub("%s+$", "") or "unknown"
end

---Lists the backups in dir, oldest first: {name=, path=, pinned=}.
---@param dir string
---@return table[]
function M.list(dir)
  local r = proc.run({ "find", dir, "-maxdepth", "1", "-name", "*.tar.gz", "-type", "f" }, { readonly = true })
  local out = {}
  if r.code ~= 0 then return out end
  for path in r.stdout:gmatch("[^\n]+") do
    local name = path:match("([^/]+)%.tar%.gz$")
    out[#out + 1] = { name = name, path = path, pinned = name:find("%.pinned$") ~= nil }
  end
  table.sort(out, function(a, b) return a.name < b.name end)
  return out
end

---Deletes the oldest unpinned backups beyond keep.
---@param dir string
---@param keep integer
---@return string[] deleted paths
function M.prune(dir, keep)
  local unpinned = {}
  for _, b in ipairs(M.list(dir)) do
    if not b.pinned then unpinned[#unpinned + 1] = b end
  end
  local deleted = {}
  for i = 1, #unpinned - keep do
    os.remove(unpinned[i].path)
    deleted[#deleted + 1] = unpinned[i].path
  end
  if #deleted > 0 then log.info("old backups removed", { count = #deleted, kept = keep }) end
  return deleted
end

---Takes a backup. opts: env (name), database (conninfo table), dir
---(where backups live), label, pinned, version (migration version), keep
---(default 10), bucket (upload there; without it the backup stays local
---with a warning), s3 (extra s3.bucket options), identity (of the
---database, from M.identity; read here when absent). Returns {path=
---(absolute), metadata=, key=, bucket=}. The name is
---<UTC time to the ms>-<pid>-<env>-<label>[.pinned].tar.gz, unique per run.
---@param opts table
---@return {path: string, metadata: table, key: string?, bucket: string?}
function M.create(opts)
  local dir = M.abspath(assert(opts.dir, "backup.create: opts.dir is required"))
  local label = (opts.label or "manual"):gsub("[^%w._-]", "-")
  local name = ("%s-%d-%s-%s%s"):format(stamp_ms(), bgrun.pid(), opts.env or "db", label,
                                        opts.pinned and ".pinned" or "")
  local path = dir .. "/" .. name .. ".tar.gz"
  if bgrun.dry_run() then
    log.info("dry-run: would back up the database", { path = path, pinned = opts.pinned or false })
    if opts.bucket then
      log.info("dry-run: would upload the backup", { bucket = opts.bucket, key = M.key(path, opts.env) })
    end
    return { path = path, metadata = {}, dry_run = true, key = opts.bucket and M.key(path, opts.env) or nil,
             bucket = opts.bucket }
  end
  local work = M.mkdtemp(dir .. "/" .. WORK_PREFIX, "the backup " .. name)
  -- a killed run leaves only this folder; `bgrun resume` removes it
  local guard = M.guard("remove the unfinished backup " .. name, function() bgrun.rmtree(work) end,
                        { module = "backup", action = "cleanup", work = work })
  local env = M.pg_env(opts.database)
  local ok, err = pcall(function()
    local timeout = opts.timeout or 3600
    -- progress: the dump file's growth (engine/progress.h)
    run({ "pg_dump", "--schema-only", "--no-owner", "--file", work .. "/schema.sql" },
        { env = env, timeout = timeout, progress = { label = "dump schema.sql", file = work .. "/schema.sql" } },
        "pg_dump --schema-only")
    run({ "pg_dump", "--data-only", "--no-owner", "--file", work .. "/data.sql" },
        { env = env, timeout = timeout, progress = { label = "dump data.sql", file = work .. "/data.sql" } },
        "pg_dump --data-only")
    run({ "pg_dump", "--format=custom", "--no-owner", "--file", work .. "/full_backup.dump" },
        { env = env, timeout = timeout, progress = { label = "dump full_backup.dump", file = work .. "/full_backup.dump" } },
        "pg_dump --format=custom")
    local files = {}
    for _, f in ipairs(M.FILES) do
      files[f] = { size = file_size(work .. "/" .. f), sha256 = digest.sha256_file(work .. "/" .. f) }
    end
    local db = opts.database or {}
    local identity = opts.identity
    if identity == nil then
      local postgres = require("postgres")
      local conn <close> = postgres.connect(db)
      identity = M.identity(conn)
    end
    local metadata = {
      env = opts.env,
      label = label,
      pinned = opts.pinned or false,
      database = { name = identity.database or db.dbname or os.getenv("PGDATABASE"),
                   host = db.host or os.getenv("PGHOST"),
                   port = tostring(db.port or os.getenv("PGPORT") or "5432") },
      database_identity = identity,
      migration_version = opts.version,
      files = files,
      tools = { bgrun = bgrun.version, pg_dump = tool_version({ "pg_dump", "--version" }) },
      created_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    }
    local f = assert(io.open(work .. "/metadata.json", "w"))
    f:write(json.encode(metadata, { indent = 2, sort_keys = true }), "\n")
    f:close()
    local entries = { { name = "metadata.json", path = work .. "/metadata.json" } }
    for _, n in ipairs(M.FILES) do entries[#entries + 1] = { name = n, path = work .. "/" .. n } end
    -- written inside the private folder, then renamed into place whole
    archive.create(work .. "/backup.tar.gz", entries, { format = "tar.gz" })
    local rok, rerr = os.rename(work .. "/backup.tar.gz", path)
    if not rok then
      raise { op = "create " .. path, code = "io", reason = "IOError",
              message = ("cannot move the backup into place as %s: %s"):format(path, tostring(rerr)) }
    end
    return metadata
  end)
  bgrun.rmtree(work)
  guard.cancel()
  if not ok then error(err, 0) end
  log.info("backup taken", { path = path, size = file_size(path), version = opts.version,
                             pinned = opts.pinned or false })
  local uploaded
  if opts.bucket then
    local uok, uerr = pcall(M.upload, path, { bucket = opts.bucket, env = opts.env, pinned = opts.pinned,
                                              version = opts.version, s3 = opts.s3 })
    if not uok then
      -- a backup that is not off the machine is not the backup we promised
      log.error("backup upload failed; the local copy is kept", { path = path, error = tostring(uerr) })
      error(uerr, 0)
    end
    uploaded = uerr
  else
    log.warn("no bucket configured: the backup is kept locally only", { path = path })
  end
  M.prune(dir, opts.keep or 10)
  return { path = path, metadata = err, key = uploaded and uploaded.key, bucket = opts.bucket }
end

---The identity of the database a connection is on: its name, the
---cluster's system identifier (text; nil when the role may not read
---pg_control_system()) and the database's OID (which a restore by rename
---changes: informational).
---@param db any a postgres connection
---@return {database: string, system_identifier: string?, oid: integer}
function M.identity(db)
  local row = db:query("SELECT current_database() AS database, oid::bigint AS oid FROM pg_database "
    .. "WHERE datname = current_database()", nil, { readonly = true })[1]
  local ok, rows = pcall(db.query, db, "SELECT system_identifier::text AS s FROM pg_control_system()", nil,
                         { readonly = true })
  return { database = row.database, oid = row.oid, system_identifier = ok and rows[1] and rows[1].s or nil }
end

---Why a backup (its metadata) is not of the database identified by
---target (M.identity), or nil when it is: the names must match, and the
---system identifiers when both are known. Backups from before identities
---were recorded are compared by name only.
---@param metadata table
---@param target {database: string, system_identifier: string?, oid: integer?}
---@return string? problem
function M.identity_mismatch(metadata, target)
  local id = type(metadata.database_identity) == "table" and metadata.database_identity or {}
  local name = id.database
  if name == nil then
    name = type(metadata.database) == "table" and metadata.database.name or metadata.database
  end
  if type(name) == "string" and name ~= target.database then
    return ("it is a backup of database %s, not %s"):format(name, target.database)
  end
  if id.system_identifier and target.system_identifier and id.system_identifier ~= target.system_identifier then
    return ("it is a backup of database %s on the cluster with system identifier %s, and %s is on %s")
      :format(tostring(name), id.system_identifier, target.database, target.system_identifier)
  end
  return nil
end

---The bucket key of a backup file: <env>/<file name>.
---@param path string
---@param env string?
---@return string
function M.key(path, env)
  return ("%s/%s"):format(env or "db", path:match("([^/]+)$"))
end

local function bucket_of(opts)
  local cfg = {}
  for k, v in pairs(opts.s3 or {}) do cfg[k] = v end
  cfg.bucket = opts.bucket
  return s3().bucket(cfg)
end

---Uploads a backup file to opts.bucket as <env>/<name>.tar.gz, with
---metadata pinned=true for pinned backups. opts: bucket, env, pinned,
---version, s3 (extra s3.bucket options). Returns {key=, etag=, size=}.
---@param path string
---@param opts {bucket: string, env: string?, pinned: boolean?, version: integer?, s3: table?}
---@return {key: string, etag: string?, size: integer}
function M.upload(path, opts)
  local key = M.key(path, opts.env)
  local b <close> = bucket_of(opts)
  local meta = { env = opts.env or "", version = tostring(opts.version or "") }
  if opts.pinned or path:find("%.pinned%.tar%.gz$") then meta.pinned = "true" end
  local r = b:put_file(key, path, { content_type = "application/gzip", metadata = meta })
  log.info(r.dry_run and "dry-run: would upload the backup" or "backup uploaded",
           { bucket = opts.bucket, key = key, size = r.size, pinned = meta.pinned == "true" })
  return { key = key, etag = r.etag, size = r.size }
end

---Makes a backup available locally: ref is a local .tar.gz path (one
---starting with "/" or "./" is never looked up in a bucket), a key in
---opts.bucket ("local/2026...tar.gz"), or s3://bucket/key. Downloads into
---dir. Returns the absolute path. A ref that names nothing (no such
---file, no such key) is bad input: code "usage", reason "NotFound".
---@param ref string
---@param dir string
---@param opts {bucket: string?, s3: table?}?
---@return string path
function M.fetch(ref, dir, opts)
  opts = opts or {}
  local f = io.open(ref, "rb")
  if f then
    f:close()
    return M.abspath(ref)
  end
  if ref:find("^/") or ref:find("^%.%.?/") then
    raise { op = "fetch " .. ref, code = "usage", reason = "NotFound",
            message = ("backup %s does not exist"):format(ref) }
  end
  local bucket, key = ref:match("^s3://([^/]+)/(.+)$")
  if not bucket then bucket, key = opts.bucket, ref end
  if not bucket then
    raise { op = "fetch " .. ref, code = "usage", reason = "NotFound",
            message = ("backup %s is not a local file and no bucket is configured to look it up in"):format(ref) }
  end
  local b <close> = bucket_of({ bucket = bucket, s3 = opts.s3 })
  dir = M.abspath(dir)
  local ok, err = bgrun.mkdir(dir)
  if not ok then
    raise { op = "fetch " .. ref, code = "io", reason = "IOError",
            message = ("cannot create %s to fetch %s into: %s"):format(dir, ref, tostring(err)) }
  end
  local name = key:match("([^/]+)$")
  local path = dir .. "/" .. name
  -- downloaded privately and renamed into place: a concurrent fetch of the
  -- same key never sees a half-written file
  local work = M.mkdtemp(dir .. "/" .. WORK_PREFIX, "fetching " .. key)
  local guard = M.guard("remove the unfinished download " .. work, function() bgrun.rmtree(work) end,
                        { module = "backup", action = "cleanup", work = work })
  local gok, size = pcall(b.get_file, b, key, work .. "/" .. name)
  if gok then
    local rok, rerr = os.rename(work .. "/" .. name, path)
    if not rok then
      gok, size = false, bgrun.error { module = "backup", op = "fetch " .. ref, code = "io", reason = "IOError",
                                       message = ("cannot move %s into place as %s: %s"):format(key, path, tostring(rerr)) }
    end
  end
  bgrun.rmtree(work)
  guard.cancel()
  if not gok then
    if type(size) == "table" and size.code == 404 then
      raise { op = "fetch " .. ref, code = "usage", reason = "NotFound", key = key, bucket = bucket,
              message = ("backup %s does not exist in bucket %s (%s)"):format(key, bucket, tostring(size)) }
    end
    error(size, 0)
  end
  log.info("backup fetched", { bucket = bucket, key = key, path = path, size = size })
  return path
end

-- Reads metadata.json with a size cap: a larger file is not ours.
local function read_metadata(file, path)
  local size = file_size(file)
  if not size then
    raise { op = "verify " .. path, code = "usage", reason = "Invalid",
            message = ("backup %s has no metadata.json"):format(path) }
  end
  if size > M.METADATA_MAX then
    raise { op = "verify " .. path, code = "usage", reason = "TooLarge", file = "metadata.json",
            message = ("metadata.json in %s is %d bytes, more than the %d a backup's metadata may have")
              :format(path, size, M.METADATA_MAX) }
  end
  local f = assert(io.open(file, "rb"))
  local text = f:read(M.METADATA_MAX + 1) or ""
  f:close()
  local ok, metadata = pcall(json.decode, text)
  if not ok or type(metadata) ~= "table" then
    raise { op = "verify " .. path, code = "usage", reason = "Invalid", file = "metadata.json",
            message = ("metadata.json in %s is not a JSON object: %s"):format(path, tostring(metadata)) }
  end
  return metadata
end

---Unpacks a backup into dir and checks every file against metadata.json
---(read with a size cap, M.METADATA_MAX). A backup that fails is bad
---input: code "usage", reason "ChecksumMismatch" (naming the file),
---"TooLarge", "Invalid" or "NotFound". Returns the metadata. Without dir
---it unpacks into a private temporary folder it removes again.
---@param path string the .tar.gz
---@param dir string? an empty directory to unpack into
---@return table metadata
function M.verify(path, dir)
  if dir == nil then
    local tmp = M.mkdtemp(M.abspath(os.getenv("TMPDIR") or "/tmp") .. "/" .. VERIFY_PREFIX, "verifying " .. path)
    local guard = M.guard("remove the unpacked backup " .. tmp, function() bgrun.rmtree(tmp) end,
                          { module = "backup", action = "cleanup", work = tmp })
    local ok, res = pcall(M.verify, path, tmp)
    bgrun.rmtree(tmp)
    guard.cancel()
    if not ok then error(res, 0) end
    return res
  end
  local pf = io.open(path, "rb")
  if not pf then
    raise { op = "verify " .. path, code = "usage", reason = "NotFound",
            message = ("backup %s does not exist"):format(path) }
  end
  pf:close()
  local mok, merr = bgrun.mkdir(dir)
  if not mok then
    raise { op = "verify " .. path, code = "io", reason = "IOError",
            message = ("cannot create %s to unpack %s into: %s"):format(dir, path, tostring(merr)) }
  end
  -- our own scratch space: unpacked under --dry-run too
  local xok, xerr = pcall(archive.extract, path, dir, { readonly = true })
  if not xok then
    raise { op = "verify " .. path, code = "usage", reason = "Invalid",
            message = ("backup %s cannot be unpacked: %s"):format(path, tostring(xerr)) }
  end
  local metadata = read_metadata(dir .. "/metadata.json", path)
  for _, name in ipairs(M.FILES) do
    local want = type(metadata.files) == "table" and metadata.files[name]
    local got = io.open(dir .. "/" .. name) and digest.sha256_file(dir .. "/" .. name)
    if type(want) ~= "table" or want.sha256 ~= got then
      raise { op = "verify " .. path, code = "usage", reason = "ChecksumMismatch", file = name,
              message = ("%s in %s: sha256 %s, metadata says %s"):format(name, path, tostring(got),
                tostring(type(want) == "table" and want.sha256 or nil)) }
    end
  end
  log.info("backup verified", { path = path, version = metadata.migration_version })
  return metadata
end

---Undo actions `bgrun resume` runs from a journal.
M.undo = {
  -- the private folder of a backup a killed run was taking; only a folder
  -- of ours (its name says so) is removed
  cleanup = function(d)
    local work = type(d.work) == "string" and d.work or ""
    local base = work:match("^/.+/([^/]+)$")
    local ours = base and (base:sub(1, #WORK_PREFIX) == WORK_PREFIX or base:sub(1, #VERIFY_PREFIX) == VERIFY_PREFIX)
    if not ours or work:find("/%.%.?/") then
      raise { op = "cleanup", code = "world_changed", reason = "WorldChanged",
              message = ("%s is not a backup work folder of bgrun's; not removing it"):format(tostring(d.work)) }
    end
    local ok, err = bgrun.rmtree(work)
    if not ok then
      raise { op = "cleanup " .. work, code = "io", reason = "IOError",
              message = ("cannot remove the unfinished backup folder %s: %s"):format(work, tostring(err)) }
    end
    log.info("unfinished backup folder removed", { path = work })
  end,
}

return M
