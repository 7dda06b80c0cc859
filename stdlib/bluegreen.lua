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
  -- "app:v1@sha256:..." has both; a digest's own colon comes after its "@"
  local cut = (colon and at) and math.min(colon, at) or at or colon
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
  if colour == nil and ((svc.spec or {}).selector or {}).app then
    -- what a canary leaves while it runs, or when it was killed
    raise { op = "detect colour", code = "no_colour", reason = "CanaryOpen",
            message = ("service %s selects both colours (no version in its selector): a canary is running "
              .. "or did not finish; `bgrun resume` returns a killed one to its old colour"):format(app) }
  end
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

---The label selector of the pods a colour's current ReplicaSet runs (its
---pod-template-hash): the monitor and a canary's analysis watch those, not
---pods of an earlier template of the same colour still in their
---termination grace period. Falls back to app and version when no
---ReplicaSet matches.
---@return string
function M.rollout_selector(c, ns, app, colour)
  local base = ("app=%s,version=%s"):format(app, colour)
  local dep = c:get("deployment", app .. "-" .. colour, { namespace = ns })
  local rev = dep and ((dep.metadata or {}).annotations or {})["deployment.kubernetes.io/revision"]
  if not rev then return base end
  for _, rs in ipairs(c:list("replicasets", { namespace = ns, labelSelector = base }).items or {}) do
    local owned = false
    for _, ref in ipairs(rs.metadata.ownerReferences or {}) do
      owned = owned or ref.uid == dep.metadata.uid
    end
    local hash = (rs.metadata.labels or {})["pod-template-hash"]
    if owned and hash and ((rs.metadata.annotations or {})["deployment.kubernetes.io/revision"]) == rev then
      return base .. ",pod-template-hash=" .. hash
    end
  end
  return base
end

-- The ready pods of selector, as smoke-test targets: {name = pod name,
-- url = base URL}. access "pod": the pod IPs (the runner is in the cluster
-- network); "proxy": the API server's pods/NAME:PORT/proxy path (the k8s
-- client's credentials, through smoke.k8s_proxy_transport).
local function ready_pod_urls(c, ns, selector, port, access)
  local urls = {}
  local server = access == "proxy" and (c:info().server or ""):gsub("/+$", "") or nil
  for _, pod in ipairs(c:list("pods", { namespace = ns, labelSelector = selector }).items or {}) do
    local ip = (pod.status or {}).podIP
    local ready = false
    for _, cond in ipairs((pod.status or {}).conditions or {}) do
      if cond.type == "Ready" and cond.status == "True" then ready = true end
    end
    if ip and ready and not pod.metadata.deletionTimestamp then
      local url
      if server then
        url = ("%s/api/v1/namespaces/%s/pods/%s:%d/proxy"):format(server, ns or c:info().namespace,
                                                                   pod.metadata.name, port)
      else
        local host = ip:find(":", 1, true) and ("[" .. ip .. "]") or ip
        url = ("http://%s:%d"):format(host, port)
      end
      urls[#urls + 1] = { name = pod.metadata.name, url = url }
    end
  end
  return urls
end

-- "on 2 pod(s) via the API server proxy", for the report.
local function smoke_where(sm)
  if sm.access == "url" then return "through " .. tostring(sm.url) end
  return ("on %d pod(s)%s"):format(sm.targets, sm.access == "proxy" and " via the API server proxy" or "")
end

---How the new pods are reached for the smoke test: "pod" (pod IPs, from
---inside the cluster network), "proxy" (the API server's pods proxy, from
---anywhere the API is reachable) or "url" (env.smoke_url, a preview URL).
---An environment's smoke_access wins; otherwise "pod" for local, "proxy"
---for every other environment.
---@param name string the environment's name
---@param env table the environment
---@return string
function M.smoke_access(name, env)
  return env.smoke_access or (name == "local" and "pod" or "proxy")
end

M.SMOKE_ACCESS = { pod = true, proxy = true, url = true }

---How the monitor's health probe reaches the Service, from how the
---environment reaches its pods: "pod" (inside the cluster network) uses
---the Service's cluster IP; "proxy" and "url" (a laptop, a hosted CI
---runner) the API server's services proxy. A monitor table's own
---health_access (or health_url) wins.
---@param opts table the deploy's options (smoke_access, monitor)
---@return "service"|"proxy"
function M.health_access(opts)
  local m = type(opts.monitor) == "table" and opts.monitor or {}
  if m.health_access then return m.health_access end
  return (opts.smoke_access or "pod") == "pod" and "service" or "proxy"
end

-- Expands {colour} (or {color}), {app}, {namespace}, {version} in a
-- smoke_url template.
local function expand_url(tpl, vars)
  return (tpl:gsub("{(%w+)}", function(k)
    if k == "color" then k = "colour" end
    if vars[k] == nil then
      error(("bluegreen: smoke_url %q: unknown variable {%s} (known: colour, app, namespace, version)"):format(tpl, k), 0)
    end
    return tostring(vars[k])
  end))
end

-- Raises unless opts.smoke_access (default "pod") is usable; returns it.
local function check_smoke_access(opts)
  local access = opts.smoke_access or "pod"
  if not M.SMOKE_ACCESS[access] then
    raise { op = "smoke test", code = "bad_smoke_access", reason = "Invalid",
            message = ("smoke_access %q is not one of pod, proxy, url"):format(tostring(access)) }
  end
  if access == "url" and type(opts.smoke_url) ~= "string" then
    raise { op = "smoke test", code = "bad_smoke_access", reason = "Invalid",
            message = "smoke_access \"url\" needs smoke_url, e.g. \"https://{colour}.preview.example.com\"" }
  end
  return access
end

