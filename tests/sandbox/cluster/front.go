package cluster

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The front proxy is what every kubeconfig the sandbox writes points at:
// TLS on a loopback port, forwarding each request to kube-apiserver after
// logging it (apiserver.log), counting it (GET /stats) and applying the
// injected faults (POST /faults). Callers keep their identity: a bearer
// token passes through untouched; a client certificate (verified here
// against the cluster CA) becomes kube-apiserver's request-header
// authentication (X-Remote-User/X-Remote-Group, sent with the
// front-proxy client certificate), as an aggregating proxy does.

type connKey struct{}
type watchCutKey struct{}
type watchErrKey struct{}

var errStreamEnded = errors.New("stream ended by an injected fault")

// statusWriter remembers the status for the request log and lets a fault
// end a response the proxy is still writing.
type statusWriter struct {
	http.ResponseWriter
	mu     sync.Mutex
	status int
	reset  bool
	closed bool
}

func (w *statusWriter) WriteHeader(code int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed || w.status != 0 {
		return
	}
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return 0, errStreamEnded
	}
	if w.status == 0 {
		w.status = 200
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Flush() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.closed {
		http.NewResponseController(w.ResponseWriter).Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// endWithEvent ends a watch stream with an ERROR event carrying err's
// Status, as kube-apiserver ends a watch it cannot continue.
func (w *statusWriter) endWithEvent(err error) {
	for i := 0; i < 100; i++ { // the proxy writes the upstream headers first
		w.mu.Lock()
		started := w.status != 0
		w.mu.Unlock()
		if started {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return
	}
	if w.status == 0 {
		w.ResponseWriter.Header().Set("Content-Type", "application/json")
		w.status = 200
		w.ResponseWriter.WriteHeader(200)
	}
	b, _ := json.Marshal(map[string]any{"type": "ERROR", "object": statusOf(err)})
	w.ResponseWriter.Write(append(b, '\n'))
	http.NewResponseController(w.ResponseWriter).Flush()
	w.closed = true
}

type front struct {
	c       *Cluster
	target  *url.URL
	certRT  http.RoundTripper // as the front proxy, with X-Remote-* identity
	tokenRT http.RoundTripper // no client certificate: the caller's bearer token decides
	ln      net.Listener
	srv     *http.Server
}

func (c *Cluster) startFront() error {
	p := c.pki
	serving, err := p.issue("front-proxy-serving", false, "sandbox-front-proxy", nil, true,
		[]net.IP{net.ParseIP("127.0.0.1")}, []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"})
	if err != nil {
		return err
	}
	client, err := tls.LoadX509KeyPair(p.file("front-proxy-client.crt"), p.file("front-proxy-client.key"))
	if err != nil {
		return err
	}
	target, _ := url.Parse(c.apiURL)
	transport := func(certs []tls.Certificate) *http.Transport {
		return &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool(), Certificates: certs},
			ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	}
	f := &front{c: c, target: target, certRT: transport([]tls.Certificate{client}), tokenRT: transport(nil)}
	if f.ln, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return err
	}
	f.srv = &http.Server{Handler: f, ReadHeaderTimeout: 10 * time.Second,
		TLSConfig: &tls.Config{Certificates: []tls.Certificate{serving}, ClientCAs: p.pool(),
			ClientAuth: tls.VerifyClientCertIfGiven, NextProtos: []string{"h2", "http/1.1"}, MinVersion: tls.VersionTLS12},
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, conn)
		}}
	go f.srv.ServeTLS(f.ln, "", "")
	c.front = f
	return nil
}

// URL is the address every kubeconfig names.
func (f *front) URL() string { return "https://" + f.ln.Addr().String() }

func (f *front) close() {
	if f != nil {
		f.srv.Close()
	}
}

