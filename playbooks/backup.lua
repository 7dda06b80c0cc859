-- Back up an environment's database: schema.sql, data.sql,
-- full_backup.dump and metadata.json in one .tar.gz, all three dumps of one
-- snapshot, streamed into the local file and the environment's bucket at
-- once, the last 10 unpinned kept locally. local=false writes nothing
-- locally: the backup streams straight to the bucket (a database larger
-- than the disk), and is verified by reading it back from there.
--   bgrun playbooks/backup.lua env=local label=before-import [pinned=true]
--   bgrun playbooks/backup.lua env=prod local=false
local backup = require("backup")
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
    ["local"] = { type = "boolean", default = true,
                  help = "keep a copy in the backups folder; false streams straight to the bucket, writing nothing locally" },
  },
  run = function(args)
    local env = environments[args.env]
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
    if b.key then
      print(("%s: s3://%s/%s"):format(b.dry_run and "would upload" or "uploaded", b.bucket, b.key))
    end
    print(("schema version %s"):format(migrate.format_version(version)))
    print(b.path or b.url)
  end,
}
