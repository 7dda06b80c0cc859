package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"bgrun/sandbox/infra"
)

// fault is one injected misbehaviour of the API server.
type fault struct {
	infra.FaultRule        // method, path (a regexp) and count of the requests it hits
	Status          int    `json:"status"`    // answer with this Status code
	DelayMS         int    `json:"delay_ms"`  // stall first (for a watch with reset: stream this long, then cut)
	Reset           bool   `json:"reset"`     // drop the connection (TCP RST)
	InStream        bool   `json:"in_stream"` // for a watch with status: stream delay_ms, then an ERROR event with the Status
	Message         string `json:"message"`
	RetryAfter      *int   `json:"retry_after"` // seconds (Retry-After), for 429/503/504; default 1 for 429, 0 = none
	Trickle         int    `json:"trickle"`     // send the answer at this many bytes a second (trickle.go)
}

// faultList is the armed faults, matched by infra.FaultRule.
type faultList = infra.Faults[fault, *fault]

// settings are the front proxy's tunables, changeable through the admin
// API so tests can provoke rare behaviour.
type settings struct {
	ExpiredAsHTTP bool `json:"expired_as_http"` // too-old watch: HTTP 410 instead of the ERROR event kube-apiserver streams
}

func (c *Cluster) expiredAsHTTP() bool {
	c.settingsMu.Lock()
	defer c.settingsMu.Unlock()
	return c.settings.ExpiredAsHTTP
}

type stats struct {
	mu     sync.Mutex
	counts map[string]int
}

func (c *Cluster) countRequest(r *http.Request) {
	c.stats.mu.Lock()
	defer c.stats.mu.Unlock()
	if c.stats.counts == nil {
		c.stats.counts = map[string]int{}
	}
	c.stats.counts[r.Method+" "+r.URL.Path]++
}

func isWatchRequest(r *http.Request) bool {
	q := r.URL.Query()
	return isTrue(q.Get("watch")) || strings.Contains(r.URL.Path, "/watch/")
}

func isTrue(s string) bool { return s == "true" || s == "1" }

// optimisticLockErrorMsg is kube-apiserver's message for a stale
// resourceVersion.
const optimisticLockErrorMsg = "the object has been modified; please apply your changes to the latest version and try again"

// pathResource reads the group, resource and name out of an API path
// (/api/v1/namespaces/NS/RESOURCE/NAME[/SUB], /apis/GROUP/VERSION/...).
func pathResource(path string) (schema.GroupResource, string) {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	var gr schema.GroupResource
	switch {
	case len(parts) >= 2 && parts[0] == "api":
		parts = parts[2:]
	case len(parts) >= 3 && parts[0] == "apis":
		gr.Group = parts[1]
		parts = parts[3:]
	default:
		return gr, ""
	}
	if len(parts) > 0 && parts[0] == "watch" {
		parts = parts[1:]
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:]
	}
	if len(parts) == 0 {
		return gr, ""
	}
	gr.Resource = parts[0]
	if len(parts) >= 2 {
		return gr, parts[1]
	}
	return gr, ""
}

// resetConn drops the client's TCP connection with an RST (over HTTP/2,
// every stream on it).
func resetConn(w http.ResponseWriter, r *http.Request) {
	if sw, ok := w.(*statusWriter); ok {
		sw.reset = true
	}
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	if conn == nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn()
	}
	if t, ok := conn.(*net.TCPConn); ok {
		t.SetLinger(0)
	}
	conn.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

// writeError answers with err as kube-apiserver's Status body.
func writeError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	writeJSON(w, int(st.Code), st)
}

func statusOf(err error) *metav1.Status {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		st := se.Status()
		st.Kind, st.APIVersion = "Status", "v1"
		return &st
	}
	st := apierrors.NewInternalError(err).Status()
	st.Kind, st.APIVersion = "Status", "v1"
	return &st
}

// applyFaults runs the first matching fault. It returns false when the
// request has been answered (or dropped) by the fault.
func (c *Cluster) applyFaults(w http.ResponseWriter, r *http.Request) (context.Context, bool) {
	ctx := r.Context()
	f := c.faults.Take(r)
	if f == nil {
		return ctx, true
	}
	if f.Trickle > 0 {
		ctx = withTrickle(ctx, f.Trickle)
		w = trickled(w, ctx)
	}
	delay := time.Duration(f.DelayMS) * time.Millisecond
	if f.Reset && delay > 0 && isWatchRequest(r) && f.Status == 0 {
		cut := make(chan struct{})
		time.AfterFunc(delay, func() { close(cut) })
		return context.WithValue(ctx, watchCutKey{}, (<-chan struct{})(cut)), true
	}
	if f.InStream && f.Status > 0 && isWatchRequest(r) {
		cut := make(chan struct{})
		time.AfterFunc(delay, func() { close(cut) })
		ctx = context.WithValue(ctx, watchCutKey{}, (<-chan struct{})(cut))
		return context.WithValue(ctx, watchErrKey{}, faultError(r, f)), true
	}
	if delay > 0 {
		select {
		case <-time.After(delay):
		case <-ctx.Done():
			return ctx, false
		}
	}
	if f.Reset {
		resetConn(w, r)
		return ctx, false
	}
	if f.Status > 0 {
		writeError(w, faultError(r, f))
		return ctx, false
	}
	return ctx, true
}

func faultError(r *http.Request, f *fault) error {
	var gr schema.GroupResource
	var name string
	gr, name = pathResource(r.URL.Path)
	msg := f.Message
	if msg == "" {
		msg = "injected fault"
	}
	retry := 0
	if f.RetryAfter != nil {
		retry = max(*f.RetryAfter, 0)
	} else if f.Status == 429 {
		retry = 1
	}
	switch f.Status {
	case 401:
		return apierrors.NewUnauthorized("Unauthorized")
	case 403:
		return apierrors.NewForbidden(gr, name, errors.New(msg))
	case 404:
		if name != "" {
			return apierrors.NewNotFound(gr, name)
		}
	case 409:
		if name != "" {
			return apierrors.NewConflict(gr, name, errors.New(optimisticLockErrorMsg))
		}
	case 410:
		return apierrors.NewResourceExpired("too old resource version: 1 (2)")
	case 429:
		return apierrors.NewTooManyRequests(msg, retry)
	case 500:
		return apierrors.NewInternalError(errors.New(msg))
	case 503:
		return apierrors.NewGenericServerResponse(503, "", gr, name, msg, retry, false)
	case 504:
		return apierrors.NewTimeoutError(msg, retry)
	}
	return apierrors.NewGenericServerResponse(f.Status, strings.ToLower(r.Method), gr, name, msg, 0, false)
}
