-- Undo a finished release that migrated the database: the release record
-- that deploy-with-migration left on the Service names the colours, the
-- tags, the schema versions and the pinned pre-migration backup. Take the
-- lock, stop the new colour, restore the database from that backup (into
-- a fresh database swapped in by rename; the migrated one is kept) while
-- the previous colour starts with its previous image, switch traffic to it,
-- record the schema version, verify schema_migrations, the ConfigMap and
-- the API. Every step has its compensation: a failure puts the release
-- back as it was. Writes made after the backup are lost, and reported.
--   bgrun playbooks/rollback-release.lua env=local
--   bgrun playbooks/rollback-release.lua env=prod   (type ROLLBACK PRODUCTION)
local backup = require("backup")
local bluegreen = require("bluegreen")
local environments = require("environments")
local json = require("json")
local kept = require("kept")
local lock = require("lock")
local log = require("log")
local migrate = require("migrate")
local postgres = require("postgres")
local release = require("release")
local restore = require("restore")

local function refuse(fmt, ...)
  bgrun.raise { module = "rollback-release", op = "read the release record", code = "usage",
                reason = "NoRelease", message = fmt:format(...) }
end

local function image_of(dep)
  local ct = dep and (((dep.spec or {}).template or {}).spec or {}).containers
  return ct and ct[1] and ct[1].image, ct and ct[1] and ct[1].name
end

