-- Metric analysis (issue 15) against the sandbox's real Prometheus, which
-- scrapes the demo app's pods every second: Argo's semantics on constant
-- PromQL, the pods' own request metrics by colour, bearer and basic auth,
-- and whole deploys — a clean version passes, one failing 20 % of its
-- requests is rolled back, a Prometheus that is down is inconclusive and
-- fails unless the environment says inconclusive = "pass", a bad analysis
-- config is refused with exit 2 before anything changes.
local json = require("json")
local k8s = require("k8s")
local log = require("log")
local metrics = require("metrics")
local proc = require("proc")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_metrics_spec"
local STATE = ROOT .. "/tests/.state/metrics"
local JOURNALS = STATE .. "/journal"
local PB = STATE .. "/playbooks"
local PROM = os.getenv("PROMETHEUS_URL")
local PROM_AUTH = os.getenv("PROMETHEUS_AUTH_URL")
local TOKEN = os.getenv("PROMETHEUS_TOKEN")
local PASSWORD = os.getenv("PROMETHEUS_PASSWORD")
local SANDBOX = ROOT .. "/tests/sandbox/sandbox"

local c = k8s.client { namespace = NS }

local sh, write, read = H.sh, H.write, H.read

local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local function bgrun_run(args, extra_env) return R.run(args, { env = extra_env }) end

local behaviours = H.behaviours
local S = H.release_state(c, APP)
local live_colour, dep, lock_holder, other = S.live_colour, S.dep, S.lock_holder, H.other

local function prometheus(action)
  local r = proc.run({ SANDBOX, "prometheus-" .. action, os.getenv("SANDBOX_DIR") }, { timeout = 120 })
  assert(r.code == 0, r.stderr)
end

-- A request load through the Service (one request every 50 ms) until
-- stop() (after_each stops it too); bounded at 240 s, and ends when the
-- spec's state folder goes.
local stop_load = function() end
local function load()
  local svc = c:get("service", APP)
  local url = ("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, svc.spec.ports[1].port)
  local stop = STATE .. "/load.stop"
  os.remove(stop)
  local r = sh([[(timeout 240 sh -c 'while [ ! -e "$STOP" ] && [ -d "$DIR" ]; do curl -s -o /dev/null -m 2 "$URL"; sleep 0.05; done' \
    >/dev/null 2>&1 &) ]], { STOP = stop, DIR = STATE, URL = url, PATH = os.getenv("PATH") })
  assert(r.code == 0, r.stderr)
  stop_load = function() write(stop, "") end
  return stop_load
end

-- The error-rate and p99-latency queries a team would write, over the
-- colour's API requests (probes and scrapes left out); a 5 s rate window
-- for the sandbox's 1 s scrapes.
local API = 'namespace="{namespace}",version="{colour}",app_version="{tag}",path!~"/health|/ready|/metrics"'
local ERROR_RATE = ('(sum(rate(http_requests_total{%s,code=~"5.."}[5s])) or vector(0))'
  .. ' / sum(rate(http_requests_total{%s}[5s]))'):format(API, API)
local P99_MS = ('histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{%s}[5s]))) * 1000')
  :format(API)

local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s" && cp playbooks/deploy.lua playbooks/deploy-with-migration.lua "%s/"')
    :format(PB, PB, PB)).code == 0)
  write(STATE .. "/token", TOKEN .. "\n")
  -- bearer_token_file: a credential file by design, which the secrets sweep skips
  dofile(ROOT .. "/tests/sweep/sweep.lua").register_store(STATE .. "/token")
  write(PB .. "/environments.lua", ([=[
local function env(metrics)
  return { context = %q, namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
           bucket = "physioflow-backups-local", migrations = "examples/physioflow/migrations",
           backups = %q, rollout_timeout = 120,
           -- the health and log checks stay on; the metrics decide here
           monitor = { window = 16, interval = 2, metrics = metrics } }
end
local function analysis(extra, prometheus)
  local a = {
    prometheus = prometheus or { url = %q },
    queries = {
      -- Prometheus finds new pods up to ~5 s after they start (its discovery
      -- throttles updates, as with kubernetes_sd), and a rate needs two
      -- scrapes of requests: no data before that
      { name = "error-rate", query = %q, condition = "value < 0.01", initial_delay = 8, inconclusive_limit = 1 },
      { name = "p99-latency-ms", query = %q, condition = "value <= 250", initial_delay = 8, inconclusive_limit = 1 },
    },
  }
  for k, v in pairs(extra or {}) do a[k] = v end
  return a
end
return {
  analysis = env(analysis()),
  lenient = env(analysis { inconclusive = "pass" }),
  bearer = env(analysis(nil, { url = %q, bearer_token_file = %q })),
  basic = env(analysis(nil, { url = %q, basic_auth = { username = "bgrun", password = os.getenv("PROMETHEUS_PASSWORD") } })),
  badcond = env { prometheus = { url = %q }, queries = { { name = "error-rate", query = "vector(0)", condition = "value <<< 0.01" } } },
  noquery = env { prometheus = { url = %q }, queries = { { name = "error-rate", condition = "value < 0.01" } } },
}
]=]):format(c:info().context, STATE .. "/backups", PROM, ERROR_RATE, P99_MS, PROM_AUTH, STATE .. "/token",
            PROM_AUTH, PROM, PROM))
