-- Monitoring that reacts (issue 14): after the switch, the deploy watches
-- the new colour's pods and fails at once on a crash or a pod leaving
-- Ready; the health endpoint through the Service, the ready count and the
-- logs are checked every interval, failed checks tolerated up to
-- failure_limit. Each case runs the binary against the sandbox and checks
-- the exit code, the messages and what was left: live colour, replicas,
-- the lock.
local json = require("json")
local k8s = require("k8s")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_monitor_spec"
local STATE = ROOT .. "/tests/.state/monitor"
local JOURNALS = STATE .. "/journal"
-- deploy.lua copied next to an environments.lua of our own (one
-- environment per monitoring setup), so that the shipped one is not found first
local PB = STATE .. "/playbooks"
-- while this file exists, the faults of versions that name it apply
local TRIGGER = STATE .. "/fault"

local c = k8s.client { namespace = NS }

local sh, read, write = H.sh, H.read, H.write
-- runs of bgrun: in the foreground, and in the background (a handle with
-- wait() -> exit code, wait_for(pattern) on its stderr, stderr() and
-- stdout())
local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local bgrun_run, spawn = R.run, R.spawn

local behaviours = H.behaviours

local S = H.release_state(c, APP)
local live_colour, dep, lock_holder, other = S.live_colour, S.dep, S.lock_holder, H.other

local function count(text, pattern)
  local n = 0
  for _ in text:gmatch(pattern) do n = n + 1 end
  return n
end

-- The JSON log lines (--log-format json) with this message.
local function json_lines(text, message)
  local out = {}
  for line in text:gmatch("[^\n]+") do
    local ok, ev = pcall(json.decode, line)
    if ok and type(ev) == "table" and ev.message == message then out[#out + 1] = ev end
  end
  return out
end

local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s" && cp playbooks/deploy.lua "%s/"'):format(PB, PB, PB)).code == 0)
  -- the environments but local name their context: the sandbox's
  write(PB .. "/environments.lua", ([[
local function env(monitor)
  return { context = %q, namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
           bucket = "physioflow-backups-local", rollout_timeout = 120, monitor = monitor }
end
return {
  -- the second periodic check would come long after the crash
  crash = env { window = 40, interval = 20 },
  health = env { window = 30, interval = 2 },
  -- the probe through the Service's cluster IP (the runner is in the
  -- cluster network); the other environments here, not local, reach it
  -- through the API server's services proxy
  flaky = env { window = 8, interval = 2, failure_limit = 1, health_access = "service" },
  unready = env { window = 60, interval = 30 },
}
]]):format(c:info().context))
end

