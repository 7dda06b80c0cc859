package main

import (
	"os"

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
	c, err := cluster.Start(cluster.Config{
		Dir:           dir,
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
