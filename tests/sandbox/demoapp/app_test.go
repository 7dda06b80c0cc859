package demoapp

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
)

// newTestApp runs the handler with a database URL that refuses
// connections: everything that needs no database must still work.
func newTestApp(t *testing.T, b Behavior) (*httptest.Server, *strings.Builder) {
	t.Helper()
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := ln.Addr().String()
	ln.Close()
	var out strings.Builder
	app, err := New(Config{Version: "v7", Pod: "pod-a", Behavior: b,
		DBURL: "postgres://u:secretpw@" + closed + "/db?sslmode=disable&connect_timeout=1"}, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(app.Close)
	srv := httptest.NewServer(app.Handler())
	t.Cleanup(srv.Close)
	return srv, &out
}

func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	json.NewDecoder(resp.Body).Decode(&v)
	return resp.StatusCode, v
}

func TestHandlerWithoutDatabase(t *testing.T) {
	srv, out := newTestApp(t, Behavior{})
	if code, v := call(t, "GET", srv.URL+"/health", ""); code != 200 || v["status"] != "ok" || v["version"] != "v7" {
		t.Errorf("/health: %d %v", code, v)
	}
	code, v := call(t, "POST", srv.URL+"/api/v1/insurance/bhyt/validate", `{"card_number":"HS2790000000001"}`)
	if code != 200 || v["valid"] != true || v["object_code"] != "HS" || v["benefit_level"] != 2.0 || v["province_code"] != "79" {
		t.Errorf("valid card: %d %v", code, v)
	}
	code, v = call(t, "POST", srv.URL+"/api/v1/insurance/bhyt/validate", `{"card_number":"AB1010123456789"}`)
	if errs, _ := v["errors"].([]any); code != 200 || v["valid"] != false || len(errs) != 1 {
		t.Errorf("invalid card: %d %v", code, v)
	}
	for _, body := range []string{``, `[1]`, `{"card_number":12}`, `{}`} {
		if code, v := call(t, "POST", srv.URL+"/api/v1/insurance/bhyt/validate", body); code != 400 {
			t.Errorf("body %q: %d %v", body, code, v)
		}
	}
	if code, v := call(t, "GET", srv.URL+"/ready", ""); code != 503 || v["ready"] != false {
		t.Errorf("/ready without database: %d %v", code, v)
	}
	code, v = call(t, "GET", srv.URL+"/api/v1/db-check", "")
	if code != 503 || v["database"] != "error" || strings.Contains(v["error"].(string), "secretpw") {
		t.Errorf("/db-check without database: %d %v", code, v)
	}
	if code, _ := call(t, "GET", srv.URL+"/api/v1/medical-terms", ""); code != 400 {
		t.Errorf("/medical-terms without q: %d", code)
	}
	if code, _ := call(t, "DELETE", srv.URL+"/health", ""); code != 405 {
		t.Errorf("DELETE /health: %d", code)
	}
	if !strings.Contains(out.String(), " INFO GET /health 200 ") {
		t.Errorf("no request log line in %q", out.String())
	}
}

func TestHandlerBehaviors(t *testing.T) {
	srv, _ := newTestApp(t, Behavior{NeverReady: true, SlowMs: 300, FailPaths: []string{"/health"}})
	start := time.Now()
	code, v := call(t, "GET", srv.URL+"/health", "")
	if code != 500 || v["error"] != "injected failure" {
		t.Errorf("failed path: %d %v", code, v)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("slow_ms 300 took %v", d)
	}
	if code, v := call(t, "GET", srv.URL+"/ready", ""); code != 503 || !strings.Contains(v["reason"].(string), "never") {
		t.Errorf("never_ready: %d %v", code, v)
	}

	trigger := filepath.Join(t.TempDir(), "fault")
	srv, _ = newTestApp(t, Behavior{NeverReady: true, FailPaths: []string{"/health"}, TriggerFile: trigger})
	if code, _ := call(t, "GET", srv.URL+"/health", ""); code != 200 {
		t.Errorf("trigger_file absent: /health %d", code)
	}
	if code, v := call(t, "GET", srv.URL+"/ready", ""); code != 503 || strings.Contains(v["reason"].(string), "never") {
		t.Errorf("trigger_file absent: /ready %d %v", code, v)
	}
	os.WriteFile(trigger, nil, 0o644)
	if code, _ := call(t, "GET", srv.URL+"/health", ""); code != 500 {
		t.Errorf("trigger_file present: /health %d", code)
	}
	if code, v := call(t, "GET", srv.URL+"/ready", ""); code != 503 || !strings.Contains(v["reason"].(string), "never") {
		t.Errorf("trigger_file present: /ready %d %v", code, v)
	}
	os.Remove(trigger)
	if code, _ := call(t, "GET", srv.URL+"/health", ""); code != 200 {
		t.Errorf("trigger_file removed: /health %d", code)
	}

	srv, _ = newTestApp(t, Behavior{ReadyAfterS: 30})
	if code, v := call(t, "GET", srv.URL+"/ready", ""); code != 503 || !strings.Contains(v["reason"].(string), "starting") {
		t.Errorf("ready_after_s: %d %v", code, v)
	}
}

