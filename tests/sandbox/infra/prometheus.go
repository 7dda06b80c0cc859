package infra

import (
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Prometheus is a real Prometheus server (built by build.sh from the Go
// module proxy) scraping the sandbox's pods every second, found through a
// file_sd targets file the sandbox rewrites as pods come and go. It serves
// its HTTP API without authentication on URL(); an authenticating proxy in
// front of it (AuthURL()) wants HTTP basic auth (User, Password) or a
// bearer token (Token), as a hosted or proxied Prometheus does. It can be
// stopped and started again while the sandbox runs, so tests can see
// "Prometheus is down".
type Prometheus struct {
	Binary      string
	Dir         string // DIR/prometheus: config, targets, data
	ConfigFile  string
	TargetsFile string
	LogFile     string // DIR/prometheus.log
	Port        int
	User        string
	Password    string
	Token       string

	mu      sync.Mutex
	proc    *process
	targets []byte // last written, to skip identical rewrites
	authLn  net.Listener
	authSrv *http.Server
}

// TargetGroup is one entry of a file_sd file.
type TargetGroup struct {
	Targets []string          `json:"targets"`
	Labels  map[string]string `json:"labels"`
}

// PrometheusBinary is where build.sh puts the prometheus binary.
func PrometheusBinary() string {
	cache := os.Getenv("BGRUN_CACHE")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache", "bgrun")
	}
	return filepath.Join(cache, "bin", "prometheus")
}

// NewPrometheus describes a server under dir listening on port, with fresh
// random credentials for its authenticating proxy.
func NewPrometheus(dir string, port int) *Prometheus {
	d := filepath.Join(dir, "prometheus")
	return &Prometheus{
		Binary:      PrometheusBinary(),
		Dir:         d,
		ConfigFile:  filepath.Join(d, "prometheus.yml"),
		TargetsFile: filepath.Join(d, "targets.json"),
		LogFile:     filepath.Join(dir, "prometheus.log"),
		Port:        port,
		User:        "bgrun",
		Password:    RandomSecret(12),
		Token:       RandomSecret(20),
	}
}

// URL is the Prometheus HTTP API, without authentication.
func (p *Prometheus) URL() string { return fmt.Sprintf("http://127.0.0.1:%d", p.Port) }

// AuthURL is the authenticating proxy in front of it ("" before Start).
func (p *Prometheus) AuthURL() string {
	if p.authLn == nil {
		return ""
	}
	return "http://" + p.authLn.Addr().String()
}

const prometheusConfig = `# written by the sandbox
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pods
    file_sd_configs:
      - files: [%q]
        refresh_interval: 1s
`

// Start writes the configuration (once), starts the authenticating proxy
// (once) and the server, and waits until /-/ready answers 200.
func (p *Prometheus) Start(ctx context.Context) error {
	if _, err := os.Stat(p.Binary); err != nil {
		return fmt.Errorf("no prometheus binary at %s (run tests/sandbox/build.sh): %v", p.Binary, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc != nil && !p.proc.exited() {
		return nil
	}
	if err := os.MkdirAll(filepath.Join(p.Dir, "data"), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(p.ConfigFile, []byte(fmt.Sprintf(prometheusConfig, p.TargetsFile)), 0o644); err != nil {
		return err
	}
	if _, err := os.Stat(p.TargetsFile); err != nil {
		if err := writeFileAtomic(p.TargetsFile, []byte("[]\n")); err != nil {
			return err
		}
	}
	if err := p.startAuthProxy(); err != nil {
		return err
	}
	logf, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	cmd := exec.Command(p.Binary,
		"--config.file="+p.ConfigFile,
		"--storage.tsdb.path="+filepath.Join(p.Dir, "data"),
		"--storage.tsdb.retention.time=2h",
		"--web.listen-address="+fmt.Sprintf("127.0.0.1:%d", p.Port),
		// new pods are scraped within a second or two, not after 5 s
		"--scrape.discovery-reload-interval=500ms",
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = p.Dir
	if p.proc, err = startProcess(cmd); err != nil {
		return fmt.Errorf("start prometheus: %w", err)
	}
	client := &http.Client{Timeout: time.Second}
	last := "no answer yet"
	for {
		resp, err := client.Get(p.URL() + "/-/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = "/-/ready: " + resp.Status
		} else {
			last = err.Error()
		}
		if p.proc.exited() {
			return fmt.Errorf("prometheus exited: %v; %s:\n%s", p.proc.err, p.LogFile, Tail(p.LogFile, 10))
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prometheus not ready: %s", last)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// Stop ends the server (the proxy stays: it answers 502 meanwhile).
func (p *Prometheus) Stop() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	return p.proc.stop(syscall.SIGTERM, 10*time.Second)
}

// Close ends the server and the proxy.
func (p *Prometheus) Close() error {
	err := p.Stop()
	if p.authSrv != nil {
		p.authSrv.Close()
	}
	return err
}

// Running reports whether the server process lives.
func (p *Prometheus) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.proc != nil && !p.proc.exited()
}

// Exited is closed when the current server process ends.
func (p *Prometheus) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.proc == nil {
		return nil
	}
	return p.proc.done
}

// WriteTargets replaces the file_sd file (atomically, so Prometheus never
// reads half of it) when the groups changed.
func (p *Prometheus) WriteTargets(groups []TargetGroup) error {
	if groups == nil {
		groups = []TargetGroup{}
	}
	data, err := json.MarshalIndent(groups, "", "  ")
	if err != nil {
		return err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if bytes.Equal(data, p.targets) {
		return nil
	}
	if err := writeFileAtomic(p.TargetsFile, data); err != nil {
		return err
	}
	p.targets = data
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// startAuthProxy serves AuthURL(): requests with the right basic
// credentials or bearer token go on to Prometheus; others get 401.
func (p *Prometheus) startAuthProxy() error {
	if p.authLn != nil {
		return nil
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	target, _ := url.Parse(p.URL())
	proxy := httputil.NewSingleHostReverseProxy(target)
	proxy.ErrorLog = nil
	proxy.ErrorHandler = func(w http.ResponseWriter, r *http.Request, err error) {
		http.Error(w, "prometheus is unreachable: "+err.Error(), http.StatusBadGateway)
	}
	p.authLn = ln
	p.authSrv = &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !p.authorized(r) {
			w.Header().Set("WWW-Authenticate", `Basic realm="prometheus"`)
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		r.Header.Del("Authorization")
		proxy.ServeHTTP(w, r)
	})}
	go p.authSrv.Serve(ln)
	return nil
}

func (p *Prometheus) authorized(r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok {
		return subtle.ConstantTimeCompare([]byte(tok), []byte(p.Token)) == 1
	}
	if user, pw, ok := r.BasicAuth(); ok {
		return subtle.ConstantTimeCompare([]byte(user), []byte(p.User)) == 1 &&
			subtle.ConstantTimeCompare([]byte(pw), []byte(p.Password)) == 1
	}
	return false
}

// PingPrometheus wants 200 from /-/ready.
func PingPrometheus(base string) error {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(base + "/-/ready")
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("/-/ready: %s", resp.Status)
	}
	return nil
}
