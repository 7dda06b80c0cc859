-- Verify the backups in an environment's bucket: download the newest (or,
-- with all=true, every one), check the object's size and sha256 (when its
-- metadata carries one), unpack it, check each file's sha256 against
-- metadata.json and read the custom dump's table of contents with
-- `pg_restore --list`. Prints one line per backup; exit 1 when any fails,
-- naming each and why (run report: verified_backups, failed_backups).
--   bgrun playbooks/verify-backups.lua env=prod
--   bgrun playbooks/verify-backups.lua env=prod all=true bucket=replica
local backupstore = require("backupstore")
local environments = require("environments")
local json = require("json")
local release = require("release")

return playbook {
  description = "Download and verify the newest (or every) backup in an environment's bucket",
  params = {
    env = release.env_param(environments),
    all = { type = "boolean", default = false, help = "verify every backup, not only the newest" },
    bucket = { default = "primary", choices = { "primary", "replica" }, help = "which bucket to verify" },
  },
  run = function(args)
    local env = environments[args.env]
    local cfg = backupstore.config(args.env, env, args.bucket)
    local where = ("s3://%s/%s/"):format(cfg.bucket, args.env)
    local res = step(args.all and "verify every backup" or "verify the newest backup", function()
      return backupstore.verify(cfg, args.env, { all = args.all })
    end)
    local verified = {}
    for _, o in ipairs(res.ok) do verified[#verified + 1] = o.key end
    report { verify_backups = { bucket = cfg.bucket, which = args.bucket, endpoint = cfg.endpoint, checked = res.checked },
             verified_backups = json.array(verified), failed_backups = json.array(res.failed) }
    if res.checked == 0 then
      bgrun.raise { module = "verify-backups", op = "verify " .. where, code = "verify_failed", reason = "NoBackups",
                    message = ("no backups of %s in %s: nothing to verify"):format(args.env, where) }
    end
    for _, o in ipairs(res.ok) do
      print(("ok      %s  schema %s, %d bytes, %d dump entries, taken %s"):format(o.key,
        tostring(o.migration_version), o.size, o.entries, tostring(o.created_at)))
    end
    for _, f in ipairs(res.failed) do
      print(("FAILED  %s  %s: %s"):format(f.key, f.reason, f.message))
    end
    print(("%d of %d backup(s) in %s verified"):format(#res.ok, res.checked, where))
    if #res.failed > 0 then
      local names = {}
      for _, f in ipairs(res.failed) do names[#names + 1] = ("%s (%s)"):format(f.key, f.reason) end
      bgrun.raise { module = "verify-backups", op = "verify " .. where, code = "verify_failed", reason = "VerifyFailed",
                    message = ("%d of %d backup(s) in %s failed verification: %s"):format(#res.failed, res.checked,
                      where, table.concat(names, ", ")) }
    end
  end,
}
