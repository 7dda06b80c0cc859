// Command loadclient sends GET requests to one URL in a bounded loop, one
// connection per request (as clients spread by a Service's proxy see
// endpoint changes), and prints what it saw as one JSON object: requests,
// failed (transport errors, timeouts and non-2xx answers), their reasons
// and the latency percentiles. bench/zero-downtime.sh runs one per
// scenario.
//
//	loadclient -url URL [-min N] [-workers N] [-timeout D] [-stop FILE]
//
// It runs until it is told to stop (SIGTERM/SIGINT, or FILE appearing)
// and, past that, until it has sent at least -min requests.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

type result struct {
	Requests int64            `json:"requests"`
	Failed   int64            `json:"failed"`
	Reasons  map[string]int64 `json:"reasons"`
	Seconds  float64          `json:"seconds"`
	P50Ms    float64          `json:"p50_ms"`
	P99Ms    float64          `json:"p99_ms"`
	MaxMs    float64          `json:"max_ms"`
	// FirstFailures: when the first few failures happened (seconds from
	// start) and why; the start as Unix time and the last failure, to
	// line them up with a run's log.
	FirstFailures []string `json:"first_failures,omitempty"`
	StartedUnix   float64  `json:"started_unix"`
	LastFailureS  float64  `json:"last_failure_s,omitempty"`
}

func main() {
	url := flag.String("url", "", "the URL to GET")
	min := flag.Int64("min", 5000, "keep going until at least this many requests, even when told to stop")
	workers := flag.Int("workers", 2, "concurrent clients")
	timeout := flag.Duration("timeout", 5*time.Second, "a request's time limit (a request over it failed)")
	stopFile := flag.String("stop", "", "stop when this file exists")
	flag.Parse()
	if *url == "" || *workers < 1 || *min < 0 {
		fmt.Fprintln(os.Stderr, "usage: loadclient -url URL [-min N] [-workers N] [-timeout D] [-stop FILE]")
		os.Exit(2)
	}
	var stopping atomic.Bool
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	go func() {
		<-sigs
		stopping.Store(true)
	}()
	if *stopFile != "" {
		go func() {
			for !stopping.Load() {
				if _, err := os.Stat(*stopFile); err == nil {
					stopping.Store(true)
				}
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	client := &http.Client{
		Timeout: *timeout,
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil,
			DialContext: (&net.Dialer{Timeout: *timeout}).DialContext},
	}
	var (
		count   atomic.Int64
		mu      sync.Mutex
		lat     []float64
		res     = result{Reasons: map[string]int64{}}
		wg      sync.WaitGroup
		started = time.Now()
	)
	fail := func(reason string) {
		mu.Lock()
		res.Failed++
		res.Reasons[reason]++
		at := time.Since(started).Seconds()
		if len(res.FirstFailures) < 5 {
			res.FirstFailures = append(res.FirstFailures, fmt.Sprintf("%.3fs %s", at, reason))
		}
		res.LastFailureS = at
		mu.Unlock()
	}
	for i := 0; i < *workers; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			local := make([]float64, 0, 8192)
			for !(stopping.Load() && count.Load() >= *min) {
				count.Add(1)
				t := time.Now()
				resp, err := client.Get(*url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				ms := float64(time.Since(t).Microseconds()) / 1000
				local = append(local, ms)
				switch {
				case err != nil:
					fail(reason(err))
				case resp.StatusCode < 200 || resp.StatusCode > 299:
					fail(fmt.Sprintf("HTTP %d", resp.StatusCode))
				}
			}
			mu.Lock()
			lat = append(lat, local...)
			mu.Unlock()
		}()
	}
	wg.Wait()
	res.Requests = int64(len(lat))
	res.StartedUnix = float64(started.UnixNano()) / 1e9
	res.Seconds = time.Since(started).Seconds()
	sort.Float64s(lat)
	if n := len(lat); n > 0 {
		q := func(p float64) float64 { return lat[int(p*float64(n-1)+0.5)] }
		res.P50Ms, res.P99Ms, res.MaxMs = q(0.50), q(0.99), lat[n-1]
	}
	json.NewEncoder(os.Stdout).Encode(res)
}

// reason is a short class of a transport error.
func reason(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()):
		return "timeout"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection reset"
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return "connection closed without an answer"
	}
	return "error: " + err.Error()
}
