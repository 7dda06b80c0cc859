-- Apply, roll back or list the database migrations of an environment.
--   bgrun playbooks/migrate.lua env=local                  apply all pending
--   bgrun playbooks/migrate.lua env=local to=007           apply up to 007
--   bgrun playbooks/migrate.lua env=local action=down to=005
--   bgrun playbooks/migrate.lua env=local action=status
local backup = require("backup")
local environments = require("environments")
local migrate = require("migrate")
local postgres = require("postgres")
local release = require("release")

return playbook {
  description = "Apply (up), roll back (down) or list (status) the database migrations of an environment",
  notify = function(args) return args.action ~= "status" end,  -- status only reads
  params = {
    env = release.env_param(environments),
    action = { default = "up", choices = { "up", "down", "status" } },
    to = { pattern = "^%d+$", help = "target version (up: apply up to it; down: roll back to it, 0 for all)" },
    dir = { help = "migrations directory (default: the environment's `migrations`)" },
    ["allow-drift"] = { type = "boolean", default = false,
                        help = "accept applied migrations whose files changed since" },
    ["lock-timeout"] = { type = "number", default = 30,
                         help = "seconds to wait for another migration run to finish" },
  },
  run = function(args)
    local env = environments[args.env]
    local dir = args.dir or env.migrations
    local to = args.to and math.tointeger(tonumber(args.to))
    if args.action ~= "status" and env.confirm then
      confirm(("Run migrations (%s) on %s?"):format(args.action, args.env))
    end
    local db <close> = step("connect", function()
      return postgres.connect(env.database or {})
    end)
    if args.action == "status" then
      local st = step("status", function()
        return migrate.status(db, migrate.find(dir))
      end)
      for _, l in ipairs(migrate.format_status(st)) do print(l) end
      return
    end
    -- The migration lock comes first: a second run waits here (or is
    -- refused, naming the holder) before it takes a backup of its own, and
    -- then sees what the first one applied.
    local lock_timeout = args["lock-timeout"]
    local holding = step("take the migration lock", function()
      if bgrun.dry_run() then return false end
      migrate.lock(db, lock_timeout)
      return true
    end)
    local ok, err = pcall(function()
      local opts = { dir = dir, to = to, allow_drift = args["allow-drift"], lock_timeout = lock_timeout,
                     locked = holding }
      -- Migrations never run without a fresh, verified backup: a down script
      -- drops data, and an up one may too.
      local migrations = migrate.find(dir)
      local known = to == nil or to == 0
      for _, m in ipairs(migrations) do known = known or m.version == to end
      if not known then
        bgrun.raise { module = "migrate", op = args.action, code = "usage", reason = "UnknownVersion",
                      message = ("no migration with version %s in %s"):format(migrate.format_version(to), dir) }
      end
      local st = migrate.status(db, migrations)
      local versions = { before = st.current or 0 }
      report { schema = versions }
      if release.changes_schema(st, args.action, to) then
        step("back up the database", function()
          local b = backup.create { env = args.env, database = env.database, dir = env.backups, bucket = env.bucket,
                                    label = ("pre-migrate-%s-%s"):format(args.action, to and migrate.format_version(to) or "all"),
                                    pinned = true, version = st.current }
          if not b.dry_run then backup.verify(b.path) end
          require("backupstore").after_backup(args.env, env, b, { pinned = true, version = st.current })
          versions.backup = b.path
          print("backup: " .. b.path)
        end)
      end
      if args.action == "up" then
        local r = step("migrate up", function() return migrate.up(db, opts) end)
        versions.after = r.version
        print(("database at version %s (%d applied)"):format(migrate.format_version(r.version), #r.applied))
      else
        local r = step("migrate down", function() return migrate.down(db, opts) end)
        versions.after = r.version
        print(("database at version %s (%d rolled back)"):format(migrate.format_version(r.version), #r.reverted))
      end
    end)
    if holding then pcall(migrate.unlock, db) end
    if not ok then error(err, 0) end
  end,
}
