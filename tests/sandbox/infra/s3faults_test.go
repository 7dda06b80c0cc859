package infra

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestS3FaultProxy(t *testing.T) {
	var gotHost string
	var gotBody int
	store := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gotHost = r.Host
		b, _ := io.ReadAll(r.Body)
		gotBody = len(b)
		w.Write([]byte("stored"))
	}))
	defer store.Close()
	p, err := NewS3FaultProxy("127.0.0.1:0", store.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Stop()
	ep := p.Endpoint()

	// passed on unchanged, Host included (a SigV4 signature covers it)
	r, err := http.Post(ep+"/bucket/key?uploads", "text/plain", strings.NewReader("abc"))
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("plain request: %v %v", r, err)
	}
	r.Body.Close()
	if gotHost != strings.TrimPrefix(ep, "http://") || gotBody != 3 {
		t.Fatalf("store saw host %q body %d", gotHost, gotBody)
	}

	arm := func(f string) {
		r, err := http.Post(ep+"/_sandbox/faults", "application/json", strings.NewReader(f))
		if err != nil || r.StatusCode != 201 {
			t.Fatalf("arm %s: %v %v", f, r, err)
		}
		r.Body.Close()
	}
	// a 503 SlowDown once, then through again
	arm(`{"method":"PUT","path":"^/bucket/key$","status":503}`)
	req, _ := http.NewRequest("PUT", ep+"/bucket/key", strings.NewReader("x"))
	r, err = http.DefaultClient.Do(req)
	if err != nil || r.StatusCode != 503 {
		t.Fatalf("fault: %v %v", r, err)
	}
	b, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !bytes.Contains(b, []byte("<Code>SlowDown</Code>")) {
		t.Fatalf("not an S3 error document: %s", b)
	}
	req, _ = http.NewRequest("PUT", ep+"/bucket/key", strings.NewReader("x"))
	if r, err = http.DefaultClient.Do(req); err != nil || r.StatusCode != 200 {
		t.Fatalf("after the fault: %v %v", r, err)
	}
	r.Body.Close()

	// a reset drops the connection; path?query is matched too
	arm(`{"path":"\\?partNumber=","reset":true}`)
	req, _ = http.NewRequest("PUT", ep+"/bucket/key?partNumber=1&uploadId=u", strings.NewReader("x"))
	if r, err = http.DefaultClient.Do(req); err == nil {
		r.Body.Close()
		t.Fatalf("reset: got %d, want a dropped connection", r.StatusCode)
	}

	// counts by method, path and query names
	r, _ = http.Get(ep + "/_sandbox/stats")
	var counts map[string]int
	json.NewDecoder(r.Body).Decode(&counts)
	r.Body.Close()
	if counts["PUT /bucket/key"] != 2 || counts["POST /bucket/key?uploads"] != 1 || counts["PUT /bucket/key?partNumber&uploadId"] != 1 {
		t.Fatalf("stats: %v", counts)
	}
	// a fault needs an effect; a bad regexp is refused
	for _, f := range []string{`{"path":"x"}`, `{"path":"(","status":500}`} {
		r, _ := http.Post(ep+"/_sandbox/faults", "application/json", strings.NewReader(f))
		if r.StatusCode != 400 {
			t.Fatalf("%s: %d, want 400", f, r.StatusCode)
		}
		r.Body.Close()
	}
}
