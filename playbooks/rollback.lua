-- Roll an environment's database back to a backup, with the API stopped
-- meanwhile: fetch, verify, check that the backup is of this very database
-- and that both it and the maintenance database answer with our
-- credentials, confirm, scale the API to 0, restore into a fresh database
-- swapped in by rename (the old one is kept), check the schema version,
-- record it in the migration-version ConfigMap, bring the API back. A
-- failure after the scale-down brings the API back as it was; one after
-- the swap first puts the old database back (the restored one is kept
-- aside for inspection).
--   bgrun playbooks/rollback.lua env=local backup=backups/local/2026...tar.gz
--   bgrun playbooks/rollback.lua env=prod backup=prod/2026...tar.gz --yes
--   bgrun playbooks/rollback.lua env=prod backup=prod/2026...tar.gz local=false
--     (read from the bucket as a stream: verified by reading it through,
--     then restored by streaming it into pg_restore; nothing written locally)
local backup = require("backup")
local environments = require("environments")
local kept = require("kept")
local lock = require("lock")
local log = require("log")
local migrate = require("migrate")
local postgres = require("postgres")
local release = require("release")
local restore = require("restore")

return playbook {
  description = "Roll the database back to a backup, with the API stopped while it is restored",
  params = {
    env = release.env_param(environments),
    backup = { required = true, help = "a local .tar.gz, or a key in the environment's bucket (or s3://bucket/key)" },
    ["break-lock"] = release.break_lock_param,
    keep_old = kept.param,
    ["local"] = { type = "boolean", default = true,
                  help = "fetch a bucket key into the backups folder first; false streams it from the bucket, writing nothing locally" },
  },
  run = function(args)
    local env = environments[args.env]
    local keep_old = kept.keep_count(args.keep_old, env)
    local maintenance_db = env.maintenance_db or "postgres"
    -- a local file is used as it is; a bucket key is fetched, or with
    -- local=false read as a stream twice (verified, then restored)
    local f = args["local"] == false and io.open(args.backup, "rb")
    if f then f:close() end
    local stream = args["local"] == false and not f
    local path = stream and args.backup or step("fetch the backup", function()
      return backup.fetch(args.backup, env.backups .. "/fetched", { bucket = env.bucket })
    end)
    local metadata = step("verify the backup", function()
      local m = stream and backup.verify_remote(args.backup, { bucket = env.bucket }) or backup.verify(path)
      if m.env and m.env ~= args.env then
        bgrun.raise { module = "rollback", op = "verify " .. path, code = "wrong_env", reason = "WrongEnvironment",
                      message = ("%s is a backup of %s, not %s"):format(path, m.env, args.env) }
      end
      return m
    end)
    -- before anything is scaled down: the database and the maintenance
    -- database (for the swap) answer with our credentials, and the backup
    -- is of this database
    local target = step("check the database", function()
      local db <close> = postgres.connect(env.database or {})
      local id = backup.identity(db)
      local info = {}
      for k, v in pairs(env.database or {}) do info[k] = v end
      info.dbname = maintenance_db
      local admin <close> = postgres.connect(info)
      admin:query("SELECT 1", nil, { readonly = true })
      local problem = backup.identity_mismatch(metadata, id)
      if problem then
        bgrun.raise { module = "rollback", op = "check " .. path, code = "usage", reason = "WrongDatabase",
                      message = ("%s cannot roll back database %s: %s"):format(path, id.database, problem) }
      end
      if type(metadata.database_identity) ~= "table" then
        log.warn("the backup records no database identity (taken by an older bgrun): checked by name only",
                 { backup = path, database = id.database })
      end
      return id
    end)
    local version = metadata.migration_version or 0
    local rolled = { backup = path, database = target.database, schema_version_after = version }
    report { rollback = rolled }
    print(("backup %s: %s, database %s, schema version %s, taken %s"):format(path, metadata.env or "?",
      target.database, migrate.format_version(version), metadata.created_at or "?"))
    local c = release.client(args.env, env)
    release.confirm(c, env, ("Roll %s back to %s (schema version %s); the API is stopped meanwhile")
      :format(args.env, path, migrate.format_version(version)), { expect = "ROLLBACK PRODUCTION" })
    local ns = env.namespace
    local l = lock.take(c, env, "rollback to " .. path, args["break-lock"])

    local replicas = step("scale the API to 0", function()
      local r = {}
      for _, d in ipairs(c:list("deployment", { namespace = ns, labelSelector = "app=" .. env.app }).items or {}) do
        r[d.metadata.name] = d.spec.replicas or 0
      end
      local zeros = {}
      for name in pairs(r) do zeros[name] = 0 end
      on_failure("bring the API back", function()
        release.scale_all(c, ns, r, env.rollout_timeout)
      end, { module = "release", action = "scale", context = env.context, namespace = ns, replicas = r,
             left = zeros, rollout_timeout = env.rollout_timeout })
      for name, n in pairs(r) do
        if n > 0 then c:scale("deployment", name, 0, { namespace = ns }) end
      end
      return r
    end)

    step("terminate connections", function()
      local info = {}
      for k, v in pairs(env.database or {}) do info[k] = v end
      info.dbname = maintenance_db
      local admin <close> = postgres.connect(info)
      local rows = admin:query("SELECT count(pg_terminate_backend(pid)) AS n FROM pg_stat_activity " ..
                               "WHERE datname = $1 AND pid <> pg_backend_pid() " ..
                               -- client sessions only: an autovacuum worker is a superuser
                               -- process a non-superuser may not signal
                               "AND backend_type = 'client backend'", { target.database })
      log.info("connections terminated", { database = target.database, count = rows[1] and rows[1].n or 0 })
    end)

    local swap_h
    local restored = step("restore", function()
      local database = {}
      for k, v in pairs(env.database or {}) do database[k] = v end
      database.dbname = target.database
      local r = restore.restore { path = path, database = database, maintenance_db = maintenance_db,
                                  bucket = stream and env.bucket or nil, stream = stream,
                                  keep_old = false } -- pruned at the end, after the checks
      if r.old_database then
        -- from here on a failure puts the replaced database back
        local d = { module = "restore", action = "swap_back", database = database, maintenance_db = maintenance_db,
                    target = target.database, old = r.old_database, oid = r.oid, old_oid = r.old_oid }
        swap_h = on_failure("put the replaced database " .. r.old_database .. " back", function() restore.swap_back(d) end, d)
      end
      return r
    end)

    if not bgrun.dry_run() then
      step("verify schema_migrations", function()
        local db <close> = postgres.connect(env.database or {})
        local got = db:query("SELECT coalesce(max(version), 0) AS v FROM schema_migrations")[1].v
        if got ~= version then
          bgrun.raise { module = "rollback", op = "verify", code = "version_mismatch", reason = "VersionMismatch",
                        message = ("schema_migrations is at %s, the backup's metadata says %s"):format(got, version) }
        end
      end)
    end

    step("record the migration version", function()
      release.record_version_retrying(c, ns, version)
    end)

    step("bring the API back", function()
      release.scale_all(c, ns, replicas, env.rollout_timeout)
    end)
    -- the restore is verified and the API is back: only now do older kept
    -- databases go (this run's own one too with keep_old=0, so the swap
    -- back is given up first)
    if restored.old_database or bgrun.dry_run() then
      if swap_h and keep_old == 0 then swap_h.cancel() end
      step("drop old kept databases", function()
        local database = {}
        for k, v in pairs(env.database or {}) do database[k] = v end
        database.dbname = target.database
        -- a dry run has not kept the one a real run would: one fewer of the others
        kept.after_restore { database = database, maintenance_db = maintenance_db,
                             keep = bgrun.dry_run() and math.max(keep_old - 1, 0) or keep_old, shown = keep_old }
      end)
    end
    l.release()
    print(("rolled %s back to schema version %s from %s"):format(args.env, migrate.format_version(version), path))
    if restored.old_database then
      print(("the previous database is kept as %s"):format(restored.old_database))
    end
  end,
}
