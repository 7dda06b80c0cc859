package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
)

func (c *Cluster) adminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /faults", func(w http.ResponseWriter, r *http.Request) {
		f, ok := c.faults.Decode(w, r)
		if !ok {
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
		c.faults.Add(f)
		writeJSON(w, 201, f)
	})
	mux.HandleFunc("DELETE /faults", func(w http.ResponseWriter, r *http.Request) {
		c.faults.Clear()
		w.WriteHeader(204)
	})
	mux.HandleFunc("GET /faults", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, 200, c.faults.List())
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
		dec := json.NewDecoder(r.Body)
		dec.DisallowUnknownFields() // history_window and bookmark_interval_ms were the imitation's
		if err := dec.Decode(&next); err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		c.settingsMu.Lock()
		c.settings = next
		c.settingsMu.Unlock()
		writeJSON(w, 200, next)
	})
	mux.HandleFunc("POST /audit", c.serveAudit)
	mux.HandleFunc("POST /compact", func(w http.ResponseWriter, r *http.Request) {
		rev, err := c.compact()
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		writeJSON(w, 200, map[string]int64{"compacted": rev})
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
