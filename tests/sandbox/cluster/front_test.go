package cluster

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	apierrors "k8s.io/apimachinery/pkg/api/errors"

	"bgrun/sandbox/infra"
)

func TestPathResource(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/namespaces/ns/services/web":                           "/services/web",
		"/api/v1/namespaces/ns/pods/p-1/log":                           "/pods/p-1",
		"/apis/apps/v1/namespaces/ns/deployments/api":                  "apps/deployments/api",
		"/apis/apps/v1/namespaces/ns/deployments":                      "apps/deployments/",
		"/apis/coordination.k8s.io/v1/namespaces/ns/leases/deploy":     "coordination.k8s.io/leases/deploy",
		"/api/v1/namespaces/ns":                                        "/namespaces/ns",
		"/api/v1/namespaces":                                           "/namespaces/",
		"/apis/discovery.k8s.io/v1/watch/namespaces/ns/endpointslices": "discovery.k8s.io/endpointslices/",
		"/version": "//",
	} {
		gr, name := pathResource(path)
		if got := gr.Group + "/" + gr.Resource + "/" + name; got != want {
			t.Errorf("pathResource(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestFaultTakeCountsDown(t *testing.T) {
	var fs faultList
	f := &fault{FaultRule: infra.FaultRule{Method: "PATCH", Path: "/services/web$", Count: 2}, Status: 409}
	if err := f.Compile(); err != nil {
		t.Fatal(err)
	}
	fs.Add(f)
	req := func(m, p string) *http.Request { return httptest.NewRequest(m, p, nil) }
	if f := fs.Take(req("GET", "/api/v1/namespaces/ns/services/web")); f != nil {
		t.Fatal("a PATCH fault hit a GET")
	}
	for i := 0; i < 2; i++ {
		if f := fs.Take(req("PATCH", "/api/v1/namespaces/ns/services/web")); f == nil || f.Status != 409 {
			t.Fatalf("hit %d: %+v", i, f)
		}
	}
	if f := fs.Take(req("PATCH", "/api/v1/namespaces/ns/services/web")); f != nil {
		t.Fatal("a count-2 fault hit a third time")
	}
}

func TestFaultErrorIsKubernetesStatus(t *testing.T) {
	r := httptest.NewRequest("PATCH", "/apis/apps/v1/namespaces/ns/deployments/api", nil)
	st := statusOf(faultError(r, &fault{Status: 409}))
	if st.Code != 409 || st.Reason != "Conflict" || st.Details.Name != "api" || st.Details.Group != "apps" ||
		!strings.Contains(st.Message, optimisticLockErrorMsg) {
		t.Fatalf("409: %+v", st)
	}
	st = statusOf(faultError(r, &fault{Status: 429}))
	if st.Code != 429 || st.Details.RetryAfterSeconds != 1 {
		t.Fatalf("429: %+v", st)
	}
}

func TestEndWithEventClosesTheStream(t *testing.T) {
	rec := httptest.NewRecorder()
	w := &statusWriter{ResponseWriter: rec}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(200)
	w.Write([]byte(`{"type":"ADDED","object":{}}` + "\n"))
	w.endWithEvent(apierrors.NewInternalError(io.EOF))
	if _, err := w.Write([]byte("more")); err == nil {
		t.Fatal("the proxy could still write after the fault ended the stream")
	}
	sc := bufio.NewScanner(bytes.NewReader(rec.Body.Bytes()))
	var lines []string
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	if len(lines) != 2 {
		t.Fatalf("lines: %q", lines)
	}
	var ev struct {
		Type   string
		Object struct {
			Kind string
			Code int
		}
	}
	if err := json.Unmarshal([]byte(lines[1]), &ev); err != nil || ev.Type != "ERROR" || ev.Object.Kind != "Status" || ev.Object.Code != 500 {
		t.Fatalf("last event %q (%v)", lines[1], err)
	}
}
