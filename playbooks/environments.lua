-- Where each environment lives. Data only: playbooks read it through
-- require("environments"); teams edit it. Secrets never go here: the
-- database password comes from PGPASSWORD or ~/.pgpass, and anything left
-- out of `database` falls back to libpq's PG* variables and service files.
-- Every environment but `local` names its kubeconfig `context` (a context
-- in $KUBECONFIG or ~/.kube/config; or `kubeconfig = "path"` to read another
-- file, or `in_cluster = true` inside the cluster; a Job or CronJob sets
-- BGRUN_IN_CLUSTER=<env> instead, see examples/physioflow/deploy/): a playbook refuses a
-- non-local environment without one, or whose context is not in the
-- kubeconfig, and never falls back to the current context. `local` (the
-- sandbox) uses the current context.
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
  dev = {
    context = "physioflow-dev",   -- the kubeconfig context bgrun acts through (required but for local)
    namespace = "physioflow-dev",
    app = "physioflow-api",
    replicas = 2,
    database = { host = "db.physioflow-dev.internal", port = 5432, dbname = "physioflow",
                 user = "physioflow_migrator", sslmode = "require" },
    bucket = "physioflow-backups-dev",
    migrations = "examples/physioflow/migrations",
    backups = "backups/dev",
    rollout_timeout = 600,
    monitor = { window = 120, interval = 10 },
  },
  staging = {
    context = "physioflow-staging",
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
  prod = {
    context = "physioflow-prod",
    namespace = "physioflow-prod",
    app = "physioflow-api",
    replicas = 4,
    database = { host = "db.physioflow-prod.internal", port = 5432, dbname = "physioflow",
                 user = "physioflow_migrator", sslmode = "verify-full" },
    bucket = "physioflow-backups-prod",
    migrations = "examples/physioflow/migrations",
    backups = "backups/prod",
    rollout_timeout = 600,
    monitor = { window = 300, interval = 10 },
    retire_delay = 60,
    confirm = true,
  },
}