describe("monitoring after the switch", function()
  setup(function()
    behaviours({})
    os.remove(TRIGGER)
    H.fresh_release(c, DB, APP)
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. STATE .. '"')
    write_playbooks()
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    os.remove(TRIGGER)
    behaviours({})
  end)

  after_each(function() os.remove(TRIGGER) end)

  it("checks the live colour without writing into the options it is given", function()
    local monitor = require("monitor")
    local opts = { namespace = NS, selector = "app=" .. APP .. ",version=" .. live_colour(), service = APP }
    local ok, problems = monitor.check(c, opts)
    assert.is_true(ok, table.concat(problems, "; "))
    assert.is_nil(getmetatable(opts))
    assert.same({ namespace = NS, selector = "app=" .. APP .. ",version=" .. live_colour(), service = APP }, opts)
    assert.has_error(function() monitor.check(c, { selector = "app=x", failure_limit = "one" }) end,
      "monitor: opts.failure_limit must be a number >= 0")
  end)

  it("probes the health endpoint through the API server's services proxy with health_access = \"proxy\"", function()
    local http = require("http")
    local monitor = require("monitor")
    local admin = os.getenv("SANDBOX_ADMIN_URL")
    local selector = "app=" .. APP .. ",version=" .. live_colour()
    local port = c:get("service", APP).spec.ports[1].port
    local ok, problems = monitor.check(c, { namespace = NS, selector = selector, service = APP, health_access = "proxy" })
    assert.is_true(ok, table.concat(problems, "; "))
    -- a fault on the proxy path reaches the proxied probe, not the one through the cluster IP
    http.request { method = "DELETE", url = admin .. "/faults" }
    local f = http.post(admin .. "/faults", { json = { method = "GET", path = "/services/" .. APP .. ":[0-9]+/proxy/health$",
                                                        status = 500, count = -1 } })
    assert.equal(201, f.status, f.body)
    local pok, res = pcall(function()
      local ok1, p1 = monitor.check(c, { namespace = NS, selector = selector, service = APP, health_access = "proxy" })
      local ok2, p2 = monitor.check(c, { namespace = NS, selector = selector, service = APP })
      return { ok1, p1, ok2, p2 }
    end)
    http.request { method = "DELETE", url = admin .. "/faults" }
    assert(pok, res)
    assert.is_false(res[1])
    local want = ("health endpoint %s/api/v1/namespaces/%s/services/%s:%d/proxy/health answered 500")
      :format((c:info().server:gsub("/+$", "")), NS, APP, port)
    assert.same({ want }, res[2])
    assert.is_true(res[3], table.concat(res[4], "; "))
    -- a value that is not a way to reach the Service: exit 2's usage error, naming it
    local vok, err = pcall(monitor.validate, { health_access = "pods" })
    assert.is_false(vok)
    assert.equal("usage", err.code)
    assert.equal('monitor.health_access "pods" is not one of service, proxy', err.message)
  end)

  it("counts failed periodic checks: failure_limit in total, consecutive in a row", function()
    local monitor = require("monitor")
    local svc = c:get("service", APP)
    -- every probe of this path fails: 404 through the Service
    local opts = { namespace = NS, selector = "app=" .. APP .. ",version=" .. live_colour(), window = 3, interval = 1,
                   health_url = ("http://%s:%d/nowhere"):format(svc.spec.clusterIP, svc.spec.ports[1].port) }
    local ok, err = pcall(monitor.watch, c, opts)
    assert.is_false(ok)
    assert.equal("unhealthy", err.code)
    assert.same({ signal = "checks", failed_checks = 1, in_a_row = 1 }, err.seen)
    assert.matches("health endpoint http://[%d.]+:%d+/nowhere answered 404", err.message)
    assert.is_number(err.detected_at)
    opts.failure_limit = 4 -- four checks (0, 1, 2, 3 s), all failed, all tolerated
    local r = monitor.watch(c, opts)
    assert.same({ 4, 4 }, { r.checks, r.failed_checks })
    opts.failure_limit, opts.consecutive = nil, 2
    ok, err = pcall(monitor.watch, c, opts)
    assert.is_false(ok)
    assert.same({ signal = "checks", failed_checks = 2, in_a_row = 2 }, err.seen)
  end)

  it("switches back at once when the new colour crashes after the switch, and reports the reaction", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v3.1.0"] = { crash_after_s = 6 } })
    local r = bgrun_run({ "--log-format", "json", PB .. "/deploy.lua", "env=crash", "tag=v3.1.0" })
    assert.equal(1, r.code, r.stderr)
    local seen = json_lines(r.stderr, "monitor: failure seen")
    assert.equal(1, #seen, r.stderr)
    assert.equal("restart", seen[1].fields.signal)
    assert.matches("pod physioflow%-api%-" .. idle .. "%-%S+ restarted 1 time%(s%) %(exit code 1: Error", seen[1].fields.problem)
    -- the watch woke us: the crash came before the second periodic check (20 s)
    assert.equal(1, #json_lines(r.stderr, "healthy"), r.stderr)
    local back = json_lines(r.stderr, "traffic switched back")
    assert.equal(1, #back, r.stderr)
    assert.equal(live, back[1].fields.colour)
    assert.is_number(back[1].fields.reaction_ms)
    -- engine time from the event to the selector patch; generous for ASan on a busy machine
    assert.is_true(back[1].fields.reaction_ms >= 0 and back[1].fields.reaction_ms < 1000, r.stderr)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal(2, dep(live).replicas)
    assert.equal("", lock_holder())
  end)

  it("fails on the health endpoint answering 500 through the Service, at the next check", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v3.2.0"] = { fail_paths = { "/health" }, trigger_file = TRIGGER } })
    local h = spawn({ PB .. "/deploy.lua", "env=health", "tag=v3.2.0" })
    h.wait_for("healthy check=1")
    write(TRIGGER, "")
    assert.equal(1, h.wait())
    local err = h.stderr()
    assert.matches("%[monitor physioflow%-api%-" .. idle .. "%] playbook failed", err)
    -- not local: the health endpoint through the API server's services proxy
    assert.matches("health endpoint https://[%d.]+:%d+/api/v1/namespaces/physioflow/services/physioflow%-api:%d+/proxy/health answered 500", err)
    assert.matches("%[switch traffic back to " .. live .. "%] traffic switched back", err)
    assert.matches("reaction_ms=%d+", err)
    assert.equal(0, count(err, "check failed %(tolerated%)"), err)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.matches(":v1%.0%.0$", dep(idle).image) -- the idle colour's spec is put back
    assert.equal("", lock_holder())
  end)

  it("tolerates one failed periodic check with failure_limit = 1: the deploy succeeds", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v3.3.0"] = { fail_paths = { "/health" }, trigger_file = TRIGGER } })
    local h = spawn({ PB .. "/deploy.lua", "env=flaky", "tag=v3.3.0" })
    h.wait_for("healthy check=1")
    write(TRIGGER, "")
    h.wait_for("check failed %(tolerated%)")
    os.remove(TRIGGER)
    assert.equal(0, h.wait(), h.stderr())
    local err = h.stderr()
    assert.equal(1, count(err, "check failed %(tolerated%)"), err)
    assert.matches("health endpoint http://[%d.]+:%d+/health answered 500", err)
    assert.matches("failed_checks=1", err)
    assert.matches("monitoring +5 check%(s%), healthy, 1 failed %(tolerated%)", h.stdout())
    assert.equal(idle, live_colour())
    assert.matches(":v3%.3%.0$", dep(idle).image)
    assert.equal(2, dep(idle).replicas)
    assert.equal(0, dep(live).replicas)
    assert.equal("", lock_holder())
  end)

  it("fails at once when a pod of the new colour is deleted", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({})
    local h = spawn({ PB .. "/deploy.lua", "env=unready", "tag=v3.5.0" })
    h.wait_for("healthy check=1")
    local pod = c:list("pods", { labelSelector = "app=" .. APP .. ",version=" .. idle }).items[1].metadata.name
    local t0 = bgrun.now()
    c:delete("pod", pod)
    assert.equal(1, h.wait())
    assert.is_true(bgrun.now() - t0 < 15, h.stderr())
    local err = h.stderr()
    assert.matches("pod " .. pod:gsub("%-", "%%-") .. " is being deleted", err)
    assert.equal(1, count(err, "healthy check="), err)
    assert.matches("%[switch traffic back to " .. live .. "%] traffic switched back", err)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal("", lock_holder())
  end)

  it("sees a pod leave Ready at once, without waiting for the next check", function()
    local live = live_colour()
    local idle = other(live)
    behaviours({ ["v3.4.0"] = { never_ready = true, trigger_file = TRIGGER } })
    local h = spawn({ PB .. "/deploy.lua", "env=unready", "tag=v3.4.0" })
    h.wait_for("healthy check=1")
    local t0 = bgrun.now()
    write(TRIGGER, "")
    assert.equal(1, h.wait())
    -- the readiness probe fails twice a second apart; the next check is 30 s away
    assert.is_true(bgrun.now() - t0 < 15, h.stderr())
    local err = h.stderr()
    assert.matches("pod physioflow%-api%-" .. idle .. "%-%S+ is no longer ready", err)
    assert.equal(1, count(err, "healthy check="), err)
    assert.matches("%[switch traffic back to " .. live .. "%] traffic switched back", err)
    assert.equal(live, live_colour())
    assert.equal(0, dep(idle).replicas)
    assert.equal(2, dep(live).replicas)
    assert.equal("", lock_holder())
  end)
end)