---The pod names a Service's EndpointSlices send traffic to: the endpoints
---not marked unready (conditions.ready nil means ready) of every slice, by
---targetRef, each name once (a dual-stack Service has a slice per family).
---@param slices table<any, table> EndpointSlice objects
---@return string[]
function M.serving_pods(slices)
  local names, seen = {}, {}
  for _, slice in pairs(slices or {}) do
    for _, e in ipairs(slice.endpoints or {}) do
      local ref = e.targetRef
      if (e.conditions or {}).ready ~= false and ref and ref.name and not seen[ref.name] then
        seen[ref.name] = true
        names[#names + 1] = ref.name
      end
    end
  end
  table.sort(names)
  return names
end

---Follows the discovery.k8s.io/v1 EndpointSlices of Service o.app (label
---kubernetes.io/service-name) until settled(pod_names) is true: a list,
---then a watch from its resourceVersion. false when o.timeout (default 30)
---seconds pass first.
---@param c any
---@param o table app, namespace, timeout
---@param settled fun(names: string[]): boolean
---@return boolean
function M.watch_serving(c, o, settled)
  local sel = "kubernetes.io/service-name=" .. o.app
  local slices = {}
  local list = c:list("endpointslices", { namespace = o.namespace, labelSelector = sel })
  for _, s in ipairs(list.items or {}) do slices[s.metadata.name] = s end
  if settled(M.serving_pods(slices)) then return true end
  for ev, s in c:watch("endpointslices", { namespace = o.namespace, labelSelector = sel, timeout = o.timeout or 30,
                                            resourceVersion = (list.metadata or {}).resourceVersion }) do
    if ev == "ADDED" or ev == "MODIFIED" then
      slices[s.metadata.name] = s
    elseif ev == "DELETED" then
      slices[s.metadata.name] = nil
    end
    if ev ~= "BOOKMARK" and settled(M.serving_pods(slices)) then return true end
  end
  return false
end

---Waits until the service's EndpointSlices list only pods of colour;
---returns the seconds it took.
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
  local function settled(names)
    if #names == 0 then return false end
    for _, n in ipairs(names) do
      if not want[n] then return false end
    end
    return true
  end
  if M.watch_serving(c, o, settled) then
    return bgrun.now() - t0
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
  local untouched = false
  if e then
    local op = "undo switch of " .. d.app
    local svc = c:get("service", d.app, { namespace = d.namespace })
    if not svc then world_changed(op, "service %s is gone", d.app) end
    local selected = ((svc.spec or {}).selector or {}).version
    -- the switch's patch never succeeded (refused, say a 403, or a
    -- before_switch hook failed first) and the Service still selects the
    -- old colour: there is no traffic to switch back, and patching it
    -- again would fail the same way
    untouched = selected == d.colour and not e.service_rv
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
  if untouched then
    -- only confirmed below: the Service's endpoints show the old colour
    log.info("nothing to switch back: the Service still selects the old colour",
      { service = d.app, colour = d.colour })
  elseif d.previous_record ~= nil then
    -- the release record goes back with the traffic: the failed release
    -- was never the last one (json.null removes a record there was none of)
    c:patch("service", d.app, {
      metadata = { annotations = { [M.RELEASE_ANNOTATION] = d.previous_record or json.null } },
      spec = { selector = { version = d.colour } } }, { type = "merge", namespace = d.namespace })
  else
    switch_to(c, d, d.colour)
  end
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
  -- a hook is code in the environment, not journal data: a resumed run
  -- says so instead of counting it as an undo that could not run
  hook_not_run = function(d)
    log.warn(("the %s hook of the killed run does not run on resume"):format(tostring(d.hook)))
  end,
}

-- Annotations on the main Service: the release the last switch made (written
-- in the same patch as the selector, so nothing else touches the Service
-- between the switch and the resourceVersion its undo expects) and the
-- preview waiting for a person.
M.RELEASE_ANNOTATION = "bgrun.io/release"
M.PREVIEW_ANNOTATION = "bgrun.io/preview"

local function tag_of(image)
  local slash = (image or ""):match("^.*()/") or 0
  return (image or ""):sub(slash + 1):match(":([^:@]+)$")
end

local function copy(t)
  local r = {}
  for k, v in pairs(t or {}) do r[k] = v end
  return r
end

local function who()
  return require("lock").identity()
end

local function now_iso()
  return os.date("!%Y-%m-%dT%H:%M:%SZ")
end

local function annotation(svc, key)
  local raw = (((svc or {}).metadata or {}).annotations or {})[key]
  if type(raw) ~= "string" or raw == "" then return nil end
  local ok, v = pcall(json.decode, raw)
  if ok and type(v) == "table" then return v end
  return nil
end

---The release recorded on the Service by the last switch (colour, tag, image,
---previous_colour, previous_tag, previous_image, at, by), or nil.
---@param svc table the main Service
---@return table?
function M.release_of(svc) return annotation(svc, M.RELEASE_ANNOTATION) end

---The preview recorded on the Service (colour, tag, image, container,
---replicas, image_before, replicas_before, from, by, at), or nil.
---@param svc table the main Service
---@return table?
function M.preview_of(svc) return annotation(svc, M.PREVIEW_ANNOTATION) end

-- Removes a preview: the <app>-preview Service (only one bgrun made for
-- this app) and the record on the main Service (only while it still names
-- d.colour). c: a client, or nil for one made from d (`bgrun resume`).
M.undo.remove_preview = function(d, c)
  c = c or client_for(d)
  local name = d.app .. "-preview"
  local pv = c:get("service", name, { namespace = d.namespace })
  if pv and (((pv.metadata or {}).labels or {})["bgrun.io/preview-of"] == d.app) then
    c:delete("service", name, { namespace = d.namespace })
  end
  local svc = c:get("service", d.app, { namespace = d.namespace })
  local state = M.preview_of(svc)
  if state and state.colour == d.colour then
    c:patch("service", d.app, { metadata = { annotations = { [M.PREVIEW_ANNOTATION] = json.null } } },
            { type = "merge", namespace = d.namespace })
  end
end

