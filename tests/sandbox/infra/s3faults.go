package infra

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// S3FaultProxy is the S3 store behind a proxy that misbehaves on cue, for
// the fault matrix (tests/matrix/): an HTTP reverse proxy on its own
// loopback port that passes requests on to SeaweedFS unchanged (the Host
// header too, so SigV4 signatures made for the proxy's address verify),
// counts them, and applies faults armed through its admin paths under
// /_sandbox/ (not a valid bucket name, so never an S3 request):
//
//	POST   /_sandbox/faults  {"method":"PUT","path":"regexp","status":500,"count":1,
//	                          "delay_ms":0,"reset":false,"after_bytes":0}
//	GET    /_sandbox/faults  the faults still armed
//	DELETE /_sandbox/faults  clear them
//	GET    /_sandbox/stats   request counts by "METHOD /bucket/key?query-names"
//	DELETE /_sandbox/stats   reset the counts
//
// status answers an S3 error document (500 InternalError, 503 SlowDown,
// others by their status text); reset drops the connection; delay_ms
// stalls first; after_bytes > 0 with reset passes that many bytes of the
// request body on to the store, then drops the connection (an upload cut
// half-way). path is a regexp over the path and over path?query.
type S3FaultProxy struct {
	srv    *http.Server
	ln     net.Listener
	proxy  *httputil.ReverseProxy
	faults Faults[s3Fault, *s3Fault]
	mu     sync.Mutex
	counts map[string]int
}

type s3Fault struct {
	FaultRule
	Status     int   `json:"status"`
	DelayMS    int   `json:"delay_ms"`
	Reset      bool  `json:"reset"`
	AfterBytes int64 `json:"after_bytes"`
}

// NewS3FaultProxy listens on listen (host:port, port 0 for a free one) and
// proxies to the store at target (http://host:port).
func NewS3FaultProxy(listen, target string) (*S3FaultProxy, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("s3 fault proxy on %s: %w", listen, err)
	}
	p := &S3FaultProxy{ln: ln, counts: map[string]int{}}
	rp := httputil.NewSingleHostReverseProxy(u)
	director := rp.Director
	rp.Director = func(r *http.Request) {
		host := r.Host
		director(r)
		r.Host = host // signed by the client: must reach the store as it was
	}
	rp.FlushInterval = -1
	p.proxy = rp
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 30 * time.Second}
	go p.srv.Serve(ln)
	return p, nil
}

// Endpoint is the proxy's URL.
func (p *S3FaultProxy) Endpoint() string { return "http://" + p.ln.Addr().String() }

// Stop closes the proxy and its connections.
func (p *S3FaultProxy) Stop() { p.srv.Close() }

// statKey names a request without its key's varying parts' values: the
// path and the names of the query parameters.
func statKey(r *http.Request) string {
	names := []string{}
	for k := range r.URL.Query() {
		names = append(names, k)
	}
	slices.Sort(names)
	k := r.Method + " " + r.URL.Path
	if len(names) > 0 {
		k += "?" + strings.Join(names, "&")
	}
	return k
}

func (p *S3FaultProxy) admin(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	switch r.Method + " " + strings.TrimSuffix(r.URL.Path, "/") {
	case "POST /_sandbox/faults":
		f, ok := p.faults.Decode(w, r)
		if !ok {
			return
		}
		if f.Status == 0 && !f.Reset && f.DelayMS == 0 {
			http.Error(w, "a fault needs status, reset or delay_ms", 400)
			return
		}
		p.faults.Add(f)
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(f)
	case "GET /_sandbox/faults":
		json.NewEncoder(w).Encode(p.faults.List())
	case "DELETE /_sandbox/faults":
		p.faults.Clear()
		w.WriteHeader(204)
	case "GET /_sandbox/stats":
		p.mu.Lock()
		defer p.mu.Unlock()
		json.NewEncoder(w).Encode(p.counts)
	case "DELETE /_sandbox/stats":
		p.mu.Lock()
		p.counts = map[string]int{}
		p.mu.Unlock()
		w.WriteHeader(204)
	default:
		http.Error(w, "unknown admin request", 404)
	}
}

func dropConn(w http.ResponseWriter) {
	if hj, ok := w.(http.Hijacker); ok {
		if c, _, err := hj.Hijack(); err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, not FIN
			}
			c.Close()
			return
		}
	}
	panic(http.ErrAbortHandler)
}

// cutReader passes n bytes, then fails: the store sees a short body.
type cutReader struct {
	r io.ReadCloser
	n int64
}

func (c *cutReader) Read(b []byte) (int, error) {
	if c.n <= 0 {
		return 0, io.ErrUnexpectedEOF
	}
	if int64(len(b)) > c.n {
		b = b[:c.n]
	}
	k, err := c.r.Read(b)
	c.n -= int64(k)
	return k, err
}

func (c *cutReader) Close() error { return c.r.Close() }

func (p *S3FaultProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, "/_sandbox/") {
		p.admin(w, r)
		return
	}
	p.mu.Lock()
	p.counts[statKey(r)]++
	p.mu.Unlock()
	f := p.faults.Take(r)
	if f == nil {
		p.proxy.ServeHTTP(w, r)
		return
	}
	if f.DelayMS > 0 {
		select {
		case <-time.After(time.Duration(f.DelayMS) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
	}
	if f.Reset && f.AfterBytes > 0 && r.Body != nil {
		// part of the upload reaches the store, then the client's connection drops
		r.Body = &cutReader{r: r.Body, n: f.AfterBytes}
		rec := &discard{h: http.Header{}}
		p.proxy.ServeHTTP(rec, r)
		dropConn(w)
		return
	}
	if f.Reset {
		dropConn(w)
		return
	}
	if f.Status > 0 {
		code, msg := "InternalError", "We encountered an internal error. Please try again."
		switch f.Status {
		case 503:
			code, msg = "SlowDown", "Please reduce your request rate."
		case 500:
		default:
			code, msg = strings.ReplaceAll(http.StatusText(f.Status), " ", ""), "injected fault"
		}
		w.Header().Set("Content-Type", "application/xml")
		w.WriteHeader(f.Status)
		if r.Method != "HEAD" {
			fmt.Fprintf(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>%s</Code><Message>%s</Message><Resource>%s</Resource><RequestId>sandbox-fault</RequestId></Error>`,
				code, msg, r.URL.Path)
		}
		return
	}
	p.proxy.ServeHTTP(w, r)
}

// discard is a ResponseWriter that forgets the store's answer.
type discard struct{ h http.Header }

func (d *discard) Header() http.Header         { return d.h }
func (d *discard) Write(b []byte) (int, error) { return len(b), nil }
func (d *discard) WriteHeader(int)             {}
