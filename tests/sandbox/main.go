// Command sandbox runs bgrun's local test world: a fake Kubernetes API
// whose pods run the demo app, a private PostgreSQL and an S3 store, all
// on loopback ports, started and stopped as one unit.
//
//	sandbox up DIR       start in the background, print `export` lines
//	sandbox down DIR     stop everything and remove DIR's state
//	sandbox status DIR   each part up or down; exit 0 only if all are up
//	sandbox env DIR      print the `export` lines of a running sandbox
//	sandbox serve DIR    run in the foreground (what `up` detaches)
//	sandbox prometheus-stop DIR    stop the sandbox's Prometheus (to test "down")
//	sandbox prometheus-start DIR   start it again
//	sandbox demoapp      the demo app that pods run
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"

	"bgrun/sandbox/demoapp"
	"bgrun/sandbox/infra"
)

const (
	bucket       = "physioflow-backups-local"
	startTimeout = 90 * time.Second
)

// The replica: a second bucket, reached through a second endpoint (a
// forwarder on another loopback address) and signed for another region.
const (
	replicaBucket = "physioflow-backups-local-replica"
	replicaRegion = "eu-west-1"
	replicaHost   = "127.0.0.2"
)

// Files in DIR.
const (
	stateFile     = "state.json"
	envFile       = "env.sh"
	pidFile       = "sandbox.pid"
	logFile       = "sandbox.log"
	behaviorsFile = "behaviors.json"
	lockFile      = ".lock"
	clusterDir    = "cluster"
)

// ownedEntries is everything the sandbox may create in DIR; down removes
// exactly these.
var ownedEntries = []string{stateFile, envFile, pidFile, logFile, behaviorsFile, lockFile,
	clusterDir, "s3", "s3.json", "weed.log", "pg.log", "web-identity-token", "prometheus", "prometheus.log", secretsName, storesName}

// clusterHandle is what the sandbox needs from the fake API server.
type clusterHandle interface {
	KubeconfigPath() string
	AdminURL() string
	ScrapeGroups() []infra.TargetGroup
	Phases() string
	Stop()
}

// state is what a running sandbox publishes in DIR/state.json once every
// part answers.
type state struct {
	Dir        string `json:"dir"`
	ServePid   int    `json:"serve_pid"`
	Kubeconfig string `json:"kubeconfig"`
	AdminURL   string `json:"admin_url"`
	Behaviors  string `json:"behaviors"`

	PGPort     int    `json:"pg_port"`
	PGUser     string `json:"pg_user"`
	PGPassword string `json:"pg_password"`
	PGDatabase string `json:"pg_database"`
	PGSuperURL string `json:"pg_super_url"`
	PGPid      int    `json:"pg_pid"`

	S3Endpoint  string `json:"s3_endpoint"`
	S3AccessKey string `json:"s3_access_key"`
	S3SecretKey string `json:"s3_secret_key"`
	S3Region    string `json:"s3_region"`
	S3Bucket    string `json:"s3_bucket"`
	WeedPid     int    `json:"weed_pid"`

	S3ReplicaEndpoint string `json:"s3_replica_endpoint"`
	S3ReplicaBucket   string `json:"s3_replica_bucket"`
	S3ReplicaRegion   string `json:"s3_replica_region"`

	S3FaultEndpoint string `json:"s3_fault_endpoint"`

	AWSFakeURL     string `json:"aws_fake_url"`
	WebTokenFile   string `json:"web_identity_token_file"`
	ContainerToken string `json:"container_token"`
	SecretsFile    string `json:"secrets_file"`

	PrometheusURL      string `json:"prometheus_url"`
	PrometheusAuthURL  string `json:"prometheus_auth_url"`
	PrometheusUser     string `json:"prometheus_user"`
	PrometheusPassword string `json:"prometheus_password"`
	PrometheusToken    string `json:"prometheus_token"`

	StartSeconds float64 `json:"start_seconds"`
}

func usage() int {
	fmt.Fprint(os.Stderr, `usage: sandbox up|down|status|env|serve DIR
       sandbox prometheus-stop|prometheus-start DIR
       sandbox demoapp
`)
	return 2
}

