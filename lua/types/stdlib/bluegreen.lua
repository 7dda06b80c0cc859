---@meta bluegreen
-- Generated from stdlib/bluegreen.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---The image with its tag replaced: "reg:5000/app:v1" + "v2" -> "reg:5000/app:v2".
---@param image string
---@param tag string
---@return string
function M.with_tag(image, tag) end

---The colour the Service sends traffic to.
---@param c any k8s client
---@param app string
---@param ns string?
---@return "blue"|"green", table service
function M.active_colour(c, app, ns) end

---The label selector of the pods a colour's current ReplicaSet runs (its
---pod-template-hash): the monitor and a canary's analysis watch those, not
---pods of an earlier template of the same colour still in their
---termination grace period. Falls back to app and version when no
---ReplicaSet matches.
---@return string
function M.rollout_selector(c, ns, app, colour) end

---How the new pods are reached for the smoke test: "pod" (pod IPs, from
---inside the cluster network), "proxy" (the API server's pods proxy, from
---anywhere the API is reachable) or "url" (env.smoke_url, a preview URL).
---An environment's smoke_access wins; otherwise "pod" for local, "proxy"
---for every other environment.
---@param name string the environment's name
---@param env table the environment
---@return string
function M.smoke_access(name, env) end

---@type table
M.SMOKE_ACCESS = { pod = true, proxy = true, url = true }

---How the monitor's health probe reaches the Service, from how the
---environment reaches its pods: "pod" (inside the cluster network) uses
---the Service's cluster IP; "proxy" and "url" (a laptop, a hosted CI
---runner) the API server's services proxy. A monitor table's own
---health_access (or health_url) wins.
---@param opts table the deploy's options (smoke_access, monitor)
---@return "service"|"proxy"
function M.health_access(opts) end

---The pod names a Service's EndpointSlices send traffic to: the endpoints
---not marked unready (conditions.ready nil means ready) of every slice, by
---targetRef, each name once (a dual-stack Service has a slice per family).
---@param slices table<any, table> EndpointSlice objects
---@return string[]
function M.serving_pods(slices) end

---Follows the discovery.k8s.io/v1 EndpointSlices of Service o.app (label
---kubernetes.io/service-name) until settled(pod_names) is true: a list,
---then a watch from its resourceVersion. false when o.timeout (default 30)
---seconds pass first.
---@param c any
---@param o table app, namespace, timeout
---@param settled fun(names: string[]): boolean
---@return boolean
function M.watch_serving(c, o, settled) end

---Waits until the service's EndpointSlices list only pods of colour;
---returns the seconds it took.
---@param c any
---@param o table app, namespace, colour, timeout
---@return number
function M.confirm_switch(c, o) end

---Undo actions `bgrun resume` runs from a journal's recorded data.
---@type table
M.undo = nil

---@type string
M.RELEASE_ANNOTATION = "bgrun.io/release"

---@type string
M.PREVIEW_ANNOTATION = "bgrun.io/preview"

---The release recorded on the Service by the last switch (colour, tag, image,
---previous_colour, previous_tag, previous_image, at, by), or nil.
---@param svc table the main Service
---@return table?
function M.release_of(svc) end

---The preview recorded on the Service (colour, tag, image, container,
---replicas, image_before, replicas_before, from, by, at), or nil.
---@param svc table the main Service
---@return table?
function M.preview_of(svc) end

---@type table
M.HOOKS = { "before_switch", "after_switch", "on_abort", "on_success" }

---Hooks of several sources (environments.lua's env.hooks, the playbook's)
---as one table: each name maps to the list of their functions, in order.
---@param ... table? hook tables: name -> function or list of functions
---@return table<string, function[]>
function M.merge_hooks(...) end

---The steps of a deploy, in order: {name =, run = function(s)} each.
---`bluegreen.deploy(c, {steps = ...})` runs another list: reorder these,
---drop some, or add your own; a step of your own (without `step = false`)
---runs as a named, timed step. The hooks before_switch / after_switch run
---around the step named "switch"; a preview stops before it.
---@type table
M.steps = nil

---The built-in step called name (a copy: changing it changes nothing else).
---@param name string
---@return {name: string, run: fun(s: table), step: boolean?}
function M.step(name) end

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
function M.deploy(c, opts) end

---The preview recorded on the app's Service; raises code="usage" when
---nothing is in preview.
---@param c any
---@param app string
---@param ns string?
---@return table state, table svc
function M.preview(c, app, ns) end

---Promotes the preview: checks the previewed pods (still ready, still the
---recorded image), then switches, monitors and retires as a deploy does,
---with the same compensations (a failed monitor switches back and scales
---the previewed colour back as it was before the preview). opts as for
---deploy (app, namespace, context, monitor, retire_delay, hooks, on_tick).
---@param c any
---@param opts table
---@return table report
function M.promote(c, opts) end

---Waits opts.seconds while the preview stays healthy (still recorded, the
---previewed pods ready, the recorded image), checking every opts.interval
---(default 5 s). Raises code="preview_closed" when someone promoted or
---aborted it meanwhile, and the check's error (preview_not_ready,
---preview_changed) when it turned unhealthy.
---@param c any
---@param opts {app: string, namespace: string?, seconds: number, interval: number?}
function M.await_preview(c, opts) end

---Aborts the preview: removes the preview Service, scales the previewed
---colour down (its image and replicas back as before the preview), clears
---the record. Refuses (code="usage") when nothing is in preview, and when
---the previewed colour serves traffic.
---@param c any
---@param opts {app: string, namespace: string?, context: string?}
---@return table report
function M.abort_preview(c, opts) end

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
function M.switch_to_previous(c, opts) end

---Prints the run report (text table, or one JSON object with --log-format json).
---@param report table
function M.print_report(report) end

---Prints the report of a preview, a promote's extra lines, an abort or a
---switch-back (text, or one JSON object with --log-format json).
---@param report table
function M.print_control(report) end

return M
