-- Release control against the sandbox (issue 14): a preview a person
-- promotes or aborts, auto-promotion, switching back to the previous colour
-- warm and scaled down, and a before_switch hook that refuses. Each case
-- runs the binary and checks the exit code, the message and what was left:
-- the Service's selector and annotations, the preview Service, replicas,
-- images, the lock.
local json = require("json")
local k8s = require("k8s")

local ROOT = os.getenv("BGRUN_ROOT") or "."
local H = dofile(ROOT .. "/tests/integration/helpers.lua")
local NS = "physioflow"
local APP = "physioflow-api"
local DB = "bgrun_preview_spec"
local STATE = ROOT .. "/tests/.state/preview"
local JOURNALS = STATE .. "/journal"
-- the playbooks next to an environments.lua of our own: a short monitor, a
-- refusing hook, auto-promotion
local PB = STATE .. "/playbooks"
local ABORTED = STATE .. "/on_abort.txt"

local c = k8s.client { namespace = NS }

local sh = H.sh
-- runs of bgrun: in the foreground, and in the background (spawn(args,
-- name): a handle with wait() -> exit code, wait_for(pattern), stdout(),
-- stderr(), kill(signal))
local R = H.runner({ PGDATABASE = DB, BGRUN_PATH = ROOT .. "/playbooks", BGRUN_JOURNAL_DIR = JOURNALS }, STATE)
local bgrun_run, spawn = R.run, R.spawn

local behaviours, fault, clear_faults = H.behaviours, H.fault, H.clear_faults

local function svc() return c:get("service", APP) end
local function live_colour() return svc().spec.selector.version end
local function annotation(key)
  local raw = (svc().metadata.annotations or {})[key]
  return raw and json.decode(raw) or nil
end
local function preview_service() return c:get("service", APP .. "-preview") end

local S = H.release_state(c, APP)
local dep, lock_holder = S.dep, S.lock_holder

local write, read = H.write, H.read_or_nil

local function write_playbooks()
  assert(sh(('rm -rf "%s"; mkdir -p "%s" && cp playbooks/deploy.lua playbooks/promote.lua playbooks/abort.lua '
    .. 'playbooks/switch-back.lua "%s/"'):format(PB, PB, PB)).code == 0)
  write(PB .. "/environments.lua", ([[
-- the environments but local name their context: the sandbox's
local base = {
  context = %q, namespace = "physioflow", app = "physioflow-api", replicas = 2, database = {},
  rollout_timeout = 120, monitor = { window = 4, interval = 2 },
}
local function with(t)
  local e = {}
  for k, v in pairs(base) do e[k] = v end
  for k, v in pairs(t) do e[k] = v end
  return e
end
return {
  ["local"] = with {},
  hooked = with { hooks = {
    before_switch = function(s)
      error(bgrun.error { module = "hooks", op = "before_switch", code = "refused", reason = "ChangeFreeze",
                          message = "no switch to " .. s.idle .. " during the change freeze" }, 0)
    end,
    on_abort = function(s, err)
      local f = assert(io.open(%q, "w"))
      f:write(s.tag, " ", s.idle, ": ", tostring(err))
      f:close()
    end,
  } },
  auto = with { auto_promote = 3 },
  watchful = with { monitor = { window = 30, interval = 1 } },
}
]]):format(c:info().context, ABORTED))
end

local function pods_of(colour)
  return c:list("pods", { labelSelector = ("app=%s,version=%s"):format(APP, colour) }).items or {}
end

