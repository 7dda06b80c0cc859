package main

import (
	"os"

	"bgrun/sandbox/cluster"
)

// startCluster is the only place that knows the cluster package.
func startCluster(dir, behaviors string, podEnv map[string]string, demoApp []string) (clusterHandle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c, err := cluster.Start(cluster.Config{
		Dir:           dir,
		BehaviorsFile: behaviors,
		PodEnv:        podEnv,
		DemoAppArgv:   demoApp,
	})
	if err != nil {
		return nil, err
	}
	return c, nil
}
