// Package demoapp is a stand-in for the PhysioFlow API that the sandbox's
// pods run: the same endpoints the smoke tests check, backed by the real
// PostgreSQL tables, with misbehaviour injected per version from a file.
package demoapp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
)

// Config is what the app reads from its environment.
type Config struct {
	Addr     string   // host:port to listen on (POD_IP:PORT)
	Version  string   // APP_VERSION, the image tag
	Pod      string   // POD_NAME
	DBURL    string   // DATABASE_URL; empty means libpq's PG* variables
	Behavior Behavior // from SANDBOX_BEHAVIORS for Version
}

// ConfigFromEnv builds the configuration from the pod environment.
func ConfigFromEnv() (Config, error) {
	host := envOr("POD_IP", "127.0.0.1")
	port := envOr("PORT", "8080")
	c := Config{
		Addr:    net.JoinHostPort(host, port),
		Version: envOr("APP_VERSION", "dev"),
		Pod:     envOr("POD_NAME", "local"),
		DBURL:   os.Getenv("DATABASE_URL"),
	}
	b, err := LoadBehavior(os.Getenv("SANDBOX_BEHAVIORS"), c.Version)
	c.Behavior = b
	return c, err
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}
	return def
}

// App is one running demo app.
type App struct {
	cfg     Config
	db      *pgxpool.Pool
	started time.Time
	stdout  io.Writer
	stderr  io.Writer
	logMu   sync.Mutex
	metrics *metrics
	errors  *errorPicker
}

// New prepares the app; the database is connected lazily, so an app whose
// database is down still starts and answers /health.
func New(cfg Config, stdout, stderr io.Writer) (*App, error) {
	var pc *pgxpool.Config
	var err error
	pc, err = pgxpool.ParseConfig(cfg.DBURL) // "" reads PGHOST, PGPORT, ...
	if err != nil {
		return nil, fmt.Errorf("database configuration: %v", redact(err))
	}
	pc.MaxConns = 4
	if pc.ConnConfig.ConnectTimeout == 0 || pc.ConnConfig.ConnectTimeout > 3*time.Second {
		pc.ConnConfig.ConnectTimeout = 3 * time.Second
	}
	db, err := pgxpool.NewWithConfig(context.Background(), pc)
	if err != nil {
		return nil, fmt.Errorf("database pool: %v", redact(err))
	}
	return &App{cfg: cfg, db: db, started: time.Now(), stdout: stdout, stderr: stderr,
		metrics: newMetrics(cfg.Version), errors: &errorPicker{rate: cfg.Behavior.ErrorRate}}, nil
}

// Close releases the database pool.
func (a *App) Close() { a.db.Close() }

// retryable: the server ended the session (pg_terminate_backend, as a
// restore does just before it swaps the database in by rename; a server
// restart), or refused a new one while the swap runs (the database does
// not exist or takes no connections for those milliseconds). The demo app
// only reads, so running the query again is safe.
func retryable(err error) bool {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		switch pe.Code {
		case "57P01", "57P02", "57P03", "3D000", "55000":
			return true
		}
		return false
	}
	var ce *pgconn.ConnectError
	return errors.As(err, &ce) || pgconn.SafeToRetry(err)
}

// withRetry runs fn again while it fails with a retryable error: each
// terminated pooled connection fails once and is dropped by the pool, so
// the next attempt gets another one, or a new one. New connections are
// tried for at most a second (a swap by rename takes milliseconds; a
// database that is down must still answer 503 promptly).
func withRetry(ctx context.Context, fn func() error) error {
	start := time.Now()
	err := fn()
	for attempt := 1; err != nil && retryable(err) && time.Since(start) < time.Second; attempt++ {
		delay := time.Duration(0)
		var ce *pgconn.ConnectError
		if errors.As(err, &ce) {
			delay = time.Duration(min(attempt, 10)) * 20 * time.Millisecond
		}
		select {
		case <-ctx.Done():
			return err
		case <-time.After(delay):
		}
		err = fn()
	}
	return err
}

func (a *App) logf(w io.Writer, level, format string, args ...any) {
	a.logMu.Lock()
	defer a.logMu.Unlock()
	fmt.Fprintf(w, "%s %s %s\n", time.Now().UTC().Format(time.RFC3339), level, fmt.Sprintf(format, args...))
}

