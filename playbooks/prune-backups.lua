-- Bucket retention on demand: keep the newest N unpinned backups of an
-- environment in its bucket (or its replica) and delete the older
-- unpinned ones; pinned backups are never deleted. backup.lua applies the
-- same retention after each upload. --dry-run lists what would be deleted.
--   bgrun --dry-run playbooks/prune-backups.lua env=prod
--   bgrun playbooks/prune-backups.lua env=prod keep=20 bucket=replica
local backupstore = require("backupstore")
local environments = require("environments")
local release = require("release")

return playbook {
  description = "Delete the older unpinned backups in an environment's bucket, keeping the newest N",
  params = {
    env = release.env_param(environments),
    keep = { type = "integer", help = "unpinned backups kept (default: the bucket's keep setting, else 10)" },
    bucket = { default = "primary", choices = { "primary", "replica" }, help = "which bucket" },
  },
  run = function(args)
    local env = environments[args.env]
    local cfg = backupstore.config(args.env, env, args.bucket)
    local keep = backupstore.keep_count(args.keep, cfg, "keep")
    local res = step("bucket retention", function() return backupstore.retain(cfg, args.env, keep) end)
    report { bucket_retention = backupstore.retention_report(res) }
    for _, k in ipairs(res.deleted) do
      print(("%s s3://%s/%s"):format(bgrun.dry_run() and "would delete" or "deleted", cfg.bucket, k))
    end
    print(("s3://%s/%s/: %d unpinned kept (of at most %d), %d pinned, %d %s"):format(cfg.bucket, args.env,
      #res.kept, keep, #res.pinned, #res.deleted, bgrun.dry_run() and "would be deleted" or "deleted"))
  end,
}
