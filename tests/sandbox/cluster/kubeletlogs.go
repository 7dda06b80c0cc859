package cluster

import (
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// ---- logs ----

func (k *kubelet) serveLog(rw http.ResponseWriter, r *http.Request) {
	req := struct {
		w    http.ResponseWriter
		r    *http.Request
		q    url.Values
		ns   string
		name string
	}{rw, r, r.URL.Query(), r.PathValue("ns"), r.PathValue("pod")}
	c := k.c
	o, ok, _ := k.pods.GetByKey(req.ns + "/" + req.name)
	if !ok {
		plainError(rw, fmt.Sprintf("pod %q does not exist", req.name), 404)
		return
	}
	pod := o.(*corev1.Pod)
	name := r.PathValue("container")
	w := k.find(req.ns, req.name)
	var ct *ctrRuntime
	if w != nil {
		for _, x := range w.ctrs {
			if x.spec.Name == name {
				ct = x
			}
		}
	}
	found := false
	for _, x := range pod.Spec.Containers {
		found = found || x.Name == name
	}
	if !found {
		plainError(rw, fmt.Sprintf("container %q not found in pod %q", name, pod.Name), 404)
		return
	}
	logDir := filepath.Join(c.cfg.Dir, "pods", fmt.Sprintf("%s_%s_%s", pod.Namespace, pod.Name, pod.UID), name)
	var run int
	var runDone chan struct{}
	var state, last corev1.ContainerState
	if ct != nil {
		w.mu.Lock()
		run, runDone, state, last = ct.runs, ct.runDone, ct.state, ct.lastState
		w.mu.Unlock()
	} else {
		// The pod's processes are gone (it completed): serve what is on
		// disk, as the kubelet does for terminated containers.
		entries, _ := os.ReadDir(logDir)
		run = len(entries)
		runDone = make(chan struct{})
		close(runDone)
		for _, cs := range pod.Status.ContainerStatuses {
			if cs.Name == name {
				state, last = cs.State, cs.LastTerminationState
			}
		}
		if run == 0 {
			plainError(rw, fmt.Sprintf("container %q in pod %q is not available", name, pod.Name), 400)
			return
		}
	}
	previous := isTrue(req.q.Get("previous"))
	switch {
	case previous:
		if last.Terminated == nil {
			plainError(rw, fmt.Sprintf("previous terminated container %q in pod %q not found", name, pod.Name), 400)
			return
		}
		if state.Running != nil || state.Terminated != nil {
			run--
		}
	case state.Running != nil || state.Terminated != nil || last.Terminated != nil:
	case state.Waiting != nil:
		var msg string
		switch state.Waiting.Reason {
		case "ErrImagePull":
			msg = "image can't be pulled"
		case "ImagePullBackOff":
			msg = "trying and failing to pull image"
		default:
			msg = state.Waiting.Reason
		}
		plainError(rw, fmt.Sprintf("container %q in pod %q is waiting to start: %s", name, pod.Name, msg), 400)
		return
	}
	var since time.Time
	if v := req.q.Get("sinceSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			plainError(rw, "sinceSeconds must be a positive integer", 400)
			return
		}
		since = time.Now().Add(-time.Duration(n) * time.Second)
	}
	if v := req.q.Get("sinceTime"); v != "" {
		t, err := time.Parse(time.RFC3339, v)
		if err != nil {
			plainError(rw, "invalid sinceTime", 400)
			return
		}
		since = t
	}
	tail := -1
	if v := req.q.Get("tailLines"); v != "" {
		tail, _ = strconv.Atoi(v)
	}
	limitBytes := -1
	if v := req.q.Get("limitBytes"); v != "" {
		limitBytes, _ = strconv.Atoi(v)
	}
	timestamps := isTrue(req.q.Get("timestamps"))
	path := filepath.Join(logDir, strconv.Itoa(run)+".log")
	data, _ := os.ReadFile(path)
	var lines []string
	for _, l := range strings.SplitAfter(string(data), "\n") {
		if l == "" || !strings.HasSuffix(l, "\n") {
			continue
		}
		lines = append(lines, l)
	}
	offset := 0
	for _, l := range lines {
		offset += len(l)
	}
	format := func(l string) (string, bool) {
		parts := strings.SplitN(l, " ", 4)
		if len(parts) < 4 {
			return "", false
		}
		ts, err := time.Parse(time.RFC3339Nano, parts[0])
		if err == nil && !since.IsZero() && ts.Before(since) {
			return "", false
		}
		text := parts[3]
		if parts[2] == "P" {
			text = strings.TrimSuffix(text, "\n")
		}
		if timestamps {
			return parts[0] + " " + text, true
		}
		return text, true
	}
	var out []string
	for _, l := range lines {
		if s, ok := format(l); ok {
			out = append(out, s)
		}
	}
	if tail >= 0 && len(out) > tail {
		out = out[len(out)-tail:]
	}
	req.w.Header().Set("Content-Type", "text/plain")
	req.w.WriteHeader(200)
	written := 0
	emit := func(s string) bool {
		if limitBytes >= 0 && written+len(s) > limitBytes {
			s = s[:limitBytes-written]
		}
		n, err := io.WriteString(req.w, s)
		written += n
		return err == nil && (limitBytes < 0 || written < limitBytes)
	}
	for _, s := range out {
		if !emit(s) {
			return
		}
	}
	if !isTrue(req.q.Get("follow")) || previous {
		return
	}
	// Follow: stream what the current run appends until it ends.
	flusher := req.w.(http.Flusher)
	flusher.Flush()
	var partial string
	for {
		finished := false
		select {
		case <-req.r.Context().Done():
			return
		case <-runDone:
			finished = true
		case <-time.After(100 * time.Millisecond):
		}
		f, err := os.Open(path)
		if err == nil {
			f.Seek(int64(offset), io.SeekStart)
			b, _ := io.ReadAll(f)
			f.Close()
			offset += len(b)
			chunk := partial + string(b)
			partial = ""
			for _, l := range strings.SplitAfter(chunk, "\n") {
				if l == "" {
					continue
				}
				if !strings.HasSuffix(l, "\n") {
					partial = l
					continue
				}
				if s, ok := format(l); ok && !emit(s) {
					return
				}
			}
			flusher.Flush()
		}
		if finished {
			return
		}
	}
}

// plainError answers as the kubelet's go-restful server does: the message
// as the body, no newline; kube-apiserver turns it into the Status message.
func plainError(w http.ResponseWriter, msg string, code int) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(code)
	io.WriteString(w, msg)
}