// A restore swaps the database in by rename after terminating its
// sessions: those errors are retried, a query's own error is not.
func TestRetryable(t *testing.T) {
	for code, want := range map[string]bool{"57P01": true, "3D000": true, "55000": true, "42P01": false, "23505": false} {
		if got := retryable(&pgconn.PgError{Code: code}); got != want {
			t.Errorf("retryable(%s) = %v, want %v", code, got, want)
		}
	}
	calls := 0
	err := withRetry(context.Background(), func() error {
		calls++
		if calls < 3 {
			return &pgconn.PgError{Severity: "FATAL", Code: "57P01"}
		}
		return nil
	})
	if err != nil || calls != 3 {
		t.Errorf("withRetry: err %v after %d calls, want nil after 3", err, calls)
	}
}

// error_rate fails exactly that fraction of API requests, never /health or
// /ready; /metrics counts every request by route and code.
func TestErrorRateAndMetrics(t *testing.T) {
	srv, out := newTestApp(t, Behavior{ErrorRate: 0.2, LatencyMs: 30})
	failed := 0
	start := time.Now()
	for i := 0; i < 10; i++ {
		if code, _ := call(t, "POST", srv.URL+"/api/v1/insurance/bhyt/validate", `{"card_number":"HS2790000000001"}`); code == 500 {
			failed++
		}
	}
	if failed != 2 {
		t.Errorf("error_rate 0.2: %d of 10 failed, want 2", failed)
	}
	if d := time.Since(start); d < 300*time.Millisecond {
		t.Errorf("latency_ms 30: 10 requests took %v", d)
	}
	for i := 0; i < 10; i++ {
		if code, _ := call(t, "GET", srv.URL+"/health", ""); code != 200 {
			t.Errorf("/health answered %d: error_rate must not touch it", code)
		}
	}
	call(t, "GET", srv.URL+"/nowhere/"+strings.Repeat("x", 5), "")
	resp, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	text := string(body)
	for _, want := range []string{
		`http_requests_total{app_version="v7",code="500",method="POST",path="/api/v1/insurance/bhyt/validate"} 2`,
		`http_requests_total{app_version="v7",code="200",method="POST",path="/api/v1/insurance/bhyt/validate"} 8`,
		`http_requests_total{app_version="v7",code="200",method="GET",path="/health"} 10`,
		`http_requests_total{app_version="v7",code="404",method="GET",path="other"} 1`,
		`http_request_duration_seconds_bucket{app_version="v7",code="200",method="POST",path="/api/v1/insurance/bhyt/validate",le="0.025"} 0`,
		`http_request_duration_seconds_count{app_version="v7",code="200",method="POST",path="/api/v1/insurance/bhyt/validate"} 8`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, text)
		}
	}
	if strings.Contains(out.String(), "ERROR") {
		t.Errorf("injected error_rate must not log ERROR lines: %s", out.String())
	}
}

func TestErrorRateOutOfRange(t *testing.T) {
	path := filepath.Join(t.TempDir(), "b.json")
	os.WriteFile(path, []byte(`{"v9": {"error_rate": 1.5}}`), 0o644)
	if _, err := LoadBehavior(path, "v9"); err == nil || !strings.Contains(err.Error(), "error_rate 1.5 is not between 0 and 1") {
		t.Errorf("error_rate 1.5: %v", err)
	}
}
