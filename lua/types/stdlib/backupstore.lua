---@meta backupstore
-- Generated from stdlib/backupstore.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Unpinned backups kept in a bucket when nothing says otherwise.
---@type number
M.DEFAULT_KEEP = 10

---Where an environment's backups are: which = "primary" (env.bucket) or
---"replica" (env.replica). Returns {which=, bucket=, s3=
---(s3.bucket options), keep=, endpoint=, region=}. An environment without
---that bucket is bad input (code "usage"), naming the setting.
---@param env_name string
---@param env table
---@param which string? "primary" (default) or "replica"
---@return table
function M.config(env_name, env, which) end

---The number of unpinned backups kept in a bucket: given (a parameter,
---named by what), else the bucket's setting, else 10. Less than 1 is bad
---input (code "usage"): retention never empties a bucket of unpinned
---backups.
---@param given any
---@param cfg table? from M.config
---@param what string? the parameter's name (default "bucket_keep")
---@return integer
function M.keep_count(given, cfg, what) end

---The backup name of a bucket key of env_name, or nil when the key is not
---one of ours: `<env>/<UTC time...>.tar.gz` directly under the prefix.
---@param env_name string
---@param key string
---@return string? name (without .tar.gz)
function M.backup_name(env_name, key) end

---The backups of env_name in a bucket, oldest first: {key=, name=, size=,
---last_modified=, pinned= (by name; see M.pinned)}.
---@param b any an s3 bucket handle
---@param env_name string
---@return table[]
function M.list(b, env_name) end

---Whether a backup in the bucket is pinned: by its name, else by its
---object metadata (pinned=true).
---@param b any bucket handle
---@param o {key: string, pinned: boolean?}
---@return boolean
function M.pinned(b, o) end

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
function M.retain(cfg, env_name, keep, opts) end

---The report form of M.retain's result: JSON arrays.
function M.retention_report(res) end

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
function M.replicate(opts) end

---Copies a backup just taken (backup.create's result) to the replica when
---the environment says `replicate = true`, and adds `replica` to the run
---report: the hook of the playbooks that take backups themselves
---(migrate.lua, deploy-with-migration.lua). Nothing without a bucket key.
---@param env_name string
---@param env table
---@param b table backup.create's result
---@param opts {pinned: boolean?, version: integer?}?
---@return table? replicate's result
function M.after_backup(env_name, env, b, opts) end

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
function M.verify(cfg, env_name, opts) end

return M
