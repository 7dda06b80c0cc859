-- Where each environment lives. Data only: playbooks read it through
-- require("environments"); teams edit it. Secrets never go here: the
-- database password comes from PGPASSWORD or ~/.pgpass, and anything left
-- out of `database` falls back to libpq's PG* variables and service files.
return {
  ["local"] = {
    namespace = "physioflow",
    app = "physioflow-api",
    replicas = 2,
    database = {},  -- all from PGHOST, PGPORT, PGUSER, PGDATABASE (the sandbox exports them)
    bucket = "physioflow-backups-local",
    migrations = "examples/physioflow/migrations",
    backups = "backups/local",
    rollout_timeout = 120,
    monitor = { window = 20, interval = 5 },   -- short, for the sandbox demo
    -- auto_promote = 60,  -- a preview=true deploy promotes itself after 60 s of healthy preview
    -- hooks = { before_switch = function(s) ... end },  -- before_switch, after_switch, on_abort, on_success
  },
  staging = {
    namespace = "physioflow-staging",
    app = "physioflow-api",
    replicas = 2,
    database = { host = "db.physioflow-staging.internal", port = 5432, dbname = "physioflow",
                 user = "physioflow_migrator", sslmode = "require" },
    bucket = "physioflow-backups-staging",
    migrations = "examples/physioflow/migrations",
    backups = "backups/staging",
    rollout_timeout = 600,
    monitor = { window = 300, interval = 10 },
  },
  production = {
    namespace = "physioflow",
    app = "physioflow-api",
    replicas = 4,
    database = { host = "db.physioflow.internal", port = 5432, dbname = "physioflow",
                 user = "physioflow_migrator", sslmode = "verify-full" },
    bucket = "physioflow-backups-production",
    migrations = "examples/physioflow/migrations",
    backups = "backups/production",
    rollout_timeout = 600,
    monitor = { window = 300, interval = 10 },
    retire_delay = 60,
    confirm = true,
  },
}
