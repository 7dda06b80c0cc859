-- The metric analysis' configuration (stdlib/metrics.lua): the condition
-- language, parsed without Lua's load, and the checks that turn a bad
-- config into exit 2 naming the input. No network here: measuring against
-- the sandbox's real Prometheus is in tests/integration/metrics_spec.lua.
local metrics = require("metrics")

local PROM = { url = "http://prometheus.example.invalid:9090" }

local function usage_error(cfg)
  local ok, err = pcall(metrics.validate, cfg, "monitor.metrics")
  assert.is_false(ok, "config was accepted")
  assert.equal("usage", err.code)
  assert.equal("metrics", err.module)
  return err.message
end

local function one(q, extra)
  local cfg = { prometheus = PROM, queries = { q } }
  for k, v in pairs(extra or {}) do cfg[k] = v end
  return cfg
end

describe("metric conditions", function()
  it("compare value with numbers, combine with and/or/not, and compute", function()
    local cases = {
      { "value < 0.01", 0.005, true }, { "value < 0.01", 0.01, false }, { "value <= 250", 250, true },
      { "value <= 250", 250.5, false }, { "value > 1e-3", 0.002, true }, { "value >= .5", 0.5, true },
      { "value == 0", 0, true }, { "value ~= 0", 0, false }, { "value != 0", 1, true },
      { "value >= 0.95 and value < 2", 1, true }, { "value >= 0.95 and value < 2", 3, false },
      { "value < 0 or value > 10", 11, true }, { "value < 0 || value > 10", 5, false },
      { "not (value > 1)", 0.5, true }, { "!(value > 1) && value > 0", 0.5, true },
      { "value * 1000 <= 250", 0.2, true }, { "value * 1000 <= 250", 0.3, false },
      { "(value + 1) / 2 > -1", 0, true }, { "result[0]", nil, nil }, -- Argo's form is refused below
      { "-value < 0", 3, true }, { "value < 1 and true", 0, true },
    }
    for _, case in ipairs(cases) do
      if case[2] ~= nil then
        assert.equal(case[3], metrics.condition(case[1])(case[2]), case[1] .. " with " .. case[2])
      end
    end
    -- comparisons with NaN are false, as in Lua
    assert.is_false(metrics.condition("value < 1")(0 / 0))
  end)

  it("refuses what is not a comparison, naming the column", function()
    local bad = {
      { "value <<< 0.01", 'expected value, a number or \'%(\' at column 8 %(found "<"%)' },
      { "value < ", "at column 9 %(found the end%)" },
      { "value = 1", 'unexpected "=" at column 7' },
      { "0.01", "the condition must compare value" },
      { "value + 1", "the condition must compare value" },
      { "os.exit(1)", 'unexpected "%." at column 3' },
      { "os < 1", 'unknown name "os" %(use value%) at column 1' },
      { "value < 1 < 2", "comparisons do not chain" },
      { "(value < 1", "expected '%)'" },
      { "value < 1 value", "unexpected text at column 11" },
      { "not value", "expected a comparison after 'not'" },
      { "result[0] >= 0.95", 'unexpected "%[" at column 7' },
      { "value < 'x'", "unexpected \"'\" at column 9" },
      { "(value < 1) + 2 > 1", "'%+' needs a number on its left" },
      { "   ", "the condition is empty" },
    }
    for _, case in ipairs(bad) do
      local ok, err = pcall(metrics.condition, case[1])
      assert.is_false(ok, case[1])
      assert.matches(case[2], err, 1, false)
    end
  end)
end)

