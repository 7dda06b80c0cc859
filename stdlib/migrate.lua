-- Schema migrations on top of the postgres module: finds migration files,
-- records what was applied in schema_migrations (version, name, sha256
-- checksum, when, how long, by whom, dirty), applies pending ones in order,
-- each in its own transaction, under a session advisory lock, and rolls
-- back with down scripts.
--
-- Two layouts are understood, in the same directory or not:
--   NNN_name.up.sql + NNN_name.down.sql
--   NNN_name.sql    + rollback/NNN_down.sql
-- Annotations (a comment line of their own, anywhere in the file):
--   -- bgrun:no-transaction   run outside a transaction (CREATE INDEX
--                             CONCURRENTLY); the schema_migrations row is
--                             written dirty first and cleaned at the end
--   -- bgrun:contract         this up migration knowingly breaks the app
--                             version still serving; no warning
local core = require("bgrun.core")
local digest = require("digest")
local log = require("log")

local M = {}

---Advisory lock key: the bytes "bgrunmig" as one bigint.
M.LOCK_KEY = 0x626772756e6d6967
M.TABLE = "schema_migrations"

local function raise(t)
  t.module = t.module or "migrate"
  error(core.error(t), 2)
end

local function vfmt(v)
  return ("%03d"):format(v)
end
M.format_version = vfmt

----------------------------------------------------------------- SQL text

local function is_ident_byte(b)
  return b and (b == 95 or b == 36 or (b >= 48 and b <= 57) or (b >= 65 and b <= 90) or (b >= 97 and b <= 122) or b >= 128)
end

-- The opening tag of a dollar quote at i ($$ or $tag$), or nil ($1 is a
-- parameter, not a quote).
local function dollar_tag(text, i)
  return text:match("^%$%$", i) or text:match("^%$[%a_\128-\255][%w_\128-\255]*%$", i)
end

