-- The backups in the bucket: retention (the newest N unpinned per
-- environment; pinned ones are never deleted), replication to a second
-- bucket (another endpoint, region and credentials if wanted) verified by
-- size and sha256, and verification of what a bucket holds (download,
-- archive integrity, each file's sha256 against metadata.json,
-- `pg_restore --list` of the custom dump).
--
-- A backup in a bucket is `<env>/<name>.tar.gz` whose name starts with
-- its UTC time (stdlib/backup.lua names them so); objects named otherwise
-- are never touched. A backup is pinned when its name ends `.pinned` or
-- its object metadata says pinned=true (backup.upload writes both).
--
-- An environment's buckets (playbooks/environments.lua):
--   bucket = "physioflow-backups-prod",    -- the primary (endpoint, region, keys: the AWS chain)
--   bucket_keep = 10,                      -- unpinned backups kept there (default 10)
--   replica = {                            -- the second bucket
--     bucket = "physioflow-backups-prod-replica",
--     endpoint = "https://s3.eu-central-1.example.invalid", region = "eu-central-1",
--     access_key_env = "REPLICA_AWS_ACCESS_KEY_ID",        -- its own credentials: the
--     secret_key_env = "REPLICA_AWS_SECRET_ACCESS_KEY",    -- names of the variables
--     session_token_env = "REPLICA_AWS_SESSION_TOKEN",     -- holding them (optional)
--     keep = 10,                            -- unpinned kept there (default bucket_keep)
--   },
--   replicate = true,                       -- every backup.lua run copies there
local backup = require("backup")
local digest = require("digest")
local json = require("json")
local log = require("log")
local proc = require("proc")

local M = {}

---Unpinned backups kept in a bucket when nothing says otherwise.
M.DEFAULT_KEEP = 10

-- s3 loads libcurl: required on first use only
local function s3() return require("s3") end

local function raise(t)
  t.module = t.module or "backupstore"
  error(bgrun.error(t), 2)
end

local REPLICA_KEYS = { bucket = true, endpoint = true, region = true, path_style = true, timeout = true, deadline = true,
                       access_key_env = true, secret_key_env = true, session_token_env = true, keep = true }

---Where an environment's backups are: which = "primary" (env.bucket) or
---"replica" (env.replica). Returns {which=, bucket=, s3=
---(s3.bucket options), keep=, endpoint=, region=}. An environment without
---that bucket is bad input (code "usage"), naming the setting.
---@param env_name string
---@param env table
---@param which string? "primary" (default) or "replica"
---@return table
function M.config(env_name, env, which)
  which = which or "primary"
  if which == "primary" then
    if type(env.bucket) ~= "string" or env.bucket == "" then
      raise { op = "bucket " .. env_name, code = "usage", reason = "NoBucket",
              message = ("environment %s has no bucket: set `bucket` for it in environments.lua"):format(env_name) }
    end
    -- as backup.create uploads: endpoint, region and keys from the AWS chain
    return { which = which, bucket = env.bucket, s3 = { bucket = env.bucket }, keep = env.bucket_keep,
             endpoint = os.getenv("AWS_ENDPOINT_URL_S3") or os.getenv("AWS_ENDPOINT_URL"),
             region = os.getenv("AWS_REGION") }
  elseif which ~= "replica" then
    raise { op = "bucket " .. env_name, code = "usage", reason = "Invalid",
            message = ("parameter 'bucket': '%s' is not one of primary, replica"):format(tostring(which)) }
  end
  local r = env.replica
  if type(r) ~= "table" or type(r.bucket) ~= "string" or r.bucket == "" then
    raise { op = "replica " .. env_name, code = "usage", reason = "NoReplica",
            message = ("environment %s has no replica bucket: set `replica = { bucket = ..., endpoint = ..., "
              .. "region = ... }` for it in environments.lua"):format(env_name) }
  end
  for k in pairs(r) do
    if not REPLICA_KEYS[k] then
      raise { op = "replica " .. env_name, code = "usage", reason = "Invalid",
              message = ("environment %s: replica has an unknown setting '%s'"):format(env_name, tostring(k)) }
    end
  end
  local opts = { bucket = r.bucket, endpoint = r.endpoint, region = r.region, path_style = r.path_style,
                 timeout = r.timeout, deadline = r.deadline }
  -- its own credentials, from the variables it names (never written in the file)
  for field, var in pairs({ access_key = r.access_key_env, secret_key = r.secret_key_env,
                            session_token = r.session_token_env }) do
    if var ~= nil then
      local v = os.getenv(var)
      if v == nil or v == "" then
        raise { op = "replica " .. env_name, code = "usage", reason = "NoCredentials",
                message = ("environment %s: the replica's %s comes from $%s, which is not set"):format(env_name,
                  field, var) }
      end
      log.secret(v)
      opts[field] = v
    end
  end
  return { which = which, bucket = r.bucket, s3 = opts, keep = r.keep or env.bucket_keep,
           endpoint = r.endpoint or os.getenv("AWS_ENDPOINT_URL_S3") or os.getenv("AWS_ENDPOINT_URL"),
           region = r.region or os.getenv("AWS_REGION") }
