-- Kept databases: every restore swaps the restored database in by rename
-- and keeps the one it replaced as `<db>_old_<UTC time>_<pid>`
-- (stdlib/restore.lua). Each is a full copy, so they must not pile up:
-- after a restore is verified, the playbooks keep the newest N per
-- database (default 2; the environment's `keep_old`, or `keep_old=` on
-- the command line, or $BGRUN_KEEP_OLD) and drop the older ones; drop-old-databases.lua drops
-- them on purpose.
--
-- What is never dropped: anything whose name is not exactly
-- `<db>_old_<14 digits>_<digits>` for that database, the database itself,
-- the one the connection is on, and a kept database with a live session
-- other than an autovacuum worker (skipped with a warning: nothing is
-- terminated). DROP DATABASE runs without FORCE, so a session that arrives
-- between the check and the drop makes the drop fail (skipped too).
local log = require("log")
local postgres = require("postgres")

local M = {}

local qi = postgres.quote_ident

---How many kept databases are kept by default.
M.DEFAULT_KEEP = 2

local function raise(t)
  t.module = t.module or "kept"
  error(bgrun.error(t), 2)
end

---The time and pid of a kept database of target, or nil when name is not
---exactly `<target>_old_<YYYYmmddHHMMSS>_<pid>`.
---@param target string
---@param name string
---@return string? stamp, integer? pid
function M.parse(target, name)
  local prefix = target .. "_old_"
  if type(name) ~= "string" or name:sub(1, #prefix) ~= prefix then return nil end
  local stamp, pid = name:sub(#prefix + 1):match("^(%d%d%d%d%d%d%d%d%d%d%d%d%d%d)_(%d+)$")
  if not stamp then return nil end
  return stamp, math.tointeger(tonumber(pid))
end

-- 20261130101500 -> 2026-11-30T10:15:00Z
local function iso(stamp)
  return ("%s-%s-%sT%s:%s:%sZ"):format(stamp:sub(1, 4), stamp:sub(5, 6), stamp:sub(7, 8), stamp:sub(9, 10),
                                       stamp:sub(11, 12), stamp:sub(13, 14))
end

---The keep_old parameter of the restoring playbooks.
M.param = { type = "integer",
            help = "kept databases (<db>_old_<time>_<pid>) left after the restore, newest first; default the "
              .. "environment's keep_old, else 2" }

---The number of kept databases to keep: the value given (a parameter),
---else the environment's keep_old, else $BGRUN_KEEP_OLD, else 2. A value that is not a whole
---number of at least 0 is bad input (code "usage"), naming where it came
---from.
---@param given any the parameter's value (nil when not given)
---@param env table? the environment's entry
---@param name string? the parameter's name, for the message (default "keep_old")
---@return integer
function M.keep_count(given, env, name)
  local v, from = given, ("parameter '%s'"):format(name or "keep_old")
  if v == nil and env and env.keep_old ~= nil then
    v, from = env.keep_old, "the environment's keep_old"
  end
  if v == nil and (os.getenv("BGRUN_KEEP_OLD") or "") ~= "" then
    v, from = os.getenv("BGRUN_KEEP_OLD"), "BGRUN_KEEP_OLD"
  end
  if v == nil then return M.DEFAULT_KEEP end
  local n = math.tointeger(tonumber(v))
  if n == nil or n < 0 then
    raise { op = "keep", code = "usage", reason = "Invalid",
            message = ("%s: '%s' is not a whole number of kept databases (0 or more)"):format(from, tostring(v)) }
  end
  return n
end

-- Sessions of a database other than ours and autovacuum's (which DROP
-- DATABASE ends itself).
local OTHER_SESSIONS = "a.pid <> pg_backend_pid() AND a.backend_type IS DISTINCT FROM 'autovacuum worker'"

---The kept databases of target, newest first: {name=, kept_at= (ISO UTC
---time from the name), pid=, oid=, size= (bytes, nil when not readable),
---sessions= (live sessions other than autovacuum workers), template=}.
---@param admin any a postgres connection (to the maintenance database)
---@param target string the database's name
---@return table[]
function M.list(admin, target)
  local rows = admin:query([[
    SELECT d.datname, d.oid::bigint AS oid, d.datistemplate AS template,
           CASE WHEN has_database_privilege(d.oid, 'CONNECT') THEN pg_database_size(d.oid) END AS size,
           (SELECT count(*) FROM pg_stat_activity a WHERE a.datname = d.datname AND ]] .. OTHER_SESSIONS .. [[)::bigint
             AS sessions
      FROM pg_database d WHERE starts_with(d.datname, $1)]], { target .. "_old_" }, { readonly = true })
  local out = {}
  for _, r in ipairs(rows) do
    local stamp, pid = M.parse(target, r.datname)
    if stamp then
      out[#out + 1] = { name = r.datname, kept_at = iso(stamp), stamp = stamp, pid = pid, oid = r.oid,
                        size = r.size ~= nil and math.tointeger(tonumber(r.size)) or nil,
                        sessions = math.tointeger(tonumber(r.sessions)) or 0, template = r.template == true }
    end
  end
  table.sort(out, function(a, b)
    if a.stamp ~= b.stamp then return a.stamp > b.stamp end
    return (a.pid or 0) > (b.pid or 0)
  end)
  return out
end

-- A connection to the maintenance database of the server dbinfo names.
local function admin_connect(dbinfo, maintenance_db)
  local info = {}
  for k, v in pairs(dbinfo or {}) do info[k] = v end
  info.dbname = maintenance_db or "postgres"
  return postgres.connect(info)
end

local function names(list)
  local out = {}
  for _, k in ipairs(list) do out[#out + 1] = k.name end
  return out
end

-- Why a kept database must not be dropped now, or nil.
local function refusal(k, target, current)
  if k.name == target or k.name == current then return "it is the database in use" end
  if k.template then return "it is a template database" end
  if k.sessions > 0 then
    return ("it has %d live session(s); nothing is terminated: end them, then drop it"):format(k.sessions)
  end
  return nil
end

-- A backend whose client has just gone stays in pg_stat_activity until it
-- has exited (briefly; longer on a busy server): give such sessions up to
-- a second before counting them as live.
local function settle_sessions(admin, k)
  local deadline = bgrun.now() + 1
  while k.sessions > 0 and bgrun.now() < deadline do
    bgrun.sleep(0.1)
    local r = admin:query("SELECT count(*)::bigint AS n FROM pg_stat_activity a WHERE a.datname = $1 AND "
      .. OTHER_SESSIONS, { k.name }, { readonly = true })
    k.sessions = math.tointeger(tonumber(r[1].n)) or 0
  end
end

-- Drops one kept database; returns nil or why it was skipped.
local function drop_one(admin, k, target, current)
  settle_sessions(admin, k)
  local why = refusal(k, target, current)
  if why then return why end
  -- without FORCE: a session that came since the check makes this fail
  local ok, err = pcall(admin.exec, admin, ("DROP DATABASE %s"):format(qi(k.name)))
  if not ok then return ("DROP DATABASE failed: %s"):format(tostring(err)) end
  return nil
end

---Keeps the newest `keep` kept databases of target and drops the older
---ones (or, with opts.name, exactly that one). opts: database (conninfo
---of the live database; its dbname, else PGDATABASE, is the target),
---maintenance_db, keep (integer >= 0), name (one kept database to drop:
---it must be a kept database of target, else code "usage"), protect (a
---set of names never dropped here, e.g. the one a restore just kept). A database
---that may not be dropped (live sessions, the current one) is skipped
---with a warning, never forced. Under --dry-run nothing is dropped and
---`dropped` lists what would be. Returns {database=, keep=, kept= (names,
---newest first), dropped= (names), skipped= ({name=, reason=}),
---freed= (bytes)}.
---@param opts {database: table?, maintenance_db: string?, keep: integer?, name: string?, protect: table<string, boolean>?}
---@return {database: string, keep: integer?, kept: string[], dropped: string[], skipped: table[], freed: integer}
function M.prune(opts)
  local target = (opts.database or {}).dbname or os.getenv("PGDATABASE")
  if not target then
    raise { op = "prune", code = "usage", reason = "Invalid",
            message = "no database named: set database.dbname or PGDATABASE" }
  end
  local keep = opts.keep
  if opts.name == nil and (math.type(keep) ~= "integer" or keep < 0) then
    raise { op = "prune", code = "usage", reason = "Invalid",
            message = ("keep: '%s' is not a whole number of kept databases (0 or more)"):format(tostring(keep)) }
  end
  local admin <close> = admin_connect(opts.database, opts.maintenance_db)
  local current = admin:query("SELECT current_database() AS d", nil, { readonly = true })[1].d
  local all = M.list(admin, target)
  local candidates, kept = {}, {}
  if opts.name ~= nil then
    local found
    for _, k in ipairs(all) do
      if k.name == opts.name then found = k else kept[#kept + 1] = k end
    end
    if not found then
      raise { op = "drop " .. tostring(opts.name), code = "usage", reason = "NotFound", name = opts.name,
              message = ("%s is not a kept database of %s (kept databases are named %s_old_<YYYYmmddHHMMSS>_<pid>; "
                .. "there are: %s)"):format(tostring(opts.name), target, target,
                #all > 0 and table.concat(names(all), ", ") or "none") }
    end
    candidates[1] = found
  else
    for i, k in ipairs(all) do
      if i <= keep or (opts.protect and opts.protect[k.name]) then
        kept[#kept + 1] = k
      else
        candidates[#candidates + 1] = k
      end
    end
  end
  local res = { database = target, keep = opts.name == nil and keep or nil, dropped = {}, skipped = {}, freed = 0 }
  local left = {}
  for _, k in ipairs(kept) do left[#left + 1] = k end
  for _, k in ipairs(candidates) do
    if bgrun.dry_run() then
      local why = refusal(k, target, current)
      if why then
        res.skipped[#res.skipped + 1] = { name = k.name, reason = why }
        left[#left + 1] = k
        log.warn("dry-run: would skip the kept database", { database = k.name, reason = why })
      else
        res.dropped[#res.dropped + 1] = k.name
        res.freed = res.freed + (k.size or 0)
        log.info("dry-run: would drop the kept database", { database = k.name, kept_at = k.kept_at, size = k.size })
      end
    else
      local why = drop_one(admin, k, target, current)
      if why then
        res.skipped[#res.skipped + 1] = { name = k.name, reason = why }
        left[#left + 1] = k
        log.warn("kept database not dropped", { database = k.name, reason = why })
      else
        res.dropped[#res.dropped + 1] = k.name
        res.freed = res.freed + (k.size or 0)
        log.info("kept database dropped", { database = k.name, kept_at = k.kept_at, size = k.size })
      end
    end
  end
  table.sort(left, function(a, b)
    if a.stamp ~= b.stamp then return a.stamp > b.stamp end
    return (a.pid or 0) > (b.pid or 0)
  end)
  res.kept = names(left)
  res.details = left
  return res
end

---The kept databases of the database dbinfo names (newest first), from
---a connection to the maintenance database: see M.list.
---@param dbinfo table? conninfo
---@param maintenance_db string?
---@return string target, table[] kept
function M.of(dbinfo, maintenance_db)
  local target = (dbinfo or {}).dbname or os.getenv("PGDATABASE")
  local admin <close> = admin_connect(dbinfo, maintenance_db)
  if not target then
    target = admin:query("SELECT current_user AS u", nil, { readonly = true })[1].u
  end
  return target, M.list(admin, target)
end

---The retention restore.restore runs once its swap is done (the restored
---database verified against the backup's schema version): keeps the
---newest `keep` (default: $BGRUN_KEEP_OLD, else 2) kept databases of
---target, never the one this restore just kept (`just_kept`), and drops
---the older ones. Never raises: a problem is a warning. Playbooks that
---verify more (rollback.lua) pass keep_old = false to restore.restore and
---call M.after_restore at their end instead.
---@param opts {database: table, maintenance_db: string?, keep: integer?, just_kept: string?}
---@return table? result of M.prune
function M.after_swap(opts)
  local ok, res = pcall(function()
    local keep = opts.keep
    if keep == nil then keep = M.keep_count(nil, nil) end
    return M.prune { database = opts.database, maintenance_db = opts.maintenance_db, keep = keep,
                     protect = opts.just_kept and { [opts.just_kept] = true } or nil }
  end)
  if not ok then
    log.warn("kept databases not pruned", { error = tostring(res) })
    return nil
  end
  if type(_G.report) == "function" then
    local json = require("json")
    _G.report { kept_databases = json.array(res.kept), dropped_databases = json.array(res.dropped),
                skipped_databases = json.array(res.skipped) }
  end
  return res
end

---Runs the retention after a verified restore, as a step: keeps the newest
---`keep` kept databases of the restored one and drops the rest, adds
---`kept_databases`, `dropped_databases` and `skipped_databases` to the run
---report and prints one line each. Never fails the run: a problem is a
---warning (the restore stands).
---@param opts {database: table, maintenance_db: string?, keep: integer}
---@return table? result of M.prune, nil when it could not run
function M.after_restore(opts)
  local ok, res = pcall(M.prune, opts)
  if not ok then
    log.warn("kept databases not pruned", { error = tostring(res) })
    return nil
  end
  report { kept_databases = require("json").array(res.kept), dropped_databases = require("json").array(res.dropped),
           skipped_databases = require("json").array(res.skipped) }
  for _, n in ipairs(res.dropped) do
    print(("%s kept database %s"):format(bgrun.dry_run() and "would drop" or "dropped", n))
  end
  for _, s in ipairs(res.skipped) do print(("kept database %s not dropped: %s"):format(s.name, s.reason)) end
  print(("kept databases of %s (newest first, keeping %d): %s"):format(res.database, opts.shown or opts.keep,
    #res.kept > 0 and table.concat(res.kept, ", ") or "none"))
  return res
end

return M
