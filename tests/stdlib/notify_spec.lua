-- stdlib/notify.lua without a network: which event a run report is, the
-- body template's rendering, Retry-After parsing, and the configuration
-- mistakes refused up front (code "usage", naming the entry).
local json = require("json")
local notify = require("notify")

local function refused(cfg, pattern)
  local ok, err = pcall(notify.targets, "prod", cfg)
  assert.is_false(ok)
  assert.equal("usage", err.code)
  assert.equal("BadNotifyConfig", err.reason)
  assert.matches(pattern, err.message)
end

describe("notify", function()
  it("names the event from the report", function()
    assert.equal("succeeded", notify.event_of { exit = 0, undone = {} })
    assert.equal("needs_human", notify.event_of { exit = 3, undone = { { name = "x", ok = false } } })
    assert.equal("failed", notify.event_of { exit = 1, undone = { { name = "release the deploy lock", ok = true,
                                                                    keep = true } } })
    assert.equal("rolled_back", notify.event_of { exit = 1, undone = { { name = "switch back", ok = true } } })
    assert.equal("rolled_back", notify.event_of { exit = 130, undone = { { name = "scale down", ok = true } } })
    assert.equal("failed", notify.event_of { exit = 2, undone = {} })
  end)

  it("renders a template: one placeholder keeps its type, others interpolate, arrays stay arrays", function()
    local ctx = { exit = 1, title = "deploy v1 to prod: failed", undone = json.array {}, env = "prod",
                  report = { steps = json.array { { name = "a" } } } }
    local out = notify.render({ exit = "{exit}", text = "[{env}] {title} (exit {exit})", undone = "{undone}",
                                tags = { "bgrun", "{env}" }, nothing = "{error}", n = 3, yes = true }, ctx)
    local back = json.decode(json.encode(out))
    assert.are.same({ exit = 1, n = 3, nothing = json.null, tags = { "bgrun", "prod" },
                      text = "[prod] deploy v1 to prod: failed (exit 1)", undone = {}, yes = true }, back)
    assert.equal("[]", json.encode(back.undone))
    assert.equal('["bgrun","prod"]', json.encode(back.tags))
  end)

  it("reads Retry-After as seconds or an HTTP date", function()
    assert.equal(7, notify.retry_after("7"))
    assert.equal(120, notify.retry_after(" 120 "))
    local now = os.time { year = 2026, month = 11, day = 30, hour = 12, min = 0, sec = 0, isdst = false }
    -- os.time read that as local time: the UTC instant 12:00:00 is
    local utc_noon = now + (now - os.time(os.date("!*t", now)))
    assert.equal(30, notify.retry_after("Mon, 30 Nov 2026 12:00:30 GMT", utc_noon))
    assert.equal(0, notify.retry_after("Mon, 30 Nov 2026 11:00:00 GMT", utc_noon))
    assert.is_nil(notify.retry_after("soon"))
    assert.is_nil(notify.retry_after(nil))
  end)

  it("refuses configuration mistakes, naming the entry", function()
    refused({ { type = "slak", url = "https://hooks.example.invalid/x" } },
      "^environment prod: notify%[1%]: type: 'slak' is not one of slack, teams, webhook$")
    refused({ { type = "slack", url_env = "X", events = { "deployed" } } },
      "events: 'deployed' is not one of started, succeeded, failed, rolled_back, needs_human")
    refused({ { type = "slack", url_env = "X", channel = "#ops" } }, "notify%[1%]: unknown field 'channel'")
    refused({ { type = "slack" } }, "notify%[1%]: needs url_env %(or url%)")
    refused({ { type = "slack", url_env = "X", body = {} } }, "body is for type webhook")
    refused({ { type = "webhook", url_env = "X", body = { t = "{nope}" } } }, "unknown placeholder {nope}")
    refused({ { type = "webhook", url_env = "X", headers = { A = 1 } } }, "headers: 'A' must be a string")
    refused({ timeuot = 5 }, "unknown field 'timeuot'")
    refused("slack", "expected a list of targets, got string")
  end)

  it("registers the URL as a secret and names targets by name or type", function()
    local url = "https://hooks.example.invalid/services/T1/B2/very-secret-part"
    local list, opts = notify.targets("prod", {
      timeout = 5,
      { type = "slack", url = url },
      { type = "webhook", url = "https://a.example.invalid/1" },
      { type = "webhook", url = "https://c.example.invalid/3" },
      { type = "webhook", name = "pager", url = "https://b.example.invalid/2", headers = { ["X-Api-Key"] = "k-12345" } },
    })
    assert.equal(4, #list)
    assert.equal(5, opts.timeout)
    assert.equal("slack", list[1].name)
    assert.equal("hooks.example.invalid", list[1].host)
    assert.equal("webhook#2", list[2].name)
    assert.equal("webhook#3", list[3].name)
    assert.equal("pager", list[4].name)
    assert.equal("application/json", list[4].headers["Content-Type"])
    local log = require("log")
    assert.is_nil(log.redact("posting to " .. url):find("very-secret-part", 1, true))
    assert.is_nil(log.redact("key k-12345"):find("k-12345", 1, true))
  end)

  it("skips a target whose variable is unset, and one whose URL is not http(s)", function()
    local list = notify.targets("prod", {
      { type = "slack", url_env = "BGRUN_NOTIFY_SPEC_UNSET_VARIABLE" },
      { type = "teams", url = "ftp://files.example.invalid/x" },
    })
    assert.equal(0, #list)
  end)
end)
