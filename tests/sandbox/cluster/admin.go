package cluster

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// fault is one injected misbehaviour of the API server.
type fault struct {
	Method     string `json:"method"`    // empty or "*" = any
	Path       string `json:"path"`      // regexp, matched against the path and against path?query
	Status     int    `json:"status"`    // answer with this Status code
	Count      int    `json:"count"`     // how many requests it hits; 0 = 1, -1 = until cleared
	DelayMS    int    `json:"delay_ms"`  // stall first (for a watch with reset: stream this long, then cut)
	Reset      bool   `json:"reset"`     // drop the connection (TCP RST)
	InStream   bool   `json:"in_stream"` // for a watch with status: stream delay_ms, then an ERROR event with the Status
	Message    string `json:"message"`
	RetryAfter *int   `json:"retry_after"` // seconds (Retry-After), for 429/503/504; default 1 for 429, 0 = none
	Trickle    int    `json:"trickle"`     // send the answer at this many bytes a second (trickle.go)
	re         *regexp.Regexp
}

// settings are the API server's tunables, changeable through the admin API
// so tests can provoke rare behaviour quickly.
type settings struct {
	HistoryWindow      int  `json:"history_window"`       // watch events kept per resource (default 1000)
	BookmarkIntervalMS int  `json:"bookmark_interval_ms"` // idle BOOKMARK period (default 1000)
	ExpiredAsHTTP      bool `json:"expired_as_http"`      // too-old watch: HTTP 410 instead of an ERROR event
}

func (c *Cluster) expiredAsHTTP() bool {
	c.settingsMu.Lock()
	defer c.settingsMu.Unlock()
	return c.settings.ExpiredAsHTTP
}

type faultSet struct {
	mu   sync.Mutex
	list []*fault
}

func (fs *faultSet) take(r *http.Request) *fault {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.list {
		if f.Method != "" && f.Method != "*" && !strings.EqualFold(f.Method, r.Method) {
			continue
		}
		if !f.re.MatchString(r.URL.Path) && !f.re.MatchString(r.URL.RequestURI()) {
			continue
		}
		if f.Count > 0 {
			f.Count--
			if f.Count == 0 {
				fs.list = append(fs.list[:i:i], fs.list[i+1:]...)
			}
		}
		cp := *f
		return &cp
	}
	return nil
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

// applyFaults runs the first matching fault. It returns false when the
// request has been answered (or dropped) by the fault.
func (c *Cluster) applyFaults(w http.ResponseWriter, r *http.Request) (context.Context, bool) {
	ctx := r.Context()
	f := c.faults.take(r)
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
	if req, err := parseAPIPath(strings.Split(strings.Trim(r.URL.Path, "/"), "/")); err == nil {
		gr, name = req.res.gr(), req.name
	}
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

func (c *Cluster) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		var f fault
		if err := json.NewDecoder(r.Body).Decode(&f); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		re, err := regexp.Compile(f.Path)
		if err != nil {
			http.Error(w, "bad path regexp: "+err.Error(), 400)
			return
		}
		if f.Trickle < 0 {
			http.Error(w, "trickle is bytes a second, more than 0", 400)
			return
		}
		if f.Status == 0 && !f.Reset && f.DelayMS == 0 && f.Trickle == 0 {
			http.Error(w, "a fault needs status, reset, delay_ms or trickle", 400)
			return
		}
		f.re = re
		if f.Count == 0 {
			f.Count = 1
		}
		c.faults.mu.Lock()
		c.faults.list = append(c.faults.list, &f)
		c.faults.mu.Unlock()
		writeJSON(w, 201, f)
	})
	mux.HandleFunc("DELETE /faults", func(w http.ResponseWriter, r *http.Request) {
		c.faults.mu.Lock()
		c.faults.list = nil
		c.faults.mu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		c.faults.mu.Lock()
		defer c.faults.mu.Unlock()
		list := c.faults.list
		if list == nil {
			list = []*fault{}
		}
		writeJSON(w, 200, list)
	})
	mux.HandleFunc("GET /stats", func(w http.ResponseWriter, r *http.Request) {
		c.stats.mu.Lock()
		defer c.stats.mu.Unlock()
		m := map[string]int{}
		for k, v := range c.stats.counts {
			m[k] = v
		}
		writeJSON(w, 200, m)
	})
	mux.HandleFunc("DELETE /stats", func(w http.ResponseWriter, r *http.Request) {
		c.stats.mu.Lock()
		c.stats.counts = nil
		c.stats.mu.Unlock()
		w.WriteHeader(204)
	})
	mux.HandleFunc("POST /pods/{ns}/{name}/kill", func(w http.ResponseWriter, r *http.Request) {
		if err := c.kubelet.kill(r.PathValue("ns"), r.PathValue("name")); err != nil {
			http.Error(w, err.Error(), 404)
			return
		}
		writeJSON(w, 200, map[string]string{"killed": r.PathValue("ns") + "/" + r.PathValue("name")})
	})
	mux.HandleFunc("GET /settings", func(w http.ResponseWriter, r *http.Request) {
		c.settingsMu.Lock()
		defer c.settingsMu.Unlock()
		writeJSON(w, 200, c.settings)
	})
	mux.HandleFunc("PUT /settings", func(w http.ResponseWriter, r *http.Request) {
		c.settingsMu.Lock()
		next := c.settings
		c.settingsMu.Unlock()
		if err := json.NewDecoder(r.Body).Decode(&next); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		if next.HistoryWindow < 1 || next.BookmarkIntervalMS < 10 {
			http.Error(w, "history_window must be >= 1 and bookmark_interval_ms >= 10", 400)
			return
		}
		c.settingsMu.Lock()
		c.settings = next
		c.settingsMu.Unlock()
		c.store.setWindow(next.HistoryWindow)
		writeJSON(w, 200, next)
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
