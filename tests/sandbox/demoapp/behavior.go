package demoapp

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"
)

// Behavior is the misbehaviour injected into one app version. The sandbox
// keeps one JSON object per image tag in the file named by
// SANDBOX_BEHAVIORS; versions that are not in the file behave well.
type Behavior struct {
	CrashAfterS   float64  `json:"crash_after_s,omitempty"`
	ExitCode      *int     `json:"exit_code,omitempty"`
	ReadyAfterS   float64  `json:"ready_after_s,omitempty"`
	NeverReady    bool     `json:"never_ready,omitempty"`
	FailPaths     []string `json:"fail_paths,omitempty"`
	ErrorLogsPerS float64  `json:"error_logs_per_s,omitempty"`
	SlowMs        int      `json:"slow_ms,omitempty"`
	// ErrorRate (0 to 1) answers that fraction of the API's requests with
	// a 500, exactly: with 0.2 every fifth one. LatencyMs delays every API
	// request. Neither touches /health, /ready or /metrics (so probes and
	// the health check keep passing: only the request metrics tell), and
	// neither logs an ERROR line. Both are gated by TriggerFile too.
	ErrorRate float64 `json:"error_rate,omitempty"`
	LatencyMs int     `json:"latency_ms,omitempty"`
	// TriggerFile, when set, gates fail_paths, never_ready, error_rate and
	// latency_ms: they apply
	// only while this file exists, so a test can switch a fault on and
	// off in a running pod.
	TriggerFile string `json:"trigger_file,omitempty"`
}

// LoadBehavior reads the behaviours file and returns the entry for version.
// A missing or empty file, or a version without an entry, is a
// well-behaved app. A file that is not valid JSON is an error: a test
// that meant to inject a fault must not silently get a healthy app.
func LoadBehavior(path, version string) (Behavior, error) {
	var b Behavior
	if path == "" {
		return b, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return b, nil
	}
	if err != nil {
		return b, fmt.Errorf("read behaviours file: %w", err)
	}
	if len(data) == 0 {
		return b, nil
	}
	var all map[string]json.RawMessage
	if err := json.Unmarshal(data, &all); err != nil {
		return b, fmt.Errorf("behaviours file %s: %w", path, err)
	}
	raw, ok := all[version]
	if !ok {
		return b, nil
	}
	if err := json.Unmarshal(raw, &b); err != nil {
		return b, fmt.Errorf("behaviours file %s, version %q: %w", path, version, err)
	}
	if b.ErrorRate < 0 || b.ErrorRate > 1 {
		return b, fmt.Errorf("behaviours file %s, version %q: error_rate %g is not between 0 and 1", path, version, b.ErrorRate)
	}
	return b, nil
}

func (b Behavior) exitCode() int {
	if b.ExitCode != nil {
		return *b.ExitCode
	}
	return 1
}

// triggered reports whether the gated faults apply now.
func (b Behavior) triggered() bool {
	if b.TriggerFile == "" {
		return true
	}
	_, err := os.Stat(b.TriggerFile)
	return err == nil
}

func (b Behavior) fails(path string) bool {
	if len(b.FailPaths) == 0 || !b.triggered() {
		return false
	}
	for _, p := range b.FailPaths {
		if p == path {
			return true
		}
	}
	return false
}

// operational paths are outside error_rate and latency_ms.
func operational(path string) bool {
	return path == "/health" || path == "/ready" || path == "/metrics"
}

func seconds(s float64) time.Duration { return time.Duration(s * float64(time.Second)) }