---Splits a script into statements the way psql does: semicolons end a
---statement except inside quotes, quoted identifiers, dollar quotes,
---comments, and BEGIN ... END of a CREATE FUNCTION/PROCEDURE body.
---Each statement: sql (from its first token to its semicolon), line (of
---its first token), offset (byte), code (upper-case text with comments and
---string contents removed, for keyword checks).
---@param text string
---@return {sql: string, line: integer, offset: integer, code: string}[]
function M.split_sql(text)
  local stmts = {}
  local n = #text
  local i, line = 1, 1
  local start, start_line
  local code = {}
  local words = {}   -- first identifiers of the statement, upper-case
  local depth = 0    -- BEGIN ... END nesting in CREATE FUNCTION bodies
  local byte, find, sub = string.byte, string.find, string.sub

  local function count_lines(a, b)
    local _, k = sub(text, a, b):gsub("\n", "")
    line = line + k
  end
  local function finish(stop)
    stmts[#stmts + 1] = { sql = sub(text, start, stop), line = start_line, offset = start,
                          code = table.concat(code):upper() }
    start, code, words, depth = nil, {}, {}, 0
  end

  while i <= n do
    local b = byte(text, i)
    if b == 10 then
      line = line + 1
      i = i + 1
      if start then code[#code + 1] = "\n" end
    elseif b == 32 or b == 9 or b == 13 or b == 12 then
      if start then code[#code + 1] = " " end
      i = i + 1
    elseif b == 45 and byte(text, i + 1) == 45 then -- -- comment
      local e = find(text, "\n", i, true) or n + 1
      i = e
    elseif b == 47 and byte(text, i + 1) == 42 then -- /* nested */
      local level, j = 1, i + 2
      while j <= n and level > 0 do
        local c = byte(text, j)
        if c == 47 and byte(text, j + 1) == 42 then level, j = level + 1, j + 2
        elseif c == 42 and byte(text, j + 1) == 47 then level, j = level - 1, j + 2
        else j = j + 1 end
      end
      count_lines(i, j - 1)
      if start then code[#code + 1] = " " end
      i = j
    else
      if not start then start, start_line = i, line end
      if b == 39 then -- 'string', E'string' with backslash escapes
        local prev, prev2 = byte(text, i - 1), byte(text, i - 2)
        local escapes = (prev == 69 or prev == 101) and i - 1 >= start and not (i - 2 >= start and is_ident_byte(prev2))
        local j = i + 1
        while j <= n do
          local c = byte(text, j)
          if escapes and c == 92 then j = j + 2
          elseif c == 39 then
            if byte(text, j + 1) == 39 then j = j + 2 else break end
          else j = j + 1 end
        end
        count_lines(i, j)
        code[#code + 1] = "''"
        i = j + 1
      elseif b == 34 then -- "identifier"
        local j = i + 1
        while j <= n do
          local c = byte(text, j)
          if c == 34 then
            if byte(text, j + 1) == 34 then j = j + 2 else break end
          else j = j + 1 end
        end
        count_lines(i, j)
        code[#code + 1] = sub(text, i, j)
        i = j + 1
      elseif b == 36 and not is_ident_byte(byte(text, i - 1)) and dollar_tag(text, i) then
        local tag = dollar_tag(text, i)
        local s, e = find(text, tag, i + #tag, true)
        local stop = e or n
        count_lines(i, stop)
        code[#code + 1] = "$$"
        i = stop + 1
        if not s then i = n + 1 end
      elseif b == 59 then -- ;
        if depth > 0 then
          code[#code + 1] = ";"
          i = i + 1
        else
          finish(i)
          i = i + 1
        end
      elseif is_ident_byte(b) and not (b >= 48 and b <= 57) and b ~= 36 then
        local _, e = find(text, "^[%w_$\128-\255]*", i)
        local w = sub(text, i, e):upper()
        code[#code + 1] = w
        if #words < 4 then words[#words + 1] = w end
        if w == "BEGIN" or w == "CASE" then
          local fn = words[1] == "CREATE" and (words[2] == "FUNCTION" or words[2] == "PROCEDURE"
            or (words[2] == "OR" and words[3] == "REPLACE" and (words[4] == "FUNCTION" or words[4] == "PROCEDURE")))
          if fn and (w == "BEGIN" or depth > 0) then depth = depth + 1 end
        elseif w == "END" and depth > 0 then
          depth = depth - 1
        end
        i = e + 1
      else
        code[#code + 1] = string.char(b)
        i = i + 1
      end
    end
  end
  if start then finish(n) end
  return stmts
end

---The line in the file of a character position (1-based, as PostgreSQL
---reports it) inside a statement.
---@param stmt {sql: string, line: integer}
---@param position integer?
---@return integer
function M.line_of(stmt, position)
  if not position or position < 1 then return stmt.line end
  local ok, off = pcall(utf8.offset, stmt.sql, position)
  if not ok or not off then off = position end -- not UTF-8: count bytes
  if off > #stmt.sql + 1 then off = #stmt.sql + 1 end
  local _, k = stmt.sql:sub(1, off - 1):gsub("\n", "")
  return stmt.line + k
end

local function has_annotation(text, word)
  for l in (text .. "\n"):gmatch("([^\n]*)\n") do
    if l:match("^%s*%-%-%s*bgrun:" .. word .. "%s") or l:match("^%s*%-%-%s*bgrun:" .. word .. "$") then
      return true
    end
  end
  return false
end

-- Changes that break the application version still serving while the new
-- one rolls out (blue-green): it reads or writes what is gone or changed.
local CONTRACT_CHECKS = {
  { "drops a column", function(c) return c:find("DROP%s+COLUMN") or (c:find("^%s*ALTER%s+TABLE") and c:find("DROP%s+[%w_\"]+%s*[,;]?%s*$") and not c:find("DROP%s+CONSTRAINT") and not c:find("DROP%s+DEFAULT") and not c:find("DROP%s+NOT%s+NULL") and not c:find("DROP%s+IDENTITY") and not c:find("DROP%s+EXPRESSION")) end },
  { "renames", function(c)
      return (c:find("^%s*ALTER%s+TABLE") or c:find("^%s*ALTER%s+VIEW") or c:find("^%s*ALTER%s+MATERIALIZED%s+VIEW"))
        and c:find("%f[%w]RENAME%f[^%w]") and not c:find("RENAME%s+CONSTRAINT") end },
  { "sets NOT NULL without a default", function(c) return c:find("SET%s+NOT%s+NULL") and not c:find("SET%s+DEFAULT") end },
  { "adds a NOT NULL column without a default", function(c)
      return c:find("ADD%s+COLUMN") and c:find("NOT%s+NULL") and not c:find("DEFAULT") end },
  { "changes a column type", function(c)
      return c:find("^%s*ALTER%s+TABLE") and (c:find("ALTER%s+COLUMN%s+[%w_\"]+%s+TYPE%f[^%w]") or c:find("SET%s+DATA%s+TYPE")
        or c:find("ALTER%s+[%w_\"]+%s+TYPE%f[^%w]")) end },
  { "drops a table or view", function(c) return c:find("^%s*DROP%s+TABLE") or c:find("^%s*DROP%s+VIEW") or c:find("^%s*DROP%s+MATERIALIZED%s+VIEW") end },
}

---Warnings for statements that break the colour still serving during a
---blue-green switch; empty when the file carries `-- bgrun:contract`.
---@param m table a migration from M.find
---@return {line: integer, what: string, statement: string}[]
function M.contract_warnings(m)
  if m.contract then return {} end
  local out = {}
  for _, s in ipairs(m.statements) do
    for _, chk in ipairs(CONTRACT_CHECKS) do
      if chk[2](s.code) then
        out[#out + 1] = { line = s.line, what = chk[1], statement = s.sql:match("^[^\n]*") }
      end
    end
  end
  return out
end

------------------------------------------------------------------- files

local function read_file(path)
  local f, err = io.open(path, "rb")
  if not f then return nil, err end
  local s = f:read("a")
  f:close()
  return s
end

local function list_dir(dir)
  return (require("fs").list(dir))
end

local function bad_input(reason, fmt, ...)
  error(core.error({ module = "migrate", op = "find", code = "usage", reason = reason,
                     message = fmt:format(...) }), 3)
end

-- The runner wraps each file in a transaction: a COMMIT inside would end
-- it early and leave the file half applied and unrecorded.
local function check_tx_control(file, stmts)
  for _, st in ipairs(stmts) do
    local c = st.code
    if c:match("^%s*BEGIN%s*$") or c:match("^%s*BEGIN%s+WORK") or c:match("^%s*BEGIN%s+TRANSACTION")
      or c:match("^%s*BEGIN%s+ISOLATION") or c:match("^%s*START%s+TRANSACTION")
      or c:match("^%s*COMMIT%f[^%w]") or c:match("^%s*END%s*$") or c:match("^%s*END%s+WORK") or c:match("^%s*END%s+TRANSACTION")
      or c:match("^%s*ROLLBACK%s*$") or c:match("^%s*ROLLBACK%s+WORK") or c:match("^%s*ROLLBACK%s+TRANSACTION")
      or c:match("^%s*ABORT%f[^%w]") then
      bad_input("TransactionControl", "%s:%d: %s: the runner runs each file in its own transaction; remove "
        .. "transaction control, or mark the file -- bgrun:no-transaction", file, st.line, st.sql:match("^[^\n]*"))
    end
  end
end

---Finds the migrations in dir (both layouts), sorted by version. Each:
---version, name, file (path), sql, checksum (sha256 hex of the file),
---statements, no_transaction, contract, down_file (nil when missing),
---down_sql. Raises code "usage" for a missing directory or duplicate
---versions.
---@param dir string
---@return table[]
function M.find(dir)
  local names = list_dir(dir)
  if not names then bad_input("NotFound", "migrations directory %s does not exist or cannot be read", dir) end
  local rollback = {}
  for _, name in ipairs(list_dir(dir .. "/rollback") or {}) do
    local v = name:match("^(%d+)_down%.sql$")
    if v then rollback[tonumber(v)] = dir .. "/rollback/" .. name end
  end
  local byv, downs = {}, {}
  for _, fname in ipairs(names) do
    local v, name, kind = fname:match("^(%d+)_(.+)%.(up)%.sql$")
    if not v then v, name, kind = fname:match("^(%d+)_(.+)%.(down)%.sql$") end
    if not v then
      v, name = fname:match("^(%d+)_(.+)%.sql$")
      kind = v and "plain"
    end
    if v then
      local version = math.tointeger(tonumber(v))
      if not version then
        bad_input("BadVersion", "%s/%s: version %s is too large (at most %d)", dir, fname, v, math.maxinteger)
      end
      if kind == "down" then
        downs[version] = dir .. "/" .. fname
      else
        if byv[version] then
          bad_input("DuplicateVersion", "two migrations have version %s: %s and %s", vfmt(version),
            byv[version].file, dir .. "/" .. fname)
        end
        byv[version] = { version = version, name = name, file = dir .. "/" .. fname, layout = kind }
      end
    end
  end
  local list = {}
  for version, m in pairs(byv) do
    local sql, err = read_file(m.file)
    if not sql then bad_input("NotReadable", "cannot read %s: %s", m.file, tostring(err)) end
    m.sql = sql
    m.checksum = digest.sha256(sql)
    m.statements = M.split_sql(sql)
    m.no_transaction = has_annotation(sql, "no%-transaction")
    m.contract = has_annotation(sql, "contract")
    if not m.no_transaction then check_tx_control(m.file, m.statements) end
    m.down_file = downs[version] or (m.layout == "plain" and rollback[version]) or nil
    if m.down_file then
      m.down_sql = read_file(m.down_file)
      if not m.down_sql then bad_input("NotReadable", "cannot read %s", m.down_file) end
      if not has_annotation(m.down_sql, "no%-transaction") then
        check_tx_control(m.down_file, M.split_sql(m.down_sql))
      end
    end
    list[#list + 1] = m
  end
  for version, f in pairs(downs) do
    if not byv[version] then log.warn("migrate: down script without an up migration", { file = f }) end
  end
  table.sort(list, function(a, b) return a.version < b.version end)
  for i = 2, #list do
    if list[i].version > list[i - 1].version + 1 then
      log.warn("migrate: gap in migration numbers", { dir = dir, after = vfmt(list[i - 1].version),
        next = vfmt(list[i].version), missing = list[i].version - list[i - 1].version - 1 })
    end
  end
  return list
end

------------------------------------------------------------ the table

local COLUMNS = {
  { "name", "text" },
  { "checksum", "text" },
  { "applied_at", "timestamptz NOT NULL DEFAULT now()" },
  { "duration_ms", "bigint" },
  { "applied_by", "text" },
  { "dirty", "boolean NOT NULL DEFAULT false" },
}

-- Columns of schema_migrations as a set, or nil when there is no table.
local function table_columns(db)
  local rows = db:query([[
    SELECT a.attname AS name FROM pg_attribute a
    WHERE a.attrelid = to_regclass($1) AND a.attnum > 0 AND NOT a.attisdropped]],
    { M.TABLE }, { readonly = true })
  if #rows == 0 then return nil end
  local set = {}
  for _, r in ipairs(rows) do set[r.name] = true end
  return set
end

---Reads schema_migrations (read-only; a missing table reads as empty and
---missing columns as nil). Returns rows by version, and the column set.
---@param db any
---@return table<integer, table>, table<string, boolean>?
function M.applied(db)
  local cols = table_columns(db)
  if not cols then return {}, nil end
  local sel = { "version::bigint AS version" }
  for _, c in ipairs(COLUMNS) do
    if cols[c[1]] then
      sel[#sel + 1] = c[1] == "applied_at" and "to_char(applied_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS applied_at" or c[1]
    end
  end
  local rows = db:query("SELECT " .. table.concat(sel, ", ") .. " FROM " .. M.TABLE .. " ORDER BY 1",
    nil, { readonly = true })
  local by = {}
  for _, r in ipairs(rows) do by[r.version] = r end
  return by, cols
end

---Creates schema_migrations, or upgrades one that has only version (and
---dirty), as golang-migrate leaves it: adds the missing columns and, as
---such a table records only the latest version, adopts every older local
---migration as applied. Rows without a checksum adopt the local file's.
---@param db any
---@param migrations table[] from M.find
---@param applied_by string
function M.ensure_table(db, migrations, applied_by)
  db:transaction(function()
    local cols = table_columns(db)
    if not cols then
      db:exec(([[CREATE TABLE %s (
        version     bigint PRIMARY KEY,
        name        text NOT NULL DEFAULT '',
        checksum    text,
        applied_at  timestamptz NOT NULL DEFAULT now(),
        duration_ms bigint,
        applied_by  text,
        dirty       boolean NOT NULL DEFAULT false)]]):format(M.TABLE))
      return
    end
    local missing = {}
    for _, c in ipairs(COLUMNS) do
      if not cols[c[1]] then missing[#missing + 1] = "ADD COLUMN " .. c[1] .. " " .. c[2] end
    end
    if #missing > 0 then
      log.warn("migrate: upgrading " .. M.TABLE .. " in place", { added = #missing })
      db:exec("ALTER TABLE " .. M.TABLE .. " " .. table.concat(missing, ", "))
    end
    local rows = db:query("SELECT version::bigint AS version, name, checksum FROM " .. M.TABLE)
    -- one row and no name/checksum columns: golang-migrate's table, which
    -- keeps only the latest version (tables with a row per migration don't)
    local legacy = not cols.name and not cols.checksum and #rows == 1
    local have, max = {}, nil
    for _, r in ipairs(rows) do
      have[r.version] = r
      if not max or r.version > max then max = r.version end
    end
    for _, m in ipairs(migrations) do
      local r = have[m.version]
      if r and (r.checksum == nil or r.name == nil or r.name == "") then
        db:query("UPDATE " .. M.TABLE .. " SET name = $2, checksum = coalesce(checksum, $3) WHERE version = $1",
          { m.version, m.name, m.checksum })
        log.warn("migrate: adopted the checksum of an applied migration recorded without one",
          { version = vfmt(m.version), file = m.file })
      elseif not r and legacy and max and m.version < max then
        db:query("INSERT INTO " .. M.TABLE .. " (version, name, checksum, applied_by, dirty) VALUES ($1, $2, $3, $4, false)",
          { m.version, m.name, m.checksum, applied_by .. " (adopted: the old table recorded only version " .. max .. ")" })
        log.warn("migrate: adopted as applied (the old table recorded only the latest version)",
          { version = vfmt(m.version), file = m.file })
      end
    end
  end)
end

------------------------------------------------------------------- lock

local function holders(db)
  return db:query([[
    SELECT a.pid, coalesce(a.application_name, '') AS application_name,
           CASE WHEN a.client_port = -1 THEN 'local socket'
                WHEN a.client_addr IS NULL THEN 'hidden (another role)'
                ELSE host(a.client_addr) || ':' || a.client_port END AS client,
           to_char(a.backend_start AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') AS backend_start,
           a.usename AS user, a.state,
           extract(epoch FROM now() - a.backend_start)::bigint AS age_s
    FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
    WHERE l.locktype = 'advisory' AND l.granted
      AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND l.classid::bigint = $1 AND l.objid::bigint = $2 AND l.objsubid = 1
      AND a.pid <> pg_backend_pid()]],
    { M.LOCK_KEY >> 32, M.LOCK_KEY & 0xffffffff }, { readonly = true })
end

---Takes the session advisory lock of migrations, waiting up to timeout
---seconds; then raises code "locked" naming the holder.
---@param db any
---@param timeout number seconds
function M.lock(db, timeout)
  local deadline = core.now() + (timeout or 30)
  local said = false
  while true do
    local r = db:query("SELECT pg_try_advisory_lock($1::bigint) AS ok", { M.LOCK_KEY }, { readonly = true })
    if r[1].ok then return end
    if not said then
      local h = holders(db)[1]
      log.info("migrate: waiting for another migration run to finish",
        h and { holder_pid = h.pid, holder_application = h.application_name, holder_client = h.client } or nil)
      said = true
    end
    if core.now() >= deadline then break end
    core.sleep(math.min(0.5, math.max(0.05, deadline - core.now())))
  end
  local h = holders(db)[1]
  local who = h and ("pid %d (application '%s', client %s, user %s, connected since %s, state %s)"):format(
    h.pid, h.application_name, h.client, tostring(h.user), h.backend_start, tostring(h.state))
    or "a session that has since gone"
  raise { op = "lock", code = "locked", reason = "Locked",
          message = ("another migration run holds the migration lock: %s; gave up after %gs"):format(who, timeout or 30),
          holder = h }
end

---Releases the lock once (a closed session releases it too). Session
---advisory locks stack: each lock() needs its own unlock().
function M.unlock(db)
  if not db:is_closed() then
    db:query("SELECT pg_advisory_unlock($1::bigint)", { M.LOCK_KEY }, { readonly = true })
  end
end

------------------------------------------------------------------- plan

---Compares the files with schema_migrations (read-only).
---@param db any
---@param migrations table[]
---@return table status {entries=, applied=, pending=, drifted=, dirty=, missing=, current=}
function M.status(db, migrations)
  local applied, cols = M.applied(db)
  local n, max = 0, 0
  for v in pairs(applied) do n, max = n + 1, math.max(max, v) end
  if cols and not cols.name and not cols.checksum and n == 1 then
    -- a version-only table with one row (golang-migrate) records just the
    -- latest version: older local migrations count as applied, as
    -- ensure_table will adopt them
    for _, m in ipairs(migrations) do
      if m.version < max and not applied[m.version] then
        applied[m.version] = { version = m.version, adopted = true, dirty = false }
      end
    end
  end
  local st = { entries = {}, pending = {}, drifted = {}, dirty = {}, missing = {}, applied = {}, current = 0 }
  local local_by = {}
  for _, m in ipairs(migrations) do local_by[m.version] = m end
  local versions = {}
  for v in pairs(applied) do versions[#versions + 1] = v end
  for _, m in ipairs(migrations) do if not applied[m.version] then versions[#versions + 1] = m.version end end
  table.sort(versions)
  for _, v in ipairs(versions) do
    local m, r = local_by[v], applied[v]
    local e = { version = v, name = (m and m.name) or (r and r.name) or "?", file = m and m.file,
                checksum = m and m.checksum, migration = m, record = r }
    if r then
      st.current = math.max(st.current, v)
      e.applied_at, e.applied_by, e.duration_ms = r.applied_at, r.applied_by, r.duration_ms
      e.recorded_checksum = r.checksum
      if r.dirty then
        e.state = "dirty"
        st.dirty[#st.dirty + 1] = e
      elseif not m then
        e.state = "missing"
        st.missing[#st.missing + 1] = e
      elseif r.checksum and r.checksum ~= m.checksum then
        e.state = "drifted"
        st.drifted[#st.drifted + 1] = e
      else
        e.state = "applied"
      end
      st.applied[#st.applied + 1] = e
    else
      e.state = "pending"
      st.pending[#st.pending + 1] = e
    end
    st.entries[#st.entries + 1] = e
  end
  return st
end

local function dirty_error(e)
  local v = e.version
  raise { op = "check", code = "dirty", reason = "Dirty", version = v,
    message = ("migration %s_%s is marked dirty: it ran outside a transaction and did not finish, so the database "
      .. "may hold part of it. Look at the database, then either finish its statements by hand and run "
      .. "UPDATE %s SET dirty = false WHERE version = %d, or undo what it did and run DELETE FROM %s WHERE version = %d; "
      .. "then run the migration again"):format(vfmt(v), e.name, M.TABLE, v, M.TABLE, v) }
end

local function check_drift(st, allow)
  if #st.drifted == 0 then return end
  local list = {}
  for _, e in ipairs(st.drifted) do
    list[#list + 1] = ("%s (recorded %s, file %s)"):format(e.file, e.recorded_checksum:sub(1, 12), e.checksum:sub(1, 12))
  end
  if not allow then
    raise { op = "check", code = "drift", reason = "Drift", files = list,
      message = ("applied migration(s) changed since they ran: %s. Restore the files as applied, or pass "
        .. "allow-drift=true to accept the new contents as applied"):format(table.concat(list, "; ")) }
  end
  log.warn("migrate: accepting changed applied migrations (allow-drift)", { files = table.concat(list, "; ") })
end

------------------------------------------------------------------ apply

local function run_statements(db, m, stmts, file)
  for _, s in ipairs(stmts) do
    local ok, err = pcall(db.exec, db, s.sql)
    if not ok then
      if type(err) == "table" and err.code == "interrupted" then error(err, 0) end
      local line = M.line_of(s, type(err) == "table" and err.position or nil)
      local msg = type(err) == "table" and err.message or tostring(err)
      raise { op = "apply", code = type(err) == "table" and err.code or "error",
              reason = type(err) == "table" and err.reason or "error",
              message = ("%s:%d: %s"):format(file, line, msg),
              file = file, line = line, statement_line = s.line, version = m.version, statement = s.sql,
              detail = type(err) == "table" and err.detail or nil,
              hint = type(err) == "table" and err.hint or nil, cause = err }
    end
  end
end

local function record(db, m, ms, by, dirty)
  db:query("INSERT INTO " .. M.TABLE .. " (version, name, checksum, applied_at, duration_ms, applied_by, dirty) "
    .. "VALUES ($1, $2, $3, now(), $4, $5, $6) "
    .. "ON CONFLICT (version) DO UPDATE SET name = EXCLUDED.name, checksum = EXCLUDED.checksum, "
    .. "applied_at = EXCLUDED.applied_at, duration_ms = EXCLUDED.duration_ms, applied_by = EXCLUDED.applied_by, "
    .. "dirty = EXCLUDED.dirty", { m.version, m.name, m.checksum, ms, by, dirty, n = 6 })
end

local function apply_up(db, m, by)
  local t0 = core.now()
  if m.no_transaction then
    record(db, m, nil, by, true)
    run_statements(db, m, m.statements, m.file)
    local ms = math.floor((core.now() - t0) * 1000)
    db:query("UPDATE " .. M.TABLE .. " SET dirty = false, duration_ms = $2, applied_at = now() WHERE version = $1",
      { m.version, ms })
    return ms
  end
  local ms
  db:transaction(function()
    run_statements(db, m, m.statements, m.file)
    ms = math.floor((core.now() - t0) * 1000)
    record(db, m, ms, by, false)
  end)
  return ms
end

local function apply_down(db, e, by)
  local m = e.migration
  local t0 = core.now()
  local stmts = M.split_sql(m.down_sql)
  local no_tx = has_annotation(m.down_sql, "no%-transaction")
  if no_tx then
    db:query("UPDATE " .. M.TABLE .. " SET dirty = true WHERE version = $1", { m.version })
    run_statements(db, m, stmts, m.down_file)
    db:query("DELETE FROM " .. M.TABLE .. " WHERE version = $1", { m.version })
  else
    db:transaction(function()
      run_statements(db, m, stmts, m.down_file)
      db:query("DELETE FROM " .. M.TABLE .. " WHERE version = $1", { m.version })
    end)
  end
  return math.floor((core.now() - t0) * 1000)
end

local function default_applied_by()
  return ("%s@%s (bgrun %s)"):format(os.getenv("USER") or os.getenv("LOGNAME") or "unknown", core.hostname(),
    core.version)
end

local function find_version(migrations, to)
  for _, m in ipairs(migrations) do if m.version == to then return m end end
end

-- opts.locked: the caller holds the lock on this session already (taken
-- before its backup); it releases it too.
local function locked(db, opts, fn)
  if core.dry_run() or opts.locked then return fn() end
  M.lock(db, opts.lock_timeout)
  local ok, err = pcall(fn)
  local uok, uerr = pcall(M.unlock, db)
  if not ok then error(err, 0) end
  if not uok then error(uerr, 0) end
  return err
end

local function plan_line(verb, m, file, checksum, extra)
  return ("%s %s_%s  %s  sha256:%s%s"):format(verb, vfmt(m.version), m.name, file, checksum, extra or "")
end

-- What up and down share: the files, opts.to checked against them, and,
-- under the migration lock, a status with no dirty record and no drift that
-- was not allowed. fn(st, migrations, applied_by) does the rest.
local function under_lock(db, opts, op, fn)
  assert(type(opts) == "table" and type(opts.dir) == "string", "migrate." .. op .. ": opts.dir is required")
  local migrations = M.find(opts.dir)
  local by = opts.applied_by or default_applied_by()
  if opts.to and opts.to ~= 0 and not find_version(migrations, opts.to) then
    raise { op = op, code = "usage", reason = "UnknownVersion",
            message = ("no migration with version %s in %s"):format(vfmt(opts.to), opts.dir) }
  end
  return locked(db, opts, function()
    if not core.dry_run() then M.ensure_table(db, migrations, by) end
    local st = M.status(db, migrations)
    if #st.dirty > 0 then dirty_error(st.dirty[1]) end
    check_drift(st, opts.allow_drift)
    return fn(st, migrations, by)
  end)
end

---Applies pending migrations up to opts.to (default: all).
---opts: dir (required), to, allow_drift, lock_timeout (s, default 30),
---locked (true: this session already holds the lock, see M.lock; it is
---neither taken nor released here), applied_by, print (function for plan
---lines; default print).
---Under --dry-run prints the plan with checksums and changes nothing.
---@param db any
---@param opts table
---@return {applied: table[], version: integer, plan: string[]}
function M.up(db, opts)
  local out = type(opts) == "table" and opts.print or print
  return under_lock(db, opts, "up", function(st, _, by)
    if opts.to and opts.to < st.current then
      raise { op = "up", code = "usage", reason = "BehindCurrent",
              message = ("the database is at %s, beyond to=%s: use action=down to go back"):format(
                vfmt(st.current), vfmt(opts.to)) }
    end
    for _, e in ipairs(st.missing) do
      log.warn("migrate: applied migration has no file here", { version = vfmt(e.version), name = e.name })
    end
    local todo = {}
    for _, e in ipairs(st.pending) do
      if not opts.to or e.version <= opts.to then
        if e.version < st.current then
          raise { op = "up", code = "out_of_order", reason = "OutOfOrder",
                  message = ("%s is pending but %s is already applied; renumber it after %s"):format(
                    e.file, vfmt(st.current), vfmt(st.current)) }
        end
        todo[#todo + 1] = e.migration
      end
    end
    local plan = {}
    for _, m in ipairs(todo) do
      for _, w in ipairs(M.contract_warnings(m)) do
        log.warn("migrate: this change breaks the version still serving during a blue-green switch; "
          .. "mark the file -- bgrun:contract if that is intended",
          { file = m.file, line = w.line, change = w.what, statement = w.statement })
      end
      plan[#plan + 1] = plan_line("up", m, m.file, m.checksum,
        m.no_transaction and "  (no transaction)" or "")
    end
    if core.dry_run() then
      out(("dry-run: database at %s; %d migration(s) would be applied"):format(vfmt(st.current), #todo))
      for _, l in ipairs(plan) do out("  " .. l) end
      return { applied = {}, version = st.current, plan = plan }
    end
    if opts.allow_drift then
      for _, e in ipairs(st.drifted) do
        db:query("UPDATE " .. M.TABLE .. " SET checksum = $2 WHERE version = $1", { e.version, e.checksum })
      end
    end
    local done = {}
    local version = st.current
    for _, m in ipairs(todo) do
      local ms = apply_up(db, m, by)
      log.info("migrate: applied", { version = vfmt(m.version), file = m.file, duration_ms = ms })
      done[#done + 1] = { version = m.version, name = m.name, duration_ms = ms }
      version = m.version
    end
    return { applied = done, version = version, plan = plan }
  end)
end

---Rolls back applied migrations newest first, down to opts.to (default:
---one migration). Every down script must exist before anything runs.
---opts: dir, to, allow_drift, lock_timeout, locked, print.
---@param db any
---@param opts table
---@return {reverted: table[], version: integer, plan: string[]}
function M.down(db, opts)
  local out = type(opts) == "table" and opts.print or print
  return under_lock(db, opts, "down", function(st, _, by)
    local to = opts.to
    if to == nil then
      to = 0
      for _, e in ipairs(st.applied) do
        if e.version < st.current then to = math.max(to, e.version) end
      end
    end
    if to > st.current then
      raise { op = "down", code = "usage", reason = "AheadOfCurrent",
              message = ("the database is at %s, below to=%s: use action=up"):format(vfmt(st.current), vfmt(to)) }
    end
    local todo, missing = {}, {}
    for i = #st.applied, 1, -1 do
      local e = st.applied[i]
      if e.version > to then
        todo[#todo + 1] = e
        if not (e.migration and e.migration.down_file) then
          missing[#missing + 1] = e.migration and (e.migration.file .. " has no down script")
            or (vfmt(e.version) .. "_" .. tostring(e.name) .. " has no files here")
        end
      end
    end
    if #missing > 0 then
      raise { op = "down", code = "missing_down", reason = "MissingDownScript", missing = missing,
              message = ("cannot roll back to %s, nothing was run: %s"):format(vfmt(to), table.concat(missing, "; ")) }
    end
    local plan = {}
    for _, e in ipairs(todo) do
      plan[#plan + 1] = plan_line("down", e.migration, e.migration.down_file, digest.sha256(e.migration.down_sql))
    end
    if core.dry_run() then
      out(("dry-run: database at %s; %d migration(s) would be rolled back to %s"):format(vfmt(st.current), #todo, vfmt(to)))
      for _, l in ipairs(plan) do out("  " .. l) end
      return { reverted = {}, version = st.current, plan = plan }
    end
    local done = {}
    local version = st.current
    for _, e in ipairs(todo) do
      local ms = apply_down(db, e, by)
      log.info("migrate: rolled back", { version = vfmt(e.version), file = e.migration.down_file, duration_ms = ms })
      done[#done + 1] = { version = e.version, name = e.name, duration_ms = ms }
      version = to
    end
    local left = 0
    for _, e in ipairs(st.applied) do if e.version <= to then left = math.max(left, e.version) end end
    return { reverted = done, version = #done > 0 and left or version, plan = plan }
  end)
end

---Formats a status as text lines (for printing).
---@param st table from M.status
---@return string[]
function M.format_status(st)
  local lines = { ("%-8s %-28s %-8s %-21s %s"):format("version", "name", "state", "applied_at", "checksum") }
  for _, e in ipairs(st.entries) do
    local sum = e.checksum and e.checksum:sub(1, 12) or "-"
    if e.state == "drifted" then sum = ("%s (recorded %s)"):format(sum, e.recorded_checksum:sub(1, 12)) end
    lines[#lines + 1] = ("%-8s %-28s %-8s %-21s %s"):format(vfmt(e.version), e.name, e.state, e.applied_at or "-", sum)
  end
  lines[#lines + 1] = ("current version %s; %d applied, %d pending, %d drifted, %d dirty, %d without files"):format(
    vfmt(st.current), #st.applied, #st.pending, #st.drifted, #st.dirty, #st.missing)
  return lines
end

return M