func main() {
	if len(os.Args) == 2 && os.Args[1] == "demoapp" {
		os.Exit(demoapp.Main())
	}
	if len(os.Args) != 3 {
		os.Exit(usage())
	}
	dir, err := filepath.Abs(os.Args[2])
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		os.Exit(2)
	}
	var code int
	switch os.Args[1] {
	case "up":
		code = up(dir)
	case "down":
		code = down(dir)
	case "status":
		code = status(dir)
	case "env":
		code = printEnv(dir)
	case "serve":
		code = serve(dir)
	case "prometheus-stop":
		code = prometheusControl(dir, false)
	case "prometheus-start":
		code = prometheusControl(dir, true)
	default:
		code = usage()
	}
	os.Exit(code)
}

// ---- exports ----

type export struct{ name, value string }

func (st *state) exports(dir string) []export {
	return []export{
		{"KUBECONFIG", st.Kubeconfig},
		{"PGHOST", "127.0.0.1"},
		{"PGPORT", strconv.Itoa(st.PGPort)},
		{"PGUSER", st.PGUser},
		{"PGPASSWORD", st.PGPassword},
		{"PGDATABASE", st.PGDatabase},
		{"AWS_ACCESS_KEY_ID", st.S3AccessKey},
		{"AWS_SECRET_ACCESS_KEY", st.S3SecretKey},
		{"AWS_REGION", st.S3Region},
		{"AWS_ENDPOINT_URL_S3", st.S3Endpoint},
		{"SANDBOX_ADMIN_URL", st.AdminURL},
		{"SANDBOX_BEHAVIORS", st.Behaviors},
		{"SANDBOX_DIR", dir},
		// A ServiceAccount (physioflow/bgrun-noperm) no Role grants anything.
		{"SANDBOX_KUBECONFIG_NOPERM", filepath.Join(filepath.Dir(st.Kubeconfig), "kubeconfig-noperm")},
		{"SANDBOX_S3_BUCKET", st.S3Bucket},
		{"SANDBOX_PG_SUPERUSER_URL", st.PGSuperURL},
		{"SANDBOX_S3_REPLICA_ENDPOINT", st.S3ReplicaEndpoint},
		{"SANDBOX_S3_REPLICA_BUCKET", st.S3ReplicaBucket},
		{"SANDBOX_S3_REPLICA_REGION", st.S3ReplicaRegion},
		// the store behind a proxy with faults on cue (infra/s3faults.go)
		{"SANDBOX_S3_FAULT_ENDPOINT", st.S3FaultEndpoint},
		// Fake AWS credential endpoints; not AWS_* so the plain keys above stay the default.
		{"SANDBOX_STS_URL", st.AWSFakeURL + "/sts/"},
		{"SANDBOX_WEB_IDENTITY_TOKEN_FILE", st.WebTokenFile},
		{"SANDBOX_CONTAINER_CREDENTIALS_URI", st.AWSFakeURL + "/container/credentials"},
		{"SANDBOX_CONTAINER_AUTHORIZATION_TOKEN", st.ContainerToken},
		{"SANDBOX_IMDS_ENDPOINT", st.AWSFakeURL + "/imds"},
		{"SANDBOX_AWS_FAKE_URL", st.AWSFakeURL},
		// Prometheus scraping the pods; the auth URL wants basic auth or the token.
		{"PROMETHEUS_URL", st.PrometheusURL},
		{"PROMETHEUS_AUTH_URL", st.PrometheusAuthURL},
		{"PROMETHEUS_USER", st.PrometheusUser},
		{"PROMETHEUS_PASSWORD", st.PrometheusPassword},
		{"PROMETHEUS_TOKEN", st.PrometheusToken},
		// every credential value above and those minted since (secrets.go)
		{"SANDBOX_SECRETS_FILE", st.SecretsFile},
		{"SANDBOX_SECRET_STORES", filepath.Join(dir, storesName)},
	}
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-./:=@,+") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func exportLines(st *state, dir string) string {
	var b strings.Builder
	for _, e := range st.exports(dir) {
		fmt.Fprintf(&b, "export %s=%s\n", e.name, shellQuote(e.value))
	}
	return b.String()
}

func readState(dir string) (*state, error) {
	data, err := os.ReadFile(filepath.Join(dir, stateFile))
	if err != nil {
		return nil, err
	}
	var st state
	if err := json.Unmarshal(data, &st); err != nil {
		return nil, fmt.Errorf("%s: %w", stateFile, err)
	}
	return &st, nil
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, mode); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// ---- checks ----

