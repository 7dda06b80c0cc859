// Package cluster is the sandbox's stand-in for a Kubernetes cluster: an
// API server that speaks the wire protocol kubectl 1.32 expects (see
// /work/shared/reference/wire.md), the deployment, replicaset, endpoints
// and garbage-collection controllers, a kubelet that runs pods as local
// process groups, and kube-proxy style TCP proxies for Services.
//
// # API server
//
// HTTPS on a free loopback port with a CA made at Start (ECDSA, in memory);
// bearer-token auth, or client certificates signed by the CA (Dir holds
// ca.crt, client.crt, client.key, kubeconfig and kubeconfig-cert). HTTP/2
// and HTTP/1.1. Served: namespaces, nodes, pods (+/log, +/status), services,
// endpoints, configmaps, secrets, core/v1 events (also served, converted,
// as events.k8s.io/v1),
// apps/v1 deployments and replicasets (+/scale, +/status),
// discovery.k8s.io/v1 endpointslices, coordination.k8s.io/v1 leases.
// Objects are k8s.io/api types with the API server's defaults; patches use
// apimachinery's strategic merge and evanphx/json-patch; errors are
// apimachinery Status errors. Discovery is aggregated (v2) or legacy, as
// the client asks; /openapi/* is 404 (kubectl apply needs
// --validate=false). `kubectl get` gets server-side tables. JSON and
// protobuf request bodies are read; responses are JSON.
//
// Watches replay from a per-resource window of 1000 events; older
// versions get an ERROR event (410 Expired) in a 200 stream, as from the
// watch cache. allowWatchBookmarks gives a BOOKMARK every second while
// idle; timeoutSeconds ends the stream cleanly. Every request is logged to
// Dir/apiserver.log (no credentials).
//
// # Pods
//
// A container whose image is [REGISTRY/]physioflow-api:TAG runs
// Config.DemoAppArgv in its own process group with its env (env, envFrom,
// secretKeyRef, configMapKeyRef, fieldRef, $(VAR) expansion) over
// Config.PodEnv, plus POD_IP, POD_NAME, POD_NAMESPACE, APP_VERSION=TAG,
// PORT (first containerPort, else 8080) and SANDBOX_BEHAVIORS. Each pod
// has its own address in 127.10.0.0/16. Readiness, liveness and startup
// probes run (readiness and startup periods capped at 1 s, an unready
// container probed every 250 ms; liveness at its own period). Exits restart with back-off from 1 s doubling to 10 s
// (CrashLoopBackOff); other images stay in ErrImagePull/ImagePullBackOff.
// Logs live in Dir/pods/NS_NAME_UID/CONTAINER/RUN.log. Deletion sends
// SIGTERM, then SIGKILL at the grace period's end. Init containers are not
// run.
//
// # Services
//
// Each ClusterIP Service gets an address in 127.20.0.0/16 and a TCP proxy
// per port; each new connection goes to a ready pod chosen at that moment
// (round robin; ClientIP affinity pins by client address), so a selector
// change applies to the next connection while open ones finish. No ready
// pod: the connection is reset (kube-proxy's REJECT).
//
// # Admin API (plain HTTP on loopback, AdminURL)
//
//	POST   /faults  {"method":"PATCH","path":"regexp","status":500,"count":3,
//	                 "delay_ms":0,"reset":false,"in_stream":false,
//	                 "retry_after":1,"message":"..."}
//	GET    /faults  the pending faults
//	DELETE /faults
//	GET    /stats   {"GET /api/v1/namespaces/ns/services/x": 3, ...}
//	DELETE /stats
//	POST   /pods/{namespace}/{name}/kill   SIGKILL the pod's processes
//	GET    /settings
//	PUT    /settings {"history_window":1000,"bookmark_interval_ms":1000,
//	                  "expired_as_http":false}
//
// The settings shrink the watch window (to provoke 410s cheaply), change
// the bookmark period, or answer a too-old watch with an HTTP 410 instead
// of an ERROR event.
//
// A fault matches the method ("" or "*" for any) and a regexp found in the
// path or in path?query, and hits the next count requests (-1: until
// cleared). status answers with that Status (429 carries Retry-After,
// retry_after seconds, default 1); delay_ms stalls first; reset drops the
// client's TCP connection with an RST (over HTTP/2, every stream on it). On a watch, reset with delay_ms lets the stream run delay_ms
// and then cuts it, and in_stream with a status ends the stream after
// delay_ms with an ERROR event carrying that Status.
package cluster
