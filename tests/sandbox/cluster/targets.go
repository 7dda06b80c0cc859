package cluster

import (
	"net"
	"regexp"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
)

// ScrapeTarget is one pod as Prometheus' kubernetes_sd (role pod) with the
// usual relabelling would scrape it: its address and its labels.
type ScrapeTarget struct {
	Address string            // POD_IP:PORT
	Labels  map[string]string // namespace, pod, and the pod's labels (app, version, ...)
}

var unsafeLabel = regexp.MustCompile(`[^a-zA-Z0-9_]`)

// ScrapeTargets lists the running pods that have an address, in a stable
// order: the first container's first containerPort (else 8080, the PORT
// the kubelet gives it). Pod label names are made Prometheus-safe
// (pod-template-hash becomes pod_template_hash), as labelmap does.
func (c *Cluster) ScrapeTargets() []ScrapeTarget {
	if c.kubelet == nil {
		return nil
	}
	objs := c.kubelet.pods.List()
	sort.Slice(objs, func(i, j int) bool {
		a, b := objs[i].(*corev1.Pod), objs[j].(*corev1.Pod)
		return a.Namespace+"/"+a.Name < b.Namespace+"/"+b.Name
	})
	var out []ScrapeTarget
	for _, o := range objs {
		p := o.(*corev1.Pod)
		if p.Status.PodIP == "" || p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil || len(p.Spec.Containers) == 0 {
			continue
		}
		port := 8080
		if ports := p.Spec.Containers[0].Ports; len(ports) > 0 {
			port = int(ports[0].ContainerPort)
		}
		labels := map[string]string{}
		for k, v := range p.Labels {
			labels[unsafeLabel.ReplaceAllString(k, "_")] = v
		}
		labels["namespace"] = p.Namespace
		labels["pod"] = p.Name
		out = append(out, ScrapeTarget{Address: net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port)), Labels: labels})
	}
	return out
}