end

-- An analysis run on its own, the way the monitor drives it.
local function analyse(cfg, seconds, vars)
  local t0 = bgrun.now()
  local o = { interval = 0.2, start = t0, deadline = t0 + seconds, colour = "blue", tag = "v1", namespace = NS, app = APP }
  for k, v in pairs(vars or {}) do o[k] = v end
  local a = metrics.analysis(cfg, o)
  while true do
    local at = a:next_at()
    if not at then break end
    local wait = at - bgrun.now()
    if wait > 0 then bgrun.sleep(wait) end
    local f = a:measure()
    if f then return f, a.result end
  end
  return a:finish(), a.result
end

local function q(query, rule, extra)
  local t = { name = "m", query = query }
  if type(rule) == "table" then
    for k, v in pairs(rule) do t[k] = v end
  else
    t.condition = rule
  end
  for k, v in pairs(extra or {}) do t[k] = v end
  return { prometheus = { url = PROM }, queries = { t } }
end

describe("metric analysis against Prometheus", function()
  setup(function()
    behaviours({})
    H.fresh_release(c, DB, APP)
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. STATE .. '"')
    write_playbooks()
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    behaviours({})
    prometheus("start")
  end)

  after_each(function() stop_load() end)

  it("judges each measurement as Argo does: success, failure and both conditions", function()
    local f, r = analyse(q("vector(0.005)", "value < 0.01", { count = 3 }), 5)
    assert.is_nil(f)
    assert.same({ "Successful", 3, 0.005 }, { r.metrics[1].phase, #r.metrics[1].measurements, r.metrics[1].value })
    assert.same({ phase = "Successful", passed = true }, { phase = r.phase, passed = r.passed })
    -- a scalar answers too
    f = analyse(q("scalar(vector(250))", "value <= 250", { count = 1 }), 2)
    assert.is_nil(f)
    -- a success condition alone fails what it does not accept: at once with failure_limit 0
    f, r = analyse(q("vector(0.2)", "value < 0.01"), 5)
    assert.same({ metric = "m", phase = "Failed", query = "vector(0.2)",
                  message = 'metric m failed: 1 of 1 measurements failed (failure_limit 0); last: value 0.2 does not meet "value < 0.01"' }, f)
    assert.equal("Failed", r.phase)
    assert.same({ 1, 1 }, { #r.metrics[1].measurements, r.metrics[1].failed })
    -- failure_limit 2: the third failure fails it; count 2 ends it Successful first (as Argo)
    f, r = analyse(q("vector(0.2)", "value < 0.01", { failure_limit = 2 }), 5)
    assert.matches("^metric m failed: 3 of 3 measurements failed %(failure_limit 2%)", f.message)
    f, r = analyse(q("vector(0.2)", "value < 0.01", { failure_limit = 2, count = 2 }), 5)
    assert.is_nil(f)
    assert.same({ "Successful", 2 }, { r.metrics[1].phase, r.metrics[1].failed })
    -- a failure condition alone passes what it does not reject
    f = analyse(q("vector(0.2)", { failure_condition = "value > 0.5" }, { count = 2 }), 5)
    assert.is_nil(f)
    f = analyse(q("vector(0.7)", { failure_condition = "value > 0.5" }), 5)
    assert.equal('metric m failed: 1 of 1 measurements failed (failure_limit 0); last: value 0.7 meets the failure condition "value > 0.5"', f.message)
    -- with both, a value meeting neither is inconclusive
    f, r = analyse(q("vector(0.5)", { condition = "value < 0.1", failure_condition = "value > 0.9" }), 5)
    assert.equal("Inconclusive", f.phase)
    assert.equal("metric m is inconclusive: 1 of 1 measurements inconclusive (inconclusive_limit 0); last: value 0.5 meets neither condition", f.message)
    assert.equal("Inconclusive", r.phase)
    -- a Lua function is a condition too
    f = analyse(q("vector(3)", function(v) return v % 2 == 1 end, { count = 1 }), 2)
    assert.is_nil(f)
  end)

  it("calls no data inconclusive, tolerates inconclusive_limit, and passes with inconclusive = \"pass\"", function()
    local f, r = analyse(q("bgrun_no_such_metric", "value < 1"), 5)
    assert.equal("metric m is inconclusive: 1 of 1 measurements inconclusive (inconclusive_limit 0); last: no data: the query returned no series", f.message)
    f = analyse(q("vector(0/0)", "value < 1"), 5)
    assert.matches("last: no data: the query returned NaN$", f.message)
    f, r = analyse(q("bgrun_no_such_metric", "value < 1", { inconclusive_limit = 1 }), 5)
    assert.matches("^metric m is inconclusive: 2 of 2 measurements inconclusive %(inconclusive_limit 1%)", f.message)
    -- "pass": the analysis passes, still called Inconclusive, and keeps measuring
    local cfg = q("bgrun_no_such_metric", "value < 1")
    cfg.inconclusive = "pass"
    f, r = analyse(cfg, 1)
    assert.is_nil(f)
    assert.same({ "Inconclusive", true }, { r.phase, r.passed })
    assert.is_true(#r.metrics[1].measurements >= 3)
    -- a window with no measurement in it proves nothing
    f = analyse(q("vector(0)", "value < 1", { initial_delay = 5 }), 1)
    assert.equal("metric m is inconclusive: no measurement was taken in the window (initial_delay too long?)", f.message)
  end)

  it("holds every series to the condition, and reports what Prometheus refused", function()
    local two = 'label_replace(vector(0.005), "s", "a", "", "") or label_replace(vector(0.2), "s", "b", "", "")'
    local f, r = analyse(q(two, "value < 0.01"), 5)
    assert.equal('metric m failed: 1 of 1 measurements failed (failure_limit 0); last: {s="b"} value 0.2 does not meet "value < 0.01"', f.message)
    assert.same({ ['{s="a"}'] = "0.005", ['{s="b"}'] = "0.2" }, r.metrics[1].measurements[1].values)
    -- measurements that cannot be taken count as inconclusive
    f = analyse(q("sum(", "value < 1"), 5)
    assert.matches("^metric m is inconclusive: 1 of 1 measurements inconclusive %(inconclusive_limit 0%); "
      .. "last: Prometheus answered 400: .*parse error", f.message)
    assert.equal("Error", select(2, analyse(q("sum(", "value < 1"), 5)).metrics[1].measurements[1].phase)
    f = analyse(q("vector(1)[1m:1s]", "value < 1"), 5)
    assert.matches("the query returns a matrix; it must return an instant vector or a scalar$", f.message)
  end)

  it("reads the demo app's request metrics by colour: counts and latency histograms by status code", function()
    local live = live_colour()
    local cfg = { prometheus = { url = PROM }, queries = {
      { name = "requests", query = 'sum(increase(http_requests_total{namespace="{namespace}",version="{colour}",app_version="{tag}",path="/api/v1/info",code="200"}[10s]))',
        condition = "value > 10", count = 1 },
      { name = "other colour", query = 'sum(increase(http_requests_total{namespace="{namespace}",version="{colour}",path="/api/v1/info"}[10s])) or vector(0)',
        condition = "value == 0", count = 1 },
      { name = "latency", query = P99_MS, condition = "value <= 250", count = 1 },
    } }
    local tag = dep(live).image:match(":([^:]+)$")
    -- traffic for a few seconds, then the analysis; a pod Prometheus has
    -- not scraped twice yet gives no series (inconclusive): more traffic,
    -- and ask again, for up to five rounds on a loaded machine
    local f, r
    for _ = 1, 5 do
      local stop = load()
      bgrun.sleep(4)
      stop()
      f, r = analyse({ prometheus = cfg.prometheus, queries = { cfg.queries[1], cfg.queries[3] } }, 2,
                     { colour = live, tag = tag })
      if not (f and f.phase == "Inconclusive") then break end
    end
    assert.is_nil(f, f and f.message)
    assert.is_true(r.metrics[2].value > 0 and r.metrics[2].value < 250, tostring(r.metrics[2].value))
    f = analyse({ prometheus = cfg.prometheus, queries = { cfg.queries[2] } }, 2, { colour = other(live) })
    assert.is_nil(f, f and f.message)
  end)

  it("authenticates with a bearer token or basic auth, and never shows the secret", function()
    local good = q("vector(0)", "value < 1", { count = 1 })
    good.prometheus = { url = PROM_AUTH, bearer_token = TOKEN }
    assert.is_nil((analyse(good, 2)))
    good.prometheus = { url = PROM_AUTH, basic_auth = { username = "bgrun", password = PASSWORD } }
    assert.is_nil((analyse(good, 2)))
    -- credentials in the URL are basic auth too
    good.prometheus = { url = PROM_AUTH:gsub("^http://", "http://bgrun:" .. PASSWORD .. "@") }
    assert.is_nil((analyse(good, 2)))
    local bad = q("vector(0)", "value < 1")
    bad.prometheus = { url = PROM_AUTH }
    local f = analyse(bad, 2)
    assert.matches("last: Prometheus refused the credentials %(401%): Unauthorized$", f.message)
    bad.prometheus = { url = PROM_AUTH, bearer_token = "not-the-token" }
    f = analyse(bad, 2)
    assert.matches("refused the credentials %(401%)", f.message)
    assert.is_nil(f.message:find(TOKEN, 1, true))
    assert.equal("[REDACTED]", log.redact(TOKEN))
    assert.equal("[REDACTED]", log.redact(PASSWORD))
  end)

  it("passes a clean version: the deploy succeeds and the report carries the measurements", function()
    local live = live_colour()
    local idle = other(live)
    local stop = load()
    local r = bgrun_run({ "--report", STATE .. "/clean.json", PB .. "/deploy.lua", "env=analysis", "tag=v4.0.0" })
    stop()
    assert.equal(0, r.code, r.stderr)
    assert.matches("metric error%-rate +Successful +%d measurement%(s%), last 0 %(value < 0%.01%)", r.stdout)
    assert.matches("metric p99%-latency%-ms +Successful +%d measurement%(s%), last [%d.]+ %(value <= 250%)", r.stdout)
    assert.equal(idle, live_colour())
    assert.equal(0, dep(live).replicas)
    local report = json.decode(read(STATE .. "/clean.json"))
    local a = report.deploy.monitor.analysis
    assert.same({ "Successful", true, "fail" }, { a.phase, a.passed, a.inconclusive })
    assert.equal("error-rate", a.metrics[1].name)
    assert.matches('version="' .. idle .. '"', a.metrics[1].query)
    assert.is_true(#a.metrics[1].measurements >= 3, json.encode(a.metrics[1]))
    local m = a.metrics[1].measurements[#a.metrics[1].measurements]
    assert.same({ "Successful", 0 }, { m.phase, m.value })
    assert.matches("^%d%d%d%d%-%d%d%-%d%dT", m.at)
    assert.equal("", lock_holder())
  end)

  it("fails a version with 20 % errors and rolls it back: exit 1, the Service on the old colour", function()
    local live = live_colour()
    local idle = other(live)
    -- the smoke tests would catch 20 % errors before the switch: skipped, so the analysis must
    behaviours({ ["v4.1.0"] = { error_rate = 0.2 } })
    local stop = load()
    local r = bgrun_run({ "--report", STATE .. "/errors.json", PB .. "/deploy.lua", "env=analysis", "tag=v4.1.0",
                          "skip-tests=true" })
    stop()
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[monitor physioflow%-api%-" .. idle .. "%] playbook failed", r.stderr)
    assert.matches("AnalysisFailed: metric error%-rate failed: 1 of [12] measurements failed %(failure_limit 0%); "
      .. 'last: value 0%.%d+ does not meet "value < 0%.01"', r.stderr)
    assert.matches("%[switch traffic back to " .. live .. "%] traffic switched back", r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal(2, dep(live).replicas)
    assert.matches(":v4%.0%.0$", dep(live).image)
    assert.equal("", lock_holder())
    local report = json.decode(read(STATE .. "/errors.json"))
    assert.equal(1, report.exit)
    local a = report.deploy.monitor.analysis
    assert.same({ "Failed", false }, { a.phase, a.passed })
    assert.equal("Failed", a.metrics[1].phase)
    local m = a.metrics[1].measurements[#a.metrics[1].measurements]
    assert.equal("Failed", m.phase)
    local v = m.value
    assert.is_true(v > 0.05 and v < 0.35, tostring(v))
  end)

  it("fails a version whose p99 latency is over 250 ms (latency_ms = 400)", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v4.1.1"] = { latency_ms = 400 } })
    local stop = load()
    local r = bgrun_run({ PB .. "/deploy.lua", "env=analysis", "tag=v4.1.1", "skip-tests=true" })
    stop()
    assert.equal(1, r.code, r.stderr)
    assert.matches("AnalysisFailed: metric p99%-latency%-ms failed: 1 of [12] measurements failed %(failure_limit 0%); "
      .. 'last: value %d+%.?%d* does not meet "value <= 250"', r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal("", lock_holder())
  end)

  it("the shipped local environment analyses too: a 20 % error version deployed to env=local is rolled back", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v4.1.2"] = { error_rate = 0.2 } })
    local stop = load()
    local r = bgrun_run({ "playbooks/deploy.lua", "env=local", "tag=v4.1.2", "skip-tests=true" })
    stop()
    assert.equal(1, r.code, r.stderr)
    assert.matches("AnalysisFailed: metric error%-rate failed: 1 of %d measurements failed", r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal("", lock_holder())
  end)

  it("calls a Prometheus that is down inconclusive: fails by default, passes with inconclusive = \"pass\"", function()
    local live = live_colour()
    local idle = other(live)
    prometheus("stop")
    local ok, err = pcall(function()
      local r = bgrun_run({ "--report", STATE .. "/down.json", PB .. "/deploy.lua", "env=analysis", "tag=v4.2.0" })
      assert.equal(1, r.code, r.stderr)
      assert.matches("AnalysisInconclusive: metric error%-rate is inconclusive: 2 of 2 measurements inconclusive "
        .. "%(inconclusive_limit 1%); last: Prometheus unreachable %(ConnectionRefused%)", r.stderr)
      assert.matches("traffic switched back", r.stderr)
      assert.equal(live, live_colour())
      assert.equal(0, dep(idle).replicas)
      assert.equal("", lock_holder())
      local a = json.decode(read(STATE .. "/down.json")).deploy.monitor.analysis
      assert.same({ "Inconclusive", "Error" }, { a.phase, a.metrics[1].measurements[1].phase })

      r = bgrun_run({ PB .. "/deploy.lua", "env=lenient", "tag=v4.2.0" })
      assert.equal(0, r.code, r.stderr)
      assert.matches('metric inconclusive: passing, as the environment says %(inconclusive = "pass"%)', r.stderr)
      assert.matches("metric error%-rate +Inconclusive", r.stdout)
      assert.equal(idle, live_colour())
      assert.matches(":v4%.2%.0$", dep(idle).image)
    end)
    prometheus("start")
    assert(ok, err)
  end)

  it("authenticates the deploy's queries with a token file or basic auth; the secrets stay out of the output", function()
    local stop = load()
    for _, env in ipairs({ "bearer", "basic" }) do
      local before = live_colour()
      local r = bgrun_run({ "--report", STATE .. "/auth.json", PB .. "/deploy.lua", "env=" .. env, "tag=v4.3." .. env,
                            "-v" }, { PROMETHEUS_PASSWORD = PASSWORD })
      assert.equal(0, r.code, r.stderr)
      assert.equal(other(before), live_colour())
      for _, text in ipairs({ r.stdout, r.stderr, read(STATE .. "/auth.json") }) do
        assert.is_nil(text:find(TOKEN, 1, true))
        assert.is_nil(text:find(PASSWORD, 1, true))
      end
    end
    stop()
  end)

  it("--dry-run shows each query filled in for the new colour and tag, and changes nothing", function()
    local live = live_colour()
    local idle = other(live)
    local before = dep(idle)
    local r = bgrun_run({ "--dry-run", PB .. "/deploy.lua", "env=analysis", "tag=v4.5.0" })
    assert.equal(0, r.code, r.stderr)
    assert.matches(('dry-run: would measure error-rate every 2.0s from 8.0s for 16.0s: (sum(rate(http_requests_total{'
      .. 'namespace="physioflow",version="%s",app_version="v4.5.0",path!~"/health|/ready|/metrics",code=~"5.."}[5s]))'
      .. ' or vector(0))'):format(idle), r.stderr, 1, true)
    assert.matches(' (value < 0.01, failure_limit 0, inconclusive_limit 1) at ' .. PROM, r.stderr, 1, true)
    assert.matches("dry-run: would measure p99-latency-ms every 2.0s from 8.0s for 16.0s: histogram_quantile(0.99",
      r.stderr, 1, true)
    assert.equal(live, live_colour())
    assert.same(before, dep(idle))
  end)

  it("refuses a bad analysis config with exit 2, naming it, before anything changes", function()
    local live = live_colour()
    local idle = other(live)
    local before = dep(idle)
    local r = bgrun_run({ PB .. "/deploy.lua", "env=badcond", "tag=v4.4.0" })
    assert.equal(2, r.code, r.stderr)
    assert.matches('monitor%.metrics query 1 %(error%-rate%): condition "value <<< 0%.01": expected value, a number '
      .. "or '%(' at column 8", r.stderr)
    r = bgrun_run({ PB .. "/deploy.lua", "env=noquery", "tag=v4.4.0" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("monitor%.metrics query 1 %(error%-rate%): query is missing %(a PromQL expression%)", r.stderr)
    -- deploy-with-migration refuses before its backup and migration
    r = bgrun_run({ PB .. "/deploy-with-migration.lua", "env=noquery", "tag=v4.4.0" })
    assert.equal(2, r.code, r.stderr)
    assert.matches("query is missing", r.stderr)
    assert.is_nil(r.stderr:find("back up", 1, true))
    assert.equal(live, live_colour())
    assert.same(before, dep(idle))
    assert.equal("", lock_holder())
  end)
end)