end

---The number of unpinned backups kept in a bucket: given (a parameter,
---named by what), else the bucket's setting, else 10. Less than 1 is bad
---input (code "usage"): retention never empties a bucket of unpinned
---backups.
---@param given any
---@param cfg table? from M.config
---@param what string? the parameter's name (default "bucket_keep")
---@return integer
function M.keep_count(given, cfg, what)
  local v, from = given, ("parameter '%s'"):format(what or "bucket_keep")
  if v == nil and cfg and cfg.keep ~= nil then
    v, from = cfg.keep, ("the %s bucket's keep setting"):format(cfg.which)
  end
  if v == nil then return M.DEFAULT_KEEP end
  local n = math.tointeger(tonumber(v))
  if n == nil or n < 1 then
    raise { op = "keep", code = "usage", reason = "Invalid",
            message = ("%s: '%s' is not a whole number of backups of at least 1"):format(from, tostring(v)) }
  end
  return n
end

---The backup name of a bucket key of env_name, or nil when the key is not
---one of ours: `<env>/<UTC time...>.tar.gz` directly under the prefix.
---@param env_name string
---@param key string
---@return string? name (without .tar.gz)
function M.backup_name(env_name, key)
  local prefix = env_name .. "/"
  if key:sub(1, #prefix) ~= prefix then return nil end
  local name = key:sub(#prefix + 1):match("^([^/]+)%.tar%.gz$")
  if not name or not name:match("^%d%d%d%d%d%d%d%dT%d%d%d%d%d%d") then return nil end
  return name
end

local function open(cfg)
  return s3().bucket(cfg.s3)
end

---The backups of env_name in a bucket, oldest first: {key=, name=, size=,
---last_modified=, pinned= (by name; see M.pinned)}.
---@param b any an s3 bucket handle
---@param env_name string
---@return table[]
function M.list(b, env_name)
  local out = {}
  for _, o in ipairs(b:list(env_name .. "/")) do
    local name = M.backup_name(env_name, o.key)
    if name then
      out[#out + 1] = { key = o.key, name = name, size = o.size, last_modified = o.last_modified,
                        pinned = name:find("%.pinned$") ~= nil }
    end
  end
  table.sort(out, function(a, x) return a.name < x.name end)
  return out
end

---Whether a backup in the bucket is pinned: by its name, else by its
---object metadata (pinned=true).
---@param b any bucket handle
---@param o {key: string, pinned: boolean?}
---@return boolean
function M.pinned(b, o)
  if o.pinned then return true end
  local h = b:head(o.key)
  return h ~= nil and type(h.metadata) == "table" and tostring(h.metadata.pinned):lower() == "true"
end

---Bucket retention: keeps the newest `keep` unpinned backups of env_name
---in the bucket cfg describes and deletes the older unpinned ones; pinned
---ones are never deleted and do not count. opts.extra: a key a dry run
---would have uploaded (counted as present). Under --dry-run nothing is
---deleted and `deleted` lists what would be. Returns {bucket=, keep=,
---deleted= (keys), kept= (unpinned keys, newest first), pinned= (keys)}.
---@param cfg table from M.config
---@param env_name string
---@param keep integer
---@param opts {extra: string?}?
---@return table
function M.retain(cfg, env_name, keep, opts)
  opts = opts or {}
  local b <close> = open(cfg)
  local list = M.list(b, env_name)
  if opts.extra and M.backup_name(env_name, opts.extra) then
    local seen = false
    for _, o in ipairs(list) do seen = seen or o.key == opts.extra end
    if not seen then
      local name = M.backup_name(env_name, opts.extra)
      list[#list + 1] = { key = opts.extra, name = name, pinned = name:find("%.pinned$") ~= nil, planned = true }
      table.sort(list, function(a, x) return a.name < x.name end)
    end
  end
  -- newest first: the first `keep` unpinned stay
  local res = { bucket = cfg.bucket, which = cfg.which, keep = keep, deleted = {}, kept = {}, pinned = {} }
  local unpinned = 0
  for i = #list, 1, -1 do
    local o = list[i]
    if o.planned and o.pinned then
      res.pinned[#res.pinned + 1] = o.key
    elseif o.planned then
      unpinned = unpinned + 1
      res.kept[#res.kept + 1] = o.key
    elseif M.pinned(b, o) then
      res.pinned[#res.pinned + 1] = o.key
    else
      unpinned = unpinned + 1
      if unpinned <= keep then
        res.kept[#res.kept + 1] = o.key
      else
        b:delete(o.key) -- logs "dry-run: would delete" under --dry-run
        res.deleted[#res.deleted + 1] = o.key
        log.info(bgrun.dry_run() and "dry-run: would delete the old backup" or "old backup deleted from the bucket",
                 { bucket = cfg.bucket, key = o.key })
      end
    end
  end
  log.info("bucket retention", { bucket = cfg.bucket, keep = keep, deleted = #res.deleted, pinned = #res.pinned,
                                 kept = #res.kept })
  return res
end

---The report form of M.retain's result: JSON arrays.
function M.retention_report(res)
  return { bucket = res.bucket, keep = res.keep, deleted = json.array(res.deleted), kept = json.array(res.kept),
           pinned = json.array(res.pinned) }
end

-- A private scratch folder in TMPDIR, removed by the caller (and by
-- `bgrun resume` after a kill: backup.undo.cleanup knows the prefix).
local function scratch(what)
  local dir = backup.mkdtemp(backup.abspath(os.getenv("TMPDIR") or "/tmp") .. "/bgrun-verify-", what)
  local guard = backup.guard("remove the scratch folder " .. dir, function() bgrun.rmtree(dir) end,
                             { module = "backup", action = "cleanup", work = dir })
  return dir, guard
end

---Copies a backup to the replica bucket and verifies the copy: its size,
---and the sha256 of its bytes (downloaded again) against the sha256 the
---copy's metadata carries and the source's. opts: env_name, env, key (the
---backup's key in the primary), path (the local file; without it the
---primary's object is downloaded into a private scratch folder), pinned,
---version. A copy that does not verify is deleted and the run fails
---(code "replica_mismatch"). Returns {bucket=, key=, endpoint=, region=,
---size=, sha256=, verified=}.
---@param opts table
---@return table
function M.replicate(opts)
  local primary = M.config(opts.env_name, opts.env, "primary")
  local rcfg = M.config(opts.env_name, opts.env, "replica")
  local key = opts.key
  local res = { bucket = rcfg.bucket, key = key, endpoint = rcfg.endpoint, region = rcfg.region }
  if bgrun.dry_run() then
    log.info("dry-run: would copy the backup to the replica and verify it",
             { bucket = rcfg.bucket, key = key, endpoint = rcfg.endpoint, region = rcfg.region })
    res.dry_run = true
    return res
  end
  local work, guard = scratch("replicating " .. key)
  local ok, err = pcall(function()
    local src = opts.path
    local f = src and io.open(src, "rb")
    if f then
      f:close()
    else
      -- streamed backups have no local copy: the primary's object is the source
      local pb <close> = open(primary)
      src = work .. "/source.tar.gz"
      pb:get_file(key, src)
    end
    local sha, size = digest.sha256_file(src)
    res.size, res.sha256 = size, sha
    local meta = { env = opts.env_name, sha256 = sha, version = tostring(opts.version or ""),
                   source = ("s3://%s/%s"):format(primary.bucket, key) }
    if opts.pinned or key:find("%.pinned%.tar%.gz$") then meta.pinned = "true" end
    local rb <close> = open(rcfg)
    rb:put_file(key, src, { content_type = "application/gzip", metadata = meta })
    local function mismatch(what)
      pcall(rb.delete, rb, key)
      raise { op = "replicate " .. key, code = "replica_mismatch", reason = "ReplicaMismatch", key = key,
              bucket = rcfg.bucket,
              message = ("the copy of %s in s3://%s does not match: %s; the copy was deleted"):format(key, rcfg.bucket,
                what) }
    end
    local h = rb:head(key)
    if not h then mismatch("it is not there after the upload") end
    if h.size ~= size then mismatch(("%d bytes, the backup has %d"):format(h.size, size)) end
    local msha = type(h.metadata) == "table" and h.metadata.sha256 or nil
    if msha ~= sha then mismatch(("its metadata says sha256 %s, the backup's is %s"):format(tostring(msha), sha)) end
    local back = work .. "/replica.tar.gz"
    rb:get_file(key, back)
    local got, got_size = digest.sha256_file(back)
    if got ~= sha or got_size ~= size then
      mismatch(("its bytes have sha256 %s (%d bytes), the backup's %s (%d bytes)"):format(got, got_size, sha, size))
    end
    res.verified = true
  end)
  bgrun.rmtree(work)
  guard.cancel()
  if not ok then error(err, 0) end
  log.info("backup replicated and verified", { bucket = rcfg.bucket, key = key, size = res.size, sha256 = res.sha256,
                                               endpoint = rcfg.endpoint, region = rcfg.region })
  return res
end

---Copies a backup just taken (backup.create's result) to the replica when
---the environment says `replicate = true`, and adds `replica` to the run
---report: the hook of the playbooks that take backups themselves
---(migrate.lua, deploy-with-migration.lua). Nothing without a bucket key.
---@param env_name string
---@param env table
---@param b table backup.create's result
---@param opts {pinned: boolean?, version: integer?}?
---@return table? replicate's result
function M.after_backup(env_name, env, b, opts)
  if env.replicate ~= true or not b.key then return nil end
  local r = M.replicate { env_name = env_name, env = env, key = b.key, path = b.path,
                          pinned = opts and opts.pinned, version = opts and opts.version }
  if type(_G.report) == "function" then _G.report { replica = r } end
  return r
end

-- Checks one downloaded backup: the object's size and (when its metadata
-- carries one) sha256, the archive, each file's sha256 against
-- metadata.json, and pg_restore --list of the custom dump. Raises a
-- structured error naming what failed.
local function check(path, dir, o, h)
  local sha, size = digest.sha256_file(path)
  local function fail(reason, message, file)
    raise { op = "verify " .. o.key, code = "verify_failed", reason = reason, key = o.key, file = file,
            message = message }
  end
  if h and h.size and h.size ~= size then
    fail("SizeMismatch", ("downloaded %d bytes, the bucket lists %d"):format(size, h.size))
  end
  local msha = h and type(h.metadata) == "table" and h.metadata.sha256 or nil
  if msha and msha ~= sha then
    fail("ChecksumMismatch", ("the object's bytes have sha256 %s, its metadata says %s"):format(sha, msha))
  end
  local vok, verr = pcall(backup.verify, path, dir)
  if not vok then
    local reason = type(verr) == "table" and verr.reason or "Invalid"
    fail(reason, type(verr) == "table" and tostring(verr.message) or tostring(verr),
         type(verr) == "table" and verr.file or nil)
  end
  local metadata = verr
  local r = proc.run({ "pg_restore", "--list", dir .. "/full_backup.dump" }, { readonly = true, timeout = 600 })
  if r.code ~= 0 then
    fail("DumpUnreadable", ("pg_restore --list full_backup.dump exited with %d: %s"):format(r.code,
      (r.stderr or ""):gsub("%s+$", "")), "full_backup.dump")
  end
  -- the table of contents (an empty database has none: not a failure)
  local entries = 0
  for line in r.stdout:gmatch("[^\n]+") do
    if not line:find("^;") and line:find("%S") then entries = entries + 1 end
  end
  return { size = size, sha256 = sha, entries = entries, migration_version = metadata.migration_version,
           created_at = metadata.created_at, database = type(metadata.database) == "table" and metadata.database.name
           or nil }
end

---Verifies the newest backup of env_name in a bucket (every one with
---opts.all): each is downloaded into a private scratch folder (removed
---again) and checked — size and metadata sha256 of the object, the
---archive, each file's sha256 against metadata.json, `pg_restore --list`
---of full_backup.dump. A failure of one does not stop the others.
---Returns {bucket=, which=, checked=, ok= (results), failed= ({key=,
---reason=, message=, file=})}, newest first.
---@param cfg table from M.config
---@param env_name string
---@param opts {all: boolean?, step: fun(name: string, fn: function): any?}?
---@return table
function M.verify(cfg, env_name, opts)
  opts = opts or {}
  local b <close> = open(cfg)
  local list = M.list(b, env_name)
  local todo = {}
  for i = #list, 1, -1 do
    todo[#todo + 1] = list[i]
    if not opts.all then break end
  end
  local res = { bucket = cfg.bucket, which = cfg.which, checked = #todo, ok = {}, failed = {} }
  for _, o in ipairs(todo) do
    local work, guard = scratch("verifying " .. o.key)
    local ok, r = pcall(function()
      local h = b:head(o.key)
      if not h then
        raise { op = "verify " .. o.key, code = "verify_failed", reason = "NotFound", key = o.key,
                message = "listed, but gone before it could be read" }
      end
      b:get_file(o.key, work .. "/backup.tar.gz")
      return check(work .. "/backup.tar.gz", work .. "/unpacked", o, h)
    end)
    bgrun.rmtree(work)
    guard.cancel()
    if ok then
      r.key = o.key
      res.ok[#res.ok + 1] = r
      log.info("backup in the bucket verified", { bucket = cfg.bucket, key = o.key, size = r.size,
                                                  entries = r.entries, version = r.migration_version })
    else
      if type(r) == "table" and r.code == "interrupted" then error(r, 0) end
      local e = type(r) == "table" and r or { message = tostring(r) }
      local f = { key = o.key, reason = e.reason or "Failed", message = tostring(e.message or r), file = e.file }
      res.failed[#res.failed + 1] = f
      log.error("backup in the bucket failed verification", { bucket = cfg.bucket, key = o.key, reason = f.reason,
                                                             error = f.message })
    end
  end
  return res
end

return M
