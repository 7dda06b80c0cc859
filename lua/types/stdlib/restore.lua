---@meta restore
-- Generated from stdlib/restore.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

function M.oid_of(admin, name) end

---Restores a backup (.tar.gz) over the database described by opts.database
---(conninfo table; unset fields from PG* variables). opts: path (a local
---file, or with bucket a key in it), database, maintenance_db ("postgres"),
---work_dir (where the private scratch folder goes; default TMPDIR or /tmp),
---bucket, s3 (extra s3.bucket options), jobs (pg_restore --jobs; default
---one per core up to 4), stream (with bucket: read the key from the
---bucket straight into pg_restore, nothing written locally; checksums are
---checked as it streams, before the swap), keep_old (kept databases left
---after the swap, newest first, this one always among them; default
---$BGRUN_KEEP_OLD, else 2; false: none dropped here). Returns {version=,
---old_database=, database=, oid= (of the restored database, now live),
---old_oid=, kept= (kept.prune's result)}. A local restore writes only the
---custom dump to scratch space (for pg_restore --jobs, which needs a file
---it can seek in). Unpacking and checksums: backup.verify (the archive module).
---@param opts {path: string, database: table?, maintenance_db: string?, work_dir: string?, bucket: string?, s3: table?, jobs: integer?, stream: boolean?, keep_old: integer|false|nil}
---@return {version: integer, old_database: string, database: string, oid: integer?, old_oid: integer?}
function M.restore(opts) end

---Checks that the database named by dbinfo is still the one expect
---describes ({version=, identity={oid=}}): its schema version (the
---highest in schema_migrations) and its OID. Raises code "world_changed"
---otherwise.
---@param dbinfo table conninfo
---@param expect {version: integer?, identity: {oid: integer?, database: string?}?}
function M.check_expected(dbinfo, expect) end

---Swaps back a restore: the database that was replaced (kept as
---d.old) goes back in place, and the restored one is renamed aside
---(<target>_aside_<stamp>) for inspection. d: database (conninfo),
---maintenance_db, target, old, oid (of the restored database, live now),
---old_oid. Acts only when the live database is still the restored one
---(by OID) and the kept one still exists; otherwise raises
---code "world_changed" and changes nothing. Returns the aside name.
---@param d table
---@return string aside
function M.swap_back(d) end

---Undo actions `bgrun resume` runs from a journal.
---@type table
M.undo = nil

return M