describe("metric analysis configuration", function()
  it("accepts queries = {...} or the list itself, with Argo's options", function()
    metrics.validate(one({ name = "error-rate", query = "vector(0)", condition = "value < 0.01", failure_limit = 1,
                           inconclusive_limit = 2, interval = 5, count = 3, initial_delay = 10 },
                         { inconclusive = "pass" }))
    metrics.validate({ prometheus = PROM, { query = 'up{namespace="{namespace}",version="{colour}"}',
                                            failure_condition = "value > 0.5" } })
    metrics.validate(one({ query = "vector(1)", condition = function(v) return v > 0 end }))
    metrics.validate(one({ query = "vector(1)", success_condition = "value > 0", failure_condition = "value < -1" }))
    -- PromQL's own braces are not template variables
    metrics.validate(one({ query = 'sum(rate(http_requests_total{code=~"5.{2}"}[1m]))', condition = "value < 1" }))
  end)

  it("names the input of each mistake", function()
    assert.equal("monitor.metrics query 1 (error-rate): query is missing (a PromQL expression)",
      usage_error(one({ name = "error-rate", condition = "value < 0.01" })))
    assert.equal("monitor.metrics query 1 (error-rate): condition \"value <<< 0.01\": expected value, a number "
      .. "or '(' at column 8 (found \"<\")",
      usage_error(one({ name = "error-rate", query = "vector(0)", condition = "value <<< 0.01" })))
    assert.equal("monitor.metrics query 1 (latency): condition is missing (e.g. condition = \"value < 0.01\")",
      usage_error(one({ name = "latency", query = "vector(0)" })))
    assert.equal("monitor.metrics query 2: query must be a PromQL string",
      usage_error({ prometheus = PROM, queries = { { query = "vector(0)", condition = "value < 1" },
                                                   { query = 42, condition = "value < 1" } } }))
    assert.equal("monitor.metrics: no queries: give queries = { { name =, query =, condition = }, ... }",
      usage_error({ prometheus = PROM }))
    assert.equal("monitor.metrics query 1: no prometheus = { url = ... } for it (nor for the analysis)",
      usage_error({ queries = { { query = "vector(0)", condition = "value < 1" } } }))
    assert.equal("monitor.metrics: prometheus.url must be an http:// or https:// URL (got \"prometheus:9090\")",
      usage_error({ prometheus = { url = "prometheus:9090" }, queries = { { query = "x", condition = "value < 1" } } }))
    assert.equal("monitor.metrics: inconclusive must be \"fail\" or \"pass\" (got \"ignore\")",
      usage_error(one({ query = "x", condition = "value < 1" }, { inconclusive = "ignore" })))
    assert.equal("monitor.metrics query 1 (e): failure_limit must be an integer >= 0 (got -1)",
      usage_error(one({ name = "e", query = "x", condition = "value < 1", failure_limit = -1 })))
    assert.equal("monitor.metrics query 1 (e): count must be an integer >= 1 (got 0)",
      usage_error(one({ name = "e", query = "x", condition = "value < 1", count = 0 })))
    assert.equal("monitor.metrics query 1 (e): unknown option \"failureLimit\"",
      usage_error(one({ name = "e", query = "x", condition = "value < 1", failureLimit = 1 })))
    assert.equal("monitor.metrics query 1 (e): query: unknown variable {pod} (known: {colour}, {tag}, {namespace}, {app})",
      usage_error(one({ name = "e", query = 'up{pod="{pod}"}', condition = "value < 1" })))
    assert.equal("monitor.metrics query 2 (e): the name \"e\" is used twice",
      usage_error({ prometheus = PROM, queries = { { name = "e", query = "x", condition = "value < 1" },
                                                   { name = "e", query = "y", condition = "value < 1" } } }))
    assert.equal("monitor.metrics: prometheus: give bearer_token or basic_auth, not both",
      usage_error({ prometheus = { url = PROM.url, bearer_token = "t0ken-x", basic_auth = { username = "u", password = "p" } },
                    queries = { { query = "x", condition = "value < 1" } } }))
    assert.matches("^monitor%.metrics: prometheus%.bearer_token_file: cannot read /nonexistent/token",
      usage_error({ prometheus = { url = PROM.url, bearer_token_file = "/nonexistent/token" },
                    queries = { { query = "x", condition = "value < 1" } } }))
  end)

  it("is checked by the monitor's own validate (what the deploy calls first)", function()
    local monitor = require("monitor")
    monitor.validate(nil)
    monitor.validate({ window = 10 })
    local ok, err = pcall(monitor.validate, { window = 10, metrics = one({ name = "p99", condition = "value <= 250" }) })
    assert.is_false(ok)
    assert.equal("usage", err.code)
    assert.equal("monitor.metrics query 1 (p99): query is missing (a PromQL expression)", err.message)
    ok, err = pcall(monitor.validate, { window = "long" })
    assert.is_false(ok)
    assert.equal("monitor.window must be a number >= 0", err.message)
  end)

  it("needs the template variables its queries use", function()
    local cfg = one({ name = "e", query = 'up{version="{colour}"}', condition = "value < 1" })
    local ok, err = pcall(metrics.analysis, cfg, { interval = 1, deadline = bgrun.now() + 1, where = "monitor.metrics" })
    assert.is_false(ok)
    assert.equal("monitor.metrics query 1 (e): query uses {colour} but the analysis was not given the colour", err.message)
    local a = metrics.analysis(cfg, { interval = 1, deadline = bgrun.now() + 1, colour = "green" })
    assert.equal('up{version="green"}', a.result.metrics[1].query)
  end)
end)