local function hook_list(hooks, name)
  local h = (hooks or {})[name]
  if h == nil then return {} end
  if type(h) == "function" then return { h } end
  if type(h) == "table" then
    for i, f in ipairs(h) do
      if type(f) ~= "function" then error(("bluegreen: hooks.%s[%d] must be a function"):format(name, i), 3) end
    end
    return h
  end
  error(("bluegreen: hooks.%s must be a function or a list of functions"):format(name), 3)
end

M.HOOKS = { "before_switch", "after_switch", "on_abort", "on_success" }

---Hooks of several sources (environments.lua's env.hooks, the playbook's)
---as one table: each name maps to the list of their functions, in order.
---@param ... table? hook tables: name -> function or list of functions
---@return table<string, function[]>
function M.merge_hooks(...)
  local merged = {}
  for i = 1, select("#", ...) do
    local hooks = select(i, ...)
    for _, name in ipairs(M.HOOKS) do
      for _, f in ipairs(hook_list(hooks, name)) do
        merged[name] = merged[name] or {}
        merged[name][#merged[name] + 1] = f
      end
    end
    for name in pairs(hooks or {}) do
      local known = false
      for _, n in ipairs(M.HOOKS) do known = known or n == name end
      if not known then error(("bluegreen: unknown hook %q (known: %s)"):format(tostring(name),
        table.concat(M.HOOKS, ", ")), 2) end
    end
  end
  return merged
end

local function run_hooks(s, name, ...)
  local fns = hook_list(s.hooks, name)
  if #fns == 0 then return end
  local args = table.pack(...)
  s.step("hook " .. name, function()
    for _, f in ipairs(fns) do f(s, table.unpack(args, 1, args.n)) end
  end)
end

-- The steps of a deploy. Each is {name =, run = function(s)}: s is the
-- state the steps share (below, in M.deploy). These built-in ones name and
-- time their own steps (step = false), as their names carry the colour.

local function detect(s)
  local c, app, ns, opts = s.c, s.app, s.namespace, s.opts
  s.step("detect the live colour", function()
    local svc
    s.live, svc = M.active_colour(c, app, ns)
    s.idle = OTHER[s.live]
    -- the release record the switch replaces, put back if it switches back
    s.previous_record = (((svc.metadata or {}).annotations or {})[M.RELEASE_ANNOTATION])
    local open = M.preview_of(svc)
    if s.preview_state then
      if s.preview_state.colour ~= s.idle then
        raise { op = "promote " .. app, code = "preview_changed", reason = "PreviewChanged",
                message = ("the Service %s selects version=%s, the previewed colour %s already serves")
                  :format(app, s.live, s.preview_state.colour) }
      end
    elseif open then
      raise { op = "detect colour", code = "preview_open", reason = "PreviewOpen",
              message = ("%s %s is in preview on %s (by %s at %s): promote or abort it first")
                :format(app, tostring(open.tag), tostring(open.colour), tostring(open.by), tostring(open.at)) }
    end
    s.live_dep = c:get("deployment", app .. "-" .. s.live, { namespace = ns })
    s.idle_dep = c:get("deployment", app .. "-" .. s.idle, { namespace = ns })
    if not s.live_dep or not s.idle_dep then
      raise { op = "detect colour", code = "no_deployment", reason = "NotFound",
              message = ("deployments %s-blue and %s-green must both exist"):format(app, app) }
    end
    log.info("live colour", { live = s.live, idle = s.idle,
                              live_image = container_of(s.live_dep, opts.container).image })
  end)
  s.report.from, s.report.to = s.live, s.idle
  s.live_replicas = s.live_dep.spec.replicas or 1
  s.live_image = container_of(s.live_dep, opts.container).image
  s.replicas = opts.replicas or s.live_replicas
  s.idle_name = s.app .. "-" .. s.idle
  s.ct = container_of(s.idle_dep, opts.container)
  s.image = s.preview_state and s.preview_state.image or M.with_tag(s.ct.image, s.tag)
  s.report.image = s.image
end

local function update(s)
  local c, ns = s.c, s.namespace
  s.step("update " .. s.idle_name, function()
    local before = { module = "bluegreen", action = "restore_idle", context = s.opts.context, namespace = ns,
                     deployment = s.idle_name, container = s.ct.name, image = s.ct.image,
                     replicas = s.idle_dep.spec.replicas or 0,
                     expect = { service = s.app, colour = s.idle, image = s.image } }
    s.before = before
    s.undo.scale_down = on_failure("scale " .. s.idle_name .. " back down", function()
      restore_idle(c, before)
    end, before)
    c:patch("deployment", s.idle_name, {
      spec = { replicas = s.replicas,
               template = { spec = { containers = { { name = s.ct.name, image = s.image } } } } },
    }, { type = "strategic", namespace = ns })
    log.info("idle colour updated", { deployment = s.idle_name, image = s.image, replicas = s.replicas })
  end)
end

local function rollout(s)
  if bgrun.dry_run() then
    -- nothing was changed, so there is no rollout to wait for or pods to test
    log.info("dry-run: would wait for the rollout and smoke-test the new pods",
             { deployment = s.idle_name, smoke_access = s.opts.smoke_access or "pod" })
    return
  end
  s.step("wait for the rollout of " .. s.idle_name, function()
    s.tick()
    s.c:rollout_status("deployment", s.idle_name, { namespace = s.namespace,
                                                     timeout = s.opts.rollout_timeout or 300 })
  end)
end

local function smoke_test(s)
  local opts = s.opts
  if bgrun.dry_run() then
    s.report.smoke = nil
    return
  elseif opts.skip_tests then
    log.warn("smoke tests skipped (skip-tests=true)")
    return
  end
  s.step("smoke-test " .. s.idle_name, function()
    s.tick()
    local access = check_smoke_access(opts)
    local targets, transport
    if access == "url" then
      local url = expand_url(opts.smoke_url, { colour = s.idle, app = s.app, namespace = s.namespace, version = s.tag })
      targets = { { name = url, url = url } }
    else
      targets = ready_pod_urls(s.c, s.namespace, ("app=%s,version=%s"):format(s.app, s.idle), port_of(s.ct), access)
      if #targets == 0 then
        raise { op = "smoke test", code = "no_pods", reason = "NotReady",
                message = ("no ready pods of %s to test"):format(s.idle_name) }
      end
      if access == "proxy" then transport = smoke.k8s_proxy_transport(s.c) end
    end
    log.info("smoke-testing " .. s.idle_name, { access = access, targets = #targets })
    local sopts = copy(opts.smoke)
    sopts.vars = sopts.vars or { version = s.tag }
    sopts.transport = sopts.transport or transport
    local r = smoke.run(targets, opts.checks or {}, sopts)
    smoke.print(r, { format = log.format() })
    s.report.smoke = { passed = r.passed, failed = r.failed, targets = #targets, access = access,
                       url = access == "url" and targets[1].url or nil }
    if not r.ok then
      raise { op = "smoke test " .. s.idle_name, code = "smoke_failed", reason = "SmokeTestFailed",
              message = ("%d of %d checks failed on %s"):format(r.failed, r.passed + r.failed, s.idle_name) }
    end
  end)
end

local function switch(s)
  local c, app, ns, live, idle = s.c, s.app, s.namespace, s.live, s.idle
  s.step("switch traffic to " .. idle, function()
    s.tick()
    local back = { module = "bluegreen", action = "switch_back", context = s.opts.context, namespace = ns,
                   app = app, colour = live, replicas = s.live_replicas, rollout_timeout = s.opts.rollout_timeout,
                   switch_timeout = s.opts.switch_timeout, previous_record = s.previous_record or false,
                   expect = { colour = idle, image = s.image, container = s.ct.name } }
    s.undo.switch_back = on_failure("switch traffic back to " .. live, function(err)
      local patched_at
      s.report.rollback_seconds, patched_at = switch_back(c, back)
      -- the reaction: from the monitor seeing the failure to the Service
      -- selecting the old colour again
      local seen = type(err) == "table" and err.detected_at
      if type(seen) == "number" then
        s.report.reaction_ms = math.floor((patched_at - seen) * 1000 + 0.5)
      end
      log.warn("traffic switched back", { colour = live, seconds = bgrun.fmt_duration(s.report.rollback_seconds),
                                          reaction_ms = s.report.reaction_ms })
    end, back)
    local release = { colour = idle, tag = s.tag, image = s.image, previous_colour = live,
                      previous_tag = tag_of(s.live_image), previous_image = s.live_image,
                      at = now_iso(), by = who() }
    local annotations = { [M.RELEASE_ANNOTATION] = json.encode(release) }
    if s.preview_state then annotations[M.PREVIEW_ANNOTATION] = json.null end
    local t0 = bgrun.now()
    -- one patch: the selector and the release record together, so that the
    -- resourceVersion it returns is the one the switch-back expects
    local switched = c:patch("service", app, { metadata = { annotations = annotations },
                                               spec = { selector = { version = idle } } },
                             { type = "merge", namespace = ns })
    if not bgrun.dry_run() and switched and switched.metadata then
      -- what the undo will expect to find: the Service exactly as we left it
      back.expect.service_rv = switched.metadata.resourceVersion
      s.undo.switch_back.update(back)
    end
    if not bgrun.dry_run() then
      M.confirm_switch(c, { app = app, namespace = ns, colour = idle, timeout = s.opts.switch_timeout })
    end
    s.report.switch_seconds = bgrun.now() - t0
    log.info("traffic switched", { from = live, to = idle, seconds = bgrun.fmt_duration(s.report.switch_seconds) })
  end)
end

local function watch(s)
  if s.opts.monitor == false then return end
  if bgrun.dry_run() then
    -- the plan: what the metric analysis would ask Prometheus
    local m = s.opts.monitor or {}
    for _, line in ipairs(m.metrics and require("metrics").plan(m.metrics, {
      colour = s.idle, tag = s.tag, namespace = s.namespace, app = s.app, interval = m.interval or monitor.defaults.interval,
      window = m.window or monitor.defaults.window }) or {}) do
      log.info("dry-run: would measure " .. line)
    end
    return
  end
  s.step("monitor " .. s.idle_name, function()
    local m = copy(s.opts.monitor)
    m.namespace = s.namespace
    m.selector = M.rollout_selector(s.c, s.namespace, s.app, s.idle)
    m.service = m.service or s.app
    m.health_access = M.health_access(s.opts)
    m.replicas = m.replicas or s.replicas
    m.baseline = monitor.baseline(s.c, m)
    m.on_tick = s.tick
    -- the metric analysis' query templates: {colour}, {tag}, {namespace}, {app}
    m.colour, m.tag, m.app = s.idle, s.tag, s.app
    -- filled as the monitor goes: a failed monitor's report shows its measurements
    s.report.monitor = {}
    m.report = s.report.monitor
    monitor.watch(s.c, m)
  end)
end

local function retire(s)
  local opts, app, live, idle = s.opts, s.app, s.live, s.idle
  -- From here the new colour is committed: never switch back on a failure
  -- of the clean-up, or we would undo a good deploy. The commit point
  -- releases every compensation of the run but the lock's (the database
  -- restore of a deploy-with-migration included).
  if opts.commit ~= false then
    commit("traffic switched and monitoring passed", {
      hint = opts.commit_hint or ("%s %s serves on %s; the old colour %s may still have replicas: "
        .. "kubectl -n %s scale deployment %s-%s --replicas=0"):format(app, s.tag, idle, live, s.namespace, app, live) })
  else
    cancel_all(s.undo)
  end
  s.step("scale " .. app .. "-" .. live .. " to 0", function()
    if (opts.retire_delay or 0) > 0 then
      log.info("keeping the old colour up a little longer", { seconds = opts.retire_delay })
      bgrun.sleep(opts.retire_delay)
    end
    -- scaling to 0 is idempotent: a transient API error or a conflict is
    -- tried again (past the commit point a failure here is for a human)
    for attempt = 1, 4 do
      local ok, err = pcall(s.c.scale, s.c, "deployment", app .. "-" .. live, 0, { namespace = s.namespace })
      if ok then break end
      local again = require("lock").transient(err) or (type(err) == "table" and err.code == 409)
      if not again or attempt == 4 then error(err, 0) end
      log.warn("cannot scale the old colour down; retrying", { error = tostring(err), attempt = attempt })
      bgrun.sleep(0.5 * attempt)
    end
  end)
end

---The steps of a deploy, in order: {name =, run = function(s)} each.
---`bluegreen.deploy(c, {steps = ...})` runs another list: reorder these,
---drop some, or add your own; a step of your own (without `step = false`)
---runs as a named, timed step. The hooks before_switch / after_switch run
---around the step named "switch"; a preview stops before it.
M.steps = {
  { name = "detect", run = detect, step = false },
  { name = "update", run = update, step = false },
  { name = "rollout", run = rollout, step = false },
  { name = "smoke", run = smoke_test, step = false },
  { name = "switch", run = switch, step = false },
  { name = "monitor", run = watch, step = false },
  { name = "retire", run = retire, step = false },
}

---The built-in step called name (a copy: changing it changes nothing else).
---@param name string
---@return {name: string, run: fun(s: table), step: boolean?}
function M.step(name)
  for _, st in ipairs(M.steps) do
    if st.name == name then return copy(st) end
  end
  error(("bluegreen.step: no step %q"):format(tostring(name)), 2)
end

-- Opens the preview: a Service <app>-preview selecting the new colour, and
-- the preview recorded on the main Service; the new colour keeps running.
local function open_preview(s)
  local c, app, ns = s.c, s.app, s.namespace
  local name = app .. "-preview"
  s.step("open the preview " .. name, function()
    local main = c:get("service", app, { namespace = ns })
    local ports = {}
    for _, p in ipairs(((main or {}).spec or {}).ports or {}) do
      ports[#ports + 1] = { name = p.name, port = p.port, targetPort = p.targetPort, protocol = p.protocol }
    end
    local undo = { module = "bluegreen", action = "remove_preview", context = s.opts.context, namespace = ns,
                   app = app, colour = s.idle }
    s.undo.remove_preview = on_failure("remove the preview " .. name, function()
      M.undo.remove_preview(undo, c)
    end, undo)
    local existing = c:get("service", name, { namespace = ns })
    if existing then
      -- a preview Service left by an earlier run is ours to replace; anything else is not
      if ((existing.metadata or {}).labels or {})["bgrun.io/preview-of"] ~= app then
        raise { op = "open preview", code = "preview_exists", reason = "AlreadyExists",
                message = ("service %s exists and was not made by bgrun (no bgrun.io/preview-of=%s label)")
                  :format(name, app) }
      end
      c:delete("service", name, { namespace = ns })
    end
    c:create({ apiVersion = "v1", kind = "Service",
               metadata = { name = name, namespace = ns,
                            labels = { app = app, ["app.kubernetes.io/managed-by"] = "bgrun",
                                       ["bgrun.io/preview-of"] = app } },
               spec = { selector = { app = app, version = s.idle }, ports = ports } }, { namespace = ns })
    local state = { colour = s.idle, tag = s.tag, image = s.image, container = s.ct.name, replicas = s.replicas,
                    image_before = s.before and s.before.image, replicas_before = s.before and s.before.replicas,
                    from = s.live, by = who(), at = now_iso() }
    c:patch("service", app, { metadata = { annotations = { [M.PREVIEW_ANNOTATION] = json.encode(state) } } },
            { type = "merge", namespace = ns })
    s.report.preview = { service = name, colour = s.idle, tag = s.tag, image = s.image, replicas = s.replicas }
    log.info("preview open: traffic stays on the live colour", { service = name, colour = s.idle,
                                                                live = s.live })
  end)
  -- the preview stands: nothing of it is undone when this run ends
  cancel_all(s.undo)
end

---Deploys tag to the idle colour and switches traffic to it.
---opts: app, namespace, context (recorded for `bgrun resume`), tag, replicas, container (name), skip_tests,
---checks (smoke checks), smoke (options for smoke.run), smoke_access ("pod",
---the default, "proxy" or "url": how the new pods are reached, see
---M.smoke_access), smoke_url (the template for "url": {colour}, {app},
---{namespace}, {version}), rollout_timeout,
---switch_timeout, monitor (options for monitor.watch; false to skip),
---retire_delay (seconds before the old colour is scaled to 0), on_tick,
---steps (the list to run instead of M.steps), hooks (before_switch,
---after_switch, on_abort, on_success: functions or lists of them, called
---with the shared state s), preview (stop before the switch and open a
---preview instead). Tables in opts are never written to.
---Returns a report with the colours and timings.
---@param c any k8s client
---@param opts table
---@return table report
function M.deploy(c, opts)
  local app, ns, tag = opts.app, opts.namespace, opts.tag
  assert(type(app) == "string", "bluegreen.deploy: opts.app must be a string")
  assert(type(tag) == "string", "bluegreen.deploy: opts.tag must be a string")
  -- a smoke test that cannot run is found before anything changes
  if not opts.skip_tests and not opts.preview_state then check_smoke_access(opts) end
  -- so is a monitor (metric analysis) that could not run
  if opts.monitor then monitor.validate(opts.monitor) end
  local report = { app = app, tag = tag, timings = {} }
  -- the run report carries it (by reference: later times show too)
  if bgrun.report then bgrun.report { deploy = report } end
  local t_start = bgrun.now()
  local s = { c = c, opts = opts, app = app, namespace = ns, tag = tag, report = report, undo = {},
              tick = opts.on_tick or function() end, hooks = M.merge_hooks(opts.hooks),
              preview_state = opts.preview_state }
  function s.step(name, fn)
    local t0 = bgrun.now()
    local r = step(name, fn)
    report.timings[#report.timings + 1] = { step = name, seconds = bgrun.now() - t0 }
    return r
  end
  local aborts = hook_list(s.hooks, "on_abort")
  if #aborts > 0 then
    -- registered first, so it runs last: after the deploy was undone
    s.undo.on_abort = on_failure("hook on_abort", function(err)
      for _, f in ipairs(aborts) do
        local ok, herr = pcall(f, s, err)
        if not ok then log.warn("the on_abort hook failed", { error = tostring(herr) }) end
      end
    end, { module = "bluegreen", action = "hook_not_run", hook = "on_abort" })
  end

  for _, st in ipairs(opts.steps or M.steps) do
    if st.name == "switch" then
      if opts.preview then
        open_preview(s)
        report.total_seconds = bgrun.now() - t_start
        return report
      end
      run_hooks(s, "before_switch")
    end
    if st.step == false then
      st.run(s)
    else
      s.step(st.name, function() st.run(s) end)
    end
    if st.name == "switch" then run_hooks(s, "after_switch") end
  end
  run_hooks(s, "on_success")
  report.total_seconds = bgrun.now() - t_start
  return report
end

local function preview_refusal(app, ns, svc)
  if not svc then
    raise { op = "find preview", code = "no_service", reason = "NotFound",
            message = ("service %s not found in namespace %s"):format(app, tostring(ns)) }
  end
  raise { op = "find preview", code = "usage", reason = "NoPreview",
          message = ("nothing is in preview: service %s has no %s annotation (deploy with preview=true first)")
            :format(app, M.PREVIEW_ANNOTATION) }
end

-- The previewed pods still as the preview left them: the image recorded
-- and every wanted replica ready.
local function check_preview(c, app, ns, state)
  local name = app .. "-" .. state.colour
  local dep = c:get("deployment", name, { namespace = ns })
  local image = dep and image_of(dep, state.container)
  if image ~= state.image then
    raise { op = "check preview " .. name, code = "preview_changed", reason = "PreviewChanged",
            message = ("deployment %s runs %s, not the previewed %s"):format(name, tostring(image), state.image) }
  end
  local want = dep.spec.replicas or 0
  local ready, unready = 0, {}
  for _, pod in ipairs(c:list("pods", { namespace = ns,
      labelSelector = ("app=%s,version=%s"):format(app, state.colour) }).items or {}) do
    local ok = false
    for _, cond in ipairs((pod.status or {}).conditions or {}) do
      if cond.type == "Ready" and cond.status == "True" then ok = true end
    end
    if pod.metadata.deletionTimestamp then
      -- going away: neither counted nor blamed
    elseif ok then ready = ready + 1
    else unready[#unready + 1] = pod.metadata.name end
  end
  if want == 0 or ready < want or #unready > 0 then
    raise { op = "check preview " .. name, code = "preview_not_ready", reason = "NotReady",
            message = ("the previewed pods of %s are not ready: %d of %d ready%s"):format(name, ready, want,
              #unready > 0 and (" (not ready: " .. table.concat(unready, ", ") .. ")") or "") }
  end
end

---The preview recorded on the app's Service; raises code="usage" when
---nothing is in preview.
---@param c any
---@param app string
---@param ns string?
---@return table state, table svc
function M.preview(c, app, ns)
  local svc = c:get("service", app, { namespace = ns })
  local state = M.preview_of(svc)
  if not state then preview_refusal(app, ns, svc) end
  return state, svc
end

-- Takes over the previewed colour: its compensations as the deploy's update
-- step registered them (scale it back as it was, remove the preview).
local function adopt_preview(s)
  local c, ns, state = s.c, s.namespace, s.preview_state
  s.step("check the preview of " .. s.idle_name, function()
    check_preview(c, s.app, ns, state)
    s.replicas = state.replicas or s.replicas
    local undo = { module = "bluegreen", action = "remove_preview", context = s.opts.context, namespace = ns,
                   app = s.app, colour = s.idle }
    s.undo.remove_preview = on_failure("remove the preview " .. s.app .. "-preview", function()
      M.undo.remove_preview(undo, c)
    end, undo)
    local before = { module = "bluegreen", action = "restore_idle", context = s.opts.context, namespace = ns,
                     deployment = s.idle_name, container = state.container or s.ct.name,
                     image = state.image_before or state.image, replicas = state.replicas_before or 0,
                     expect = { service = s.app, colour = s.idle, image = state.image } }
    s.undo.scale_down = on_failure("scale " .. s.idle_name .. " back down", function()
      restore_idle(c, before)
    end, before)
  end)
end

local function close_preview(s)
  s.step("remove the preview " .. s.app .. "-preview", function()
    local name = s.app .. "-preview"
    if s.c:get("service", name, { namespace = s.namespace }) then
      s.c:delete("service", name, { namespace = s.namespace })
    end
  end)
end

---Promotes the preview: checks the previewed pods (still ready, still the
---recorded image), then switches, monitors and retires as a deploy does,
---with the same compensations (a failed monitor switches back and scales
---the previewed colour back as it was before the preview). opts as for
---deploy (app, namespace, context, monitor, retire_delay, hooks, on_tick).
---@param c any
---@param opts table
---@return table report
function M.promote(c, opts)
  local state = M.preview(c, opts.app, opts.namespace)
  local o = copy(opts)
  o.tag, o.preview_state, o.preview = state.tag, state, false
  o.steps = o.steps or {
    M.step("detect"), { name = "adopt", run = adopt_preview, step = false },
    M.step("switch"), M.step("monitor"), M.step("retire"),
    { name = "close preview", run = close_preview, step = false },
  }
  local report = M.deploy(c, o)
  report.promoted = true
  return report
end

---Waits opts.seconds while the preview stays healthy (still recorded, the
---previewed pods ready, the recorded image), checking every opts.interval
---(default 5 s). Raises code="preview_closed" when someone promoted or
---aborted it meanwhile, and the check's error (preview_not_ready,
---preview_changed) when it turned unhealthy.
---@param c any
---@param opts {app: string, namespace: string?, seconds: number, interval: number?}
function M.await_preview(c, opts)
  local app, ns = opts.app, opts.namespace
  local t0 = bgrun.now()
  local first
  step(("wait %ds of healthy preview"):format(opts.seconds), function()
    while true do
      local state = M.preview_of(c:get("service", app, { namespace = ns }))
      if not state or (first and (state.colour ~= first.colour or state.image ~= first.image)) then
        raise { op = "auto-promote " .. app, code = "preview_closed", reason = "PreviewClosed",
                message = ("the preview of %s was closed (promoted or aborted) during the wait"):format(app) }
      end
      first = first or state
      if not bgrun.dry_run() then check_preview(c, app, ns, state) end
      local left = opts.seconds - (bgrun.now() - t0)
      if left <= 0 then break end
      log.info("preview healthy", { elapsed = bgrun.fmt_duration(bgrun.now() - t0) })
      bgrun.sleep(math.min(opts.interval or 5, left))
    end
  end)
end

---Aborts the preview: removes the preview Service, scales the previewed
---colour down (its image and replicas back as before the preview), clears
---the record. Refuses (code="usage") when nothing is in preview, and when
---the previewed colour serves traffic.
---@param c any
---@param opts {app: string, namespace: string?, context: string?}
---@return table report
function M.abort_preview(c, opts)
  local app, ns = opts.app, opts.namespace
  local t0 = bgrun.now()
  local state, svc = M.preview(c, app, ns)
  local report = { app = app, aborted = state.colour, tag = state.tag, image = state.image }
  if bgrun.report then bgrun.report { abort = report } end
  local d = { module = "bluegreen", action = "remove_preview", context = opts.context, namespace = ns,
              app = app, colour = state.colour,
              deployment = app .. "-" .. state.colour, container = state.container,
              image = state.image_before or state.image, replicas = state.replicas_before or 0 }
  step("abort the preview of " .. app .. "-" .. state.colour, function()
    if ((svc.spec or {}).selector or {}).version == state.colour then
      raise { op = "abort preview", code = "preview_changed", reason = "PreviewChanged",
              message = ("the Service %s sends traffic to the previewed colour %s: use switch-back instead")
                :format(app, state.colour) }
    end
    restore_idle(c, { namespace = ns, deployment = d.deployment, container = d.container, image = d.image,
                      replicas = d.replicas, expect = { service = app, colour = state.colour, image = state.image } })
    M.undo.remove_preview(d, c)
  end)
  report.seconds = bgrun.now() - t0
  return report
end

---Points traffic at the previous colour the last switch recorded on the
---Service (bgrun.io/release). A warm colour takes one selector patch and the
---endpoint confirmation; a scaled-down one is scaled to opts.replicas and
---rolled out first. The record is turned round, so a second switch-back
---goes forward again. opts: app, namespace, context, replicas,
---rollout_timeout, switch_timeout. Returns {from, to, tag, scaled_up,
---switch_back_seconds, switch_seconds}.
---@param c any
---@param opts table
---@return table report
function M.switch_to_previous(c, opts)
  local app, ns = opts.app, opts.namespace
  local t0 = bgrun.now()
  local svc = c:get("service", app, { namespace = ns })
  if not svc then
    raise { op = "switch back", code = "no_service", reason = "NotFound",
            message = ("service %s not found in namespace %s"):format(app, tostring(ns)) }
  end
  local rel = M.release_of(svc)
  local current = ((svc.spec or {}).selector or {}).version
  if not rel or not OTHER[rel.previous_colour or ""] then
    raise { op = "switch back", code = "usage", reason = "NoRelease",
            message = ("no previous colour recorded on service %s (%s): nothing to switch back to")
              :format(app, M.RELEASE_ANNOTATION) }
  end
  if current == rel.previous_colour then
    raise { op = "switch back", code = "release_changed", reason = "WorldChanged",
            message = ("the Service %s already selects version=%s, the colour before the last release %s "
              .. "(that release was switched back): nothing was changed"):format(app, current, tostring(rel.tag)) }
  end
  if current ~= rel.colour then
    raise { op = "switch back", code = "release_changed", reason = "WorldChanged",
            message = ("the Service %s selects version=%s, not %s as the last release recorded: "
              .. "nothing was changed"):format(app, tostring(current), tostring(rel.colour)) }
  end
  if M.preview_of(svc) then
    raise { op = "switch back", code = "preview_open", reason = "PreviewOpen",
            message = ("a preview is open on service %s: promote or abort it first"):format(app) }
  end
  local target = rel.previous_colour
  local name = app .. "-" .. target
  local report = { app = app, from = current, to = target, tag = rel.previous_tag, image = rel.previous_image,
                   timings = {} }
  if bgrun.report then bgrun.report { switch_back = report } end
  local function timed(label, fn)
    local s0 = bgrun.now()
    local r = step(label, fn)
    report.timings[#report.timings + 1] = { step = label, seconds = bgrun.now() - s0 }
    return r
  end
  local dep = c:get("deployment", name, { namespace = ns })
  local live_dep = c:get("deployment", app .. "-" .. current, { namespace = ns })
  if not dep or not live_dep then
    raise { op = "switch back", code = "no_deployment", reason = "NotFound",
            message = ("deployments %s-blue and %s-green must both exist"):format(app, app) }
  end
  local ct = container_of(dep, opts.container)
  if rel.previous_image and ct.image ~= rel.previous_image then
    raise { op = "switch back", code = "release_changed", reason = "WorldChanged",
            message = ("deployment %s runs %s, not %s as the last release recorded: nothing was changed")
              :format(name, tostring(ct.image), rel.previous_image) }
  end
  local replicas = opts.replicas or live_dep.spec.replicas or 1
  local have = dep.spec.replicas or 0
  local ready = (dep.status or {}).readyReplicas or 0
  local undo = {}
  if have < replicas or ready < replicas then
    report.scaled_up = true
    timed("scale " .. name .. " up to " .. replicas, function()
      local before = { module = "bluegreen", action = "restore_idle", context = opts.context, namespace = ns,
                       deployment = name, container = ct.name, image = ct.image, replicas = have,
                       expect = { service = app, colour = target, image = ct.image } }
      undo.scale_down = on_failure("scale " .. name .. " back down", function() restore_idle(c, before) end, before)
      c:scale("deployment", name, math.max(have, replicas), { namespace = ns })
      if not bgrun.dry_run() then
        c:rollout_status("deployment", name, { namespace = ns, timeout = opts.rollout_timeout or 300 })
      end
    end)
  else
    report.scaled_up = false
  end
  timed("switch traffic to " .. target, function()
    local back = { module = "bluegreen", action = "switch_back", context = opts.context, namespace = ns,
                   app = app, colour = current, replicas = live_dep.spec.replicas or replicas,
                   rollout_timeout = opts.rollout_timeout, switch_timeout = opts.switch_timeout,
                   expect = { colour = target, image = ct.image, container = ct.name } }
    undo.switch_back = on_failure("switch traffic back to " .. current, function()
      switch_back(c, back)
      log.warn("traffic switched back", { colour = current })
    end, back)
    local record = { colour = target, tag = rel.previous_tag or tag_of(ct.image), image = ct.image,
                     previous_colour = current, previous_tag = rel.tag, previous_image = rel.image,
                     at = now_iso(), by = who(), switched_back = true }
    local p0 = bgrun.now()
    local switched = c:patch("service", app, {
      metadata = { annotations = { [M.RELEASE_ANNOTATION] = json.encode(record) } },
      spec = { selector = { version = target } } }, { type = "merge", namespace = ns })
    if not bgrun.dry_run() and switched and switched.metadata then
      back.expect.service_rv = switched.metadata.resourceVersion
      undo.switch_back.update(back)
      M.confirm_switch(c, { app = app, namespace = ns, colour = target, timeout = opts.switch_timeout })
    end
    report.switch_seconds = bgrun.now() - p0
  end)
  -- the switch back stands, the colour's scale-up with it: one event,
  -- or a run killed between the two would have it scaled down by resume
  cancel_all(undo)
  report.switch_back_seconds = bgrun.now() - t0
  log.info("traffic switched back", { from = current, to = target,
                                      seconds = bgrun.fmt_duration(report.switch_back_seconds) })
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
    lines[#lines + 1] = ("  %-44s %d passed, %d failed %s"):format("smoke checks",
      report.smoke.passed, report.smoke.failed, smoke_where(report.smoke))
  end
  if report.monitor then
    local failed = report.monitor.failed_checks or 0
    lines[#lines + 1] = ("  %-44s %d check(s), healthy%s"):format("monitoring", report.monitor.checks,
      failed > 0 and (", %d failed (tolerated)"):format(failed) or "")
    for _, line in ipairs(require("metrics").summary(report.monitor.analysis)) do
      lines[#lines + 1] = "  " .. line
    end
  end
  if report.reaction_ms then
    lines[#lines + 1] = ("  %-44s %d ms"):format("reaction (failure seen to traffic back)", report.reaction_ms)
  end
  lines[#lines + 1] = ("  %-44s %s"):format("total", bgrun.fmt_duration(report.total_seconds or 0))
  print(table.concat(lines, "\n"))
end

---Prints the report of a preview, a promote's extra lines, an abort or a
---switch-back (text, or one JSON object with --log-format json).
---@param report table
function M.print_control(report)
  if log.format() == "json" then
    print(json.encode(report))
    return
  end
  local lines = {}
  if report.preview then
    local p = report.preview
    lines[1] = ("previewed %s %s on %s (%s), traffic still on %s: service %s")
      :format(report.app, report.tag, p.colour, tostring(report.image), tostring(report.from), p.service)
    for _, t in ipairs(report.timings or {}) do
      lines[#lines + 1] = ("  %-44s %s"):format(t.step, bgrun.fmt_duration(t.seconds))
    end
    if report.smoke then
      lines[#lines + 1] = ("  %-44s %d passed, %d failed %s"):format("smoke checks",
        report.smoke.passed, report.smoke.failed, smoke_where(report.smoke))
    end
  elseif report.aborted then
    lines[1] = ("aborted the preview of %s %s on %s (%s): scaled down, preview removed")
      :format(report.app, tostring(report.tag), report.aborted, tostring(report.image))
  elseif report.switch_back_seconds then
    lines[1] = ("switched %s back: %s -> %s (%s)%s"):format(report.app, report.from, report.to,
      tostring(report.image), report.scaled_up and ", scaled up first" or ", warm")
    for _, t in ipairs(report.timings or {}) do
      lines[#lines + 1] = ("  %-44s %s"):format(t.step, bgrun.fmt_duration(t.seconds))
    end
    lines[#lines + 1] = ("  %-44s %s"):format("cutover (selector patch to endpoints confirmed)",
      bgrun.fmt_duration(report.switch_seconds or 0))
    lines[#lines + 1] = ("  %-44s %s"):format("switch-back total", bgrun.fmt_duration(report.switch_back_seconds))
    print(table.concat(lines, "\n"))
    return
  end
  lines[#lines + 1] = ("  %-44s %s"):format("total", bgrun.fmt_duration(report.total_seconds or report.seconds or 0))
  print(table.concat(lines, "\n"))
end

return M
