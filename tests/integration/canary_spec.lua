-- Canary releases (issue 15) end to end against the sandbox: the binary
-- runs playbooks/canary.lua next to an environment of our own (4 replicas,
-- a 1 s monitor interval, hooks that write what ran), while this process
-- hammers the Service with requests, one new connection each (kube-proxy
-- balances connections), and counts those that fail. Each case checks the
-- exit code, the message and what was left behind: the Service's
-- selector and release record, replicas and images of both colours, the
-- lock, the run report.
local json = require("json")
local http = require("http")
local k8s = require("k8s")
local postgres = require("postgres")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_canary_spec"
local STATE = ROOT .. "/tests/.state/canary"
local JOURNALS = STATE .. "/journal"
local PB = STATE .. "/playbooks"
local HOOKS = STATE .. "/hooks.log"
local REPLICAS = 4
local PRESTOP = 2 -- seconds of the pods' preStop sleep

local c = k8s.client { namespace = NS }

local sh, read, behaviours = H.sh, H.read, H.behaviours
-- runs of bgrun: in the foreground, and in the background (a handle with
-- pid, rc(), wait(), stderr(), stdout(), wait_for(pattern))
local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = PB, BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local bgrun_run, spawn = R.run, R.spawn

local function selector() return c:get("service", APP).spec.selector end
local function live_colour() return selector().version end
local S = H.release_state(c, APP)
local lock_holder, other = S.lock_holder, H.other

local function dep(colour)
  local d = c:get("deployment", APP .. "-" .. colour)
  return { image = d.spec.template.spec.containers[1].image, replicas = d.spec.replicas,
           ready = (d.status or {}).readyReplicas or 0 }
end

local function release_record()
  local a = (c:get("service", APP).metadata.annotations or {})["bgrun.io/release"]
  return a and json.decode(a)
end

-- The pods the Service's endpoints send traffic to, by colour.
local function endpoint_colours()
  local colour = {}
  for _, pod in ipairs(c:list("pods", { labelSelector = "app=" .. APP }).items) do
    colour[pod.metadata.name] = pod.metadata.labels.version
  end
  local n = {}
  for _, ss in ipairs(c:get("endpoints", APP).subsets or {}) do
    for _, a in ipairs(ss.addresses or {}) do
      local k = colour[a.targetRef.name] or "?"
      n[k] = (n[k] or 0) + 1
    end
  end
  return n
end

-- Sends requests to /api/v1/info through the Service, one new connection
-- each, while the run goes on (and `extra` seconds after it ended); counts
-- those that fail, those that fail between the stderr lines `from` and
-- `to` (patterns; the window), and the versions that answered, in all and
-- during each canary step's analysis (its split confirmed). Every half
-- second it notes whether the Service's selector had lost its version key
-- (both colours selected).
local function load_during(run, window, extra)
  local svc = c:get("service", APP)
  local url = ("http://%s:%d/api/v1/info"):format(svc.spec.clusterIP, svc.spec.ports[1].port)
  local r = { sent = 0, failed = 0, in_window = 0, failed_in_window = 0, samples = {}, versions = {},
              steps = {}, both_selected = false }
  local next_look, ended_at = 0, nil
  while true do
    if not ended_at and run.rc() then ended_at = bgrun.now() end
    if ended_at and bgrun.now() - ended_at >= (extra or 0) then break end
    local inside, step = false, nil
    local err = run.stderr()
    if window then
      inside = err:find(window.from) ~= nil and not err:find(window.to)
    end
    -- the canary step whose split is confirmed and whose analysis runs now
    for n in err:gmatch("%[canary step (%d+)/%d+[^%]]*%] traffic split") do step = tonumber(n) end
    if step and err:find("%[canary step " .. step .. "/%d+[^%]]*%] step done") then step = nil end
    if bgrun.now() >= next_look then
      next_look = bgrun.now() + 0.5
      if selector().version == nil then r.both_selected = true end
    end
    local ok, res = pcall(http.get, url, { timeout = 5, headers = { Connection = "close" } })
    r.sent = r.sent + 1
    local bad = not ok or res.status ~= 200
    if bad then
      r.failed = r.failed + 1
      if #r.samples < 5 then
        local t = require("bgrun.core").time()
        r.samples[#r.samples + 1] = ("%s.%03d %s"):format(os.date("!%H:%M:%S", math.floor(t)),
          math.floor(t % 1 * 1000), ok and (res.status .. " " .. res.body) or tostring(res))
      end
    else
      local v = res.json and res.json.version or "?"
      r.versions[v] = (r.versions[v] or 0) + 1
      if step then
        r.steps[step] = r.steps[step] or {}
        r.steps[step][v] = (r.steps[step][v] or 0) + 1
      end
    end
    if inside then
      r.in_window = r.in_window + 1
      if bad then r.failed_in_window = r.failed_in_window + 1 end
    end
  end
  return r
