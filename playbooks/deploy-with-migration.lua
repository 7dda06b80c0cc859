-- A release that carries database migrations: back up, migrate, deploy
-- blue-green, record the version. Any failure switches traffic back to the
-- old colour and restores the database from the backup taken first.
--   bgrun playbooks/deploy-with-migration.lua env=local tag=v2.0.0 [to=011]
local backup = require("backup")
local bluegreen = require("bluegreen")
local checks = require("checks")
local environments = require("environments")
local http = require("http")
local lock = require("lock")
local migrate = require("migrate")
local postgres = require("postgres")
local release = require("release")
local restore = require("restore")

return playbook {
  description = "Back up, migrate and blue-green deploy as one unit; any failure restores both",
  params = {
    env = release.env_param(environments),
    tag = release.tag_param,
    to = { pattern = "^%d+$", help = "target migration version (default: the newest)" },
    ["skip-tests"] = release.skip_tests_param,
    ["break-lock"] = release.break_lock_param,
  },
  run = function(args)
    local env = environments[args.env]
    -- a monitor that could not run is bad input: found before the backup and the migration
    require("monitor").validate(env.monitor)
    local c = release.client(args.env, env)
    release.confirm(c, env, ("Migrate and deploy %s to %s"):format(args.tag, args.env))
    local ns = env.namespace
    local l = lock.take(c, env, "deploy-with-migration " .. args.tag, args["break-lock"])

    local db <close> = step("check the database", function()
      local db = postgres.connect(env.database or {})
      db:query("SELECT 1", nil, { readonly = true })
      return db
    end)

    local migrations = migrate.find(env.migrations)
    local current, target = step("read the schema version", function()
      local st = migrate.status(db, migrations)
      local newest = migrations[#migrations] and migrations[#migrations].version or 0
      local to = args.to and math.tointeger(tonumber(args.to)) or newest
      return st.current or 0, to
    end)
    print(("schema version %s -> %s"):format(migrate.format_version(current), migrate.format_version(target)))
    report { schema = { before = current, target = target } }

    local taken = step("back up the database", function()
      local b = backup.create { env = args.env, database = env.database, dir = env.backups, bucket = env.bucket,
                                label = "pre-migration-" .. args.tag, pinned = true, version = current }
      if not b.dry_run then backup.verify(b.path) end
      require("backupstore").after_backup(args.env, env, b, { pinned = true, version = current })
      return b
    end)
    print("backup: " .. taken.path .. (taken.key and (" (s3://" .. taken.bucket .. "/" .. taken.key .. ")") or ""))

    if target ~= current then
      -- The ConfigMap follows the schema from here on, so that no kill
      -- point leaves them apart: recorded before the migration, with an
      -- undo registered first that puts the old version back after the
      -- migration's own undo (compensations run newest first). The commit
      -- point cancels it with the others.
      step("record the migration version " .. migrate.format_version(target), function()
        on_failure("put the migration version back to " .. migrate.format_version(current), function()
          release.record_version_retrying(c, ns, current)
        end, { module = "release", action = "record_version", context = env.context, namespace = ns,
               version = current })
        release.record_version_retrying(c, ns, target)
      end)
      step("migrate to " .. migrate.format_version(target), function()
        -- the undo restores only the database this run migrated, and only
        -- while its schema is where this run left it
        local identity = backup.identity(db)
        local live_colour = bluegreen.active_colour(c, env.app, ns)
        local live = c:get("deployment", env.app .. "-" .. live_colour, { namespace = ns })
        -- an absolute path: `bgrun resume` may run from another folder
        local path = taken.path:sub(1, 1) == "/" and taken.path or ((os.getenv("PWD") or ".") .. "/" .. taken.path)
        -- the down scripts first (they keep the rows written meanwhile), the
        -- backup only when one is missing, changed since now, or fails
        local dir = backup.abspath(env.migrations)
        local undo = { module = "release", action = "undo_migration", path = path,
                       database = env.database, context = env.context, namespace = ns,
                       migrations = dir, downs = release.down_checksums(dir, current, target),
                       taken_at = taken.metadata and taken.metadata.created_at,
                       applied_by = "bgrun undo of deploy " .. args.tag,
                       expect = { from = current, version = target, oid = identity.oid, database = identity.database,
                                  service = { app = env.app, colour = live_colour,
                                              image = live and live.spec.template.spec.containers[1].image } } }
        on_failure(("undo the migration to %s (down scripts, else restore from %s)")
          :format(migrate.format_version(target), path), function()
          db:close() -- our own session must not hold the database
          -- how the migration was undone, and the writes a restore lost
          report { migration_undo = release.undo_migration(undo) }
        end, undo)
        migrate.up(db, { dir = env.migrations, to = target, applied_by = "bgrun deploy " .. args.tag })
      end)
    end

    local report = bluegreen.deploy(c, {
      app = env.app, namespace = env.namespace, context = env.context, tag = args.tag, replicas = env.replicas,
      skip_tests = args["skip-tests"], checks = checks, rollout_timeout = env.rollout_timeout,
      smoke_access = bluegreen.smoke_access(args.env, env), smoke_url = env.smoke_url,
      monitor = env.monitor, retire_delay = env.retire_delay, on_tick = l.renew,
      -- past the switch and the monitoring the release stands: a failure to
      -- record or verify it is for a human, never a database restore
      commit_hint = ("%s %s serves traffic and the database %s is at schema version %s; nothing was rolled back. "
        .. "Check with: bgrun examples/physioflow/status.lua env=%s. If the ConfigMap migration-version does not say %d: "
        .. "kubectl -n %s patch configmap migration-version --type merge -p '{\"data\":{\"version\":\"%d\"}}'. "
        .. "Without the annotation bgrun.io/migration-release on the Service, rollback-release cannot find this release: "
        .. "roll it back with playbooks/rollback.lua and the backup printed above")
        :format(env.app, args.tag, tostring((env.database or {}).dbname or os.getenv("PGDATABASE")),
                migrate.format_version(target), args.env, target, ns, target),
    })

    -- after the commit point, never between the switch and it: the switch
    -- back checks the Service's resourceVersion, which this patch changes
    step("record the release", function()
      local prev = c:get("deployment", env.app .. "-" .. report.from, { namespace = ns })
      local prev_image = prev and prev.spec.template.spec.containers[1].image
      release.record_release(c, ns, env.app, {
        tag = args.tag, colour = report.to, image = report.image,
        previous_colour = report.from, previous_image = prev_image,
        previous_tag = prev_image and prev_image:match(":([^:/@]+)$"),
        schema_from = current, schema_to = target,
        backup = { path = backup.abspath(taken.path), bucket = taken.key and taken.bucket or nil, key = taken.key,
                   taken_at = taken.metadata and taken.metadata.created_at },
        at = os.date("!%Y-%m-%dT%H:%M:%SZ"),
      })
    end)

    step("record the migration version", function()
      release.record_version_retrying(c, ns, target)
    end)

    if not bgrun.dry_run() then
      step("verify", function()
        local cm = c:get("configmap", "migration-version", { namespace = env.namespace })
        -- the schema as a new session sees it: the run's own connection
        -- may have been dropped since the migration (a restart, an
        -- administrator), and a dropped connection is no failed release
        local st = release.with_db(env.database or {}, function(vdb) return migrate.status(vdb, migrations) end)
        local problems = {}
        if tonumber(cm.data.version) ~= target then
          problems[#problems + 1] = ("ConfigMap migration-version says %s"):format(cm.data.version)
        end
        if (st.current or 0) ~= target then
          problems[#problems + 1] = ("schema_migrations is at %s"):format(st.current)
        end
        local svc = c:get("service", env.app, { namespace = env.namespace })
        local port = svc.spec.ports[1].port
        local info = http.get(("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, port), { timeout = 10 })
        if info.status ~= 200 or not info.json or info.json.version ~= args.tag then
          problems[#problems + 1] = ("the service answers version %s (status %d)")
            :format(tostring(info.json and info.json.version), info.status)
        elseif info.json.schema_version ~= target then
          problems[#problems + 1] = ("the API sees schema version %s"):format(tostring(info.json.schema_version))
        end
        if #problems > 0 then
          bgrun.raise { module = "deploy", op = "verify", code = "verify_failed", reason = "VerifyFailed",
                        message = table.concat(problems, "; ") }
        end
      end)
    end
    l.release()
    bluegreen.print_report(report)
    print(("migration version %s recorded in schema_migrations, ConfigMap migration-version and %s")
      :format(migrate.format_version(target), taken.path))
  end,
}
