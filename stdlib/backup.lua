-- Database backups: schema.sql, data.sql, full_backup.dump (pg_dump custom
-- format) and metadata.json (environment, database, migration version,
-- sizes and sha256 of each file, tool versions, time), packed as one
-- .tar.gz and uploaded to the environment's bucket as <env>/<name>.tar.gz
-- (pinned ones with metadata pinned=true). The three dumps read one
-- exported snapshot and stream into the archive, the local file and the
-- bucket at once (archive.writer into s3's b:upload): nothing is staged,
-- nothing read twice, and local=false writes nothing locally at all. The
-- last `keep` backups are kept locally; pinned ones (taken before a
-- migration) are never deleted by retention.
--
-- Names are unique per run (millisecond time and the pid) and still sort
-- by time; each run works in a private 0700 folder next to the backups and
-- renames the finished archive into place, so a half-written one is never
-- listed, and a killed run's folder is removed by `bgrun resume` (which
-- also aborts its unfinished multipart upload).
local archive = require("archive")
local json = require("json")
local log = require("log")
local proc = require("proc")

local M = {}

-- s3 loads libcurl: required on first use only
local function s3() return require("s3") end
local bucket_of -- below

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
  local out = {}
  local files = require("fs").list(dir, { type = "file", suffix = ".tar.gz" })
  for _, file in ipairs(files or {}) do
    local name = file:sub(1, -#".tar.gz" - 1)
    out[#out + 1] = { name = name, path = dir .. "/" .. file, pinned = name:find("%.pinned$") ~= nil }
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

---The pg_dump commands of a backup, all three reading the one snapshot
---exported by the transaction that holds it (pg_export_snapshot), so
---schema.sql, data.sql and full_backup.dump show the database at the same
---instant whatever is written meanwhile. compress: pg_dump's --compress
---for the custom dump (nil: pg_dump's default).
---@param snapshot string
---@param compress integer?
---@return table[] {name=, argv=, level=} in archive order
function M.dump_commands(snapshot, compress)
  local snap = "--snapshot=" .. snapshot
  local custom = { "pg_dump", snap, "--format=custom", "--no-owner" }
  if compress then custom[#custom + 1] = "--compress=" .. tostring(compress) end
  return {
    { name = "schema.sql", argv = { "pg_dump", snap, "--schema-only", "--no-owner" }, level = 1 },
    { name = "data.sql", argv = { "pg_dump", snap, "--data-only", "--no-owner" }, level = 1 },
    -- compressed by pg_dump already: stored, not compressed a second time
    { name = "full_backup.dump", argv = custom, level = 0 },
  }
end

---Takes a backup. opts: env (name), database (conninfo table), dir
---(where backups live), label, pinned, version (migration version), keep
---(default 10), bucket (upload there; without it the backup stays local
---with a warning), s3 (extra s3.bucket options), identity (of the
---database, from M.identity; read here when absent), local (default
---true; false streams straight to the bucket and writes nothing in dir),
---compress (pg_dump --compress of the custom dump), parallel (parts
---uploaded at once). Returns {path= (absolute; nil with local=false),
---metadata=, key=, bucket=, url=}. The name is
---<UTC time to the ms>-<pid>-<env>-<label>[.pinned].tar.gz, unique per run.
---
---Nothing is staged: one REPEATABLE READ transaction exports its snapshot,
---the three pg_dumps run with --snapshot one after another, and each one's
---output streams into the .tar.gz (archive.writer: sha256 and size counted
---as it passes) and from there into the local file and the bucket's
---multipart upload at once (parts sent in parallel). Memory stays a few
---parts whatever the database's size.
---@param opts table
---@return {path: string?, metadata: table, key: string?, bucket: string?, url: string?}
function M.create(opts)
  local keep_local = opts["local"] ~= false
  if not keep_local and not opts.bucket then
    raise { op = "create", code = "usage", reason = "Invalid",
            message = ("local=false streams the backup to the environment's bucket, and %s has no bucket configured")
              :format(tostring(opts.env or "this environment")) }
  end
  local dir = M.abspath(assert(opts.dir, "backup.create: opts.dir is required"))
  local label = (opts.label or "manual"):gsub("[^%w._-]", "-")
  local name = ("%s-%d-%s-%s%s"):format(stamp_ms(), bgrun.pid(), opts.env or "db", label,
                                        opts.pinned and ".pinned" or "")
  local path = dir .. "/" .. name .. ".tar.gz"
  local key = opts.bucket and M.key(path, opts.env) or nil
  local url = key and ("s3://%s/%s"):format(opts.bucket, key) or nil
  if bgrun.dry_run() then
    log.info("dry-run: would back up the database", { path = keep_local and path or nil, pinned = opts.pinned or false,
                                                      streamed_to = not keep_local and url or nil })
    if opts.bucket then
      log.info("dry-run: would upload the backup", { bucket = opts.bucket, key = key })
    end
    return { path = keep_local and path or nil, metadata = {}, dry_run = true, key = key, bucket = opts.bucket,
             url = url }
  end
  local work
  local guard = { cancel = function() end }
  if keep_local then
    work = M.mkdtemp(dir .. "/" .. WORK_PREFIX, "the backup " .. name)
    -- a killed run leaves only this folder; `bgrun resume` removes it
    guard = M.guard("remove the unfinished backup " .. name, function() bgrun.rmtree(work) end,
                    { module = "backup", action = "cleanup", work = work })
  end
  local env = M.pg_env(opts.database)
  local db = opts.database or {}
  local upload_guard = { cancel = function() end }
  local ok, res = pcall(function()
    local timeout = opts.timeout or 3600
    local postgres = require("postgres")
    -- the one snapshot every dump reads, held until the last one is done
    local conn <close> = postgres.connect(db)
    -- idle in its transaction while the dumps run: a server-wide idle
    -- timeout must not end it (the later dumps import its snapshot)
    conn:exec("SET idle_in_transaction_session_timeout = 0", { readonly = true })
    conn:exec("BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY", { readonly = true })
    local snapshot = conn:query("SELECT pg_export_snapshot() AS s", nil, { readonly = true })[1].s
    local identity = opts.identity or M.identity(conn)
    local db_size = conn:query("SELECT pg_database_size(current_database())::bigint AS n", nil,
                               { readonly = true })[1].n
    local b <close> = opts.bucket and bucket_of(opts) or nil
    local meta = { env = opts.env or "", version = tostring(opts.version or "") }
    if opts.pinned then meta.pinned = "true" end
    local u <close> = b and b:upload(key, { content_type = "application/gzip", metadata = meta, size_hint = db_size,
                                            parallel = opts.parallel }) or nil
    if u then
      -- closing an unfinished upload aborts it (on every error path, and
      -- on SIGINT); a killed run's is aborted by `bgrun resume`
      upload_guard = M.guard("abort the unfinished upload " .. key, function() u:close() end,
                             { module = "backup", action = "abort_upload", bucket = opts.bucket, key = key,
                               upload_id = u:id(),
                               -- where the store is, never its keys (journals hold no secrets)
                               s3 = opts.s3 and { endpoint = opts.s3.endpoint, region = opts.s3.region } })
    end
    local w <close> = archive.writer { path = keep_local and (work .. "/backup.tar.gz") or nil,
                                       sinks = u and { u } or nil }
    local files = {}
    for _, d in ipairs(M.dump_commands(snapshot, opts.compress)) do
      local f = w:add_command(d.name, d.argv, { env = env, timeout = timeout, level = d.level })
      files[d.name] = { size = f.size, sha256 = f.sha256 }
      log.debug("dumped", { file = d.name, size = f.size })
    end
    conn:exec("COMMIT", { readonly = true })
    conn:close()
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
      snapshot = { consistent = true, isolation = "repeatable read" },
      tools = { bgrun = bgrun.version, pg_dump = tool_version({ "pg_dump", "--version" }) },
      created_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    }
    -- last: it carries the sha256 of what streamed before it
    w:add("metadata.json", json.encode(metadata, { indent = 2, sort_keys = true }) .. "\n", { level = 6 })
    local size = w:finish().size
    local uploaded = u and u:finish() or nil
    if keep_local then
      -- written inside the private folder, then renamed into place whole
      local rok, rerr = os.rename(work .. "/backup.tar.gz", path)
      if not rok then
        raise { op = "create " .. path, code = "io", reason = "IOError",
                message = ("cannot move the backup into place as %s: %s"):format(path, tostring(rerr)) }
      end
    end
    return { metadata = metadata, uploaded = uploaded, size = size }
  end)
  if work then bgrun.rmtree(work) end
  guard.cancel()
  upload_guard.cancel()
  if not ok then
    if key and type(res) == "table" then log.error("backup failed; nothing was kept", { key = key, error = tostring(res) }) end
    error(res, 0)
  end
  log.info("backup taken", { path = keep_local and path or nil, size = res.size, version = opts.version,
                             pinned = opts.pinned or false, files = 4 })
  if res.uploaded then
    log.info("backup uploaded", { bucket = opts.bucket, key = key, size = res.uploaded.size, parts = res.uploaded.parts,
                                  pinned = opts.pinned or false })
  elseif keep_local then
    log.warn("no bucket configured: the backup is kept locally only", { path = path })
  end
  if keep_local then M.prune(dir, opts.keep or 10) end
  return { path = keep_local and path or nil, metadata = res.metadata, key = key, bucket = opts.bucket,
           url = url, size = res.size }
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

function bucket_of(opts)
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

-- The metadata of a scanned backup (archive.scan), every file checked
-- against it: metadata.json read with a size cap (a larger one is not
-- ours), each file's sha256 as it streamed by.
local function check_scan(r, path)
  local e = r.entries["metadata.json"]
  if not e then
    raise { op = "verify " .. path, code = "usage", reason = "Invalid",
            message = ("backup %s has no metadata.json"):format(path) }
  end
  if e.size > M.METADATA_MAX or not r.captured["metadata.json"] then
    raise { op = "verify " .. path, code = "usage", reason = "TooLarge", file = "metadata.json",
            message = ("metadata.json in %s is %d bytes, more than the %d a backup's metadata may have")
              :format(path, e.size, M.METADATA_MAX) }
  end
  local ok, metadata = pcall(json.decode, r.captured["metadata.json"])
  if not ok or type(metadata) ~= "table" then
    raise { op = "verify " .. path, code = "usage", reason = "Invalid", file = "metadata.json",
            message = ("metadata.json in %s is not a JSON object: %s"):format(path, tostring(metadata)) }
  end
  for _, name in ipairs(M.FILES) do
    local want = type(metadata.files) == "table" and metadata.files[name]
    local got = r.entries[name] and r.entries[name].sha256
    if type(want) ~= "table" or want.sha256 ~= got then
      raise { op = "verify " .. path, code = "usage", reason = "ChecksumMismatch", file = name,
              message = ("%s in %s: sha256 %s, metadata says %s"):format(name, path, tostring(got),
                tostring(type(want) == "table" and want.sha256 or nil)) }
    end
  end
  return metadata
end
M.check_scan = check_scan

-- archive.scan, its failures turned into "this is not a backup" (bad
-- input) unless they are the world's (an interrupt, the bucket, a command).
-- progress: the read's label (a file's default is "verify FILE-NAME")
local function scan(src, routes, path, progress)
  local ok, r = pcall(archive.scan, src, routes, { max_capture = M.METADATA_MAX, progress = progress })
  if ok then return r end
  if type(r) == "table" and (r.module ~= "archive" or r.code == "interrupted" or r.reason == "CommandFailed"
                             or r.reason == "IOError" or math.type(r.code) == "integer") then
    error(r, 0)
  end
  raise { op = "verify " .. path, code = "usage", reason = "Invalid",
          message = ("backup %s cannot be unpacked: %s"):format(path, tostring(r)) }
end

---Checks every file of a backup against its metadata.json in one read of
---the archive (archive.scan: nothing unpacked but what is asked for). A
---backup that fails is bad input: code "usage", reason "ChecksumMismatch"
---(naming the file), "TooLarge", "Invalid" or "NotFound". With dir, the
---custom dump is written there as full_backup.dump (for pg_restore
-----jobs). Returns the metadata.
---@param path string the .tar.gz
---@param dir string? a directory for full_backup.dump
---@return table metadata
function M.verify(path, dir)
  local pf = io.open(path, "rb")
  if not pf then
    raise { op = "verify " .. path, code = "usage", reason = "NotFound",
            message = ("backup %s does not exist"):format(path) }
  end
  pf:close()
  local routes = { ["metadata.json"] = "capture" }
  if dir then
    local mok, merr = bgrun.mkdir(dir)
    if not mok then
      raise { op = "verify " .. path, code = "io", reason = "IOError",
              message = ("cannot create %s to unpack %s into: %s"):format(dir, path, tostring(merr)) }
    end
    routes["full_backup.dump"] = { path = dir .. "/full_backup.dump" }
  end
  local metadata = check_scan(scan(path, routes, path), path)
  log.info("backup verified", { path = path, version = metadata.migration_version })
  return metadata
end

---Opens a backup in a bucket as a stream: {reader=, bucket=, key=}; a key
---that names nothing is bad input (code "usage", reason "NotFound").
local function open_remote(key, opts)
  local bucket, k = key:match("^s3://([^/]+)/(.+)$")
  if not bucket then bucket, k = opts.bucket, key end
  if not bucket then
    raise { op = "open " .. key, code = "usage", reason = "NotFound",
            message = ("backup %s is not a local file and no bucket is configured to look it up in"):format(key) }
  end
  local b = bucket_of({ bucket = bucket, s3 = opts.s3 })
  local ok, rd = pcall(b.open, b, k)
  if not ok then
    b:close()
    if type(rd) == "table" and rd.code == 404 then
      raise { op = "open " .. key, code = "usage", reason = "NotFound", key = k, bucket = bucket,
              message = ("backup %s does not exist in bucket %s (%s)"):format(k, bucket, tostring(rd)) }
    end
    error(rd, 0)
  end
  return { reader = rd, b = b, bucket = bucket, key = k }
end

---Reads a backup in the bucket through once, writing nothing locally,
---and checks it as verify does; with opts.restore = {argv=, env=} the
---custom dump streams into that command (pg_restore) on the way. key: a
---key in opts.bucket or s3://bucket/key. Returns the metadata.
---@param key string
---@param opts {bucket: string?, s3: table?, restore: table?}
---@return table metadata
function M.verify_remote(key, opts)
  opts = opts or {}
  local o = open_remote(key, opts)
  local where = ("s3://%s/%s"):format(o.bucket, o.key)
  local routes = { ["metadata.json"] = "capture" }
  if opts.restore then routes["full_backup.dump"] = opts.restore end
  local ok, res = pcall(function() return check_scan(scan(o.reader, routes, where, "download " .. o.key), where) end)
  o.reader:close()
  o.b:close()
  if not ok then error(res, 0) end
  log.info("backup verified", { url = where, version = res.migration_version, streamed = true })
  return res
end

---Undo actions `bgrun resume` runs from a journal.
M.undo = {
  -- the private folder of a backup a killed run was taking; only a folder
  -- of ours (its name says so) is removed
  -- the multipart upload of a backup a killed run was streaming
  abort_upload = function(d)
    if type(d.bucket) ~= "string" or type(d.key) ~= "string" or type(d.upload_id) ~= "string" then
      raise { op = "abort_upload", code = "world_changed", reason = "WorldChanged",
              message = "the journal names no upload to abort" }
    end
    local b <close> = bucket_of({ bucket = d.bucket, s3 = d.s3 })
    b:abort_upload(d.key, d.upload_id)
    log.info("unfinished upload aborted", { bucket = d.bucket, key = d.key })
  end,
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
