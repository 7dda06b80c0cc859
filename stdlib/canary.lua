-- Canary release without a service mesh: traffic moves to the new colour in
-- steps, weighted by the ratio of ready pods. During the canary the
-- Service selects both colours through its `app` label alone (the
-- `version` key of its selector is removed); kube-proxy spreads
-- connections over every ready endpoint, so a colour's share of the
-- traffic is its share of the ready pods. Each step scales the new colour
-- up and waits for its pods to be ready BEFORE it scales the old one down
-- (the ready total never drops below what is serving), confirms the split
-- on the Service's endpoints, then runs the same analysis as a deploy's
-- monitoring (stdlib/monitor.lua) on the new pods for `pause` seconds. The
-- end is a blue-green deploy's: the Service on the new colour alone (one
-- patch with the release record), commit, the old colour at 0.
--
-- Built on bluegreen.deploy with a list of steps of its own, so the lock,
-- the journal and `bgrun resume`, hooks and the run report are the
-- deploy's. Any failure returns the Service to the old colour alone with
-- its replicas first: old scaled back up and ready, then the selector on
-- the old colour alone, then (the deploy's own compensation) the new
-- colour scaled back down with its image as it was.
local json = require("json")
local log = require("log")
local bluegreen = require("bluegreen")
local monitor = require("monitor")

local M = {}

M.DEFAULT_STEPS = "10,25,50,100"
M.DEFAULT_PAUSE = 60

local function usage(param, fmt, ...)
  bgrun.raise { module = "canary", op = "check parameters", code = "usage", reason = "BadParameter",
                parameter = param, message = ("parameter '%s': " .. fmt):format(param, ...) }
end

---The traffic weights of a `steps=` parameter: whole percentages from 1 to
---100, strictly increasing, the last one 100. Raises code="usage" naming
---the parameter otherwise.
---@param text string e.g. "10,25,50,100"
---@return integer[]
function M.parse_steps(text)
  if type(text) ~= "string" or text:match("^%s*$") then
    usage("steps", "empty: give increasing percentages ending at 100, e.g. %s", M.DEFAULT_STEPS)
  end
  local weights = {}
  for item in (text .. ","):gmatch("([^,]*),") do
    local w = item:match("^%s*(%d+)%s*$")
    w = w and math.tointeger(tonumber(w))
    if not w then
      usage("steps", "'%s' in %s is not a whole percentage", item, text)
    end
    if w < 1 or w > 100 then
      usage("steps", "%d in %s is outside 1 to 100", w, text)
    end
    if #weights > 0 and w <= weights[#weights] then
      usage("steps", "%s is not increasing (%d after %d)", text, w, weights[#weights])
    end
    weights[#weights + 1] = w
  end
  if weights[#weights] ~= 100 then
    usage("steps", "%s does not end at 100 (the canary ends with all traffic on the new colour)", text)
  end
  return weights
end

---Checks the `pause=` parameter (seconds of analysis at each step).
---@param pause number
---@return number
function M.check_pause(pause)
  if type(pause) ~= "number" or pause ~= pause or pause == math.huge then
    usage("pause", "%s is not a number of seconds", tostring(pause))
  end
  if pause < 0 then
    usage("pause", "%s is negative (seconds of analysis at each step: 0 or more)", tostring(pause))
  end
  return pause
end

---The replica counts of each step: with `total` replicas, weight w gives
---the new colour ceil(total*w/100) and the old one the rest. `traffic` is
---the share of ready pods the new colour then has (what kube-proxy sends
---it), which rounding makes differ from the weight asked for.
---@param weights integer[]
---@param total integer
---@return {weight: integer, new: integer, old: integer, traffic: number}[]
function M.plan(weights, total)
  assert(math.type(total) == "integer" and total >= 1, "canary.plan: total must be an integer >= 1")
  local out = {}
  for i, w in ipairs(weights) do
    local new = math.min(total, math.max(1, math.ceil(total * w / 100 - 1e-9)))
    local old = total - new
    out[i] = { weight = w, new = new, old = old, traffic = math.floor(new * 1000 / (new + old) + 0.5) / 10 }
  end
  return out
end

local function percent(x)
  if x == math.floor(x) then return ("%d%%"):format(math.floor(x)) end
  return ("%.1f%%"):format(x)
end

---Prints the plan (stdout): the steps, the replicas of each colour, the
---traffic share the new colour gets.
---@param p {app: string, tag: string, from: string, to: string, from_tag: string?, replicas: integer, pause: number, steps: table[]}
function M.print_plan(p)
  if log.format() == "json" then
    print(json.encode { canary_plan = p })
    return
  end
  local lines = {
    ("canary plan for %s %s: %s%s -> %s, %d replica(s), %s of analysis per step"):format(p.app, p.tag, p.from,
      p.from_tag and (" (" .. p.from_tag .. ")") or "", p.to, p.replicas, bgrun.fmt_duration(p.pause)),
    ("  %-5s %-7s %-7s %-7s %s"):format("step", "weight", p.to, p.from, "traffic to " .. p.to),
  }
  for i, st in ipairs(p.steps) do
    lines[#lines + 1] = ("  %-5d %-7s %-7d %-7d %s"):format(i, percent(st.weight), st.new, st.old, percent(st.traffic))
  end
  lines[#lines + 1] = ("  then: the Service selects %s alone, %s stays at 0, the release is recorded"):format(p.to, p.from)
  print(table.concat(lines, "\n"))
end

local function image_of(dep, container)
  local spec = (((dep or {}).spec or {}).template or {}).spec or {}
  for _, ct in ipairs(spec.containers or {}) do
    if container == nil or ct.name == container then return ct.image end
  end
end

local function world_changed(op, fmt, ...)
  bgrun.raise { module = "canary", op = op, code = "world_changed", reason = "WorldChanged",
                message = fmt:format(...) .. "; nothing was changed, a human must look" }
end

local function ready_of(c, ns, name)
  local dep = c:get("deployment", name, { namespace = ns })
  return dep and ((dep.status or {}).readyReplicas or 0) or 0
end

-- Returns the Service to the old colour alone, with its replicas first:
-- the old Deployment scaled back to d.replicas and rolled out, then one
-- patch putting the selector on the old colour (and the release record
-- the run found back), then the endpoints confirmed. Acts only on the
-- world the run left (d.expect): the Service selecting both colours or the
-- new one (with the resourceVersion the run's last patch returned), each
-- Deployment still on the image the run saw. Returns the seconds from the
-- patch to the endpoints confirming it, and when the patch was sent.
local function restore(c, d)
  local e = d.expect or {}
  local ns = d.namespace
  local old_name, new_name = d.app .. "-" .. d.old, d.app .. "-" .. d.new
  local op = "return traffic to " .. old_name
  local svc = c:get("service", d.app, { namespace = ns })
  if not svc then world_changed(op, "service %s is gone", d.app) end
  local selector = (svc.spec or {}).selector or {}
  local old = c:get("deployment", old_name, { namespace = ns })
  if not old then world_changed(op, "deployment %s is gone", old_name) end
  local old_image = image_of(old, e.container)
  if e.old_image and old_image ~= e.old_image then
    world_changed(op, "deployment %s runs %s, not %s as the run found it: another release changed it",
      old_name, tostring(old_image), e.old_image)
  end
  local function scale_old()
    if (old.spec.replicas or 0) ~= d.replicas or ready_of(c, ns, old_name) < d.replicas then
      c:scale("deployment", old_name, d.replicas, { namespace = ns })
      if not bgrun.dry_run() then
        c:rollout_status("deployment", old_name, { namespace = ns, timeout = d.rollout_timeout or 300 })
      end
      log.info("old colour back to its replicas", { deployment = old_name, replicas = d.replicas })
    end
  end
  if selector.version == d.old then
    -- the run never opened the Service to both colours (or it is back on
    -- the old one): only the old colour's replicas may need to come back
    scale_old()
    return 0, bgrun.now()
  end
  if selector.version ~= nil and selector.version ~= d.new then
    world_changed(op, "the Service %s selects version=%s, neither colour of this run", d.app,
      tostring(selector.version))
  end
  -- a run killed between its final switch and the journal line with that
  -- patch's resourceVersion: the release record on the Service is its own
  local rec = bluegreen.release_of(svc)
  local own_switch = selector.version == d.new and rec ~= nil and rec.canary and rec.by == d.holder
    and rec.colour == d.new and rec.image == e.image
  if e.service_rv and svc.metadata.resourceVersion ~= e.service_rv and not own_switch then
    world_changed(op, "the Service %s changed since the run left it (resourceVersion %s, the run left %s)",
      d.app, tostring(svc.metadata.resourceVersion), e.service_rv)
  end
  if e.image then
    local new = c:get("deployment", new_name, { namespace = ns })
    local image = new and image_of(new, e.container)
    if image ~= e.image then
      world_changed(op, "deployment %s runs %s, not %s as the run left it: another release changed it",
        new_name, tostring(image), e.image)
    end
  end
  scale_old()
  local patch = { spec = { selector = { version = d.old } } }
  if d.previous_record ~= nil then
    -- the record the run found goes back with the traffic (json.null
    -- removes one the final switch wrote where there was none)
    patch.metadata = { annotations = { [bluegreen.RELEASE_ANNOTATION] = d.previous_record or json.null } }
  end
  local t0 = bgrun.now()
  c:patch("service", d.app, patch, { type = "merge", namespace = ns })
  local patched_at = bgrun.now()
  if not bgrun.dry_run() then
    bluegreen.confirm_switch(c, { app = d.app, namespace = ns, colour = d.old, timeout = d.switch_timeout })
  end
  return bgrun.now() - t0, patched_at
end

---Undo actions `bgrun resume` runs from a journal's recorded data.
M.undo = {
  restore = function(d)
    local c = require("k8s").client { context = d.context, namespace = d.namespace }
    local seconds = restore(c, d)
    log.warn("traffic returned to the old colour alone", { colour = d.old, seconds = bgrun.fmt_duration(seconds) })
  end,
}

-- The ready endpoints of the Service (the pod names its EndpointSlices
-- serve), counted by colour (the pods' `version` label).
local function split_of(c, o, names)
  local counts = { [o.new] = 0, [o.old] = 0 }
  if #names == 0 then return counts end
  local colour = {}
  for _, pod in ipairs(c:list("pods", { namespace = o.namespace, labelSelector = "app=" .. o.app }).items or {}) do
    colour[pod.metadata.name] = ((pod.metadata or {}).labels or {}).version
  end
  for _, n in ipairs(names) do
    local k = colour[n] or "other"
    counts[k] = (counts[k] or 0) + 1
  end
  return counts
end

-- Waits until the Service's ready endpoints are o.want_new pods of the new
-- colour and o.want_old of the old one (a watch on its EndpointSlices).
local function await_split(c, o)
  local timeout = o.timeout or 60
  local function settled(names)
    local n = split_of(c, o, names)
    o.seen = n
    return n[o.new] == o.want_new and n[o.old] == o.want_old and (n.other or 0) == 0
  end
  if bluegreen.watch_serving(c, { app = o.app, namespace = o.namespace, timeout = timeout }, settled) then return end
  local seen = o.seen or {}
  bgrun.raise { module = "canary", op = "confirm the split of " .. o.app, code = "timeout", reason = "Timeout",
                message = ("endpoints of %s list %d %s and %d %s pod(s) after %ds, expected %d and %d")
                  :format(o.app, seen[o.new] or 0, o.new, seen[o.old] or 0, o.old, timeout,
                          o.want_new, o.want_old) }
end

local function copy(t)
  local r = {}
  for k, v in pairs(t or {}) do r[k] = v end
  return r
end

local function tag_of(image)
  local slash = (image or ""):match("^.*()/") or 0
  return (image or ""):sub(slash + 1):match(":([^:@]+)$")
end

-- The step after detect: the plan, from the replicas a deploy would give
-- the new colour (the environment's, else the live colour's). The update
-- step then starts the new colour at the first step's count.
local function plan_step(s)
  local cr = s.opts.canary_report
  s.total = s.replicas
  if math.type(s.total) ~= "integer" or s.total < 1 then
    bgrun.raise { module = "canary", op = "plan the canary of " .. s.app, code = "no_replicas", reason = "Invalid",
                  message = ("nothing to split: the live colour %s has %s replica(s) and the environment sets no "
                    .. "`replicas`"):format(s.live, tostring(s.total)) }
  end
  s.plan = M.plan(s.opts.weights, s.total)
  cr.from, cr.to, cr.image, cr.replicas = s.live, s.idle, s.image, s.total
  cr.from_image = s.live_image
  local same = {}
  for i = 2, #s.plan do
    if s.plan[i].new == s.plan[i - 1].new then same[#same + 1] = percent(s.plan[i].weight) end
  end
  M.print_plan { app = s.app, tag = s.tag, from = s.live, to = s.idle, from_tag = tag_of(s.live_image),
                 replicas = s.total, pause = s.opts.pause, steps = s.plan }
  if #same > 0 then
    log.warn(("with %d replica(s), step(s) %s give the same split as the step before: their analysis runs on "
      .. "the same traffic share"):format(s.total, table.concat(same, ", ")))
  end
  s.replicas = s.plan[1].new
end

-- One analysis of the new colour for `pause` seconds: the deploy's monitor
-- (stdlib/monitor.lua, with the environment's `monitor` settings and
-- whatever analyses it runs) on the new pods, wanting every one of them
-- ready. Fills entry.analysis ("passed", "failed", "skipped") and raises
-- the monitor's error on a failure.
local function analyse(s, entry, st)
  if s.opts.monitor == false then
    entry.analysis = "skipped"
    log.warn("no analysis (monitor = false): waiting the pause only", { pause = s.opts.pause })
    bgrun.sleep(s.opts.pause)
    return
  end
  local m = copy(s.opts.monitor)
  m.window = s.opts.pause
  m.namespace = s.namespace
  m.selector = s.new_selector
  m.service = m.service or s.app
  m.health_access = bluegreen.health_access(s.opts)
  m.replicas = st.new
  m.baseline = s.baseline
  m.on_tick = s.tick
  -- what analyses beyond the pod signals may template on
  m.colour, m.tag, m.weight, m.app = s.idle, s.tag, st.weight, s.app
  -- a monitor that fills opts.report as it goes leaves a failed step its
  -- measurements too (those of a metric analysis: `analysis`)
  m.report = {}
  local ok, r = pcall(monitor.watch, s.c, m)
  local res = ok and type(r) == "table" and r or m.report
  entry.checks, entry.failed_checks, entry.measurements = res.checks, res.failed_checks, res.analysis
  if not ok then
    entry.analysis = "failed"
    entry.problems = type(r) == "table" and r.problems or { tostring(r) }
    error(r, 0)
  end
  entry.analysis = "passed"
end

-- The canary itself, in the place of the deploy's "switch" step (so the
-- before_switch and after_switch hooks run around it): the Service opened
-- to both colours, each step scaled, confirmed and analysed, then the
-- Service on the new colour alone with the release record.
local function progress(s)
  local c, app, ns, old, new = s.c, s.app, s.namespace, s.live, s.idle
  local opts, cr = s.opts, s.opts.canary_report
  local old_name, new_name = app .. "-" .. old, app .. "-" .. new
  local dry = bgrun.dry_run()
  local current = { new = s.plan[1].new, old = s.live_replicas }
  s.new_selector = dry and ("app=%s,version=%s"):format(app, new) or bluegreen.rollout_selector(c, ns, app, new)
  s.baseline = not dry and monitor.baseline(c, { namespace = ns, selector = s.new_selector }) or {}

  local back = { module = "canary", action = "restore", context = opts.context, namespace = ns, app = app,
                 old = old, new = new, replicas = s.live_replicas, rollout_timeout = opts.rollout_timeout,
                 switch_timeout = opts.switch_timeout, previous_record = s.previous_record or false,
                 holder = require("lock").identity(),
                 expect = { image = s.image, old_image = s.live_image, container = s.ct.name } }
  s.step("open " .. app .. " to both colours", function()
    s.tick()
    s.undo.switch_back = on_failure("return traffic to " .. old .. " alone", function(err)
      local patched_at
      s.report.rollback_seconds, patched_at = restore(c, back)
      local seen = type(err) == "table" and err.detected_at
      if type(seen) == "number" then
        s.report.reaction_ms = math.floor((patched_at - seen) * 1000 + 0.5)
      end
      cr.rollback_seconds, cr.reaction_ms = s.report.rollback_seconds, s.report.reaction_ms
      log.warn("traffic returned to the old colour alone", { colour = old,
        seconds = bgrun.fmt_duration(s.report.rollback_seconds), reaction_ms = s.report.reaction_ms })
    end, back)
    -- the version key out of the selector: `app` alone selects both colours
    local opened = c:patch("service", app, { spec = { selector = { version = json.null } } },
                           { type = "merge", namespace = ns })
    if not dry and opened and opened.metadata then
      back.expect.service_rv = opened.metadata.resourceVersion
      s.undo.switch_back.update(back)
    end
    log.info("the Service selects both colours", { service = app, selector = "app=" .. app })
  end)

  for i, st in ipairs(s.plan) do
    local entry = { step = i, weight = st.weight, traffic = st.traffic,
                    replicas = { [new] = st.new, [old] = st.old }, analysis = "pending" }
    cr.steps[#cr.steps + 1] = entry
    local label = ("canary step %d/%d: %s to %s (%s %d, %s %d)"):format(i, #s.plan, percent(st.weight), new,
      new, st.new, old, st.old)
    local t0 = bgrun.now()
    local ok, err = pcall(s.step, label, function()
      s.tick()
      -- up first, and ready, before anything serving goes away
      if st.new ~= current.new then
        c:scale("deployment", new_name, st.new, { namespace = ns })
        current.new = st.new
      end
      if not dry then
        c:rollout_status("deployment", new_name, { namespace = ns, timeout = opts.rollout_timeout or 300 })
      end
      if st.old ~= current.old then
        c:scale("deployment", old_name, st.old, { namespace = ns })
        current.old = st.old
      end
      if dry then
        entry.analysis = "dry-run"
        log.info(("dry-run: would confirm %d %s and %d %s endpoint(s), then analyse %s for %s")
          :format(st.new, new, st.old, old, new_name, bgrun.fmt_duration(opts.pause)))
        return
      end
      await_split(c, { app = app, namespace = ns, new = new, old = old, want_new = st.new, want_old = st.old,
                       timeout = opts.switch_timeout })
      log.info("traffic split", { weight = percent(st.weight), traffic = percent(st.traffic),
                                  [new] = st.new, [old] = st.old })
      analyse(s, entry, st)
    end)
    entry.seconds = bgrun.now() - t0
    if not ok then
      if entry.analysis == "pending" then entry.analysis = "not run" end
      cr.aborted = { step = i, weight = st.weight, error = tostring(err):match("^[^\n]*") }
      error(err, 0)
    end
  end

  s.step("switch traffic to " .. new .. " alone", function()
    s.tick()
    local record = { colour = new, tag = s.tag, image = s.image, previous_colour = old,
                     previous_tag = tag_of(s.live_image), previous_image = s.live_image,
                     at = os.date("!%Y-%m-%dT%H:%M:%SZ"), by = require("lock").identity(), canary = true }
    local t0 = bgrun.now()
    -- one patch: the selector and the release record, as a deploy's switch
    local switched = c:patch("service", app, {
      metadata = { annotations = { [bluegreen.RELEASE_ANNOTATION] = json.encode(record) } },
      spec = { selector = { version = new } } }, { type = "merge", namespace = ns })
    if not dry and switched and switched.metadata then
      back.expect.service_rv = switched.metadata.resourceVersion
      s.undo.switch_back.update(back)
      bluegreen.confirm_switch(c, { app = app, namespace = ns, colour = new, timeout = opts.switch_timeout })
    end
    s.report.switch_seconds = bgrun.now() - t0
    cr.switch_seconds = s.report.switch_seconds
    log.info("traffic switched", { to = new, seconds = bgrun.fmt_duration(s.report.switch_seconds) })
  end)
end

---The steps of a canary, in the bluegreen.deploy way (see bluegreen.steps):
---detect, plan, update (the new colour at the first step's replicas),
---rollout, smoke, switch (the canary's steps and the final switch),
---retire (commit, old colour to 0).
M.steps = {
  bluegreen.step("detect"),
  { name = "plan", run = plan_step, step = false },
  bluegreen.step("update"),
  bluegreen.step("rollout"),
  bluegreen.step("smoke"),
  { name = "switch", run = progress, step = false },
  bluegreen.step("retire"),
}

---Runs a canary release of opts.tag. opts: those of bluegreen.deploy (app,
---namespace, context, tag, replicas, container, skip_tests, checks, smoke,
---smoke_access, smoke_url, rollout_timeout, switch_timeout, monitor,
---retire_delay, hooks, on_tick), and weights (from parse_steps) and pause
---(seconds of analysis at each step). Returns the canary's report: from,
---to, image, replicas, pause, steps = {step, weight, traffic, replicas =
---{colour = n}, analysis, checks, failed_checks, problems, measurements, seconds},
---aborted, switch_seconds, rollback_seconds, reaction_ms, total_seconds.
---@param c any k8s client
---@param opts table
---@return table report
function M.run(c, opts)
  assert(type(opts.weights) == "table" and #opts.weights > 0, "canary.run: opts.weights must be a list")
  M.check_pause(opts.pause)
  local cr = { app = opts.app, tag = opts.tag, pause = opts.pause, weights = opts.weights, steps = {} }
  if bgrun.report then bgrun.report { canary = cr } end
  local o = copy(opts)
  o.steps = opts.steps or M.steps
  o.canary_report = cr
  local t0 = bgrun.now()
  local report = bluegreen.deploy(c, o)
  cr.total_seconds = bgrun.now() - t0
  return cr, report
end

---Prints the report of a finished canary (text, or one JSON object with
-----log-format json).
---@param cr table canary.run's report
function M.print_report(cr)
  if log.format() == "json" then
    print(json.encode { canary = cr })
    return
  end
  local lines = { ("canary %s %s: %s -> %s (%s)"):format(cr.app, cr.tag, tostring(cr.from), tostring(cr.to),
    tostring(cr.image)) }
  for _, e in ipairs(cr.steps) do
    lines[#lines + 1] = ("  step %d %5s  %s %d, %s %d  traffic %-6s analysis %s%s  %s"):format(e.step,
      percent(e.weight), cr.to, e.replicas[cr.to] or 0, cr.from, e.replicas[cr.from] or 0, percent(e.traffic),
      e.analysis, e.checks and (" (%d check(s)%s)"):format(e.checks,
        (e.failed_checks or 0) > 0 and (", %d failed, tolerated"):format(e.failed_checks) or "") or "",
      bgrun.fmt_duration(e.seconds or 0))
    -- the metric analysis' lines, when the monitor ran one
    local has, metrics = pcall(require, "metrics")
    if e.measurements and has and type(metrics) == "table" and metrics.summary then
      for _, line in ipairs(metrics.summary(e.measurements)) do lines[#lines + 1] = "    " .. line end
    end
  end
  if cr.switch_seconds then
    lines[#lines + 1] = ("  %-44s %s"):format("cutover (selector patch to endpoints confirmed)",
      bgrun.fmt_duration(cr.switch_seconds))
  end
  lines[#lines + 1] = ("  %-44s %s"):format("total", bgrun.fmt_duration(cr.total_seconds or 0))
  print(table.concat(lines, "\n"))
end

return M
