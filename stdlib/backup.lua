-- Database backups: schema.sql, data.sql, full_backup.dump (pg_dump custom
-- format) and metadata.json (environment, database, migration version,
-- sizes and sha256 of each file, tool versions, time), packed as one
-- .tar.gz by the archive module and uploaded to the environment's bucket
-- as <env>/<name>.tar.gz (pinned ones with metadata pinned=true). The last
-- `keep` backups are kept locally; pinned ones (taken before a migration)
-- are never deleted by retention.
local archive = require("archive")
local digest = require("digest")
local json = require("json")
local log = require("log")
local proc = require("proc")

local M = {}

-- s3 loads libcurl: required on first use only
local function s3() return require("s3") end

M.FILES = { "schema.sql", "data.sql", "full_backup.dump" }

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
---with a warning), s3 (extra s3.bucket options). Returns {path=,
---metadata=, key=, bucket=}.
---@param opts table
---@return {path: string, metadata: table}
function M.create(opts)
  local dir = assert(opts.dir, "backup.create: opts.dir is required")
  local label = (opts.label or "manual"):gsub("[^%w._-]", "-")
  local stamp = os.date("!%Y%m%dT%H%M%SZ")
  local name = ("%s-%s-%s%s"):format(stamp, opts.env or "db", label, opts.pinned and ".pinned" or "")
  local path = dir .. "/" .. name .. ".tar.gz"
  if bgrun.dry_run() then
    log.info("dry-run: would back up the database", { path = path, pinned = opts.pinned or false })
    if opts.bucket then
      log.info("dry-run: would upload the backup", { bucket = opts.bucket, key = M.key(path, opts.env) })
    end
    return { path = path, metadata = {}, dry_run = true, key = opts.bucket and M.key(path, opts.env) or nil,
             bucket = opts.bucket }
  end
  run({ "mkdir", "-p", dir .. "/" .. name }, nil, "mkdir")
  local work = dir .. "/" .. name
  local env = M.pg_env(opts.database)
  local ok, err = pcall(function()
    local timeout = opts.timeout or 3600
    run({ "pg_dump", "--schema-only", "--no-owner", "--file", work .. "/schema.sql" },
        { env = env, timeout = timeout }, "pg_dump --schema-only")
    run({ "pg_dump", "--data-only", "--no-owner", "--file", work .. "/data.sql" },
        { env = env, timeout = timeout }, "pg_dump --data-only")
    run({ "pg_dump", "--format=custom", "--no-owner", "--file", work .. "/full_backup.dump" },
        { env = env, timeout = timeout }, "pg_dump --format=custom")
    local files = {}
    for _, f in ipairs(M.FILES) do
      files[f] = { size = file_size(work .. "/" .. f), sha256 = digest.sha256_file(work .. "/" .. f) }
    end
    local db = opts.database or {}
    local metadata = {
      env = opts.env,
      label = label,
      pinned = opts.pinned or false,
      database = { name = db.dbname or os.getenv("PGDATABASE"), host = db.host or os.getenv("PGHOST"),
                   port = tostring(db.port or os.getenv("PGPORT") or "5432") },
      migration_version = opts.version,
      files = files,
      tools = { bgrun = bgrun.version, pg_dump = tool_version({ "pg_dump", "--version" }) },
      created_at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
    }
    local f = assert(io.open(work .. "/metadata.json", "w"))
    f:write(json.encode(metadata, { indent = 2, sort_keys = true }), "\n")
    f:close()
    local entries = { { name = "metadata.json", path = work .. "/metadata.json" } }
    for _, name in ipairs(M.FILES) do entries[#entries + 1] = { name = name, path = work .. "/" .. name } end
    archive.create(path, entries, { format = "tar.gz" })
    return metadata
  end)
  proc.run({ "rm", "-rf", work })
  if not ok then
    os.remove(path)
    error(err, 0)
  end
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

---Makes a backup available locally: ref is a local .tar.gz path (returned
---as is; one starting with "/" or "./" is never looked up in a bucket), a
---key in opts.bucket ("local/2026...tar.gz"), or s3://bucket/key.
---Downloads into dir. Raises the s3 module's 404 NoSuchKey when the key is
---absent and {code="not_found"} when ref is neither.
---@param ref string
---@param dir string
---@param opts {bucket: string?, s3: table?}?
---@return string path
function M.fetch(ref, dir, opts)
  opts = opts or {}
  local f = io.open(ref, "rb")
  if f then
    f:close()
    return ref
  end
  if ref:find("^/") or ref:find("^%.%.?/") then
    raise { op = "fetch " .. ref, code = "not_found", reason = "NotFound",
            message = ("backup %s does not exist"):format(ref) }
  end
  local bucket, key = ref:match("^s3://([^/]+)/(.+)$")
  if not bucket then bucket, key = opts.bucket, ref end
  if not bucket then
    raise { op = "fetch " .. ref, code = "not_found", reason = "NotFound",
            message = ("backup %s is not a local file and no bucket is configured to look it up in"):format(ref) }
  end
  local b <close> = bucket_of({ bucket = bucket, s3 = opts.s3 })
  run({ "mkdir", "-p", dir }, { readonly = true }, "mkdir")
  local path = dir .. "/" .. key:match("([^/]+)$")
  local size = b:get_file(key, path)
  log.info("backup fetched", { bucket = bucket, key = key, path = path, size = size })
  return path
end

---Unpacks a backup into dir and checks every file against metadata.json.
---Raises {code="checksum_mismatch"} naming the file. Returns the metadata.
---Without dir it unpacks into a temporary directory it removes again.
---@param path string the .tar.gz
---@param dir string? an empty directory to unpack into
---@return table metadata
function M.verify(path, dir)
  if dir == nil then
    local tmp = must(proc.run({ "mktemp", "-d" }, { readonly = true }), "mktemp").stdout:gsub("%s+$", "")
    local ok, res = pcall(M.verify, path, tmp)
    proc.run({ "rm", "-rf", tmp }, { readonly = true })
    if not ok then error(res, 0) end
    return res
  end
  if not io.open(path) then
    raise { op = "verify " .. path, code = "not_found", reason = "NotFound",
            message = ("backup %s does not exist"):format(path) }
  end
  run({ "mkdir", "-p", dir }, { readonly = true }, "mkdir")
  -- our own scratch space: unpacked under --dry-run too
  archive.extract(path, dir, { readonly = true })
  local f = io.open(dir .. "/metadata.json")
  if not f then
    raise { op = "verify " .. path, code = "no_metadata", reason = "Invalid",
            message = ("backup %s has no metadata.json"):format(path) }
  end
  local metadata = json.decode(f:read("a"))
  f:close()
  for _, name in ipairs(M.FILES) do
    local want = metadata.files and metadata.files[name]
    local got = io.open(dir .. "/" .. name) and digest.sha256_file(dir .. "/" .. name)
    if not want or want.sha256 ~= got then
      raise { op = "verify " .. path, code = "checksum_mismatch", reason = "ChecksumMismatch", file = name,
              message = ("%s in %s: sha256 %s, metadata says %s"):format(name, path, tostring(got),
                tostring(want and want.sha256)) }
    end
  end
  log.info("backup verified", { path = path, version = metadata.migration_version })
  return metadata
end

return M
