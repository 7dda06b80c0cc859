-- Drop the databases that restores kept (`<db>_old_<time>_<pid>`, the
-- database a rollback replaced) on purpose: all of them (keep=0, the
-- default), all but the newest N (keep=N), or exactly one (name=). Lists
-- them, asks (--yes answers), drops. A kept database with a live session
-- (other than autovacuum) is not dropped and nothing is terminated: the
-- run ends 1 naming it. --dry-run lists what would be dropped.
--   bgrun playbooks/drop-old-databases.lua env=local
--   bgrun playbooks/drop-old-databases.lua env=prod keep=1 --yes
--   bgrun playbooks/drop-old-databases.lua env=prod name=physioflow_old_20261130101500_4242
local environments = require("environments")
local json = require("json")
local kept = require("kept")
local log = require("log")
local release = require("release")

local function usage(fmt, ...)
  bgrun.raise { module = "drop-old-databases", op = "check the parameters", code = "usage", reason = "Invalid",
                message = fmt:format(...) }
end

local function size(n)
  if n == nil then return "?" end
  if n >= 1024 * 1024 * 1024 then return ("%.1f GiB"):format(n / 1024 / 1024 / 1024) end
  if n >= 1024 * 1024 then return ("%.1f MiB"):format(n / 1024 / 1024) end
  return ("%d kB"):format(math.floor(n / 1024 + 0.5))
end

return playbook {
  description = "Drop the databases restores kept (<db>_old_<time>_<pid>): all, all but the newest N, or one",
  params = {
    env = release.env_param(environments),
    keep = { type = "integer", help = "kept databases to leave, newest first (default 0: drop them all)" },
    name = { pattern = "^[%w_]+$", max_length = 63, help = "drop exactly this kept database" },
  },
  run = function(args)
    local env = environments[args.env]
    if args.keep ~= nil and args.name ~= nil then
      usage("parameter 'name': give keep= or name=, not both")
    end
    if args.keep ~= nil and args.keep < 0 then
      usage("parameter 'keep': '%d' is not a whole number of kept databases (0 or more)", args.keep)
    end
    local keep = args.keep or 0
    local maintenance_db = env.maintenance_db or "postgres"
    local db = env.database or {}
    local target, list = step("list the kept databases", function()
      return kept.of(db, maintenance_db)
    end)
    local where = ("%s on %s:%s"):format(target, tostring(db.host or os.getenv("PGHOST") or "localhost"),
                                         tostring(db.port or os.getenv("PGPORT") or "5432"))
    if args.name ~= nil and not kept.parse(target, args.name) then
      usage("parameter 'name': %s is not a kept database of %s (kept databases are named %s_old_<YYYYmmddHHMMSS>_<pid>)",
            args.name, target, target)
    end
    print(("kept databases of %s: %d"):format(where, #list))
    local drop = {}
    for i, k in ipairs(list) do
      local goes = (args.name == nil and i > keep) or k.name == args.name
      if goes then drop[#drop + 1] = k.name end
      print(("  %-50s kept %s  %10s  %s"):format(k.name, k.kept_at, size(k.size),
        goes and (k.sessions > 0 and ("in use (%d sessions): not dropped"):format(k.sessions) or "drop")
        or "keep"))
    end
    local all = {}
    for _, k in ipairs(list) do all[#all + 1] = k.name end
    report { kept_databases = json.array(all) }
    if #drop == 0 then
      if args.name ~= nil then
        usage("parameter 'name': %s is not a kept database of %s (there are: %s)", args.name, target,
              #all > 0 and table.concat(all, ", ") or "none")
      end
      print(("nothing to drop (keeping %d)"):format(keep))
      return
    end
    confirm(("Drop %d kept database(s) of %s (%s)? This cannot be undone"):format(#drop, where,
      table.concat(drop, ", ")))
    local res = step("drop the kept databases", function()
      return kept.prune { database = db, maintenance_db = maintenance_db, keep = keep, name = args.name }
    end)
    report { kept_databases = json.array(res.kept), dropped_databases = json.array(res.dropped),
             skipped_databases = json.array(res.skipped) }
    for _, n in ipairs(res.dropped) do
      print(("%s %s"):format(bgrun.dry_run() and "would drop" or "dropped", n))
    end
    print(("%s %s; kept: %s"):format(bgrun.dry_run() and "would free" or "freed", size(res.freed),
      #res.kept > 0 and table.concat(res.kept, ", ") or "none"))
    if #res.skipped > 0 then
      local why = {}
      for _, s in ipairs(res.skipped) do why[#why + 1] = ("%s: %s"):format(s.name, s.reason) end
      log.warn("some kept databases were not dropped", { count = #res.skipped })
      bgrun.raise { module = "drop-old-databases", op = "drop", code = "in_use", reason = "InUse",
                    message = ("not dropped (nothing was terminated): %s"):format(table.concat(why, "; ")) }
    end
  end,
}
