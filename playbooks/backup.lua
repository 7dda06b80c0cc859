-- Back up an environment's database: schema.sql, data.sql,
-- full_backup.dump and metadata.json in one .tar.gz, all three dumps of one
-- snapshot, streamed into the local file and the environment's bucket at
-- once, the last 10 unpinned kept locally. local=false writes nothing
-- locally: the backup streams straight to the bucket (a database larger
-- than the disk), and is verified by reading it back from there.
--   bgrun playbooks/backup.lua env=local label=before-import [pinned=true]
--   bgrun playbooks/backup.lua env=prod local=false
local backup = require("backup")
local backupstore = require("backupstore")
local environments = require("environments")
local migrate = require("migrate")
local postgres = require("postgres")
local release = require("release")

return playbook {
  description = "Back up an environment's database and upload it to the environment's bucket",
  params = {
    env = release.env_param(environments),
    label = { default = "manual", pattern = "^[%w][%w._-]*$", help = "a word in the backup's name" },
    pinned = { type = "boolean", default = false, help = "never delete it by retention" },
    keep = { type = "number", default = 10, help = "unpinned backups kept locally" },
    bucket_keep = { type = "integer",
                    help = "unpinned backups kept in the bucket (default: the environment's bucket_keep, else 10)" },
    replicate = { type = "boolean",
                  help = "copy the backup to the environment's replica bucket and verify the copy "
                    .. "(default: the environment's replicate)" },
    ["local"] = { type = "boolean", default = true,
                  help = "keep a copy in the backups folder; false streams straight to the bucket, writing nothing locally" },
  },
  run = function(args)
    local env = environments[args.env]
    -- bad settings are found before anything is taken
    local primary = env.bucket and backupstore.config(args.env, env, "primary")
    local bucket_keep = backupstore.keep_count(args.bucket_keep, primary)
    local replicate = args.replicate
    if replicate == nil then replicate = env.replicate == true end
    local replica = replicate and backupstore.config(args.env, env, "replica")
    -- the replica's own keep setting, else what the primary keeps
    local replica_keep = replica and (env.replica.keep ~= nil and backupstore.keep_count(nil, { which = "replica",
      keep = env.replica.keep }) or bucket_keep)
    if replicate and not primary then
      bgrun.raise { module = "backup", op = "replicate", code = "usage", reason = "NoBucket",
                    message = ("parameter 'replicate': environment %s has no bucket to replicate from"):format(args.env) }
    end
    local version = step("read the schema version", function()
      local db <close> = postgres.connect(env.database or {})
      return migrate.status(db, migrate.find(env.migrations)).current or 0
    end)
    local b = step("back up the database", function()
      return backup.create { env = args.env, database = env.database, dir = env.backups, label = args.label,
                             pinned = args.pinned, version = version, keep = math.tointeger(args.keep) or 10,
                             bucket = env.bucket, ["local"] = args["local"] }
    end)
    report { backup = { path = b.path, bucket = b.bucket, key = b.key, schema_version = version, size = b.size,
                        ["local"] = args["local"] } }
    if not b.dry_run then
      step("verify the backup", function()
        if b.path then
          backup.verify(b.path)
        else
          -- read back from the bucket, nothing written locally
          backup.verify_remote(b.key, { bucket = b.bucket })
        end
      end)
    end
    if b.key and replica then
      local copy = step("replicate the backup", function()
        return backupstore.replicate { env_name = args.env, env = env, key = b.key, path = b.path,
                                       pinned = args.pinned, version = version }
      end)
      report { replica = copy }
      print(("%s: s3://%s/%s (sha256 %s)"):format(b.dry_run and "would replicate" or "replicated and verified",
        copy.bucket, copy.key, tostring(copy.sha256)))
    end
    -- retention last: a backup that is not safely stored deletes nothing
    if b.key then
      step("bucket retention", function()
        local res = backupstore.retain(primary, args.env, bucket_keep, { extra = b.dry_run and b.key or nil })
        report { bucket_retention = backupstore.retention_report(res) }
        for _, k in ipairs(res.deleted) do
          print(("%s s3://%s/%s"):format(b.dry_run and "would delete" or "deleted", primary.bucket, k))
        end
        if replica then
          local rres = backupstore.retain(replica, args.env, replica_keep,
                                          { extra = b.dry_run and b.key or nil })
          report { replica_retention = backupstore.retention_report(rres) }
          for _, k in ipairs(rres.deleted) do
            print(("%s s3://%s/%s"):format(b.dry_run and "would delete" or "deleted", replica.bucket, k))
          end
        end
      end)
    end
    if b.key then
      print(("%s: s3://%s/%s"):format(b.dry_run and "would upload" or "uploaded", b.bucket, b.key))
    end
    print(("schema version %s"):format(migrate.format_version(version)))
    print(b.path or b.url)
  end,
}
