-- Shows which colour serves which version, the replicas of each colour,
-- the schema version in its three places, and the databases restores
-- kept (<db>_old_<time>_<pid>; playbooks/drop-old-databases.lua drops them).
local environments = require("environments")
local http = require("http")
local kept = require("kept")
local migrate = require("migrate")
local release = require("release")
local postgres = require("postgres")

return playbook {
  description = "Show the live colour, versions and schema version of the PhysioFlow example",
  notify = false,  -- it only reads
  params = { env = { default = "local", help = "environment from playbooks/environments.lua" } },
  run = function(args)
    local env = assert(environments[args.env], "no environment " .. args.env)
    local c = release.client(args.env, env)
    local svc = c:get("service", env.app)
    print(("service %s selects version=%s"):format(env.app,
      svc.spec.selector.version or "(none: both colours, a canary is running or was killed)"))
    for _, colour in ipairs({ "blue", "green" }) do
      local d = c:get("deployment", env.app .. "-" .. colour)
      print(("  %-6s %s  replicas %d/%d ready"):format(colour, d.spec.template.spec.containers[1].image,
        d.status.readyReplicas or 0, d.spec.replicas or 0))
    end
    local info = http.get(("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, svc.spec.ports[1].port))
    print(("the service answers: version %s, schema version %s"):format(info.json.version, info.json.schema_version))
    local cm = c:get("configmap", "migration-version")
    local db <close> = postgres.connect(env.database or {})
    local st = migrate.status(db, migrate.find(env.migrations))
    print(("schema_migrations: %s; ConfigMap migration-version: %s"):format(
      migrate.format_version(st.current), cm and cm.data.version or "absent"))
    db:close()
    local ok, target, list = pcall(kept.of, env.database or {}, env.maintenance_db)
    if not ok then
      print(("kept databases: cannot list them: %s"):format(tostring(target)))
      return
    end
    local names = {}
    for _, k in ipairs(list) do names[#names + 1] = k.name end
    report { kept_databases = require("json").array(names) }
    print(("kept databases of %s: %d%s"):format(target, #list, #list > 0 and " (newest first)" or ""))
    for _, k in ipairs(list) do
      print(("  %s  kept %s  %s%s"):format(k.name, k.kept_at, k.size and ("%.1f MiB"):format(k.size / 1048576) or "size ?",
        k.sessions > 0 and ("  %d live sessions"):format(k.sessions) or ""))
    end
  end,
}