describe("release control against the sandbox", function()
  setup(function()
    behaviours({})
    H.fresh_release(c, DB, APP, { APP .. "-preview" })
    sh('rm -rf "' .. STATE .. '"; mkdir -p "' .. STATE .. '"')
    write_playbooks()
    local r = bgrun_run({ "examples/physioflow/setup.lua", "env=local", "tag=v1.0.0", "to=010" })
    assert(r.code == 0, r.stderr)
  end)

  teardown(function()
    clear_faults()
    behaviours({})
  end)

  it("refuses promote and abort when nothing is in preview: exit 2, nothing changed", function()
    for _, pb in ipairs({ "promote.lua", "abort.lua" }) do
      local r = bgrun_run({ PB .. "/" .. pb, "env=local" })
      assert.equal(2, r.code, r.stderr)
      assert.matches("nothing is in preview: service physioflow%-api has no bgrun%.io/preview annotation", r.stderr)
    end
    assert.equal("blue", live_colour())
    assert.equal(0, dep("green").replicas)
    assert.equal("", lock_holder())
  end)

  it("changes nothing when a preview runs under --dry-run", function()
    local before = dep("green")
    local r = bgrun_run({ "--dry-run", PB .. "/deploy.lua", "env=local", "tag=v2.0.0", "preview=true" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("previewed physioflow%-api v2%.0%.0 on green", r.stdout)
    assert.same(before, dep("green"))
    assert.is_nil(preview_service())
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.equal("blue", live_colour())
    assert.equal("", lock_holder())
  end)

  it("previews v2.0.0 on green, traffic stays on blue; a person promotes it", function()
    local r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.0.0", "preview=true" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("previewed physioflow%-api v2%.0%.0 on green %(%S+:v2%.0%.0%), traffic still on blue: "
      .. "service physioflow%-api%-preview", r.stdout)
    assert.equal("blue", live_colour())
    assert.same({ image = dep("blue").image, replicas = 2 }, dep("blue"))
    assert.matches(":v2%.0%.0$", dep("green").image)
    assert.equal(2, dep("green").replicas)
    local p = preview_service()
    assert.same({ app = APP, version = "green" }, p.spec.selector)
    assert.equal(svc().spec.ports[1].port, p.spec.ports[1].port)
    local state = annotation("bgrun.io/preview")
    assert.equal("green", state.colour)
    assert.equal("v2.0.0", state.tag)
    assert.matches(":v2%.0%.0$", state.image)
    assert.matches(":v1%.0%.0$", state.image_before)
    assert.equal(0, state.replicas_before)
    assert.equal("blue", state.from)
    assert.matches("@", state.by)
    assert.matches("^%d+%-%d+%-%d+T", state.at)
    assert.equal("", lock_holder())

    -- a second release waits for the person
    r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.0.1" })
    assert.equal(1, r.code)
    assert.matches("PreviewOpen: physioflow%-api v2%.0%.0 is in preview on green %(by .*%): promote or abort it first",
      r.stderr)
    assert.matches(":v2%.0%.0$", dep("green").image)

    r = bgrun_run({ PB .. "/promote.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("deployed physioflow%-api v2%.0%.0: blue %-> green", r.stdout)
    assert.matches("%[check the preview of physioflow%-api%-green%] step done", r.stderr)
    assert.matches("%[monitor physioflow%-api%-green%] step done", r.stderr)
    assert.equal("green", live_colour())
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.is_nil(preview_service())
    assert.equal(0, dep("blue").replicas)
    assert.equal(2, dep("green").replicas)
    local rel = annotation("bgrun.io/release")
    assert.equal("green", rel.colour)
    assert.equal("v2.0.0", rel.tag)
    assert.equal("blue", rel.previous_colour)
    assert.equal("v1.0.0", rel.previous_tag)
    assert.equal("", lock_holder())
  end)

  it("previews v2.1.0 on blue; a person aborts it: scaled down, image back, preview gone", function()
    local before = dep("blue")
    local r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.1.0", "preview=true" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(2, dep("blue").replicas)
    assert.truthy(preview_service())
    r = bgrun_run({ PB .. "/abort.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("aborted the preview of physioflow%-api v2%.1%.0 on blue %(%S+:v2%.1%.0%): scaled down, "
      .. "preview removed", r.stdout)
    assert.same(before, dep("blue"))
    assert.equal("green", live_colour())
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.is_nil(preview_service())
    assert.equal("", lock_holder())
    r = bgrun_run({ PB .. "/abort.lua", "env=local" })
    assert.equal(2, r.code)
    assert.matches("nothing is in preview", r.stderr)
  end)

  it("refuses to promote a preview whose pods are no longer ready, or no longer run its image", function()
    local r = bgrun_run({ PB .. "/deploy.lua", "env=local", "tag=v2.2.0", "preview=true" })
    assert.equal(0, r.code, r.stderr)
    -- the previewed pods are replaced by ones that never become ready
    behaviours({ ["v2.2.0"] = { never_ready = true } })
    -- a pod of the colour's earlier scale-down may end meanwhile
    for _, pod in ipairs(pods_of("blue")) do c:delete("pod", pod.metadata.name, { ignore_not_found = true }) end
    local deadline = bgrun.now() + 30
    repeat
      bgrun.sleep(0.5)
      local fresh = 0
      for _, pod in ipairs(pods_of("blue")) do
        if not pod.metadata.deletionTimestamp then fresh = fresh + 1 end
      end
    until fresh >= 2 or bgrun.now() > deadline
    r = bgrun_run({ PB .. "/promote.lua", "env=local" })
    assert.equal(1, r.code)
    assert.matches("NotReady: the previewed pods of physioflow%-api%-blue are not ready: 0 of 2 ready %(not ready: ",
      r.stderr)
    assert.equal("green", live_colour())
    assert.equal("blue", annotation("bgrun.io/preview").colour) -- still in preview, for a person to abort
    assert.truthy(preview_service())
    assert.equal(2, dep("blue").replicas)
    assert.equal("", lock_holder())

    -- someone changed the previewed Deployment's image
    behaviours({})
    c:patch("deployment", APP .. "-blue", { spec = { template = { spec = { containers = {
      { name = c:get("deployment", APP .. "-blue").spec.template.spec.containers[1].name,
        image = dep("blue").image:gsub(":v2%.2%.0$", ":v2.2.1") } } } } } }, { type = "strategic" })
    r = bgrun_run({ PB .. "/promote.lua", "env=local" })
    assert.equal(1, r.code)
    assert.matches("PreviewChanged: deployment physioflow%-api%-blue runs %S+:v2%.2%.1, not the previewed %S+:v2%.2%.0",
      r.stderr)
    assert.equal("green", live_colour())

    -- abort refuses to undo what it did not leave, and a person looks
    r = bgrun_run({ PB .. "/abort.lua", "env=local" })
    assert.equal(1, r.code)
    assert.matches("WorldChanged: deployment physioflow%-api%-blue runs %S+:v2%.2%.1, not %S+:v2%.2%.0 as the run left it",
      r.stderr)
    -- put the previewed image back: abort goes through
    c:patch("deployment", APP .. "-blue", { spec = { template = { spec = { containers = {
      { name = c:get("deployment", APP .. "-blue").spec.template.spec.containers[1].name,
        image = dep("blue").image:gsub(":v2%.2%.1$", ":v2.2.0") } } } } } }, { type = "strategic" })
    r = bgrun_run({ PB .. "/abort.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.equal(0, dep("blue").replicas)
    assert.matches(":v1%.0%.0$", dep("blue").image)
    assert.is_nil(preview_service())
    assert.equal("", lock_holder())
  end)

  it("switches back to blue scaled down (scaled up first), then forward to green warm, timing both", function()
    assert.equal("green", live_colour())
    assert.equal(0, dep("blue").replicas)
    local r = bgrun_run({ "--log-format", "json", PB .. "/switch-back.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    local cold = json.decode(r.stdout)
    assert.equal("green", cold.from)
    assert.equal("blue", cold.to)
    assert.is_true(cold.scaled_up)
    assert.is_number(cold.switch_back_seconds)
    assert.is_true(cold.switch_back_seconds < 30)
    assert.equal("blue", live_colour())
    assert.equal(2, dep("blue").replicas)
    assert.matches(":v1%.0%.0$", dep("blue").image)
    assert.equal(2, dep("green").replicas) -- the colour left stays warm
    local rel = annotation("bgrun.io/release")
    assert.same({ "blue", "v1.0.0", "green", "v2.0.0" }, { rel.colour, rel.tag, rel.previous_colour, rel.previous_tag })
    assert.equal("", lock_holder())

    r = bgrun_run({ PB .. "/switch-back.lua", "env=local" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("switched physioflow%-api back: blue %-> green %(%S+:v2%.0%.0%), warm", r.stdout)
    assert.matches("switch%-back total +[%d.]+m?s", r.stdout)
    assert.equal("green", live_colour())
    rel = annotation("bgrun.io/release")
    assert.same({ "green", "v2.0.0", "blue", "v1.0.0" }, { rel.colour, rel.tag, rel.previous_colour, rel.previous_tag })
    assert.equal("", lock_holder())
  end)

  it("aborts the deploy when the before_switch hook fails: exit 1, green serves, blue scaled back", function()
    c:scale("deployment", APP .. "-blue", 0)
    local before = dep("blue")
    local r = bgrun_run({ PB .. "/deploy.lua", "env=hooked", "tag=v2.3.0" })
    assert.equal(1, r.code)
    assert.matches("%[hook before_switch%] playbook failed", r.stderr)
    assert.matches("ChangeFreeze: no switch to blue during the change freeze", r.stderr)
    assert.matches("%[scale physioflow%-api%-blue back down%] compensation done", r.stderr)
    assert.equal("green", live_colour())
    assert.same(before, dep("blue"))
    assert.equal(2, dep("green").replicas)
    assert.matches("^v2%.3%.0 blue: .*no switch to blue during the change freeze", read(ABORTED))
    assert.equal("", lock_holder())
  end)

  it("promotes by itself after auto_promote seconds of healthy preview", function()
    local r = bgrun_run({ PB .. "/deploy.lua", "env=auto", "tag=v2.4.0", "preview=true" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("previewed physioflow%-api v2%.4%.0 on blue", r.stdout)
    assert.matches("%[wait 3s of healthy preview%] step done", r.stderr)
    assert.matches("deployed physioflow%-api v2%.4%.0: green %-> blue", r.stdout)
    assert.equal("blue", live_colour())
    assert.matches(":v2%.4%.0$", dep("blue").image)
    assert.equal(0, dep("green").replicas)
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.is_nil(preview_service())
    assert.equal("", lock_holder())
  end)

  it("aborts an auto-promoting preview whose pods stop being ready during the wait: exit 1", function()
    assert.equal("blue", live_colour())
    local before = dep("green")
    local h = spawn({ PB .. "/deploy.lua", "env=local", "tag=v2.5.0", "preview=true", "auto-promote=30" }, "auto-unready")
    h.wait_for("preview open")
    behaviours({ ["v2.5.0"] = { never_ready = true } })
    for _, pod in ipairs(pods_of("green")) do c:delete("pod", pod.metadata.name, { ignore_not_found = true }) end
    local code, stderr = h.wait(), h.stderr()
    behaviours({})
    assert.equal(1, code, stderr)
    assert.matches("NotReady: the previewed pods of physioflow%-api%-green are not ready", stderr)
    assert.matches("%[abort the preview of physioflow%-api%-green%] step done", stderr)
    assert.equal("blue", live_colour())
    assert.same(before, dep("green"))
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.is_nil(preview_service())
    assert.equal("", lock_holder())
  end)

  it("runs a playbook's own list of steps with its hooks, in order, leaving the stdlib's list alone", function()
    write(PB .. "/custom.lua", [[
local bluegreen = require("bluegreen")
local k8s = require("k8s")
return playbook { params = { tag = { required = true } }, run = function(args)
  local c = k8s.client { namespace = "physioflow" }
  local seen, steps = {}, {}
  for _, st in ipairs(bluegreen.steps) do
    steps[#steps + 1] = st
    if st.name == "rollout" then
      steps[#steps + 1] = { name = "check the new pods my way", run = function(s) seen[#seen + 1] = "mine:" .. s.idle end }
    end
  end
  local hooks = { before_switch = function() seen[#seen + 1] = "before_switch" end,
                  after_switch = { function(s) seen[#seen + 1] = "after_switch:" .. s.report.to end },
                  on_success = function(s) seen[#seen + 1] = "on_success:" .. tostring(s.report.total_seconds == nil) end }
  local report = bluegreen.deploy(c, { app = "physioflow-api", namespace = "physioflow", tag = args.tag,
                                       skip_tests = true, monitor = false, steps = steps, hooks = hooks })
  print(table.concat(seen, ","))
  for _, t in ipairs(report.timings) do print("timing: " .. t.step) end
  print("steps: " .. #bluegreen.steps .. " hooks.after_switch: " .. #hooks.after_switch)
end }
]])
    local r = bgrun_run({ PB .. "/custom.lua", "tag=v2.6.0" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("mine:green,before_switch,after_switch:green,on_success:true\n", r.stdout)
    assert.matches("timing: wait for the rollout of physioflow%-api%-green\ntiming: check the new pods my way\n"
      .. "timing: hook before_switch\ntiming: switch traffic to green\ntiming: hook after_switch\n", r.stdout)
    assert.matches("steps: 7 hooks.after_switch: 1", r.stdout)
    assert.equal("green", live_colour())
    assert.equal(0, dep("blue").replicas)
  end)

  it("resume undoes a preview killed while recording it: preview Service removed, new colour scaled back", function()
    local before = dep("blue")
    -- the patch recording the preview stalls, so the run can be killed after the preview Service exists
    fault({ method = "PATCH", path = "/namespaces/physioflow/services/physioflow-api$", delay_ms = 3000 })
    local h = spawn({ PB .. "/deploy.lua", "env=local", "tag=v2.7.0", "preview=true", "skip-tests=true" }, "killed")
    h.wait_for("%[open the preview physioflow%-api%-preview%] step started")
    local deadline = bgrun.now() + 10
    while not preview_service() and bgrun.now() < deadline do bgrun.sleep(0.05) end
    assert.truthy(preview_service())
    h.kill("KILL")
    assert.equal(137, (h.wait()))
    bgrun.sleep(3.5) -- the stalled patch lands (or not) before resume looks
    clear_faults()
    assert.equal(2, dep("blue").replicas)
    local r = bgrun_run({ "--yes", "resume" })
    assert.equal(0, r.code, r.stderr)
    assert.matches("undid 3 change%(s%) of .*deploy%.lua", r.stdout)
    assert.matches("%[remove the preview physioflow%-api%-preview%] undo done", r.stderr)
    assert.is_nil(preview_service())
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.same(before, dep("blue"))
    assert.equal("green", live_colour())
    assert.equal("", lock_holder())
  end)

  it("switches back when the monitor of a promote sees the new colour crash; the preview is gone", function()
    local before = dep("blue")
    local record_before = annotation("bgrun.io/release")
    behaviours({ ["v2.8.0"] = { crash_after_s = 5 } })
    local r = bgrun_run({ PB .. "/deploy.lua", "env=watchful", "tag=v2.8.0", "preview=true", "skip-tests=true" })
    assert.equal(0, r.code, r.stderr)
    r = bgrun_run({ PB .. "/promote.lua", "env=watchful" })
    behaviours({})
    assert.equal(1, r.code)
    assert.matches("%[monitor physioflow%-api%-blue%] playbook failed", r.stderr)
    assert.matches("%[switch traffic back to green%] traffic switched back", r.stderr)
    assert.matches("%[scale physioflow%-api%-blue back down%] compensation done", r.stderr)
    assert.matches("%[remove the preview physioflow%-api%-preview%] compensation done", r.stderr)
    assert.equal("green", live_colour())
    assert.same(before, dep("blue"))
    assert.equal(2, dep("green").replicas)
    assert.is_nil(preview_service())
    assert.is_nil(annotation("bgrun.io/preview"))
    assert.equal("", lock_holder())
    -- the release switched back was never the last one: the record before it is back
    assert.same(record_before, annotation("bgrun.io/release"))
    assert.equal("green", live_colour())
    assert.equal("", lock_holder())
  end)
end)
