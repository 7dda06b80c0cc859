-- Blue-green deploy of one app: two Deployments, <app>-blue and <app>-green,
-- behind one Service whose spec.selector.version names the live colour.
-- The idle colour gets the new image, is rolled out and smoke-tested on its
-- own pods, then the Service switches to it; a monitoring window follows.
-- Every change registers its compensation, so a failure at any point leaves
-- the old colour serving with its replicas.
local json = require("json")
local log = require("log")
local monitor = require("monitor")
local smoke = require("smoke")

local M = {}

local OTHER = { blue = "green", green = "blue" }

local function raise(t)
  t.module = t.module or "bluegreen"
  error(bgrun.error(t), 2)
end

---The image with its tag replaced: "reg:5000/app:v1" + "v2" -> "reg:5000/app:v2".
---@param image string
---@param tag string
---@return string
function M.with_tag(image, tag)
  local slash = image:match("^.*()/") or 0
  local colon = image:find(":", slash + 1, true)
  local at = image:find("@", slash + 1, true)
  local cut = at or colon
  return (cut and image:sub(1, cut - 1) or image) .. ":" .. tag
end

---The colour the Service sends traffic to.
---@param c any k8s client
---@param app string
---@param ns string?
---@return "blue"|"green", table service
function M.active_colour(c, app, ns)
  local svc = c:get("service", app, { namespace = ns })
  if not svc then
    raise { op = "detect colour", code = "no_service", reason = "NotFound",
            message = ("service %s not found in namespace %s"):format(app, tostring(ns)) }
  end
  local colour = ((svc.spec or {}).selector or {}).version
  if not OTHER[colour] then
    raise { op = "detect colour", code = "no_colour", reason = "Invalid",
            message = ("service %s selects version=%s; expected blue or green"):format(app, tostring(colour)) }
  end
  return colour, svc
end

local function container_of(dep, name)
  local containers = dep.spec.template.spec.containers
  if name then
    for _, ct in ipairs(containers) do
      if ct.name == name then return ct end
    end
    raise { op = "find container", code = "no_container", reason = "NotFound",
            message = ("deployment %s has no container %s"):format(dep.metadata.name, name) }
  end
  return containers[1]
end

local function port_of(ct)
  for _, p in ipairs(ct.ports or {}) do
    if p.containerPort then return p.containerPort end
  end
  return 80
end

