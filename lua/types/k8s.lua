---@meta k8s
-- A generic Kubernetes REST client: objects in and out as Lua tables.
-- Configuration as kubectl finds it (KUBECONFIG, ~/.kube/config, contexts,
-- exec plugins) or the in-cluster service account. See docs/modules/k8s.md.
local k8s = {}

---@class k8s.ClientOptions
---@field kubeconfig string? a file, or colon-separated files, instead of $KUBECONFIG / ~/.kube/config
---@field context string? the context to use instead of current-context
---@field namespace string? default namespace (else the context's, else "default")
---@field timeout number? seconds per request (default 30)
---@field deadline number? seconds for one call in all, retries included (default 300)
---@field retries integer? extra attempts for idempotent calls (default 5)
---@field in_cluster boolean? use the service account even when a kubeconfig exists
---@field serviceaccount_dir string? default $BGRUN_SERVICEACCOUNT_DIR, else /var/run/secrets/kubernetes.io/serviceaccount

---@class k8s.Info
---@field context string
---@field cluster string
---@field user string
---@field namespace string
---@field server string
---@field in_cluster boolean

---@class k8s.Resource
---@field group string "" for the core group
---@field version string
---@field plural string
---@field kind string? when the table knows it
---@field namespaced boolean

---A failure of the world: a table with these fields and a readable tostring
---(`k8s: patch services/x: 409 Conflict: ...`).
---@class k8s.Error
---@field module "k8s"
---@field op string e.g. "patch services/physioflow-api"
---@field code integer|"connection"|"timeout"|"tls"|"auth"|"config"|"progress_deadline"|"pod_failing"|"rollout_failed"|"deleted"|"interrupted"
---@field reason string e.g. "Conflict", "NotFound", "TLSError", "ProgressDeadlineExceeded"
---@field message string
---@field details table? the Status details
---@field server string?
---@field pod string? for code "pod_failing"
---@field verb string? for a 403: the verb refused, as the API server authorizes it ("patch", "list", "watch", ...)
---@field group string? for a 403: the resource's API group ("" for the core group)
---@field resource string? for a 403: the resource and subresource ("deployments/scale", "pods/log")
---@field namespace string? for a 403: the request's namespace ("" at the cluster scope)

---@class k8s.NamespaceOption
---@field namespace (string|false)? overrides the client's; false: none (all namespaces, or a cluster-scoped custom resource)

---@class k8s.GetOptions: k8s.NamespaceOption
---@field subresource string? e.g. "status", "scale"

---@class k8s.ListOptions: k8s.NamespaceOption
---@field labelSelector string? e.g. "app=web,version=green"
---@field fieldSelector string? e.g. "metadata.name=web"
---@field limit integer? page size (default 500); every page is fetched
---@field resourceVersion string?

---@class k8s.WriteOptions: k8s.NamespaceOption
---@field fieldManager string?
---@field subresource string? (replace only)

---@class k8s.PatchOptions: k8s.NamespaceOption
---@field type ("merge"|"strategic"|"json"|"apply")? default "merge"; "apply" is server-side apply (needs fieldManager)
---@field subresource string?
---@field fieldManager string?
---@field force boolean? type "apply": take over fields other managers own instead of a 409 Conflict

---@class k8s.DeleteOptions: k8s.NamespaceOption
---@field propagationPolicy ("Foreground"|"Background"|"Orphan")?
---@field gracePeriodSeconds integer?
---@field ignore_not_found boolean? return nil instead of raising 404

---@class k8s.LogOptions: k8s.NamespaceOption
---@field container string?
---@field tail integer? last N lines
---@field since number? seconds
---@field previous boolean? the previous container instance
---@field timestamps boolean?
---@field limit_bytes integer?

---@class k8s.WatchOptions: k8s.ListOptions
---@field resourceVersion string? start after this version (no initial list)
---@field send_initial boolean? ADDED events for existing objects first (default true)
---@field timeout number? seconds; the iteration ends when it passes
---@field server_timeout integer? timeoutSeconds asked of the server per connection (default 290)

---@class k8s.RolloutOptions: k8s.NamespaceOption
---@field timeout number? seconds (default 600); then a k8s.Error with code "timeout"
---@field revision integer? require this deployment.kubernetes.io/revision
---@field fail_fast boolean? fail on CrashLoopBackOff / image pull errors of the new pods (default true)

---A watch stream: callable, so `for type, obj in c:watch(...)` iterates it
---and closes it on leaving the loop.
---@class k8s.Watch
---@overload fun(): string?, table?
local Watch = {}

---The next event, or nil when nothing arrived within `seconds` (the watch
---goes on) or when the watch has ended.
---@param seconds number?
---@return ("ADDED"|"MODIFIED"|"DELETED")? type
---@return table? object
function Watch:next_event(seconds) end

---Where the watch would resume.
---@return string?
function Watch:resource_version() end

function Watch:close() end

---@class k8s.Client
local Client = {}

---The object, or nil when it does not exist.
---@param kind string "deploy", "svc", "cm", ... or "group/version/plural"
---@param name string
---@param opts k8s.GetOptions?
---@return table?
function Client:get(kind, name, opts) end

---The list object, with the items of every page.
---@param kind string
---@param opts k8s.ListOptions?
---@return {apiVersion: string, kind: string, metadata: table, items: table[]}
function Client:list(kind, opts) end

---@param obj table with apiVersion, kind, metadata.name
---@param opts k8s.WriteOptions?
---@return table created
function Client:create(obj, opts) end

---PUT the whole object; keep metadata.resourceVersion for compare-and-swap
---(a stale one raises 409 Conflict).
---@param obj table
---@param opts k8s.WriteOptions?
---@return table
function Client:replace(obj, opts) end

---@param kind string
---@param name string
---@param patch table|string a table or JSON text; for type "json" a list of operations
---@param opts k8s.PatchOptions?
---@return table patched
function Client:patch(kind, name, patch, opts) end

---@param kind string
---@param name string
---@param opts k8s.DeleteOptions?
---@return table? answer the object or a Status; nil when absent with ignore_not_found
function Client:delete(kind, name, opts) end

---Sets replicas through the scale subresource.
---@param kind string
---@param name string
---@param replicas integer
---@param opts k8s.NamespaceOption?
---@return table scale the autoscaling/v1 Scale
function Client:scale(kind, name, replicas, opts) end

---@param kind string
---@param opts k8s.WatchOptions?
---@return k8s.Watch
function Client:watch(kind, opts) end

---@param pod string
---@param opts k8s.LogOptions?
---@return string
function Client:logs(pod, opts) end

---@class k8s.RawRequest
---@field method string? default "GET"
---@field path string path and query on the API server, e.g. "/api/v1/namespaces/ns/pods/web-1:8080/proxy/health"
---@field headers table<string, string>? sent as given (Accept defaults to */*)
---@field body string?
---@field timeout number? seconds (default: the client's timeout)

---@class k8s.RawResponse
---@field status integer any HTTP status: a 4xx or 5xx is an answer, not an error
---@field headers table<string, string> lower-cased names; a repeated field joined with ", "
---@field body string
---@field time_ms number

---Sends one request as it is on the client's connection, with its
---credentials (bearer token, client certificate, CA): for paths no verb
---covers, such as pods/NAME:PORT/proxy/PATH. Not retried; a transport
---failure raises a k8s.Error (code "timeout", "connection", "tls", "auth").
---@param req k8s.RawRequest
---@return k8s.RawResponse
function Client:request(req) end

---Sends the requests together (concurrently on the client's connection
---pool); each slot of the result holds the response or the k8s.Error the
---request failed with.
---@param reqs k8s.RawRequest[]
---@return (k8s.RawResponse|k8s.Error)[]
function Client:request_all(reqs) end

---Waits (on watches) until kubectl would say "successfully rolled out":
---require("rollout").status(c, kind, name, opts), rules in stdlib/rollout.lua.
---@param kind "deployment"|"deploy"|"statefulset"|"sts"|"daemonset"|"ds"|string
---@param name string
---@param opts k8s.RolloutOptions?
---@return table object the object once rolled out
function Client:rollout_status(kind, name, opts) end

---@return k8s.Info
function Client:info() end

function Client:close() end

---@param opts k8s.ClientOptions?
---@return k8s.Client
function k8s.client(opts) end

---What a kind name resolves to.
---@param kind string
---@return k8s.Resource
function k8s.resolve(kind) end

---The kind table's resource for an object's kind and apiVersion; nil when
---the table does not know the kind (ask the API server's discovery).
---@param kind string
---@param apiVersion string
---@return k8s.Resource?
function k8s.resource_for(kind, apiVersion) end

return k8s
