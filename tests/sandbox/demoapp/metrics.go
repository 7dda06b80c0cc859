package demoapp

import (
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the app's request counts and latencies by method, route and
// status code, served at /metrics in Prometheus' text format for the
// sandbox's Prometheus to scrape. Route labels are the known paths (else
// "other"), so a scan of random URLs cannot grow the series without end.
// Every series carries app_version (the image tag), so a query can tell
// a release from the one that ran on the same colour before it.
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
}

func newMetrics(version string) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "HTTP requests answered, by method, route and status code.",
		}, []string{"method", "path", "code"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Time to answer HTTP requests, by method, route and status code.",
			Buckets: prometheus.DefBuckets,
		}, []string{"method", "path", "code"}),
	}
	prometheus.WrapRegistererWith(prometheus.Labels{"app_version": version}, m.reg).MustRegister(m.requests, m.duration)
	return m
}

func (m *metrics) observe(method, path string, code int, d time.Duration) {
	c := strconv.Itoa(code)
	m.requests.WithLabelValues(method, path, c).Inc()
	m.duration.WithLabelValues(method, path, c).Observe(d.Seconds())
}

func (m *metrics) handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// errorPicker answers "fail this one?" for error_rate r so that exactly
// floor(n*r) of the first n requests fail, spread evenly.
type errorPicker struct {
	mu   sync.Mutex
	n    int64
	rate float64
}

func (p *errorPicker) next() bool {
	if p.rate <= 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.n++
	return int64(float64(p.n)*p.rate) > int64(float64(p.n-1)*p.rate)
}