type check struct {
	part string
	err  error
	note string
}

var serverRE = regexp.MustCompile(`(?m)^\s*server:\s*"?([^"\s]+)"?`)
var caRE = regexp.MustCompile(`(?m)^\s*certificate-authority-data:\s*"?([^"\s]+)"?`)
var tokenRE = regexp.MustCompile(`(?m)^\s*token:\s*"?([^"\s]+)"?`)

// checkAPI asks the API server for /version over TLS, trusting the CA
// from the kubeconfig.
func checkAPI(kubeconfig string) (string, error) {
	data, err := os.ReadFile(kubeconfig)
	if err != nil {
		return "", err
	}
	m := serverRE.FindSubmatch(data)
	if m == nil {
		return "", fmt.Errorf("%s names no server", kubeconfig)
	}
	server := string(m[1])
	tlsConfig := &tls.Config{}
	if m := caRE.FindSubmatch(data); m != nil {
		pem, err := base64.StdEncoding.DecodeString(string(m[1]))
		if err != nil {
			return server, fmt.Errorf("certificate-authority-data: %v", err)
		}
		pool := x509.NewCertPool()
		pool.AppendCertsFromPEM(pem)
		tlsConfig.RootCAs = pool
	} else {
		tlsConfig.InsecureSkipVerify = true
	}
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{TLSClientConfig: tlsConfig}}
	defer client.CloseIdleConnections()
	req, _ := http.NewRequest("GET", strings.TrimRight(server, "/")+"/version", nil)
	if m := tokenRE.FindSubmatch(data); m != nil {
		req.Header.Set("Authorization", "Bearer "+string(m[1]))
	}
	resp, err := client.Do(req)
	if err != nil {
		return server, err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return server, fmt.Errorf("GET /version: %s", resp.Status)
	}
	return server, nil
}

func checkPG(st *state) error {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	url := fmt.Sprintf("postgres://%s:%s@127.0.0.1:%d/%s?sslmode=disable", st.PGUser, st.PGPassword, st.PGPort, st.PGDatabase)
	conn, err := pgx.Connect(ctx, url)
	if err != nil {
		return errors.New(strings.ReplaceAll(err.Error(), st.PGPassword, "xxxxx"))
	}
	defer conn.Close(ctx)
	var one int
	return conn.QueryRow(ctx, "SELECT 1").Scan(&one)
}

// checkAll checks every part concurrently.
func checkAll(st *state) []check {
	checks := []check{{part: "sandbox"}, {part: "cluster"}, {part: "postgres"}, {part: "s3"}, {part: "prometheus"}}
	var wg sync.WaitGroup
	wg.Add(4)
	if !serveAlive(st.ServePid, st.Dir) {
		checks[0].err = fmt.Errorf("process %d is gone", st.ServePid)
	} else {
		checks[0].note = fmt.Sprintf("pid %d", st.ServePid)
	}
	go func() {
		defer wg.Done()
		checks[1].note, checks[1].err = checkAPI(st.Kubeconfig)
	}()
	go func() {
		defer wg.Done()
		checks[2].err = checkPG(st)
		checks[2].note = fmt.Sprintf("127.0.0.1:%d %s", st.PGPort, st.PGDatabase)
	}()
	go func() {
		defer wg.Done()
		checks[3].err = infra.PingS3(st.S3Endpoint, infra.Credentials{AccessKey: st.S3AccessKey, SecretKey: st.S3SecretKey, Region: st.S3Region})
		checks[3].note = st.S3Endpoint
	}()
	go func() {
		defer wg.Done()
		checks[4].err = infra.PingPrometheus(st.PrometheusURL)
		checks[4].note = st.PrometheusURL
	}()
	wg.Wait()
	return checks
}

func failed(checks []check) []check {
	var bad []check
	for _, c := range checks {
		if c.err != nil {
			bad = append(bad, c)
		}
	}
	return bad
}

// ---- up ----

// lock serialises up and down on one DIR.
func lock(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// serveAlive reports whether pid is the `sandbox serve DIR` process, not
// just any process that reused a stale pid.
func serveAlive(pid int, dir string) bool {
	if !infra.Alive(pid) {
		return false
	}
	cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
	if err != nil {
		return false
	}
	args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
	return len(args) == 3 && args[1] == "serve" && args[2] == dir
}

func readPid(dir string) int {
	data, err := os.ReadFile(filepath.Join(dir, pidFile))
	if err != nil {
		return 0
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(data)))
	return pid
}

func up(dir string) int {
	start := time.Now()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	lk, err := lock(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: lock %s: %v\n", dir, err)
		return 1
	}
	defer lk.Close()

	if st, err := readState(dir); err == nil && serveAlive(st.ServePid, dir) {
		if bad := failed(checkAll(st)); len(bad) > 0 {
			fmt.Fprintf(os.Stderr, "sandbox: %s is running (pid %d) but not healthy:\n", dir, st.ServePid)
			for _, c := range bad {
				fmt.Fprintf(os.Stderr, "  %s: %v\n", c.part, c.err)
			}
			fmt.Fprintf(os.Stderr, "run `sandbox down %s` and try again\n", dir)
			return 1
		}
		fmt.Print(exportLines(st, dir))
		return 0
	}
	// A sandbox process still starting (its `up` was interrupted) or
	// unhealthy without state: stop it. Then clear what a dead one left.
	if pid := readPid(dir); serveAlive(pid, dir) {
		infra.StopPid(pid, syscall.SIGTERM, 30*time.Second)
	}
	stopLeftovers(dir)
	removeState(dir, false)

	behaviors := filepath.Join(dir, behaviorsFile)
	if _, err := os.Stat(behaviors); err != nil {
		if err := os.WriteFile(behaviors, []byte("{}\n"), 0o644); err != nil {
			fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
			return 1
		}
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	logPath := filepath.Join(dir, logFile)
	logf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, "serve", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = dir
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		logf.Close()
		fmt.Fprintf(os.Stderr, "sandbox: start %s serve: %v\n", self, err)
		return 1
	}
	logf.Close()
	os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	deadline := time.After(startTimeout)
	for {
		select {
		case err := <-exited:
			fmt.Fprintf(os.Stderr, "sandbox: failed to start (%v); %s:\n%s\n", err, logPath, infra.Tail(logPath, 40))
			stopLeftovers(dir)
			removeState(dir, false)
			return 1
		case <-deadline:
			fmt.Fprintf(os.Stderr, "sandbox: not ready after %s; %s:\n%s\n", startTimeout, logPath, infra.Tail(logPath, 40))
			infra.StopPid(cmd.Process.Pid, syscall.SIGTERM, 30*time.Second)
			stopLeftovers(dir)
			removeState(dir, false)
			return 1
		case <-time.After(20 * time.Millisecond):
		}
		st, err := readState(dir)
		if err != nil {
			continue
		}
		if bad := failed(checkAll(st)); len(bad) > 0 {
			for _, c := range bad {
				fmt.Fprintf(os.Stderr, "sandbox: %s does not answer: %v\n", c.part, c.err)
			}
			fmt.Fprintf(os.Stderr, "%s:\n%s\n", logPath, infra.Tail(logPath, 40))
			infra.StopPid(cmd.Process.Pid, syscall.SIGTERM, 30*time.Second)
			stopLeftovers(dir)
			removeState(dir, false)
			return 1
		}
		fmt.Print(exportLines(st, dir))
		fmt.Fprintf(os.Stderr, "sandbox: up in %.2fs (%s)\n", time.Since(start).Seconds(), dir)
		return 0
	}
}

func printEnv(dir string) int {
	st, err := readState(dir)
	if err != nil || !serveAlive(st.ServePid, dir) {
		fmt.Fprintf(os.Stderr, "sandbox: %s is not running\n", dir)
		return 1
	}
	fmt.Print(exportLines(st, dir))
	return 0
}

// ---- down ----

func down(dir string) int {
	if _, err := os.Stat(dir); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: %s: nothing to stop\n", dir)
		return 0
	}
	lk, err := lock(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: lock %s: %v\n", dir, err)
		return 1
	}
	defer lk.Close()
	if pid := readPid(dir); serveAlive(pid, dir) {
		infra.StopPid(pid, syscall.SIGTERM, 30*time.Second)
	}
	stopLeftovers(dir)
	removeState(dir, true)
	fmt.Fprintf(os.Stderr, "sandbox: %s down\n", dir)
	return 0
}