local function ready_pod_urls(c, ns, selector, port)
  local urls = {}
  for _, pod in ipairs(c:list("pods", { namespace = ns, labelSelector = selector }).items or {}) do
    local ip = (pod.status or {}).podIP
    local ready = false
    for _, cond in ipairs((pod.status or {}).conditions or {}) do
      if cond.type == "Ready" and cond.status == "True" then ready = true end
    end
    if ip and ready and not pod.metadata.deletionTimestamp then
      local host = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
      urls[#urls + 1] = { name = pod.metadata.name, url = ("http://%s:%d"):format(host, port) }
    end
  end
  return urls
end

-- The pod names the endpoints of a service currently send traffic to.
local function endpoint_pods(ep)
  local names = {}
  for _, subset in ipairs((ep or {}).subsets or {}) do
    for _, addr in ipairs(subset.addresses or {}) do
      if addr.targetRef and addr.targetRef.name then names[#names + 1] = addr.targetRef.name end
    end
  end
  return names
end

---Waits until the service's endpoints list only pods of colour; returns the
---seconds it took.
---@param c any
---@param o table app, namespace, colour, timeout
---@return number
function M.confirm_switch(c, o)
  local t0 = bgrun.now()
  local want = {}
  for _, pod in ipairs(c:list("pods", { namespace = o.namespace,
      labelSelector = ("app=%s,version=%s"):format(o.app, o.colour) }).items or {}) do
    want[pod.metadata.name] = true
  end
  local function settled(ep)
    local names = endpoint_pods(ep)
    if #names == 0 then return false end
    for _, n in ipairs(names) do
      if not want[n] then return false end
    end
    return true
  end
  if settled(c:get("endpoints", o.app, { namespace = o.namespace })) then
    return bgrun.now() - t0
  end
  for ev, ep in c:watch("endpoints", { namespace = o.namespace, fieldSelector = "metadata.name=" .. o.app,
                                       timeout = o.timeout or 30 }) do
    if (ev == "ADDED" or ev == "MODIFIED") and settled(ep) then
      return bgrun.now() - t0
    end
  end
  raise { op = "confirm switch " .. o.app, code = "timeout", reason = "Timeout",
          message = ("endpoints of %s still list pods outside %s after %ds")
            :format(o.app, o.colour, o.timeout or 30) }
end

local function switch_to(c, o, colour)
  c:patch("service", o.app, { spec = { selector = { version = colour } } },
          { type = "merge", namespace = o.namespace })
end

-- The two compensations of a deploy, as functions of plain data so that
-- `bgrun resume` can run them from the run journal (M.undo) too. Each
-- carries what the run expects to find (d.expect) and checks the world
-- against it before acting: an undo acts only on the state it recorded.

local function world_changed(op, fmt, ...)
  raise { op = op, code = "world_changed", reason = "WorldChanged",
          message = fmt:format(...) .. "; nothing was changed, a human must look" }
end

local function image_of(dep, container)
  for _, ct in ipairs(((dep.spec or {}).template or {}).spec and dep.spec.template.spec.containers or {}) do
    if container == nil or ct.name == container then return ct.image end
  end
end

-- Puts the idle colour's image and replicas back as they were.
local function restore_idle(c, d)
  local e = d.expect
  if e then
    local op = "undo update of " .. d.deployment
    local svc = c:get("service", e.service, { namespace = d.namespace })
    local selected = svc and ((svc.spec or {}).selector or {}).version
    if selected == e.colour then
      world_changed(op, "the Service %s now sends traffic to %s: scaling %s down would cause an outage",
        e.service, e.colour, d.deployment)
    end
    local dep = c:get("deployment", d.deployment, { namespace = d.namespace })
    if not dep then
      world_changed(op, "deployment %s is gone", d.deployment)
    end
    local image = image_of(dep, d.container)
    if image == d.image and (dep.spec.replicas or 0) == d.replicas then
      log.info("nothing to undo: the deployment is as the run found it", { deployment = d.deployment })
      return
    end
    if image ~= e.image and image ~= d.image then
      world_changed(op, "deployment %s runs %s, not %s as the run left it: another release changed it",
        d.deployment, tostring(image), e.image)
    end
  end
  c:patch("deployment", d.deployment, {
    spec = { replicas = d.replicas,
             template = { spec = { containers = { { name = d.container, image = d.image } } } } },
  }, { type = "strategic", namespace = d.namespace })
end

-- Gives the old colour its replicas back, then the traffic; returns the
-- seconds from the selector patch to the endpoints confirming it.
local function switch_back(c, d)
  local live = d.app .. "-" .. d.colour
  local e = d.expect
  if e then
    local op = "undo switch of " .. d.app
    local svc = c:get("service", d.app, { namespace = d.namespace })
    if not svc then world_changed(op, "service %s is gone", d.app) end
    local selected = ((svc.spec or {}).selector or {}).version
    if selected ~= d.colour then
      if selected ~= e.colour then
        world_changed(op, "the Service %s selects version=%s, neither colour of this run", d.app, tostring(selected))
      end
      if e.service_rv and svc.metadata.resourceVersion ~= e.service_rv then
        world_changed(op, "the Service %s changed since the run switched it (resourceVersion %s, the run left %s)",
          d.app, tostring(svc.metadata.resourceVersion), e.service_rv)
      end
      local new = c:get("deployment", d.app .. "-" .. e.colour, { namespace = d.namespace })
      local image = new and image_of(new, e.container)
      if e.image and image ~= e.image then
        world_changed(op, "deployment %s-%s runs %s, not %s as the run left it: another release changed it",
          d.app, e.colour, tostring(image), e.image)
      end
    end
  end
  c:scale("deployment", live, d.replicas, { namespace = d.namespace })
  c:rollout_status("deployment", live, { namespace = d.namespace, timeout = d.rollout_timeout or 300 })
  local t0 = bgrun.now()
  switch_to(c, d, d.colour)
  local patched_at = bgrun.now()
  if not bgrun.dry_run() then
    M.confirm_switch(c, { app = d.app, namespace = d.namespace, colour = d.colour, timeout = d.switch_timeout })
  end
  return bgrun.now() - t0, patched_at
end

local function client_for(d)
  return require("k8s").client { context = d.context, namespace = d.namespace }
end

---Undo actions `bgrun resume` runs from a journal's recorded data.
M.undo = {
  restore_idle = function(d) restore_idle(client_for(d), d) end,
  switch_back = function(d)
    local seconds = switch_back(client_for(d), d)
    log.warn("traffic switched back", { colour = d.colour, seconds = bgrun.fmt_duration(seconds) })
  end,
}

---Deploys tag to the idle colour and switches traffic to it.
---opts: app, namespace, context (recorded for `bgrun resume`), tag, replicas, container (name), skip_tests,
---checks (smoke checks), smoke (options for smoke.run), rollout_timeout,
---switch_timeout, monitor (options for monitor.watch; false to skip),
---retire_delay (seconds before the old colour is scaled to 0), on_tick.
---Returns a report with the colours and timings.
---@param c any k8s client
---@param opts table
---@return table report
function M.deploy(c, opts)
  local app, ns, tag = opts.app, opts.namespace, opts.tag
  assert(type(app) == "string", "bluegreen.deploy: opts.app must be a string")
  assert(type(tag) == "string", "bluegreen.deploy: opts.tag must be a string")
  local tick = opts.on_tick or function() end
  local report = { app = app, tag = tag, timings = {} }
  local t_start = bgrun.now()
  local function timed(name, fn)
    local t0 = bgrun.now()
    local r = step(name, fn)
    report.timings[#report.timings + 1] = { step = name, seconds = bgrun.now() - t0 }
    return r
  end

  local live, idle, live_dep, idle_dep
  timed("detect the live colour", function()
    live = M.active_colour(c, app, ns)
    idle = OTHER[live]
    live_dep = c:get("deployment", app .. "-" .. live, { namespace = ns })
    idle_dep = c:get("deployment", app .. "-" .. idle, { namespace = ns })
    if not live_dep or not idle_dep then
      raise { op = "detect colour", code = "no_deployment", reason = "NotFound",
              message = ("deployments %s-blue and %s-green must both exist"):format(app, app) }
    end
    log.info("live colour", { live = live, idle = idle,
                              live_image = container_of(live_dep, opts.container).image })
  end)
  report.from, report.to = live, idle
  local live_replicas = live_dep.spec.replicas or 1
  local replicas = opts.replicas or live_replicas
  local idle_name = app .. "-" .. idle
  local ct = container_of(idle_dep, opts.container)
  local image = M.with_tag(ct.image, tag)
  report.image = image

  local undo = {}
  timed("update " .. idle_name, function()
    local before = { module = "bluegreen", action = "restore_idle", context = opts.context, namespace = ns,
                     deployment = idle_name, container = ct.name, image = ct.image,
                     replicas = idle_dep.spec.replicas or 0,
                     expect = { service = app, colour = idle, image = image } }
    undo.scale_down = on_failure("scale " .. idle_name .. " back down", function()
      restore_idle(c, before)
    end, before)
    c:patch("deployment", idle_name, {
      spec = { replicas = replicas,
               template = { spec = { containers = { { name = ct.name, image = image } } } } },
    }, { type = "strategic", namespace = ns })
    log.info("idle colour updated", { deployment = idle_name, image = image, replicas = replicas })
  end)

  if bgrun.dry_run() then
    -- nothing was changed, so there is no rollout to wait for or pods to test
    log.info("dry-run: would wait for the rollout and smoke-test the new pods", { deployment = idle_name })
  else
    timed("wait for the rollout of " .. idle_name, function()
      tick()
      c:rollout_status("deployment", idle_name, { namespace = ns, timeout = opts.rollout_timeout or 300 })
    end)
  end

  if bgrun.dry_run() then
    report.smoke = nil
  elseif opts.skip_tests then
    log.warn("smoke tests skipped (skip-tests=true)")
  else
    timed("smoke-test " .. idle_name, function()
      tick()
      local targets = ready_pod_urls(c, ns, ("app=%s,version=%s"):format(app, idle), port_of(ct))
      if #targets == 0 then
        raise { op = "smoke test", code = "no_pods", reason = "NotReady",
                message = ("no ready pods of %s to test"):format(idle_name) }
      end
      local sopts = opts.smoke or {}
      sopts.vars = sopts.vars or { version = tag }
      local r = smoke.run(targets, opts.checks or {}, sopts)
      smoke.print(r, { format = log.format() })
      report.smoke = { passed = r.passed, failed = r.failed, targets = #targets }
      if not r.ok then
        raise { op = "smoke test " .. idle_name, code = "smoke_failed", reason = "SmokeTestFailed",
                message = ("%d of %d checks failed on %s"):format(r.failed, r.passed + r.failed, idle_name) }
      end
    end)
  end

  timed("switch traffic to " .. idle, function()
    tick()
    local back = { module = "bluegreen", action = "switch_back", context = opts.context, namespace = ns,
                   app = app, colour = live, replicas = live_replicas, rollout_timeout = opts.rollout_timeout,
                   switch_timeout = opts.switch_timeout,
                   expect = { colour = idle, image = image, container = ct.name } }
    undo.switch_back = on_failure("switch traffic back to " .. live, function(err)
      local patched_at
      report.rollback_seconds, patched_at = switch_back(c, back)
      -- the reaction: from the monitor seeing the failure to the Service
      -- selecting the old colour again
      local seen = type(err) == "table" and err.detected_at
      if type(seen) == "number" then
        report.reaction_ms = math.floor((patched_at - seen) * 1000 + 0.5)
      end
      log.warn("traffic switched back", { colour = live, seconds = bgrun.fmt_duration(report.rollback_seconds),
                                          reaction_ms = report.reaction_ms })
    end, back)
    local t0 = bgrun.now()
    local switched = c:patch("service", app, { spec = { selector = { version = idle } } },
                             { type = "merge", namespace = ns })
    if not bgrun.dry_run() and switched and switched.metadata then
      -- what the undo will expect to find: the Service exactly as we left it
      back.expect.service_rv = switched.metadata.resourceVersion
      undo.switch_back.update(back)
    end
    if not bgrun.dry_run() then
      M.confirm_switch(c, { app = app, namespace = ns, colour = idle, timeout = opts.switch_timeout })
    end
    report.switch_seconds = bgrun.now() - t0
    log.info("traffic switched", { from = live, to = idle, seconds = bgrun.fmt_duration(report.switch_seconds) })
  end)

  if opts.monitor ~= false and not bgrun.dry_run() then
    timed("monitor " .. idle_name, function()
      local m = {} -- a copy: the environment's monitor table is the playbook's
      for k, v in pairs(opts.monitor or {}) do m[k] = v end
      m.namespace = ns
      m.selector = ("app=%s,version=%s"):format(app, idle)
      m.service = m.service or app
      m.replicas = m.replicas or replicas
      m.baseline = monitor.baseline(c, m)
      m.on_tick = tick
      report.monitor = monitor.watch(c, m)
    end)
  end

  -- From here the new colour is committed: never switch back on a failure
  -- of the clean-up, or we would undo a good deploy. The commit point
  -- releases every compensation of the run but the lock's (the database
  -- restore of a deploy-with-migration included).
  if opts.commit ~= false then
    commit("traffic switched and monitoring passed", {
      hint = opts.commit_hint or ("%s %s serves on %s; the old colour %s may still have replicas: "
        .. "kubectl -n %s scale deployment %s-%s --replicas=0"):format(app, tag, idle, live, ns, app, live) })
  else
    undo.switch_back.cancel()
    undo.scale_down.cancel()
  end

  timed("scale " .. app .. "-" .. live .. " to 0", function()
    if (opts.retire_delay or 0) > 0 then
      log.info("keeping the old colour up a little longer", { seconds = opts.retire_delay })
      bgrun.sleep(opts.retire_delay)
    end
    c:scale("deployment", app .. "-" .. live, 0, { namespace = ns })
  end)
  report.total_seconds = bgrun.now() - t_start
  return report
end

---Prints the run report (text table, or one JSON object with --log-format json).
---@param report table
function M.print_report(report)
  if log.format() == "json" then
    print(json.encode(report))
    return
  end
  local lines = {
    ("deployed %s %s: %s -> %s (%s)"):format(report.app, report.tag, tostring(report.from),
      tostring(report.to), tostring(report.image)),
  }
  for _, t in ipairs(report.timings) do
    lines[#lines + 1] = ("  %-44s %s"):format(t.step, bgrun.fmt_duration(t.seconds))
  end
  if report.switch_seconds then
    lines[#lines + 1] = ("  %-44s %s"):format("cutover (selector patch to endpoints confirmed)",
      bgrun.fmt_duration(report.switch_seconds))
  end
  if report.smoke then
    lines[#lines + 1] = ("  %-44s %d passed, %d failed on %d pod(s)"):format("smoke checks",
      report.smoke.passed, report.smoke.failed, report.smoke.targets)
  end
  if report.monitor then
    local failed = report.monitor.failed_checks or 0
    lines[#lines + 1] = ("  %-44s %d check(s), healthy%s"):format("monitoring", report.monitor.checks,
      failed > 0 and (", %d failed (tolerated)"):format(failed) or "")
  end
  if report.reaction_ms then
    lines[#lines + 1] = ("  %-44s %d ms"):format("reaction (failure seen to traffic back)", report.reaction_ms)
  end
  lines[#lines + 1] = ("  %-44s %s"):format("total", bgrun.fmt_duration(report.total_seconds or 0))
  print(table.concat(lines, "\n"))
end

return M
