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
--
-- Keeping things: `keep_old` (default 2) is how many databases a restore
-- replaced (`<db>_old_<time>_<pid>`) are kept, newest first; `bucket_keep`
-- (default 10) how many unpinned backups the bucket keeps (pinned ones are
-- never deleted); `replica` a second bucket — its own endpoint, region and
-- credentials (the *names* of the variables holding them) — that
-- `replicate = true` (or backup.lua replicate=true) copies every backup to.

-- Metric analysis after the switch (stdlib/metrics.lua, README "Metric
-- analysis"): the new release's ratio of 5xx answers and its p99 latency,
-- from the app's request metrics as Prometheus scrapes them: the pod
-- labels `namespace` and `version` (the colour), the app's own
-- `app_version` (the image tag: not the release that had the colour
-- before); probes and scrapes left out. {colour}, {tag}, {namespace} and
-- {app} are filled in per deploy.
local API = 'namespace="{namespace}",version="{colour}",app_version="{tag}",path!~"/health|/ready|/metrics"'
local function analysis(prometheus, rate_window, options)
  local a = {
    prometheus = prometheus,
    queries = {
      { name = "error-rate", condition = "value < 0.01",
        query = ('(sum(rate(http_requests_total{%s,code=~"5.."}[%s])) or vector(0))'
          .. ' / sum(rate(http_requests_total{%s}[%s]))'):format(API, rate_window, API, rate_window) },
      { name = "p99-latency-ms", condition = "value <= 250",
        query = ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{%s}[%s]))) * 1000')
          :format(API, rate_window) },
    },
  }
  for k, v in pairs(options or {}) do a[k] = v end
  return a
end

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
    monitor = { window = 20, interval = 5,   -- short, for the sandbox demo
      -- the sandbox's Prometheus, when it runs (it exports PROMETHEUS_URL). No
      -- traffic means no data: inconclusive, which passes here, not in prod
      metrics = os.getenv("PROMETHEUS_URL") and analysis({ url = os.getenv("PROMETHEUS_URL") }, "10s",
        { initial_delay = 5, inconclusive = "pass" }) or nil },
    -- keep_old = 2,      -- databases a restore replaced, kept newest first
    -- bucket_keep = 10,  -- unpinned backups kept in the bucket
    -- the sandbox's second bucket, behind its second endpoint (127.0.0.2)
    -- and signed for another region; the same store when that is unset
    replica = { bucket = "physioflow-backups-local-replica", region = "eu-west-1",
                endpoint = os.getenv("SANDBOX_S3_REPLICA_ENDPOINT") },
    -- replicate = true,  -- copy every backup to the replica
    -- auto_promote = 60,  -- a preview=true deploy promotes itself after 60 s of healthy preview
    -- hooks = { before_switch = function(s) ... end },  -- before_switch, after_switch, on_abort, on_success
    -- notify = { { type = "slack", url_env = "PHYSIOFLOW_SLACK_WEBHOOK" } },  -- see staging and prod
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
    monitor = { window = 300, interval = 10,
      metrics = analysis({ url = "http://prometheus.physioflow-staging.internal:9090",
                           bearer_token = os.getenv("PROMETHEUS_TOKEN") },   -- nil: no Authorization
        "1m", { initial_delay = 60, failure_limit = 1, inconclusive_limit = 2 }) },
    -- release notifications (stdlib/notify.lua): started, succeeded, failed,
    -- rolled back, needs a human. Webhook URLs are secrets: they come from
    -- the variables named here (a CI secret), never from this file.
    notify = {
      { type = "slack", url_env = "PHYSIOFLOW_SLACK_WEBHOOK", events = { "failed", "rolled_back", "needs_human" } },
    },
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
    monitor = { window = 300, interval = 10,
      metrics = analysis({ url = "http://prometheus.physioflow-prod.internal:9090",
                           bearer_token = os.getenv("PROMETHEUS_TOKEN") },
        "1m", { initial_delay = 60, failure_limit = 1, inconclusive_limit = 2 }) },
    retire_delay = 60,
    confirm = true,
    keep_old = 2,
    bucket_keep = 30,
    replica = { bucket = "physioflow-backups-prod-replica", region = "eu-central-1",
                endpoint = "https://s3.eu-central-1.backup-site.example.invalid",
                access_key_env = "REPLICA_AWS_ACCESS_KEY_ID", secret_key_env = "REPLICA_AWS_SECRET_ACCESS_KEY" },
    -- replicate = true,  -- every backup.lua run copies to the replica (needs the two variables above)
    notify = {
      timeout = 15,  -- seconds per event, all targets and retries together
      { type = "slack", url_env = "PHYSIOFLOW_SLACK_WEBHOOK" },
      { type = "teams", url_env = "PHYSIOFLOW_TEAMS_WEBHOOK" },
      -- a generic JSON webhook: headers ({ env = "VAR" } reads a secret) and a body template
      { type = "webhook", name = "incidents", url_env = "PHYSIOFLOW_INCIDENT_WEBHOOK",
        events = { "rolled_back", "needs_human" },
        headers = { Authorization = { env = "PHYSIOFLOW_INCIDENT_TOKEN" } },
        body = { title = "{title}", severity = "{event}", service = "physioflow-api", env = "{env}",
                 details = "{summary}" } },
    },
  },
}
