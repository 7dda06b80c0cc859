package main

import (
	"fmt"
	"os"
	"path/filepath"

	"bgrun/sandbox/cluster"
	"bgrun/sandbox/infra"
)

// sandboxCluster adds what the orchestrator needs on top of the cluster.
type sandboxCluster struct{ *cluster.Cluster }

// ScrapeGroups are the pods to scrape as file_sd groups, one per pod.
func (c sandboxCluster) ScrapeGroups() []infra.TargetGroup {
	var out []infra.TargetGroup
	for _, t := range c.ScrapeTargets() {
		out = append(out, infra.TargetGroup{Targets: []string{t.Address}, Labels: t.Labels})
	}
	return out
}

// startCluster is the only place that knows the cluster package.
func startCluster(dir, behaviors string, podEnv map[string]string, demoApp []string, tokenIssued func(name, token string)) (clusterHandle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	kube, err := kubeBinary()
	if err != nil {
		return nil, err
	}
	c, err := cluster.Start(cluster.Config{
		Dir:           dir,
		KubeBinary:    kube,
		BehaviorsFile: behaviors,
		PodEnv:        podEnv,
		DemoAppArgv:   demoApp,
		TokenIssued:   tokenIssued,
	})
	if err != nil {
		return nil, err
	}
	return sandboxCluster{c}, nil
}

// kubeBinary is the control plane build.sh puts in the cache
// (tests/sandbox/kube: etcd, kube-apiserver, kube-controller-manager).
func kubeBinary() (string, error) {
	cache := os.Getenv("BGRUN_CACHE")
	if cache == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", err
		}
		cache = filepath.Join(home, ".cache", "bgrun")
	}
	path := filepath.Join(cache, "bin", "kube-"+cluster.KubeVersion)
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("the control plane %s is not built (%v): run tests/sandbox/build.sh", path, err)
	}
	return path, nil
}
