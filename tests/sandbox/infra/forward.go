package infra

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"
)

// Forwarder passes TCP connections from its own loopback address on to
// another, byte for byte: the S3 store seen as a second endpoint (another
// host name in the URL, so another signed Host header) for replication
// tests, the way a bucket in another region is another endpoint.
type Forwarder struct {
	ln     net.Listener
	target string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  map[net.Conn]struct{}
	closed bool
}

// NewForwarder listens on listen (host:port, port 0 for a free one) and
// forwards to target.
func NewForwarder(listen, target string) (*Forwarder, error) {
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return nil, fmt.Errorf("forwarder on %s: %w", listen, err)
	}
	f := &Forwarder{ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	f.wg.Add(1)
	go f.accept()
	return f, nil
}

// Addr is the host:port it listens on.
func (f *Forwarder) Addr() string { return f.ln.Addr().String() }

func (f *Forwarder) track(c net.Conn, add bool) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	if add {
		if f.closed {
			return false
		}
		f.conns[c] = struct{}{}
	} else {
		delete(f.conns, c)
	}
	return true
}

func (f *Forwarder) accept() {
	defer f.wg.Done()
	for {
		c, err := f.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			time.Sleep(10 * time.Millisecond)
			continue
		}
		f.wg.Add(1)
		go f.serve(c)
	}
}

func (f *Forwarder) serve(c net.Conn) {
	defer f.wg.Done()
	up, err := net.DialTimeout("tcp", f.target, 5*time.Second)
	if err != nil {
		c.Close()
		return
	}
	if !f.track(c, true) || !f.track(up, true) {
		c.Close()
		up.Close()
		return
	}
	Splice(c, up)
	f.track(c, false)
	f.track(up, false)
}

// Splice copies both ways between a and b, half-closing each side's write
// end when the other side's reads end, and closes both when both are done.
func Splice(a, b net.Conn) {
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(b, a)
	go pipe(a, b)
	<-done
	<-done
	a.Close()
	b.Close()
}

// Stop closes the listener and every connection.
func (f *Forwarder) Stop() {
	f.mu.Lock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	f.mu.Unlock()
	f.ln.Close()
	f.wg.Wait()
}

// CreateBucket creates a bucket through endpoint, signing for region.
func CreateBucket(endpoint, bucket string, c Credentials) error {
	client := &http.Client{Timeout: 5 * time.Second}
	status, body, err := S3Do(client, "PUT", endpoint+"/"+bucket, c)
	if err != nil {
		return err
	}
	if status != 200 && !strings.Contains(body, "BucketAlreadyOwnedByYou") {
		return fmt.Errorf("CreateBucket %s: %d %s", bucket, status, firstLine(body))
	}
	return nil
}