// stopLeftovers ends whatever a dead sandbox process left running: the
// postmaster (by its pid file), weed (by its -dir argument) and pods (by
// their SANDBOX_BEHAVIORS variable). Matching on DIR keeps other
// sandboxes on the same machine untouched.
func stopLeftovers(dir string) {
	if serveAlive(readPid(dir), dir) {
		return // alive: it owns its children
	}
	infra.StopDataDir(filepath.Join(dir, "pg"))
	weedArg := []byte("-dir=" + filepath.Join(dir, "s3") + "\x00")
	promArg := []byte("--config.file=" + filepath.Join(dir, "prometheus", "prometheus.yml") + "\x00")
	podEnv := []byte("SANDBOX_BEHAVIORS=" + filepath.Join(dir, behaviorsFile) + "\x00")
	entries, _ := os.ReadDir("/proc")
	self := os.Getpid()
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == self {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		environ, _ := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pid))
		if containsArg(cmdline, weedArg) || containsArg(cmdline, promArg) || containsArg(environ, podEnv) {
			infra.StopPid(pid, syscall.SIGTERM, 2*time.Second)
		}
	}
}

func containsArg(nulSeparated, entry []byte) bool {
	s := "\x00" + string(nulSeparated)
	return strings.Contains(s, "\x00"+string(entry))
}

// removeState deletes what the sandbox created in DIR. With all, also the
// log, the behaviours file, and DIR itself if nothing else is in it.
func removeState(dir string, all bool) {
	infra.RemovePGDir(filepath.Join(dir, "pg"))
	for _, name := range ownedEntries {
		if !all && (name == logFile || name == behaviorsFile || name == lockFile || name == pidFile) {
			continue
		}
		os.RemoveAll(filepath.Join(dir, name))
	}
	if all {
		os.Remove(dir) // only if empty
	}
}

// ---- status ----

func status(dir string) int {
	st, err := readState(dir)
	if err != nil {
		for _, part := range []string{"sandbox", "cluster", "postgres", "s3", "prometheus"} {
			fmt.Printf("%-10s down\n", part)
		}
		fmt.Fprintf(os.Stderr, "sandbox: %s is not running\n", dir)
		return 1
	}
	checks := checkAll(st)
	for _, c := range checks {
		if c.err != nil {
			fmt.Printf("%-10s down  %v\n", c.part, c.err)
		} else {
			fmt.Printf("%-10s up    %s\n", c.part, c.note)
		}
	}
	if len(failed(checks)) > 0 {
		return 1
	}
	return 0
}

// ---- serve ----

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s sandbox: %s\n", time.Now().UTC().Format(time.RFC3339), fmt.Sprintf(format, args...))
}

