package infra

import (
	"encoding/json"
	"net/http"
	"regexp"
	"strings"
	"sync"
)

// FaultRule picks the requests an armed fault hits. The cluster's admin
// fault API (POST /faults) and the S3 fault proxy's (POST
// /_sandbox/faults) embed it in their faults, so both match the same way.
type FaultRule struct {
	Method string `json:"method"` // empty or "*" = any
	Path   string `json:"path"`   // regexp, matched against the path and against path?query
	Count  int    `json:"count"`  // how many requests it hits; 0 = 1, -1 = until cleared
	re     *regexp.Regexp
}

// Rule is the fault's rule (what Faults reaches through the embedding).
func (fr *FaultRule) Rule() *FaultRule { return fr }

// Compile readies the rule to be armed: Path compiled, a Count of 0 made 1.
func (fr *FaultRule) Compile() error {
	re, err := regexp.Compile(fr.Path)
	if err != nil {
		return err
	}
	fr.re = re
	if fr.Count == 0 {
		fr.Count = 1
	}
	return nil
}

// Matches tells whether r is one of the rule's requests.
func (fr *FaultRule) Matches(r *http.Request) bool {
	if fr.Method != "" && fr.Method != "*" && !strings.EqualFold(fr.Method, r.Method) {
		return false
	}
	return fr.re.MatchString(r.URL.Path) || fr.re.MatchString(r.URL.RequestURI())
}

// Faults is the list of armed faults of type F (a struct embedding
// FaultRule), oldest first, safe for concurrent use.
type Faults[F any, P interface {
	*F
	Rule() *FaultRule
}] struct {
	mu   sync.Mutex
	list []P
}

// Decode reads a fault from the JSON body of an admin request (POST
// .../faults), its rule compiled; on a bad body or path regexp it answers
// 400 and returns false. The caller checks the rest, then Adds it.
func (fs *Faults[F, P]) Decode(w http.ResponseWriter, r *http.Request) (P, bool) {
	f := P(new(F))
	if err := json.NewDecoder(r.Body).Decode(f); err != nil {
		http.Error(w, err.Error(), 400)
		return nil, false
	}
	if err := f.Rule().Compile(); err != nil {
		http.Error(w, "bad path regexp: "+err.Error(), 400)
		return nil, false
	}
	return f, true
}

// Add arms f (its rule compiled).
func (fs *Faults[F, P]) Add(f P) {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = append(fs.list, f)
}

// Clear disarms every fault.
func (fs *Faults[F, P]) Clear() {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	fs.list = nil
}

// List is a copy of the faults still armed (never nil: it encodes as []).
func (fs *Faults[F, P]) List() []P {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	return append([]P{}, fs.list...)
}

// Take is a copy of the first fault matching r, or nil; it counts the hit
// and disarms a fault whose count is used up.
func (fs *Faults[F, P]) Take(r *http.Request) P {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	for i, f := range fs.list {
		rule := f.Rule()
		if !rule.Matches(r) {
			continue
		}
		if rule.Count > 0 {
			rule.Count--
			if rule.Count == 0 {
				fs.list = append(fs.list[:i:i], fs.list[i+1:]...)
			}
		}
		cp := *f
		return &cp
	}
	return nil
}
