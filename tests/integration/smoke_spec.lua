-- Smoke tests (stdlib/smoke.lua, playbooks/checks.lua, smoke-test.lua)
-- against demo app instances on loopback, backed by a PostgreSQL database
-- with the PhysioFlow migrations. Broken versions come from the demo
-- app's behaviours file.
local http = require("http")
local json = require("json")
local proc = require("proc")
local smoke = require("smoke")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local BGRUN = os.getenv("BGRUN") or (ROOT .. "/bgrun")
local demo = dofile(ROOT .. "/tests/integration/fixtures/demoapp.lua")
local CHECKS = dofile(ROOT .. "/playbooks/checks.lua")
local PLAYBOOK = ROOT .. "/playbooks/smoke-test.lua"

local NAMES = { "health", "ready", "info", "BHYT validation", "outcome measures", "service codes",
                "clinical protocols", "medical terms", "database" }

local function by_check(report)
  local t = {}
  for _, r in ipairs(report.results) do t[r.check] = r end
  return t
end

local function run_playbook(args)
  local argv = { BGRUN }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  return proc.run(argv, { timeout = 120 })
end

describe("smoke helpers", function()
  it("look dotted paths up, array indices included", function()
    local v = json.decode('{"a":{"b":[{"c":1},{"c":"two"}]},"n":0}')
    assert.equal(1, smoke.lookup(v, "a.b.1.c"))
    assert.equal("two", smoke.lookup(v, "a.b.2.c"))
    assert.equal(0, smoke.lookup(v, "n"))
    assert.is_nil(smoke.lookup(v, "a.x.y"))
    assert.is_nil(smoke.lookup(v, "n.deeper"))
  end)

  it("explain each kind of mismatch", function()
    local resp = { status = 200, body = '{"items":[],"v":"v1"}', time_ms = 12.4,
                   json = json.decode('{"items":[],"v":"v1","null":null}') }
    assert.same({ true }, { smoke.expect(resp, {}) })
    assert.same({ false, "HTTP 200 (expected 201)" }, { smoke.expect(resp, { status = 201 }) })
    assert.same({ false, "json items = [], expected a non-empty array" },
                { smoke.expect(resp, { json = { items = smoke.non_empty } }) })
    assert.same({ false, 'json v = "v1", expected "v2"' },
                { smoke.expect(resp, { json = { v = smoke.var("version") } }, { version = "v2" }) })
    assert.same({ true }, { smoke.expect(resp, { json = { v = smoke.var("version") } }) })
    assert.same({ false, "json null = null, expected present" },
                { smoke.expect(resp, { json = { null = smoke.present } }) })
    assert.same({ false, "json missing = nil, expected a number" },
                { smoke.expect(resp, { json = { missing = smoke.type("number") } }) })
    assert.same({ false, "took 12 ms, more than 10 ms" }, { smoke.expect(resp, { max_ms = 10 }) })
    assert.same({ false, "response is not JSON" }, { smoke.expect({ status = 200, body = "" }, { json = { a = 1 } }) })
  end)

  it("format an aligned table with a summary line", function()
    local text = smoke.format_text({ ok = false, passed = 1, failed = 1, results = {
      { check = "health", target = "http://a", result = "PASS", latency_ms = 3 },
      { check = "service codes", target = "http://a", result = "FAIL", latency_ms = 12, reason = "HTTP 500 (expected 200)" },
    } })
    local lines = {}
    for l in text:gmatch("[^\n]+") do lines[#lines + 1] = l end
    assert.equal("target: http://a", lines[1])
    assert.equal("CHECK          RESULT  LATENCY  REASON", lines[2])
    assert.equal("health         PASS    3 ms", lines[3])
    assert.equal("service codes  FAIL    12 ms    HTTP 500 (expected 200)", lines[4])
    assert.equal("1 passed, 1 failed", lines[5])
  end)
end)

describe("smoke", function()
  local dir, db, stop_db, apps = nil, nil, nil, {}
  local good, good2, failing, slow, unready, dead

  setup(function()
    dir = demo.sh("mktemp -d -t bgrun-smoke.XXXXXX"):gsub("%s+$", "")
    db, stop_db = demo.database(dir)
    local behaviors = demo.behaviors(dir, {
      ["v2-broken"] = { fail_paths = { "/api/v1/service-codes" } },
      ["v3-slow"] = { slow_ms = 1500 },
      ["v4-unready"] = { never_ready = true },
    })
    local function start(version, pod)
      local app = demo.start(dir, db, version, behaviors, pod)
      apps[#apps + 1] = app
      return app
    end
    good = start("v1", "physioflow-api-blue-a")
    good2 = start("v1", "physioflow-api-blue-b")
    failing = start("v2-broken")
    slow = start("v3-slow")
    unready = start("v4-unready")
    dead = "http://127.0.0.1:" .. demo.free_port()
  end)

  teardown(function()
    for _, a in ipairs(apps) do demo.stop(a) end
    if stop_db then stop_db() end
    if dir then os.execute(("rm -rf %q"):format(dir)) end
  end)

  it("passes all nine checks on a good version", function()
    local report = smoke.run(good.url, CHECKS, { vars = { version = "v1" } })
    assert.is_true(report.ok)
    assert.equal(9, report.passed)
    assert.equal(0, report.failed)
    for i, r in ipairs(report.results) do
      assert.equal(NAMES[i], r.check)
      assert.equal("PASS", r.result, r.check .. ": " .. tostring(r.reason))
      assert.equal(good.url, r.target)
      assert.equal("number", type(r.latency_ms))
      assert.is_nil(r.reason)
    end
  end)

  it("fails exactly the broken path's check, with the status as the reason", function()
    local report = smoke.run(failing.url, CHECKS)
    assert.is_false(report.ok)
    assert.equal(8, report.passed)
    assert.equal(1, report.failed)
    local r = by_check(report)["service codes"]
    assert.equal("FAIL", r.result)
    assert.equal(500, r.status)
    assert.equal("HTTP 500 (expected 200)", r.reason)
  end)

  it("reports a timeout for checks slower than their timeout", function()
    local t0 = bgrun.now()
    local report = smoke.run(slow.url, CHECKS, { timeout = 0.5 })
    assert.is_true(bgrun.now() - t0 < 5, "the checks ran concurrently")
    assert.equal(9, report.failed)
    for _, r in ipairs(report.results) do
      assert.matches("^Timeout: ", r.reason)
    end
    -- within the default 10 s they pass, all in about one slow answer's time
    t0 = bgrun.now()
    report = smoke.run(slow.url, CHECKS)
    assert.is_true(report.ok)
    assert.is_true(bgrun.now() - t0 < 6)
  end)

  -- A server that takes connections and never answers (the kernel accepts
  -- them into the listen backlog; nobody reads).
  local function hanging_server()
    local port = demo.free_port()
    local pid = tonumber((demo.sh(("python3 -c 'import socket, time; s = socket.socket(); "
      .. "s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((\"127.0.0.1\", %d)); s.listen(128); "
      .. "time.sleep(600)' >/dev/null 2>&1 & echo $!"):format(port)):gsub("%s+$", "")))
    local deadline = bgrun.now() + 10
    while bgrun.now() < deadline do
      local ok, e = pcall(http.get, ("http://127.0.0.1:%d/"):format(port), { timeout = 0.2 })
      if not ok and e.reason ~= "ConnectionRefused" then break end
      bgrun.sleep(0.05)
    end
    return "http://127.0.0.1:" .. port, function() os.execute("kill " .. pid) end
  end

  it("ends in about one timeout against an app that hangs: a check's requests share its deadline", function()
    local url, stop = hanging_server()
    local t0 = bgrun.now()
    local report = smoke.run(url, CHECKS, { timeout = 2 })
    local took = bgrun.now() - t0
    -- before: the data checks' 2 s, then the BHYT check's own 2 s
    assert.is_true(took < 3, ("took %.1f s"):format(took))
    assert.is_true(took >= 1.9, ("took %.1f s"):format(took))
    assert.equal(9, report.failed)
    for _, r in ipairs(report.results) do assert.matches("^Timeout: ", r.reason) end

    -- three pods: 30 requests, more than the 16 sent at a time; those left
    -- over when the deadline passes fail unsent
    t0 = bgrun.now()
    report = smoke.run({ { name = "a", url = url }, { name = "b", url = url }, { name = "c", url = url } }, CHECKS,
                       { timeout = 2 })
    took = bgrun.now() - t0
    assert.is_true(took < 3, ("took %.1f s"):format(took))
    assert.equal(27, report.failed)
    local unsent = 0
    for _, r in ipairs(report.results) do
      assert.matches("^Timeout: ", r.reason)
      if r.reason:find("were spent before", 1, true) then unsent = unsent + 1 end
    end
    assert.is_true(unsent > 0)

    -- a check sending its requests one after the other, going on after a
    -- failure: the second gets what is left of the deadline, nothing
    local seen = {}
    t0 = bgrun.now()
    report = smoke.run(url, { { name = "two in a row", timeout = 1, run = function(t)
      local ok, e = pcall(t.request, t, { path = "/first" })
      seen[1] = not ok and e.reason
      seen[2] = t:remaining()
      ok, e = pcall(t.request, t, { path = "/second" })
      seen[3] = not ok and e.reason
      seen[4] = not ok and e.message
      error(e, 0)
    end } })
    took = bgrun.now() - t0
    stop()
    assert.is_true(took < 1.5, ("took %.1f s"):format(took))
    assert.equal("Timeout", seen[1])
    assert.is_true(seen[2] < 0.05)
    assert.equal("Timeout", seen[3])
    assert.matches("^the check's 1 s were spent before http://127%.0%.0%.1:%d+/second was sent$", seen[4])
    assert.matches("^Timeout: the check's 1 s were spent", report.results[1].reason)
  end)

  it("fails every check of an unreachable URL with the transport error", function()
    local report = smoke.run(dead, CHECKS)
    assert.equal(9, report.failed)
    for _, r in ipairs(report.results) do
      assert.matches("^ConnectionRefused: Failed to connect", r.reason)
      assert.is_nil(r.latency_ms ~= nil and r.check ~= "BHYT validation" and r.latency_ms or nil)
    end
  end)

  it("reports a never-ready pod's readiness with its 503", function()
    local r = by_check(smoke.run(unready.url, CHECKS))
    assert.equal("HTTP 503 (expected 200)", r.ready.reason)
    assert.equal("PASS", r.health.result)
  end)

  it("checks the version when one is given", function()
    local r = by_check(smoke.run(good.url, CHECKS, { vars = { version = "v9" } }))
    assert.equal('json version = "v1", expected "v9"', r.health.reason)
    assert.equal('json version = "v1", expected "v9"', r.info.reason)
    assert.equal("PASS", r.database.result)
  end)

  it("reports per target when given several pods", function()
    local report = smoke.run({ { name = good.pod, url = good.url }, { name = good2.pod, url = good2.url },
                               failing.url }, CHECKS)
    assert.equal(27, #report.results)
    assert.equal(26, report.passed)
    for i, r in ipairs(report.results) do
      local want = i <= 9 and good.pod or i <= 18 and good2.pod or failing.url
      assert.equal(want, r.target)
      assert.equal(NAMES[(i - 1) % 9 + 1], r.check)
    end
    assert.equal("FAIL", report.results[24].result)
    assert.equal("service codes", report.results[24].check)
    local text = smoke.format_text(report)
    assert.matches("physioflow%-api%-blue%-a%s+PASS", text)
    assert.matches("26 passed, 1 failed", text)
  end)

  it("supports contains, max_ms, dotted JSON paths and function checks", function()
    local report = smoke.run(good.url, {
      { name = "contains", path = "/health", expect = { contains = '"status":"ok"' } },
      { name = "missing text", path = "/health", expect = { contains = "nope" } },
      { name = "too slow", path = "/health", expect = { max_ms = 0.0001 } },
      { name = "array path", path = "/api/v1/service-codes", expect = { json = { ["items.1.code"] = smoke.type("string") } } },
      { name = "404 expected", path = "/nope", expect = { status = 404 } },
      { name = "fn pass", run = function(t) return t:request({ path = "/health" }).status == 200 end },
      { name = "fn fail", run = function() return false, "custom reason" end },
      { name = "fn raise", run = function(t) t:request({ url = dead .. "/x" }) end },
      function(t) return t:expect(t:request({ path = "/health" }), { status = 200 }) end,
    })
    local r = by_check(report)
    assert.equal("PASS", r.contains.result)
    assert.equal('body does not contain "nope"', r["missing text"].reason)
    assert.matches("^took %d+ ms, more than 0.0001 ms", r["too slow"].reason)
    assert.equal("PASS", r["array path"].result)
    assert.equal("PASS", r["404 expected"].result)
    assert.equal("PASS", r["fn pass"].result)
    assert.equal("custom reason", r["fn fail"].reason)
    assert.matches("^ConnectionRefused", r["fn raise"].reason)
    assert.equal("PASS", r["check 9"].result)
  end)

  it("rejects malformed checks as playbook mistakes", function()
    assert.has_error(function() smoke.run(good.url, { { path = "/x" } }) end)
    assert.has_error(function() smoke.run(good.url, { { name = "x", path = "/x", expect = { stauts = 200 } } }) end)
    assert.has_error(function() smoke.run({}, CHECKS) end)
  end)

  describe("playbook", function()
    it("exits 0 and prints the table when every check passes", function()
      local r = run_playbook({ PLAYBOOK, "url=" .. good.url, "version=v1" })
      assert.equal(0, r.code, r.stderr)
      assert.matches("CHECK%s+RESULT%s+LATENCY%s+REASON", r.stdout)
      assert.matches("BHYT validation%s+PASS%s+%d+ ms", r.stdout)
      assert.matches("9 passed, 0 failed", r.stdout)
      local passes = select(2, r.stdout:gsub("PASS", ""))
      assert.equal(9, passes)
    end)

    it("exits 1 naming the failed check", function()
      local r = run_playbook({ PLAYBOOK, "url=" .. failing.url })
      assert.equal(1, r.code)
      assert.matches("service codes%s+FAIL%s+%d+ ms%s+HTTP 500 %(expected 200%)", r.stdout)
      assert.matches("8 passed, 1 failed", r.stdout)
      assert.matches("1 of 9 checks failed: service codes", r.stderr)
    end)

    it("prints the report as JSON with --log-format json", function()
      local r = run_playbook({ "--log-format", "json", PLAYBOOK, "url=" .. good.url .. "," .. dead })
      assert.equal(1, r.code)
      local report = json.decode(r.stdout)
      assert.equal(18, #report.results)
      assert.equal(9, report.passed)
      assert.equal(9, report.failed)
      assert.equal(dead, report.results[18].target)
      assert.matches("^ConnectionRefused", report.results[18].reason)
      assert.matches("9 of 18 checks failed: health @ " .. dead:gsub("%p", "%%%0"), r.stderr)
    end)

    it("takes checks from a file", function()
      local f = dir .. "/one.lua"
      local fh = assert(io.open(f, "w"))
      fh:write('return { { name = "only health", path = "/health", expect = { json = { status = "ok" } } } }\n')
      fh:close()
      local r = run_playbook({ PLAYBOOK, "url=" .. good.url, "checks=" .. f })
      assert.equal(0, r.code, r.stderr)
      assert.matches("only health%s+PASS", r.stdout)
      assert.matches("1 passed, 0 failed", r.stdout)
    end)

    it("exits 2 for bad usage", function()
      assert.equal(2, run_playbook({ PLAYBOOK }).code)
      assert.equal(2, run_playbook({ PLAYBOOK, "url=ftp://x" }).code)
      assert.equal(2, run_playbook({ PLAYBOOK, "url=" .. good.url, "bogus=1" }).code)
    end)
  end)
end)