// serve starts every part in parallel, publishes state.json once all
// answer, and stops everything on SIGTERM or SIGINT.
func serve(dir string) int {
	start := time.Now()
	os.WriteFile(filepath.Join(dir, pidFile), []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)

	self, err := os.Executable()
	if err != nil {
		logf("%v", err)
		return 1
	}
	ports, err := infra.FreePorts(2 + infra.WeedPortsNeeded())
	if err != nil {
		logf("%v", err)
		return 1
	}
	pg := infra.NewPostgres(dir, ports[0])
	prom := infra.NewPrometheus(dir, ports[1])
	s3 := infra.NewSeaweedFS(dir, ports[2:], bucket)
	behaviors := filepath.Join(dir, behaviorsFile)
	secrets, err := newSecretsFile(filepath.Join(dir, secretsName))
	if err != nil {
		logf("%v", err)
		return 1
	}
	podEnv := map[string]string{
		"PGHOST": "127.0.0.1", "PGPORT": strconv.Itoa(pg.Port),
		"PGUSER": pg.User, "PGPASSWORD": pg.Password, "PGDATABASE": pg.Database,
	}

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		cl   clusterHandle
		errs = map[string]error{}
		logs = map[string]string{"postgres": pg.LogFile, "s3": s3.LogFile, "cluster": filepath.Join(dir, clusterDir, "apiserver.log"),
			"prometheus": prom.LogFile}
		elapsed = map[string]time.Duration{}
	)
	run := func(part string, fn func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			t := time.Now()
			err := fn()
			mu.Lock()
			elapsed[part] = time.Since(t)
			if err != nil {
				errs[part] = err
			}
			mu.Unlock()
		}()
	}
	run("postgres", func() error { return pg.Start(ctx) })
	run("prometheus", func() error { return prom.Start(ctx) })
	run("s3", func() error {
		// The free ports were free when chosen; any outgoing connection may
		// take one before weed binds it. Try again on new ones.
		var err error
		for attempt := 1; attempt <= 3; attempt++ {
			if err = s3.Start(ctx); err == nil || ctx.Err() != nil {
				return err
			}
			logf("s3: attempt %d failed (%v); retrying on new ports", attempt, err)
			s3.Stop()
			os.RemoveAll(s3.DataDir)
			more, perr := infra.FreePorts(infra.WeedPortsNeeded())
			if perr != nil {
				return perr
			}
			next := infra.NewSeaweedFS(dir, more, bucket)
			mu.Lock()
			s3 = next
			mu.Unlock()
		}
		return err
	})
	run("cluster", func() error {
		c, err := startCluster(filepath.Join(dir, clusterDir), behaviors, podEnv, []string{self, "demoapp"}, secrets.add)
		if err == nil {
			mu.Lock()
			cl = c
			mu.Unlock()
		}
		return err
	})
	wg.Wait()

	stopAll := func() {
		var wg sync.WaitGroup
		wg.Add(4)
		go func() {
			defer wg.Done()
			if err := prom.Close(); err != nil {
				logf("prometheus: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			if cl != nil {
				cl.Stop()
			}
		}()
		go func() {
			defer wg.Done()
			if err := pg.Stop(); err != nil {
				logf("postgres: %v", err)
			}
		}()
		go func() {
			defer wg.Done()
			if err := s3.Stop(); err != nil {
				logf("s3: %v", err)
			}
		}()
		wg.Wait()
	}

	if len(errs) > 0 {
		for _, part := range []string{"cluster", "postgres", "s3", "prometheus"} {
			if err := errs[part]; err != nil {
				logf("%s failed to start: %v", part, err)
				logf("--- last lines of %s ---\n%s\n---", logs[part], infra.Tail(logs[part], 20))
			}
		}
		stopAll()
		return 1
	}
	replica, err := infra.NewForwarder(replicaHost+":0", strings.TrimPrefix(s3.Endpoint(), "http://"))
	if err == nil {
		rc := s3.Creds
		rc.Region = replicaRegion
		if err = infra.CreateBucket("http://"+replica.Addr(), replicaBucket, rc); err != nil {
			replica.Stop()
		}
	}
	if err != nil {
		logf("s3 replica endpoint failed to start: %v", err)
		stopAll()
		return 1
	}
	defer replica.Stop()
	s3faults, err := infra.NewS3FaultProxy("127.0.0.1:0", s3.Endpoint())
	if err != nil {
		logf("s3 fault proxy failed to start: %v", err)
		stopAll()
		return 1
	}
	defer s3faults.Stop()
	awsFake := infra.NewAWSFake(dir, s3.Creds)
	awsFake.Issued = secrets.add
	if err := awsFake.Start(); err != nil {
		logf("aws credential endpoints failed to start: %v", err)
		stopAll()
		return 1
	}
	defer awsFake.Stop()
	logf("postgres ready in %v, s3 in %v, cluster in %v (%s)",
		elapsed["postgres"].Round(time.Millisecond), elapsed["s3"].Round(time.Millisecond), elapsed["cluster"].Round(time.Millisecond), cl.Phases())

	st := &state{
		Dir: dir, ServePid: os.Getpid(), Kubeconfig: cl.KubeconfigPath(), AdminURL: cl.AdminURL(), Behaviors: behaviors,
		PGPort: pg.Port, PGUser: pg.User, PGPassword: pg.Password, PGDatabase: pg.Database,
		PGSuperURL: pg.SuperURL(), PGPid: pg.Pid(),
		S3Endpoint: s3.Endpoint(), S3AccessKey: s3.Creds.AccessKey, S3SecretKey: s3.Creds.SecretKey,
		S3Region: s3.Creds.Region, S3Bucket: s3.Bucket, WeedPid: s3.Pid(),
		PrometheusURL: prom.URL(), PrometheusAuthURL: prom.AuthURL(), PrometheusUser: prom.User,
		PrometheusPassword: prom.Password, PrometheusToken: prom.Token,
		S3ReplicaEndpoint: "http://" + replica.Addr(), S3ReplicaBucket: replicaBucket, S3ReplicaRegion: replicaRegion,
		S3FaultEndpoint: s3faults.Endpoint(), AWSFakeURL: awsFake.URL(), WebTokenFile: awsFake.WebTokenFile, ContainerToken: awsFake.ContainerToken,
		SecretsFile: secrets.path, StartSeconds: time.Since(start).Seconds(),
	}
	secrets.addStarted(st, filepath.Join(dir, clusterDir))
	if err := writeStores(dir, st, filepath.Join(dir, clusterDir)); err != nil {
		logf("%v", err)
	}
	data, _ := json.MarshalIndent(st, "", "  ")
	if err := writeFileAtomic(filepath.Join(dir, envFile), []byte(exportLines(st, dir)), 0o600); err != nil {
		logf("%v", err)
	}
	if err := writeFileAtomic(filepath.Join(dir, stateFile), data, 0o600); err != nil {
		logf("%v", err)
		stopAll()
		return 1
	}
	logf("ready in %.2fs", time.Since(start).Seconds())

	// Prometheus' file_sd targets follow the pods.
	stopTargets := make(chan struct{})
	defer close(stopTargets)
	go func() {
		for {
			if err := prom.WriteTargets(cl.ScrapeGroups()); err != nil {
				logf("prometheus targets: %v", err)
			}
			select {
			case <-stopTargets:
				return
			case <-time.After(200 * time.Millisecond):
			}
		}
	}()
	promCtl := make(chan os.Signal, 2)
	signal.Notify(promCtl, syscall.SIGUSR1, syscall.SIGUSR2)

	// A nil channel never fires: each unexpected exit is reported once.
	pgDone, s3Done := pg.Exited(), s3.Exited()
	for {
		select {
		case sig := <-sigs:
			logf("%v: stopping", sig)
			os.Remove(filepath.Join(dir, stateFile))
			stopAll()
			logf("stopped")
			return 0
		case <-pgDone:
			logf("postgres exited unexpectedly; %s:\n%s", pg.LogFile, infra.Tail(pg.LogFile, 20))
			pgDone = nil
		case <-s3Done:
			logf("weed exited unexpectedly; %s:\n%s", s3.LogFile, infra.Tail(s3.LogFile, 20))
			s3Done = nil
		case sig := <-promCtl:
			if sig == syscall.SIGUSR1 {
				logf("prometheus: stopping (asked)")
				if err := prom.Stop(); err != nil {
					logf("prometheus: %v", err)
				}
			} else {
				logf("prometheus: starting (asked)")
				sctx, scancel := context.WithTimeout(context.Background(), startTimeout)
				if err := prom.Start(sctx); err != nil {
					logf("prometheus: %v", err)
				}
				scancel()
			}
		}
	}
}