// Handler returns the HTTP API with the behaviour middleware applied.
func (a *App) Handler() http.Handler {
	routes := []struct {
		method, path string
		h            http.HandlerFunc
	}{
		{"GET", "/health", a.health},
		{"GET", "/ready", a.ready},
		{"GET", "/api/v1/info", a.info},
		{"POST", "/api/v1/insurance/bhyt/validate", a.validateBHYT},
		{"GET", "/api/v1/outcome-measures", a.list("outcome_measure_library", "code")},
		{"GET", "/api/v1/service-codes", a.list("pt_service_codes", "code")},
		{"GET", "/api/v1/protocols", a.list("clinical_protocols", "code")},
		{"GET", "/api/v1/medical-terms", a.medicalTerms},
		{"GET", "/api/v1/db-check", a.dbCheck},
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", a.metrics.handler())
	allowed := map[string]string{"/metrics": "GET"}
	for _, rt := range routes {
		mux.HandleFunc(rt.method+" "+rt.path, rt.h)
		allowed[rt.path] = rt.method
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		if m, ok := allowed[r.URL.Path]; ok {
			w.Header().Set("Allow", m)
			writeJSON(w, http.StatusMethodNotAllowed, map[string]any{"error": "method not allowed", "allow": m})
			return
		}
		writeJSON(w, http.StatusNotFound, map[string]any{"error": "not found", "path": r.URL.Path})
	})
	return a.middleware(mux, allowed)
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (a *App) middleware(next http.Handler, routes map[string]string) http.Handler {
	b := a.cfg.Behavior
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		delay := time.Duration(b.SlowMs) * time.Millisecond
		api := !operational(r.URL.Path)
		if api && b.LatencyMs > 0 && b.triggered() {
			delay += time.Duration(b.LatencyMs) * time.Millisecond
		}
		if delay > 0 {
			select {
			case <-time.After(delay):
			case <-r.Context().Done():
			}
		}
		switch {
		case b.fails(r.URL.Path):
			writeJSON(sw, http.StatusInternalServerError, map[string]any{"error": "injected failure"})
		case api && b.ErrorRate > 0 && b.triggered() && a.errors.next():
			writeJSON(sw, http.StatusInternalServerError, map[string]any{"error": "injected failure (error_rate)"})
		default:
			next.ServeHTTP(sw, r)
		}
		if sw.status == 0 {
			sw.status = http.StatusOK
		}
		route := r.URL.Path
		if _, known := routes[route]; !known {
			route = "other"
		}
		a.metrics.observe(r.Method, route, sw.status, time.Since(start))
		a.logf(a.stdout, "INFO", "%s %s %d %dms", r.Method, r.URL.Path, sw.status, time.Since(start).Milliseconds())
	})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// writeRaw sends JSON that PostgreSQL built.
func writeRaw(w http.ResponseWriter, status int, parts ...string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	for _, p := range parts {
		io.WriteString(w, p)
	}
	io.WriteString(w, "\n")
}

func (a *App) dbError(w http.ResponseWriter, err error) {
	a.logf(a.stderr, "ERROR", "database: %v", redact(err))
	writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": redact(err).Error()})
}

func (a *App) health(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"status": "ok", "version": a.cfg.Version})
}

func (a *App) ready(w http.ResponseWriter, r *http.Request) {
	b := a.cfg.Behavior
	notReady := func(reason string) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"ready": false, "reason": reason})
	}
	if b.NeverReady && b.triggered() {
		notReady("never ready (injected)")
		return
	}
	if wait := seconds(b.ReadyAfterS) - time.Since(a.started); wait > 0 {
		notReady(fmt.Sprintf("starting up, ready in %.1fs", wait.Seconds()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var one int
	if err := withRetry(ctx, func() error { return a.db.QueryRow(ctx, "SELECT 1").Scan(&one) }); err != nil {
		notReady("database: " + redact(err).Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"ready": true})
}

// schemaVersion is the newest applied migration, 0 before the first.
// Integer versions, zero-padded text ("007") and names ("007_billing")
// all count by their leading number.
func (a *App) schemaVersion(ctx context.Context) (int64, error) {
	var v int64
	err := withRetry(ctx, func() error {
		return a.db.QueryRow(ctx, "SELECT coalesce(max(substring(version::text from '^[0-9]+')::bigint), 0) FROM schema_migrations").Scan(&v)
	})
	var pe *pgconn.PgError
	if errors.As(err, &pe) && pe.Code == "42P01" { // undefined_table
		return 0, nil
	}
	return v, err
}

func (a *App) info(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	v, err := a.schemaVersion(ctx)
	if err != nil {
		a.dbError(w, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"name": "physioflow-api", "version": a.cfg.Version, "pod": a.cfg.Pod, "schema_version": v,
	})
}

func (a *App) validateBHYT(w http.ResponseWriter, r *http.Request) {
	var req struct {
		CardNumber *string `json:"card_number"`
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10))
	if err := dec.Decode(&req); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "body must be a JSON object: " + err.Error()})
		return
	}
	if req.CardNumber == nil {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "card_number is required"})
		return
	}
	card, errs := ParseBHYT(*req.CardNumber)
	if errs != nil {
		writeJSON(w, http.StatusOK, map[string]any{"valid": false, "card_number": *req.CardNumber, "errors": errs})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"valid":                   true,
		"card_number":             *req.CardNumber,
		"object_code":             card.ObjectCode,
		"benefit_level":           card.BenefitLevel,
		"province_code":           card.ProvinceCode,
		"social_insurance_number": card.SocialInsuranceNumber,
	})
}

