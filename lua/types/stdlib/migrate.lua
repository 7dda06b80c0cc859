---@meta migrate
-- Generated from stdlib/migrate.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Advisory lock key: the bytes "bgrunmig" as one bigint.
---@type number
M.LOCK_KEY = 0x626772756e6d6967

---@type string
M.TABLE = "schema_migrations"

function M.format_version(v) end

---Splits a script into statements the way psql does: semicolons end a
---statement except inside quotes, quoted identifiers, dollar quotes,
---comments, and BEGIN ... END of a CREATE FUNCTION/PROCEDURE body.
---Each statement: sql (from its first token to its semicolon), line (of
---its first token), offset (byte), code (upper-case text with comments and
---string contents removed, for keyword checks).
---@param text string
---@return {sql: string, line: integer, offset: integer, code: string}[]
function M.split_sql(text) end

---The line in the file of a character position (1-based, as PostgreSQL
---reports it) inside a statement.
---@param stmt {sql: string, line: integer}
---@param position integer?
---@return integer
function M.line_of(stmt, position) end

---Warnings for statements that break the colour still serving during a
---blue-green switch; empty when the file carries `-- bgrun:contract`.
---@param m table a migration from M.find
---@return {line: integer, what: string, statement: string}[]
function M.contract_warnings(m) end

---Finds the migrations in dir (both layouts), sorted by version. Each:
---version, name, file (path), sql, checksum (sha256 hex of the file),
---statements, no_transaction, contract, down_file (nil when missing),
---down_sql. Raises code "usage" for a missing directory or duplicate
---versions.
---@param dir string
---@return table[]
function M.find(dir) end

---Reads schema_migrations (read-only; a missing table reads as empty and
---missing columns as nil). Returns rows by version, and the column set.
---@param db any
---@return table<integer, table>, table<string, boolean>?
function M.applied(db) end

---Creates schema_migrations, or upgrades one that has only version (and
---dirty), as golang-migrate leaves it: adds the missing columns and, as
---such a table records only the latest version, adopts every older local
---migration as applied. Rows without a checksum adopt the local file's.
---@param db any
---@param migrations table[] from M.find
---@param applied_by string
function M.ensure_table(db, migrations, applied_by) end

---Takes the session advisory lock of migrations, waiting up to timeout
---seconds; then raises code "locked" naming the holder.
---@param db any
---@param timeout number seconds
function M.lock(db, timeout) end

---Releases the lock once (a closed session releases it too). Session
---advisory locks stack: each lock() needs its own unlock().
function M.unlock(db) end

---Compares the files with schema_migrations (read-only).
---@param db any
---@param migrations table[]
---@return table status {entries=, applied=, pending=, drifted=, dirty=, missing=, current=}
function M.status(db, migrations) end

---Applies pending migrations up to opts.to (default: all).
---opts: dir (required), to, allow_drift, lock_timeout (s, default 30),
---locked (true: this session already holds the lock, see M.lock; it is
---neither taken nor released here), applied_by, print (function for plan
---lines; default print).
---Under --dry-run prints the plan with checksums and changes nothing.
---@param db any
---@param opts table
---@return {applied: table[], version: integer, plan: string[]}
function M.up(db, opts) end

---Rolls back applied migrations newest first, down to opts.to (default:
---one migration). Every down script must exist before anything runs.
---opts: dir, to, allow_drift, lock_timeout, locked, print.
---@param db any
---@param opts table
---@return {reverted: table[], version: integer, plan: string[]}
function M.down(db, opts) end

---Formats a status as text lines (for printing).
---@param st table from M.status
---@return string[]
function M.format_status(st) end

return M
