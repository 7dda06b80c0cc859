---@meta kept
-- Generated from stdlib/kept.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---How many kept databases are kept by default.
---@type number
M.DEFAULT_KEEP = 2

---The time and pid of a kept database of target, or nil when name is not
---exactly `<target>_old_<YYYYmmddHHMMSS>_<pid>`.
---@param target string
---@param name string
---@return string? stamp, integer? pid
function M.parse(target, name) end

---The keep_old parameter of the restoring playbooks.
---@type table
M.param = nil

---The number of kept databases to keep: the value given (a parameter),
---else the environment's keep_old, else $BGRUN_KEEP_OLD, else 2. A value that is not a whole
---number of at least 0 is bad input (code "usage"), naming where it came
---from.
---@param given any the parameter's value (nil when not given)
---@param env table? the environment's entry
---@param name string? the parameter's name, for the message (default "keep_old")
---@return integer
function M.keep_count(given, env, name) end

---The kept databases of target, newest first: {name=, kept_at= (ISO UTC
---time from the name), pid=, oid=, size= (bytes, nil when not readable),
---sessions= (live sessions other than autovacuum workers), template=}.
---@param admin any a postgres connection (to the maintenance database)
---@param target string the database's name
---@return table[]
function M.list(admin, target) end

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
function M.prune(opts) end

---The kept databases of the database dbinfo names (newest first), from
---a connection to the maintenance database: see M.list.
---@param dbinfo table? conninfo
---@param maintenance_db string?
---@return string target, table[] kept
function M.of(dbinfo, maintenance_db) end

---The retention restore.restore runs once its swap is done (the restored
---database verified against the backup's schema version): keeps the
---newest `keep` (default: $BGRUN_KEEP_OLD, else 2) kept databases of
---target, never the one this restore just kept (`just_kept`), and drops
---the older ones. Never raises: a problem is a warning. Playbooks that
---verify more (rollback.lua) pass keep_old = false to restore.restore and
---call M.after_restore at their end instead.
---@param opts {database: table, maintenance_db: string?, keep: integer?, just_kept: string?}
---@return table? result of M.prune
function M.after_swap(opts) end

---Runs the retention after a verified restore, as a step: keeps the newest
---`keep` kept databases of the restored one and drops the rest, adds
---`kept_databases`, `dropped_databases` and `skipped_databases` to the run
---report and prints one line each. Never fails the run: a problem is a
---warning (the restore stands).
---@param opts {database: table, maintenance_db: string?, keep: integer}
---@return table? result of M.prune, nil when it could not run
function M.after_restore(opts) end

return M