func (f *front) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	c := f.c
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	defer func() {
		status := w.status
		if w.reset && status == 0 {
			status = -1
		}
		c.logRequest(r, status, time.Since(start))
	}()
	c.countRequest(r)
	ctx, ok := c.applyFaults(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if cut, _ := ctx.Value(watchCutKey{}).(<-chan struct{}); cut != nil {
		werr, _ := ctx.Value(watchErrKey{}).(error)
		go func() {
			select {
			case <-cut:
				if werr != nil {
					w.endWithEvent(werr)
				} else {
					resetConn(w, r)
				}
				cancel()
			case <-ctx.Done():
			}
		}()
	}
	rt := f.tokenRT
	var user string
	var groups []string
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		cert := r.TLS.PeerCertificates[0]
		user, groups, rt = cert.Subject.CommonName, cert.Subject.Organization, f.certRT
	}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(f.target)
			pr.Out.Host = f.target.Host
			for k := range pr.Out.Header {
				if len(k) > 9 && http.CanonicalHeaderKey(k[:9]) == "X-Remote-" {
					pr.Out.Header.Del(k) // only this proxy asserts identities
				}
			}
			if user != "" {
				pr.Out.Header.Del("Authorization")
				pr.Out.Header.Set("X-Remote-User", user)
				for _, g := range groups {
					pr.Out.Header.Add("X-Remote-Group", g)
				}
			}
		},
		Transport:     rt,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			if r.Context().Err() != nil {
				return // the client went away, or a fault ended the stream
			}
			writeError(w, apierrors.NewServiceUnavailable("front proxy: "+err.Error()))
		},
		ModifyResponse: f.expiredAsHTTP,
	}
	proxy.ServeHTTP(trickled(w, ctx), r.WithContext(ctx))
}

// expiredAsHTTP answers a watch whose first event is a 410 ERROR with an
// HTTP 410 instead, when the expired_as_http setting asks for it (older
// API servers did so; clients must handle both).
func (f *front) expiredAsHTTP(resp *http.Response) error {
	f.tokenIssued(resp)
	if resp.StatusCode != 200 || !isWatchRequest(resp.Request) || !f.c.expiredAsHTTP() {
		return nil
	}
	br := bufio.NewReader(resp.Body)
	line, _ := br.ReadBytes('\n')
	var ev struct {
		Type   string          `json:"type"`
		Object json.RawMessage `json:"object"`
	}
	var st metav1.Status
	if json.Unmarshal(line, &ev) == nil && ev.Type == "ERROR" && json.Unmarshal(ev.Object, &st) == nil && st.Code == 410 {
		resp.Body.Close()
		body := bytes.TrimSpace(ev.Object)
		resp.StatusCode, resp.Status = 410, "410 Gone"
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		resp.Header.Set("Content-Type", "application/json")
		return nil
	}
	resp.Body = struct {
		io.Reader
		io.Closer
	}{io.MultiReader(bytes.NewReader(line), br), resp.Body}
	return nil
}

// tokenIssued tells Config.TokenIssued (the tests' secrets sweep) about
// every ServiceAccount token kube-apiserver mints for a caller
// (POST .../serviceaccounts/NAME/token).
func (f *front) tokenIssued(resp *http.Response) {
	r := resp.Request
	if f.c.cfg.TokenIssued == nil || r.Method != "POST" || resp.StatusCode/100 != 2 || !tokenPath.MatchString(r.URL.Path) {
		return
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	resp.Body.Close()
	resp.Body = io.NopCloser(bytes.NewReader(body))
	if err != nil {
		return
	}
	var tr struct {
		Status struct {
			Token string `json:"token"`
		} `json:"status"`
	}
	if json.Unmarshal(body, &tr) == nil && tr.Status.Token != "" {
		m := tokenPath.FindStringSubmatch(r.URL.Path)
		f.c.cfg.TokenIssued("serviceaccount token "+m[1]+"/"+m[2], tr.Status.Token)
	}
}

var tokenPath = regexp.MustCompile(`^/api/v1/namespaces/([^/]+)/serviceaccounts/([^/]+)/token$`)

func (c *Cluster) logRequest(r *http.Request, status int, d time.Duration) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	// The URL never carries a token; headers are not logged.
	fmt.Fprintf(c.logFile, "%s %s %s %d %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), r.Method, r.URL.RequestURI(),
		status, d.Round(time.Microsecond), r.Proto)
}