end

local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s" && cp playbooks/*.lua "%s/" && rm -f "%s/environments.lua"')
    :format(PB, PB, PB, PB)).code == 0)
  local f = assert(io.open(PB .. "/environments.lua", "w"))
  f:write(([[
local function note(what)
  return function(s)
    local f = assert(io.open(%q, "a"))
    f:write(what, " ", s.tag, "\n")
    f:close()
  end
end
return {
  ["local"] = {
    namespace = "physioflow", app = "physioflow-api", replicas = %d, database = {},
    migrations = "examples/physioflow/migrations", rollout_timeout = 120,
    monitor = { window = 12, interval = 1 },
    hooks = { before_switch = note("before_switch"), after_switch = note("after_switch"),
              on_success = note("on_success"), on_abort = note("on_abort") },
  },
  -- a non-local environment that names no kubeconfig context
  nocontext = { namespace = "physioflow", app = "physioflow-api", replicas = %d, database = {} },
}
]]):format(HOOKS, REPLICAS, REPLICAS))
  f:close()
end

local function hooks_ran()
  local t = {}
  for line in read(HOOKS):gmatch("[^\n]+") do t[#t + 1] = line end
  os.remove(HOOKS)
  return t
end

local function report_of(path)
  return json.decode(read(path))
end

describe("canary releases against the sandbox", function()
  setup(function()
    behaviours({})
    local admin <close> = postgres.connect { dbname = "postgres" }
    admin:exec("DROP DATABASE IF EXISTS " .. postgres.quote_ident(DB) .. " WITH (FORCE)")
    admin:exec("CREATE DATABASE " .. postgres.quote_ident(DB))
    H.delete_release(c, APP)
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. STATE .. '"')
    write_playbooks()
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
    -- A pod told to stop while the endpoints drop it must keep serving a
    -- moment: a preStop sleep, what any Kubernetes scale-down without
    -- failed requests needs (the README's canary section says so). Then
    -- the live colour at the environment's replicas, as a deploy leaves it.
    for _, colour in ipairs({ "blue", "green" }) do
      c:patch("deployment", APP .. "-" .. colour, { spec = { template = { spec = { containers = {
        { name = "api", lifecycle = { preStop = { sleep = { seconds = PRESTOP } } } } } } } } },
        { type = "strategic" })
    end
    c:scale("deployment", APP .. "-blue", REPLICAS)
    c:rollout_status("deployment", APP .. "-blue", { timeout = 120 })
  end)

  teardown(function()
    behaviours({})
    -- no pod in its preStop sleep left behind for the next spec's monitor
    for _, colour in ipairs({ "blue", "green" }) do pcall(c.scale, c, "deployment", APP .. "-" .. colour, 0) end
    local deadline = bgrun.now() + 30
    while #c:list("pods", { labelSelector = "app=" .. APP }).items > 0 and bgrun.now() < deadline do
      bgrun.sleep(0.2)
    end
  end)

  it("refuses bad input with exit 2 naming it, before anything is touched", function()
    local before = c:get("service", APP).metadata.resourceVersion
    local blue, green = dep("blue"), dep("green")
    local cases = {
      { { "steps=10,5" }, "parameter 'steps': 10,5 is not increasing %(5 after 10%)" },
      { { "steps=10,50" }, "parameter 'steps': 10,50 does not end at 100" },
      { { "steps=10,x,100" }, "parameter 'steps': 'x' in 10,x,100 is not a whole percentage" },
      { { "steps=0,100" }, "parameter 'steps': 0 in 0,100 is outside 1 to 100" },
      { { "pause=-1" }, "parameter 'pause': %-1 is negative" },
      { { "pause=soon" }, "parameter 'pause': expected a number, got 'soon'" },
    }
    for _, case in ipairs(cases) do
      local args = { PB .. "/canary.lua", "env=local", "tag=v2.0.0" }
      for _, a in ipairs(case[1]) do args[#args + 1] = a end
      local r = bgrun_run(args)
      assert.equal(2, r.code, table.concat(case[1], " ") .. "\n" .. r.stderr)
      assert.matches(case[2], r.stderr)
    end
    local r = bgrun_run({ PB .. "/canary.lua", "env=nowhere", "tag=v2.0.0" })
    assert.equal(2, r.code)
    assert.matches("parameter 'env': 'nowhere' is not one of local, nocontext", r.stderr)
    r = bgrun_run({ PB .. "/canary.lua", "env=nocontext", "tag=v2.0.0" })
    assert.equal(2, r.code)
    assert.matches("environment nocontext names no kubeconfig context", r.stderr, 1, true)
    r = bgrun_run({ PB .. "/canary.lua", "env=local" })
    assert.equal(2, r.code)
    assert.matches("missing required parameter 'tag'", r.stderr)
    assert.equal(before, c:get("service", APP).metadata.resourceVersion)
    assert.same(blue, dep("blue"))
    assert.same(green, dep("green"))
    assert.equal("", lock_holder())
  end)

  it("--dry-run prints the cluster, the steps and their replicas, and changes nothing", function()
    local svc = c:get("service", APP).metadata.resourceVersion
    local rv = {}
    for _, colour in ipairs({ "blue", "green" }) do
      rv[colour] = c:get("deployment", APP .. "-" .. colour).metadata.resourceVersion
    end
    local r = bgrun_run({ "--dry-run", PB .. "/canary.lua", "env=local", "tag=v2.0.0", "pause=7" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("dry%-run: Canary v2%.0%.0 to local %(steps 10,25,50,100, 7%.0s each%) %(context %S+, "
      .. "https://127%.0%.0%.1:%d+, namespace physioflow; live: blue v1%.0%.0%)", r.stderr)
    local out = r.stdout
    assert.matches("canary plan for physioflow%-api v2%.0%.0: blue %(v1%.0%.0%) %-> green, 4 replica%(s%), "
      .. "7%.0s of analysis per step", out)
    -- weight: green = ceil(4 * w / 100), blue = 4 - green, traffic = green's share of the ready pods
    assert.matches("\n  1 +10%% +1 +3 +25%%\n", out)
    assert.matches("\n  2 +25%% +1 +3 +25%%\n", out)
    assert.matches("\n  3 +50%% +2 +2 +50%%\n", out)
    assert.matches("\n  4 +100%% +4 +0 +100%%\n", out)
    assert.matches("then: the Service selects green alone, blue stays at 0, the release is recorded", out)
    assert.matches("dry%-run: would patch services/physioflow%-api body=\"{\"spec\":{\"selector\":{\"version\":null}}}\"",
      r.stderr)
    assert.matches("dry%-run: would scale deployments/physioflow%-api%-blue to 3", r.stderr)
    assert.equal(svc, c:get("service", APP).metadata.resourceVersion)
    for _, colour in ipairs({ "blue", "green" }) do
      assert.equal(rv[colour], c:get("deployment", APP .. "-" .. colour).metadata.resourceVersion)
    end
    assert.equal("blue", live_colour())
    assert.equal("", lock_holder())
    hooks_ran() -- hooks see the dry run as a deploy's do (bgrun.dry_run() tells them)
  end)

  it("shifts 10,25,50,100 under load: the new colour alone at the end, the old at 0, no failed request", function()
    behaviours({})
    local report = STATE .. "/clean-report.json"
    local run = spawn({ "--report", report, PB .. "/canary.lua", "env=local", "tag=v2.0.0", "pause=3" })
    local load = load_during(run, nil, 1)
    assert.equal(0, run.wait(), run.stderr())
    print(("# canary 10,25,50,100 under load: %d requests, %d failed (v1.0.0 answered %d, v2.0.0 %d)")
      :format(load.sent, load.failed, load.versions["v1.0.0"] or 0, load.versions["v2.0.0"] or 0))
    assert.equal(0, load.failed, table.concat(load.samples, "\n"))
    -- both colours served while the Service selected them both
    assert.is_true(load.both_selected)
    assert.is_true((load.versions["v1.0.0"] or 0) > 0 and (load.versions["v2.0.0"] or 0) > 0)
    -- the traffic each step gave the new colour: its share of the ready pods
    for i, share in ipairs({ 25, 25, 50, 100 }) do
      local n = load.steps[i] or {}
      local new, all = n["v2.0.0"] or 0, (n["v2.0.0"] or 0) + (n["v1.0.0"] or 0)
      assert.is_true(all > 20, "step " .. i .. ": too few requests to measure")
      local got = 100 * new / all
      print(("# step %d: v2.0.0 answered %.1f%% of %d requests (its share of the ready pods: %d%%)")
        :format(i, got, all, share))
      assert.is_true(math.abs(got - share) <= 10, ("step %d: %.1f%% to the new colour, expected %d%%"):format(i, got, share))
    end

    assert.same({ app = APP, version = "green" }, selector())
    assert.same({ green = REPLICAS }, endpoint_colours())
    local g, b = dep("green"), dep("blue")
    assert.matches(":v2%.0%.0$", g.image)
    assert.equal(REPLICAS, g.replicas)
    assert.equal(0, b.replicas)
    assert.matches(":v1%.0%.0$", b.image)
    local rec = release_record()
    assert.equal("green", rec.colour)
    assert.equal("v2.0.0", rec.tag)
    assert.equal("blue", rec.previous_colour)
    assert.equal("v1.0.0", rec.previous_tag)
    assert.equal("", lock_holder())
    assert.same({ "before_switch v2.0.0", "after_switch v2.0.0", "on_success v2.0.0" }, hooks_ran())

    local out = run.stdout()
    assert.matches("canary physioflow%-api v2%.0%.0: blue %-> green", out)
    assert.matches("step 3 +50%%  green 2, blue 2  traffic 50%% +analysis passed", out)
    -- the order of the shifts: green up and ready before blue goes down
    local err = run.stderr()
    assert.matches("%[canary step 3/4: 50%% to green %(green 2, blue 2%)%] traffic split blue=2 green=2", err)

    local r = report_of(report)
    assert.equal(0, r.exit)
    assert.equal("traffic switched and monitoring passed", r.committed)
    local want = { { 10, 1, 3, 25 }, { 25, 1, 3, 25 }, { 50, 2, 2, 50 }, { 100, 4, 0, 100 } }
    assert.equal(4, #r.canary.steps)
    for i, w in ipairs(want) do
      local st = r.canary.steps[i]
      assert.equal(w[1], st.weight)
      assert.same({ green = w[2], blue = w[3] }, st.replicas)
      assert.equal(w[4], st.traffic)
      assert.equal("passed", st.analysis)
      assert.is_true(st.checks >= 1)
    end
    assert.equal("blue", r.canary.from)
    assert.equal("green", r.canary.to)
    assert.is_nil(r.canary.aborted)
  end)

  it("returns to the old colour alone with its replicas when an analysis fails, no failed request", function()
    -- v3.0.0 serves well but logs errors: the monitor's log check fails it
    behaviours({ ["v3.0.0"] = { error_logs_per_s = 20 } })
    local live = live_colour()
    local idle = other(live)
    local live_image = dep(live).image
    local before_idle = dep(idle)
    local record = release_record()
    local report = STATE .. "/abort-report.json"
    local run = spawn({ "--report", report, PB .. "/canary.lua", "env=local", "tag=v3.0.0", "pause=6" })
    local load = load_during(run, { from = "%[return traffic to " .. live .. " alone%] compensation started",
                                    to = "%[scale physioflow%-api%-" .. idle .. " back down%] compensation [df]" }, 1)
    assert.equal(1, run.wait(), run.stderr())
    print(("# canary abort under load: %d requests during the abort, %d failed (%d sent in all, %d failed)")
      :format(load.in_window, load.failed_in_window, load.sent, load.failed))
    assert.is_true(load.in_window > 0)
    assert.equal(0, load.failed_in_window, table.concat(load.samples, "\n"))
    assert.equal(0, load.failed, table.concat(load.samples, "\n"))

    local err = run.stderr()
    assert.matches("%[open physioflow%-api to both colours%] the Service selects both colours", err)
    assert.matches("%[canary step 1/4: 10%% to " .. idle .. " %(" .. idle .. " 1, " .. live .. " 3%)%] playbook failed", err)
    assert.matches("error lines in the last", err)
    -- old colour back up and ready, then the selector, then the new colour down
    local restored = err:find("%[return traffic to " .. live .. " alone%] old colour back to its replicas")
    local back = err:find("%[return traffic to " .. live .. " alone%] traffic returned to the old colour alone")
    local down = err:find("%[scale physioflow%-api%-" .. idle .. " back down%] compensation done")
    assert.truthy(restored and back and down, err)
    assert.is_true(restored < back and back < down)
    assert.matches("%[release the deploy lock%] compensation done", err)

    assert.same({ app = APP, version = live }, selector())
    assert.same({ [live] = REPLICAS }, endpoint_colours())
    local g = dep(live)
    assert.equal(REPLICAS, g.replicas)
    assert.equal(REPLICAS, g.ready)
    assert.equal(live_image, g.image)
    assert.same({ image = before_idle.image, replicas = before_idle.replicas },
                { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.same(record, release_record())
    assert.equal("", lock_holder())
    assert.same({ "before_switch v3.0.0", "on_abort v3.0.0" }, hooks_ran())

    local r = report_of(report)
    assert.equal(1, r.exit)
    assert.equal(1, #r.canary.steps)
    assert.equal("failed", r.canary.steps[1].analysis)
    assert.same({ [idle] = 1, [live] = 3 }, r.canary.steps[1].replicas)
    assert.matches("error lines", r.canary.steps[1].problems[1])
    assert.equal(1, r.canary.aborted.step)
    assert.equal(10, r.canary.aborted.weight)
    assert.is_number(r.deploy.reaction_ms)
  end)

  it("aborts at a later step (pods unready at 50 %): the old colour back from 2 to 4 replicas, no failed request", function()
    local trigger = STATE .. "/unready"
    os.remove(trigger)
    behaviours({ ["v3.3.0"] = { never_ready = true, trigger_file = trigger } })
    local live = live_colour()
    local idle = other(live)
    local before_idle = dep(idle)
    local report = STATE .. "/late-abort-report.json"
    local run = spawn({ "--report", report, PB .. "/canary.lua", "env=local", "tag=v3.3.0", "steps=25,50,100",
                        "pause=20" })
    run.wait_for("%[canary step 2/3[^%]]*%] healthy check=1")
    assert.equal(2, dep(live).replicas)
    local f = assert(io.open(trigger, "w"))
    f:close()
    local load = load_during(run, { from = "%[return traffic to " .. live .. " alone%] compensation started",
                                    to = "%[scale physioflow%-api%-" .. idle .. " back down%] compensation [df]" }, 1)
    os.remove(trigger)
    assert.equal(1, run.wait(), run.stderr())
    print(("# canary abort at 50%% under load: %d requests during the abort, %d failed (%d sent from the fault on, %d failed)")
      :format(load.in_window, load.failed_in_window, load.sent, load.failed))
    assert.is_true(load.in_window > 0)
    assert.equal(0, load.failed, table.concat(load.samples, "\n"))
    local err = run.stderr()
    assert.matches("%[canary step 2/3: 50%% to " .. idle .. " %(" .. idle .. " 2, " .. live .. " 2%)%] playbook failed", err)
    assert.matches("is no longer ready", err)
    assert.matches("%[return traffic to " .. live .. " alone%] old colour back to its replicas deployment=physioflow%-api%-"
      .. live .. " replicas=4", err)
    assert.same({ app = APP, version = live }, selector())
    assert.same({ [live] = REPLICAS }, endpoint_colours())
    assert.equal(REPLICAS, dep(live).ready)
    assert.same({ image = before_idle.image, replicas = before_idle.replicas },
                { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.equal("", lock_holder())
    hooks_ran()
    local r = report_of(report)
    assert.equal(2, #r.canary.steps)
    assert.equal("passed", r.canary.steps[1].analysis)
    assert.equal("failed", r.canary.steps[2].analysis)
    assert.same({ [idle] = 2, [live] = 2 }, r.canary.steps[2].replicas)
    assert.equal(2, r.canary.aborted.step)
    assert.equal(50, r.canary.aborted.weight)
  end)

  it("refuses a version whose smoke test fails before any traffic moves: exit 1, old colour alone", function()
    behaviours({ ["v3.1.0"] = { fail_paths = { "/api/v1/protocols" } } })
    local live = live_colour()
    local idle = other(live)
    local before_idle = dep(idle)
    local r = bgrun_run({ PB .. "/canary.lua", "env=local", "tag=v3.1.0", "pause=1" })
    assert.equal(1, r.code, r.stderr)
    assert.matches("%[smoke%-test physioflow%-api%-" .. idle .. "%] playbook failed", r.stderr)
    assert.matches("SmokeTestFailed", r.stderr)
    assert.not_matches("open physioflow%-api to both colours", r.stderr)
    assert.same({ app = APP, version = live }, selector())
    assert.equal(REPLICAS, dep(live).replicas)
    assert.same({ image = before_idle.image, replicas = before_idle.replicas },
                { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.equal("", lock_holder())
    assert.same({ "on_abort v3.1.0" }, hooks_ran())
  end)

  it("on SIGINT mid-canary returns to the old colour alone and exits 130", function()
    behaviours({})
    local live = live_colour()
    local idle = other(live)
    local before_idle = dep(idle)
    local run = spawn({ PB .. "/canary.lua", "env=local", "tag=v3.2.0", "pause=30" })
    run.wait_for("%[canary step 1/4[^%]]*%] healthy check=1")
    assert.is_nil(live_colour())
    assert(sh("kill -INT " .. run.pid).code == 0)
    assert.equal(130, run.wait(120), run.stderr())
    local err = run.stderr()
    assert.matches("playbook interrupted", err)
    assert.matches("%[return traffic to " .. live .. " alone%] traffic returned to the old colour alone", err)
    assert.same({ app = APP, version = live }, selector())
    assert.same({ [live] = REPLICAS }, endpoint_colours())
    assert.equal(REPLICAS, dep(live).replicas)
    assert.same({ image = before_idle.image, replicas = before_idle.replicas },
                { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.equal("", lock_holder())
    assert.same({ "before_switch v3.2.0", "on_abort v3.2.0" }, hooks_ran())
  end)

  it("resume after SIGKILL mid-canary leaves the old colour alone serving, with its replicas", function()
    behaviours({})
    local live = live_colour()
    local idle = other(live)
    local before_idle = dep(idle)
    local run = spawn({ PB .. "/canary.lua", "env=local", "tag=v4.0.0", "pause=30" })
    run.wait_for("%[canary step 2/4[^%]]*%] healthy check=1")
    assert(sh("kill -KILL " .. run.pid).code == 0)
    assert.equal(137, run.wait(30))
    -- what SIGKILL leaves: both colours selected, the old one down to 3, the lock held by a dead process
    assert.is_nil(live_colour())
    assert.equal(3, dep(live).replicas)
    assert.equal(1, dep(idle).replicas)
    assert.matches("^bgrun@", lock_holder())
    -- a deploy would not mistake it for a colour
    local ok, why = pcall(require("bluegreen").active_colour, c, APP, NS)
    assert.is_false(ok)
    assert.equal("CanaryOpen", why.reason)
    assert.matches("selects both colours %(no version in its selector%): a canary is running or did not finish",
      why.message)

    local resume = spawn({ "--yes", "resume" })
    local load = load_during(resume, nil, 0.5)
    assert.equal(0, resume.wait(), resume.stderr())
    print(("# resume of a canary killed at 25%%: %d requests during the resume, %d failed")
      :format(load.sent, load.failed))
    assert.equal(0, load.failed, table.concat(load.samples, "\n"))
    assert.matches("undid 4 change%(s%) of .*canary%.lua", resume.stdout())
    assert.matches("%[hook on_abort%] the on_abort hook of the killed run does not run on resume", resume.stderr())
    assert.matches("%[return traffic to " .. live .. " alone%] traffic returned to the old colour alone", resume.stderr())
    assert.same({ app = APP, version = live }, selector())
    assert.same({ [live] = REPLICAS }, endpoint_colours())
    assert.equal(REPLICAS, dep(live).replicas)
    assert.same({ image = before_idle.image, replicas = before_idle.replicas },
                { image = dep(idle).image, replicas = dep(idle).replicas })
    assert.equal("", lock_holder())

    local again = bgrun_run({ "--yes", "resume" })
    assert.equal(0, again.code)
    assert.matches("nothing to resume", again.stdout)
  end)
end)