// queryJSON lets PostgreSQL encode the rows, so every column type (numeric,
// uuid, jsonb, timestamps) comes out as the JSON PostgreSQL would give.
func (a *App) queryJSON(ctx context.Context, query string, args ...any) (string, error) {
	var out string
	err := withRetry(ctx, func() error {
		return a.db.QueryRow(ctx, "SELECT coalesce(json_agg(t), '[]')::text FROM ("+query+") t", args...).Scan(&out)
	})
	return out, err
}

func (a *App) list(table, order string) http.HandlerFunc {
	query := "SELECT * FROM " + pgx.Identifier{table}.Sanitize() + " ORDER BY " + pgx.Identifier{order}.Sanitize()
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		items, err := a.queryJSON(ctx, query)
		if err != nil {
			a.dbError(w, err)
			return
		}
		writeRaw(w, http.StatusOK, `{"items":`, items, `}`)
	}
}

func (a *App) medicalTerms(w http.ResponseWriter, r *http.Request) {
	q := strings.TrimSpace(r.URL.Query().Get("q"))
	if q == "" {
		writeJSON(w, http.StatusBadRequest, map[string]any{"error": "query parameter q is required"})
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	pattern := "%" + likeEscaper.Replace(q) + "%"
	items, err := a.queryJSON(ctx,
		"SELECT * FROM medical_terms WHERE term_en ILIKE $1 OR term_vi ILIKE $1 ORDER BY term_en LIMIT 100", pattern)
	if err != nil {
		a.dbError(w, err)
		return
	}
	qj, _ := json.Marshal(q)
	writeRaw(w, http.StatusOK, `{"query":`, string(qj), `,"items":`, items, `}`)
}

var likeEscaper = strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)

func (a *App) dbCheck(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	var one int
	err := withRetry(ctx, func() error { return a.db.QueryRow(ctx, "SELECT 1").Scan(&one) })
	latency := time.Since(start)
	var v int64
	if err == nil {
		v, err = a.schemaVersion(ctx)
	}
	if err != nil {
		a.logf(a.stderr, "ERROR", "database check: %v", redact(err))
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"database": "error", "error": redact(err).Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"database": "ok", "latency_ms": latency.Milliseconds(), "schema_version": v})
}

// redact keeps a password that a connection string carried out of
// messages (pgx quotes the string it failed to parse).
func redact(err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, secret := range []string{os.Getenv("PGPASSWORD"), urlPassword(os.Getenv("DATABASE_URL"))} {
		if secret != "" {
			msg = strings.ReplaceAll(msg, secret, "xxxxx")
		}
	}
	return errors.New(msg)
}

func urlPassword(s string) string {
	at := strings.LastIndex(s, "@")
	scheme := strings.Index(s, "://")
	if at < 0 || scheme < 0 || scheme+3 > at {
		return ""
	}
	userinfo := s[scheme+3 : at]
	if i := strings.Index(userinfo, ":"); i >= 0 {
		return userinfo[i+1:]
	}
	return ""
}

// Run serves until ctx is cancelled, then stops accepting connections and
// waits for requests in flight. It also runs the injected misbehaviour.
func (a *App) Run(ctx context.Context) error {
	ln, err := net.Listen("tcp", a.cfg.Addr)
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: a.Handler(), ReadHeaderTimeout: 10 * time.Second}
	a.logf(a.stdout, "INFO", "physioflow-api %s (pod %s) listening on %s", a.cfg.Version, a.cfg.Pod, ln.Addr())
	b := a.cfg.Behavior
	if b.CrashAfterS > 0 {
		time.AfterFunc(seconds(b.CrashAfterS), func() {
			a.logf(a.stderr, "ERROR", "fatal: injected crash after %gs, exiting with code %d", b.CrashAfterS, b.exitCode())
			os.Exit(b.exitCode())
		})
	}
	if b.ErrorLogsPerS > 0 {
		go a.errorLogs(ctx, b.ErrorLogsPerS)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	a.logf(a.stdout, "INFO", "shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), 25*time.Second)
	defer cancel()
	return srv.Shutdown(sctx)
}

func (a *App) errorLogs(ctx context.Context, perSecond float64) {
	t := time.NewTicker(time.Duration(float64(time.Second) / perSecond))
	defer t.Stop()
	for n := 1; ; n++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			a.logf(a.stderr, "ERROR", "something failed: injected error %d (request handler panicked)", n)
		}
	}
}

// Main runs the demo app from the environment until SIGTERM or SIGINT and
// returns the process exit code.
func Main() int {
	cfg, err := ConfigFromEnv()
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s ERROR demoapp: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		return 2
	}
	app, err := New(cfg, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s ERROR demoapp: %v\n", time.Now().UTC().Format(time.RFC3339), err)
		return 2
	}
	defer app.Close()
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := app.Run(ctx); err != nil {
		app.logf(os.Stderr, "ERROR", "demoapp: %v", err)
		return 1
	}
	return 0
}
