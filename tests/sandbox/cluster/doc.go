// Package cluster is the sandbox's stand-in for a Kubernetes API server
// and the parts of a cluster behind it: the deployment and replicaset
// controllers, a kubelet that runs pods as local processes, kube-proxy
// style service proxies and the endpoints controllers. It speaks the wire
// protocol kubectl 1.32 expects (see /work/shared/reference/wire.md).
package cluster
