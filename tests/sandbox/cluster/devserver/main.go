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
	env := fmt.Sprintf("export KUBECONFIG=%s\nexport SANDBOX_ADMIN_URL=%s\nexport SANDBOX_DIR=%s\n", c.KubeconfigPath(), c.AdminURL(), dir)
	os.WriteFile(filepath.Join(dir, "env"), []byte(env), 0o644)
	fmt.Print(env)
	fmt.Fprintf(os.Stderr, "devserver: up in %s\n", time.Since(t0).Round(time.Millisecond))
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Stop()
}

// fakeApp answers /health, /ready and / with its version; versions whose
// tag starts with "crash" exit soon after start, "unready" never get ready.
func fakeApp() {
	version := os.Getenv("APP_VERSION")
	addr := net.JoinHostPort(os.Getenv("POD_IP"), os.Getenv("PORT"))
	if strings.HasPrefix(version, "crash") {
		fmt.Println("starting", version, "and crashing")
		time.Sleep(300 * time.Millisecond)
		fmt.Fprintln(os.Stderr, "fatal: crash requested")
		os.Exit(3)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/ready", func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(version, "unready") {
			http.Error(w, "not ready", 503)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
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