return playbook {
  description = "Roll back the last deploy-with-migration: database from its backup, traffic to the previous colour",
  params = {
    env = release.env_param(environments),
    ["break-lock"] = release.break_lock_param,
    keep_old = kept.param,
  },
  run = function(args)
    local env = environments[args.env]
    local keep_old = kept.keep_count(args.keep_old, env)
    local ns, app = env.namespace, env.app
    local c = release.client(args.env, env)
    local fmt = migrate.format_version
    local t_start = bgrun.now()

    -- the record must describe what serves now, or another release came since
    local rec, id = step("read the release record", function()
      local r, why, svc = release.read_release(c, ns, app)
      if not r then refuse("nothing to roll back: %s", why) end
      local colour = ((svc.spec or {}).selector or {}).version
      local serving = colour and c:get("deployment", app .. "-" .. colour, { namespace = ns })
      local image = image_of(serving)
      if colour ~= r.colour or image ~= r.image then
        refuse("the release record names %s %s on %s (%s), but the Service %s sends traffic to %s (%s): "
          .. "another release came since; not rolling back", app, tostring(r.tag), tostring(r.colour),
          tostring(r.image), app, tostring(colour), tostring(image))
      end
      if not r.previous_colour or not r.previous_image then
        refuse("the release record names no previous colour or image: %s", json.encode(r))
      end
      local db <close> = postgres.connect(env.database or {})
      local version = db:query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations", nil,
                               { readonly = true })[1].v
      local ident = backup.identity(db)
      if version ~= r.schema_to then
        refuse("the release record says schema version %s, but the database %s is at %s: another migration ran since; "
          .. "not rolling back", fmt(r.schema_to), ident.database, fmt(version))
      end
      return r, ident
    end)
    print(("release %s %s on %s (was %s %s on %s), schema %s -> %s, backup %s taken %s"):format(app,
      rec.tag, rec.colour, tostring(rec.previous_tag), rec.previous_image, rec.previous_colour, fmt(rec.schema_from),
      fmt(rec.schema_to), rec.backup.path, tostring(rec.backup.taken_at)))

    local migrated = rec.schema_from ~= rec.schema_to
    local path, metadata
    if migrated then
      path, metadata = step("fetch and verify the backup", function()
        local f = io.open(rec.backup.path or "", "rb")
        local p
        if f then
          f:close()
          p = rec.backup.path
        elseif rec.backup.key and rec.backup.bucket then
          p = backup.fetch(rec.backup.key, backup.abspath(env.backups .. "/fetched"), { bucket = rec.backup.bucket })
        else
          refuse("the release's backup %s is not here and the record names no bucket key", tostring(rec.backup.path))
        end
        local m = backup.verify(p)
        local problem = backup.identity_mismatch(m, id)
        if problem then
          refuse("the release's backup %s cannot restore database %s: %s", p, id.database, problem)
        end
        if (m.migration_version or 0) ~= rec.schema_from then
          refuse("the release's backup %s is at schema version %s, the record says %s", p,
            fmt(m.migration_version or 0), fmt(rec.schema_from))
        end
        return p, m
      end)
    end

    release.confirm(c, env, ("Roll %s back from %s to %s (schema %s -> %s); writes since %s are lost and the API is down meanwhile")
      :format(args.env, rec.tag, tostring(rec.previous_tag), fmt(rec.schema_to), fmt(rec.schema_from),
              tostring(rec.backup.taken_at)), { expect = "ROLLBACK PRODUCTION" })

    local l = lock.take(c, env, "rollback-release " .. rec.tag, args["break-lock"])

    local new_name, prev_name = app .. "-" .. rec.colour, app .. "-" .. rec.previous_colour
    local new_replicas
    local report = { steps = {} }
    bgrun.report { rollback_release = report }
    local function timed(name, fn)
      local t0 = bgrun.now()
      local r = step(name, fn)
      report.steps[#report.steps + 1] = { step = name, seconds = bgrun.now() - t0 }
      return r
    end

    local t_down = bgrun.now()
    timed("stop " .. new_name, function()
      l.renew()
      local d = c:get("deployment", new_name, { namespace = ns })
      new_replicas = d.spec.replicas or 0
      local undo = { module = "release", action = "scale", context = env.context, namespace = ns,
                     replicas = { [new_name] = new_replicas }, left = { [new_name] = 0 },
                     rollout_timeout = env.rollout_timeout }
      on_failure("bring " .. new_name .. " back", function()
        release.scale_all(c, ns, undo.replicas, env.rollout_timeout)
      end, undo)
      c:scale("deployment", new_name, 0, { namespace = ns })
      if not bgrun.dry_run() then
        -- its pods must be gone (and their database sessions with them)
        local deadline = bgrun.now() + (env.rollout_timeout or 300)
        while #(c:list("pods", { namespace = ns, labelSelector = ("app=%s,version=%s"):format(app, rec.colour) })
                  .items or {}) > 0 do
          if bgrun.now() > deadline then
            bgrun.raise { module = "rollback-release", op = "stop " .. new_name, code = "timeout", reason = "Timeout",
                          message = ("pods of %s still running after %ds"):format(new_name, env.rollout_timeout or 300) }
          end
          bgrun.sleep(0.2)
        end
      end
    end)

    -- the previous colour starts while the database is restored: it takes
    -- no traffic before the switch, and its sessions are ended by the swap
    timed("start " .. prev_name .. " with " .. rec.previous_image, function()
      l.renew()
      local d = c:get("deployment", prev_name, { namespace = ns })
      local image, container = image_of(d)
      local undo = { module = "release", action = "scale", context = env.context, namespace = ns,
                     replicas = { [prev_name] = d.spec.replicas or 0 },
                     left = { [prev_name] = env.replicas or new_replicas }, rollout_timeout = env.rollout_timeout }
      on_failure("scale " .. prev_name .. " back down", function()
        release.scale_all(c, ns, undo.replicas, env.rollout_timeout)
      end, undo)
      local patch = { spec = { replicas = env.replicas or new_replicas } }
      if image ~= rec.previous_image then
        log.warn("the previous colour runs another image than the record's; putting the record's back",
                 { deployment = prev_name, image = image, want = rec.previous_image })
        patch.spec.template = { spec = { containers = { { name = container, image = rec.previous_image } } } }
      end
      c:patch("deployment", prev_name, patch, { type = "strategic", namespace = ns })
    end)

    local swap_undo, swap_h
    local function on_failure_swap_back()
      swap_h = on_failure("put the migrated database " .. swap_undo.old .. " back", function()
        restore.swap_back(swap_undo)
      end, swap_undo)
    end
    if migrated then
      local database = {}
      for k, v in pairs(env.database or {}) do database[k] = v end
      database.dbname = id.database
      timed("restore the database from " .. path, function()
        l.renew()
        local r = restore.restore { path = path, database = database, maintenance_db = env.maintenance_db,
                                    keep_old = false } -- pruned at the end, after the checks
        if r.old_database then
          swap_undo = { module = "restore", action = "swap_back", database = database,
                        maintenance_db = env.maintenance_db, target = id.database, old = r.old_database,
                        oid = r.oid, old_oid = r.old_oid }
          on_failure_swap_back()
          report.kept_as = r.old_database
        end
        if not bgrun.dry_run() then
          report.lost = release.report_write_window(metadata.created_at or rec.backup.taken_at, id.database)
        end
      end)
      if not bgrun.dry_run() then
        timed("verify schema_migrations", function()
          local db <close> = postgres.connect(env.database or {})
          local got = db:query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
          if got ~= rec.schema_from then
            bgrun.raise { module = "rollback-release", op = "verify", code = "version_mismatch",
                          reason = "VersionMismatch",
                          message = ("schema_migrations is at %s after the restore, the release started from %s")
                            :format(fmt(got), fmt(rec.schema_from)) }
          end
        end)
      end
    else
      log.info("the release changed no schema: the database stays as it is", { version = rec.schema_to })
    end

    if not bgrun.dry_run() then
      timed("wait for the rollout of " .. prev_name, function()
        l.renew()
        c:rollout_status("deployment", prev_name, { namespace = ns, timeout = env.rollout_timeout or 300 })
      end)
    end

    timed("switch traffic to " .. rec.previous_colour, function()
      l.renew()
      -- the way back: the new colour up again and the selector on it
      local back = { module = "bluegreen", action = "switch_back", context = env.context, namespace = ns,
                     app = app, colour = rec.colour, replicas = new_replicas, rollout_timeout = env.rollout_timeout,
                     expect = { colour = rec.previous_colour, image = rec.previous_image } }
      local h = on_failure("switch traffic back to " .. rec.colour, function()
        bluegreen.undo.switch_back(back)
      end, back)
      if swap_h then
        -- undone newest first: the migrated database must be back before
        -- the new colour takes traffic again
        swap_h.cancel()
        on_failure_swap_back()
      end
      local t0 = bgrun.now()
      local switched = c:patch("service", app, { spec = { selector = { version = rec.previous_colour } } },
                               { type = "merge", namespace = ns })
      if not bgrun.dry_run() and switched and switched.metadata then
        back.expect.service_rv = switched.metadata.resourceVersion
        h.update(back)
        bluegreen.confirm_switch(c, { app = app, namespace = ns, colour = rec.previous_colour })
      end
      report.switch_seconds = bgrun.now() - t0
    end)
    report.downtime_seconds = bgrun.now() - t_down

    timed("record the migration version", function()
      local cm = c:get("configmap", "migration-version", { namespace = ns })
      local was = cm and tonumber((cm.data or {}).version) or rec.schema_to
      local undo = { module = "release", action = "record_version", context = env.context, namespace = ns,
                     version = was }
      on_failure("record schema version " .. fmt(was) .. " again", function()
        release.record_version_retrying(c, ns, was)
      end, undo)
      release.record_version_retrying(c, ns, rec.schema_from)
    end)

    if not bgrun.dry_run() then
      timed("verify", function()
        local db <close> = postgres.connect(env.database or {})
        local problems = release.check_versions(c, db, { namespace = ns, app = app, version = rec.schema_from,
                                                          tag = rec.previous_tag })
        if #problems > 0 then
          bgrun.raise { module = "rollback-release", op = "verify", code = "verify_failed", reason = "VerifyFailed",
                        message = table.concat(problems, "; ") }
        end
      end)
    end

    -- the release is undone: its record goes, so it cannot be rolled back twice
    commit("release rolled back", { hint = ("%s %s serves on %s with schema %s; the Service may still carry the "
      .. "record of %s: kubectl -n %s annotate service %s %s-"):format(app, tostring(rec.previous_tag),
      rec.previous_colour, fmt(rec.schema_from), rec.tag, ns, app, release.RELEASE_ANNOTATION) })
    step("retire the release record", function()
      rec.rolled_back_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
      c:patch("service", app, { metadata = { annotations = {
        [release.RELEASE_ANNOTATION] = json.null,
        [release.ROLLED_BACK_ANNOTATION] = json.encode(rec, { sort_keys = true }) } } },
        { type = "merge", namespace = ns })
    end)
    -- the restore is verified and the release rolled back: only now do
    -- older kept databases go
    if migrated and (report.kept_as or bgrun.dry_run()) then
      step("drop old kept databases", function()
        local database = {}
        for k, v in pairs(env.database or {}) do database[k] = v end
        database.dbname = id.database
        kept.after_restore { database = database, maintenance_db = env.maintenance_db,
                             keep = bgrun.dry_run() and math.max(keep_old - 1, 0) or keep_old, shown = keep_old }
      end)
    end
    l.release()

    local lines = { ("rolled back %s %s: %s -> %s (%s), schema %s -> %s"):format(app, rec.tag, rec.colour,
      rec.previous_colour, rec.previous_image, fmt(rec.schema_to), fmt(rec.schema_from)) }
    for _, s in ipairs(report.steps) do
      lines[#lines + 1] = ("  %-60s %s"):format(s.step, bgrun.fmt_duration(s.seconds))
    end
    lines[#lines + 1] = ("  %-60s %s"):format("without serving pods (stop to endpoints confirmed)",
      bgrun.fmt_duration(report.downtime_seconds))
    if report.lost then
      lines[#lines + 1] = ("  %-60s %s to %s (%ss)"):format("writes lost (backup to restore)",
        tostring(report.lost.from), report.lost.to, tostring(report.lost.seconds or "?"))
    end
    if report.kept_as then
      lines[#lines + 1] = ("  %-60s %s"):format("the migrated database is kept as", report.kept_as)
    end
    lines[#lines + 1] = ("  %-60s %s"):format("total", bgrun.fmt_duration(bgrun.now() - t_start))
    print(table.concat(lines, "\n"))
  end,
}