// prometheusControl stops or starts the Prometheus of a running sandbox
// (SIGUSR1 / SIGUSR2 to its serve process) and waits until it is down or
// answers.
func prometheusControl(dir string, start bool) int {
	st, err := readState(dir)
	if err != nil || !serveAlive(st.ServePid, dir) {
		fmt.Fprintf(os.Stderr, "sandbox: %s is not running\n", dir)
		return 1
	}
	sig := syscall.SIGUSR1
	if start {
		sig = syscall.SIGUSR2
	}
	if err := syscall.Kill(st.ServePid, sig); err != nil {
		fmt.Fprintf(os.Stderr, "sandbox: signal %d: %v\n", st.ServePid, err)
		return 1
	}
	deadline := time.Now().Add(startTimeout)
	for time.Now().Before(deadline) {
		err := infra.PingPrometheus(st.PrometheusURL)
		if start == (err == nil) {
			what := "down"
			if start {
				what = "up"
			}
			fmt.Fprintf(os.Stderr, "sandbox: prometheus %s (%s)\n", what, st.PrometheusURL)
			return 0
		}
		time.Sleep(50 * time.Millisecond)
	}
	fmt.Fprintf(os.Stderr, "sandbox: prometheus did not %s in %s; %s:\n%s\n", map[bool]string{true: "start", false: "stop"}[start],
		startTimeout, filepath.Join(dir, "prometheus.log"), infra.Tail(filepath.Join(dir, "prometheus.log"), 20))
	return 1
}
