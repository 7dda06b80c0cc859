---@meta rollout
-- Generated from stdlib/rollout.lua by tools/gen-types.lua (make types): do not edit.
local M = {}

---Waiting reasons of a container that will not come up by itself, in the
---order they are looked for. Edit to fail fast on more (or fewer) reasons.
---@type table
M.failing_reasons = nil

---The longest M.status waits on one watch before looking at the other
---(the object's and its pods'), in seconds: how late a pod failure can be
---seen. Not a poll: nothing is requested, both watches stream.
---@type number
M.slice = 0.2

---Default timeout of M.status, in seconds.
---@type number
M.default_timeout = 600

---kubectl's rollout rule for a Deployment, DaemonSet or StatefulSet (by
---obj.kind; no kind is a Deployment): "wait", "done" or "failed", and
---kubectl's message. revision > 0 also checks the Deployment's
---deployment.kubernetes.io/revision annotation.
---@param obj table
---@param revision integer?
---@return "wait"|"done"|"failed" state
---@return string message
function M.evaluate(obj, revision) end

---A pod that cannot come up: the first container (init containers first)
---waiting for one of M.failing_reasons. Returns the reason and a message
---naming the pod and container, or nil.
---@param pod table
---@return string? reason
---@return string? message
function M.pod_failure(pod) end

---The label selector of a Deployment's pods (spec.selector.matchLabels),
---keys sorted; nil without one.
---@param d table
---@return string?
function M.selector(d) end

---The pod-template-hash of a Deployment's newest ReplicaSet: the one whose
---revision annotation is the Deployment's. nil when none matches yet.
---@param d table
---@param replicasets table[]
---@return string?
function M.newest_hash(d, replicasets) end

---Waits on a watch until kind/name has rolled out by kubectl's rule
---(M.evaluate) and returns the object. Raises (module "k8s", op
---"rollout_status deployments/NAME"): 404 NotFound when it does not exist;
---code "deleted" when it goes away; "progress_deadline" /
---"ProgressDeadlineExceeded"; "rollout_failed"; "pod_failing" with the
---pod's waiting reason and `pod` (fail_fast, default true, Deployments);
---"timeout" after opts.timeout seconds (default 600) with kubectl's last
---message.
---@param c any k8s client
---@param kind string "deployment", "statefulset", "daemonset" (any name the kind table knows)
---@param name string
---@param opts {namespace: string?, timeout: number?, revision: integer?, fail_fast: boolean?}?
---@return table object
function M.status(c, kind, name, opts) end

return M
