package cluster

import (
	"context"
	"net/http"
	"time"
)

// A trickle fault sends the API server's answer at a fixed rate: so many
// bytes, then a second's pause, until the answer is out or the client
// goes. It keeps a transfer alive without ever letting it finish in time,
// which only a total deadline on the client's side ends. Kept on its own
// (a context value and a ResponseWriter wrapper) so it can move to the
// front proxy unchanged.

type trickleKey struct{}

// withTrickle marks the request's answer for trickling at rate bytes/s.
func withTrickle(ctx context.Context, rate int) context.Context {
	return context.WithValue(ctx, trickleKey{}, rate)
}

// trickled wraps w when the request's context asks for a trickle.
func trickled(w http.ResponseWriter, ctx context.Context) http.ResponseWriter {
	rate, _ := ctx.Value(trickleKey{}).(int)
	if rate <= 0 {
		return w
	}
	if _, done := w.(*trickleWriter); done {
		return w
	}
	return &trickleWriter{ResponseWriter: w, rate: rate, ctx: ctx}
}

type trickleWriter struct {
	http.ResponseWriter
	rate int
	ctx  context.Context
}

func (t *trickleWriter) Write(p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k := min(t.rate, len(p)-n)
		m, err := t.ResponseWriter.Write(p[n : n+k])
		n += m
		if err != nil {
			return n, err
		}
		t.Flush()
		select {
		case <-time.After(time.Second):
		case <-t.ctx.Done():
			return n, t.ctx.Err()
		}
	}
	return n, nil
}

func (t *trickleWriter) Flush() {
	if f, ok := t.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the connection underneath.
func (t *trickleWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }
