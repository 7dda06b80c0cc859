// Command devserver runs the sandbox cluster alone, for developing and
// testing the cluster package before (or without) the full sandbox:
//
//	devserver DIR     start a cluster with state in DIR, print export lines,
//	                  run until SIGINT/SIGTERM
//	devserver fakeapp the trivial app pods run (listens on POD_IP:PORT)
//
// With DEVSERVER_APP set to a command line (split on spaces), pods run that
// instead of the fake app.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"bgrun/sandbox/cluster"
)

func main() {
	if len(os.Args) == 2 && os.Args[1] == "fakeapp" {
		fakeApp()
		return
	}
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: devserver DIR | devserver fakeapp")
		os.Exit(2)
	}
	dir, _ := filepath.Abs(os.Args[1])
	os.MkdirAll(dir, 0o755)
	self, _ := os.Executable()
	argv := []string{self, "fakeapp"}
	if v := os.Getenv("DEVSERVER_APP"); v != "" {
		argv = strings.Fields(v)
	}
	t0 := time.Now()
	c, err := cluster.Start(cluster.Config{Dir: dir, DemoAppArgv: argv, BehaviorsFile: filepath.Join(dir, "behaviors.json"),
		PodEnv: map[string]string{"SANDBOX": "1"}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "devserver:", err)
		os.Exit(1)
	}
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport SANDBOX_ADMIN_URL=%s\nexport SANDBOX_DIR=%s\nexport SANDBOX_BEHAVIORS=%s\n",
		c.KubeconfigPath(), c.AdminURL(), dir, filepath.Join(dir, "behaviors.json"))
	os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o644)
	fmt.Print(env)
	fmt.Fprintf(os.Stderr, "devserver: up in %s\n", time.Since(t0).Round(time.Millisecond))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Stop()
}

// behavior is the subset of the demo app's SANDBOX_BEHAVIORS entries the
// fake app honours.
type behavior struct {
	CrashAfterS float64 `json:"crash_after_s"`
	ExitCode    *int    `json:"exit_code"`
	ReadyAfterS float64 `json:"ready_after_s"`
	NeverReady  bool    `json:"never_ready"`
}

// fakeApp answers /health, /ready and / with its version, misbehaving as
// the behaviours file says for its version.
func fakeApp() {
	version := os.Getenv("APP_VERSION")
	addr := net.JoinHostPort(os.Getenv("POD_IP"), os.Getenv("PORT"))
	var b behavior
	if data, err := os.ReadFile(os.Getenv("SANDBOX_BEHAVIORS")); err == nil && len(data) > 0 {
		var all map[string]behavior
		if err := json.Unmarshal(data, &all); err != nil {
			fmt.Fprintln(os.Stderr, "behaviours file:", err)
			os.Exit(1)
		}
		b = all[version]
	}
	started := time.Now()
	if b.CrashAfterS > 0 {
		go func() {
			time.Sleep(time.Duration(b.CrashAfterS * float64(time.Second)))
			fmt.Fprintln(os.Stderr, "fatal: crash injected")
			code := 1
			if b.ExitCode != nil {
				code = *b.ExitCode
			}
			os.Exit(code)
		}()
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if b.NeverReady || time.Since(started).Seconds() < b.ReadyAfterS {
			http.Error(w, "not ready", 503)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, "{\"status\":\"ok\",\"version\":%q}\n", version)
	})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Printf("%s %s\n", r.Method, r.URL.Path)
		fmt.Fprintf(w, "version=%s pod=%s\n", version, os.Getenv("POD_NAME"))
	})
	srv := &http.Server{Addr: addr, Handler: mux}
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		fmt.Println("SIGTERM: shutting down")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
	}()
	fmt.Println("listening on", addr, "version", version)
	if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
