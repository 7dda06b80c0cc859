-- Database backups: schema.sql, data.sql, full_backup.dump (pg_dump custom
-- format) and metadata.json (environment, database, migration version,
-- sizes and sha256 of each file, tool versions, time), packed as one
-- .tar.gz. The last `keep` backups are kept locally; pinned ones (taken
-- before a migration) are never deleted by retention.
local digest = require("digest")
local json = require("json")
local log = require("log")
local proc = require("proc")

local M = {}

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
---(default 10). Returns {path=, metadata=}.
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
    return { path = path, metadata = {}, dry_run = true }
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
    run({ "tar", "-czf", path, "-C", work, "metadata.json", table.unpack(M.FILES) }, nil, "tar")
    return metadata
  end)
  proc.run({ "rm", "-rf", work })
  if not ok then
    os.remove(path)
    error(err, 0)
  end
  log.info("backup taken", { path = path, size = file_size(path), version = opts.version,
                             pinned = opts.pinned or false })
  M.prune(dir, opts.keep or 10)
  return { path = path, metadata = err }
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
  run({ "tar", "-xzf", path, "-C", dir, "--no-same-owner", "--no-same-permissions" },
      { readonly = true }, "tar -x")
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
