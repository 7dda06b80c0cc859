---@meta backup
-- Generated from stdlib/backup.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---@type table
M.FILES = { "schema.sql", "data.sql", "full_backup.dump" }

---metadata.json is read whole: anything larger is not one of ours.
---@type number
M.METADATA_MAX = 1024 * 1024

---The environment for libpq programs reaching the database described by db.
---@param db table? conninfo fields
---@return table<string, string>
function M.pg_env(db) end

---An absolute form of path (relative ones are taken from the current
---folder), so journals and later runs from elsewhere find the same file.
---@param path string
---@return string
function M.abspath(path) end

---A private 0700 folder: prefix followed by six random characters.
---@param prefix string
---@param what string for the error message
---@return string
function M.mkdtemp(prefix, what) end

---Registers the removal of scratch space (a folder, an unfinished
---database) as a compensation when running under a playbook. It is safe
---whatever else could not be undone, so it is kept (keep=true): it runs
---even after a newer compensation failed.
---@return {cancel: fun()}
function M.guard(name, fn, undo) end

---Lists the backups in dir, oldest first: {name=, path=, pinned=}.
---@param dir string
---@return table[]
function M.list(dir) end

---Deletes the oldest unpinned backups beyond keep.
---@param dir string
---@param keep integer
---@return string[] deleted paths
function M.prune(dir, keep) end

---The pg_dump commands of a backup, all three reading the one snapshot
---exported by the transaction that holds it (pg_export_snapshot), so
---schema.sql, data.sql and full_backup.dump show the database at the same
---instant whatever is written meanwhile. compress: pg_dump's --compress
---for the custom dump (nil: pg_dump's default).
---@param snapshot string
---@param compress integer?
---@return table[] {name=, argv=, level=} in archive order
function M.dump_commands(snapshot, compress) end

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
function M.create(opts) end

---The identity of the database a connection is on: its name, the
---cluster's system identifier (text; nil when the role may not read
---pg_control_system()) and the database's OID (which a restore by rename
---changes: informational).
---@param db any a postgres connection
---@return {database: string, system_identifier: string?, oid: integer}
function M.identity(db) end

---Why a backup (its metadata) is not of the database identified by
---target (M.identity), or nil when it is: the names must match, and the
---system identifiers when both are known. Backups from before identities
---were recorded are compared by name only.
---@param metadata table
---@param target {database: string, system_identifier: string?, oid: integer?}
---@return string? problem
function M.identity_mismatch(metadata, target) end

---The bucket key of a backup file: <env>/<file name>.
---@param path string
---@param env string?
---@return string
function M.key(path, env) end

---Uploads a backup file to opts.bucket as <env>/<name>.tar.gz, with
---metadata pinned=true for pinned backups. opts: bucket, env, pinned,
---version, s3 (extra s3.bucket options). Returns {key=, etag=, size=}.
---@param path string
---@param opts {bucket: string, env: string?, pinned: boolean?, version: integer?, s3: table?}
---@return {key: string, etag: string?, size: integer}
function M.upload(path, opts) end

---Makes a backup available locally: ref is a local .tar.gz path (one
---starting with "/" or "./" is never looked up in a bucket), a key in
---opts.bucket ("local/2026...tar.gz"), or s3://bucket/key. Downloads into
---dir. Returns the absolute path. A ref that names nothing (no such
---file, no such key) is bad input: code "usage", reason "NotFound".
---@param ref string
---@param dir string
---@param opts {bucket: string?, s3: table?}?
---@return string path
function M.fetch(ref, dir, opts) end

function M.check_scan(r, path) end

---Checks every file of a backup against its metadata.json in one read of
---the archive (archive.scan: nothing unpacked but what is asked for). A
---backup that fails is bad input: code "usage", reason "ChecksumMismatch"
---(naming the file), "TooLarge", "Invalid" or "NotFound". With dir, the
---custom dump is written there as full_backup.dump (for pg_restore
-----jobs). Returns the metadata.
---@param path string the .tar.gz
---@param dir string? a directory for full_backup.dump
---@return table metadata
function M.verify(path, dir) end

---Reads a backup in the bucket through once, writing nothing locally,
---and checks it as verify does; with opts.restore = {argv=, env=} the
---custom dump streams into that command (pg_restore) on the way. key: a
---key in opts.bucket or s3://bucket/key. Returns the metadata.
---@param key string
---@param opts {bucket: string?, s3: table?, restore: table?}
---@return table metadata
function M.verify_remote(key, opts) end

---Undo actions `bgrun resume` runs from a journal.
---@type table
M.undo = nil

return M
