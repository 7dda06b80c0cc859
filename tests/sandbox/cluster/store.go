package cluster

import (
	"fmt"
	"sort"
	"strconv"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
)

// historyWindow is how many events per resource a watch can resume from;
// an older resourceVersion gets 410 Expired, as from the real watch cache.
const historyWindow = 1000

// watchEvent is one change to one object. Objects held here are never
// mutated after they are stored.
type watchEvent struct {
	Type string // ADDED, MODIFIED, DELETED, or BOOKMARK (watcher queues only)
	RV   uint64
	Obj  runtime.Object
	Old  runtime.Object // state before the change; nil for ADDED
}

// history is the recent event window of one resource.
type history struct {
	events   []watchEvent
	floor    uint64 // events with RV <= floor are gone
	watchers map[*watcher]struct{}
}

// watcher is one open watch stream's queue.
type watcher struct {
	ch        chan watchEvent
	ns        string
	bookmarks bool
	dead      bool // closed because it fell behind
}

// store holds every object in memory, keyed by resource then "ns/name".
// A single global resourceVersion counter orders all writes, like etcd's
// revision.
type store struct {
	mu      sync.Mutex
	rv      uint64
	objs    map[*resource]map[string]runtime.Object
	hist    map[*resource]*history
	changed func(res *resource) // called after every write, outside the lock
	window  int                 // history window; 0 = historyWindow
}

func (s *store) windowSize() int {
	if s.window > 0 {
		return s.window
	}
	return historyWindow
}

// setWindow changes the history window (admin settings); a smaller window
// takes effect at each resource's next write.
func (s *store) setWindow(n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.window = n
}

func newStore() *store {
	s := &store{
		objs: map[*resource]map[string]runtime.Object{},
		hist: map[*resource]*history{},
	}
	for _, r := range allResources {
		s.histFor(r)
	}
	return s
}

func objKey(ns, name string) string { return ns + "/" + name }

func (s *store) histFor(res *resource) *history {
	h := s.hist[res]
	if h == nil {
		h = &history{watchers: map[*watcher]struct{}{}, floor: s.rv}
		s.hist[res] = h
	}
	return h
}

// record appends an event and fans it out to watchers. Called with mu held.
func (s *store) record(res *resource, ev watchEvent) {
	h := s.histFor(res)
	h.events = append(h.events, ev)
	if window := s.windowSize(); len(h.events) > window {
		drop := len(h.events) - window
		h.floor = h.events[drop-1].RV
		h.events = append([]watchEvent(nil), h.events[drop:]...)
	}
	ns := metaOf(ev.Obj).GetNamespace()
	for w := range h.watchers {
		if w.ns != "" && w.ns != ns {
			continue
		}
		s.send(h, w, ev)
	}
}

// send queues without blocking; a watcher that cannot keep up is closed and
// its client re-watches, as the API server does with slow consumers.
func (s *store) send(h *history, w *watcher, ev watchEvent) {
	select {
	case w.ch <- ev:
	default:
		w.dead = true
		delete(h.watchers, w)
		close(w.ch)
	}
}

func metaOf(obj runtime.Object) metav1.Object {
	m, err := meta.Accessor(obj)
	if err != nil {
		panic(err)
	}
	return m
}

func rvOf(obj runtime.Object) uint64 {
	v, _ := strconv.ParseUint(metaOf(obj).GetResourceVersion(), 10, 64)
	return v
}

func (s *store) notify(res *resource) {
	if s.changed != nil {
		s.changed(res)
	}
}

// currentRV is the newest resourceVersion in the whole store.
func (s *store) currentRV() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.rv
}

// get returns a private copy of the object, or a NotFound error.
func (s *store) get(res *resource, ns, name string) (runtime.Object, error) {
	if res.backing != nil {
		o, err := s.get(res.backing, ns, name)
		if err != nil {
			return nil, viewErr(res, name, err)
		}
		return res.fromBacking(o), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	obj, ok := s.objs[res][objKey(ns, name)]
	if !ok {
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	return obj.DeepCopyObject(), nil
}

// list returns the objects of one namespace ("" = all), sorted by
// namespace and name, and the store's resourceVersion at that moment.
// The objects are shared: callers must not modify them.
func (s *store) list(res *resource, ns string) ([]runtime.Object, uint64) {
	if res.backing != nil {
		objs, rv := s.list(res.backing, ns)
		out := make([]runtime.Object, len(objs))
		for i, o := range objs {
			out[i] = res.fromBacking(o)
		}
		return out, rv
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]runtime.Object, 0, len(s.objs[res]))
	for _, o := range s.objs[res] {
		if ns == "" || metaOf(o).GetNamespace() == ns {
			out = append(out, o)
		}
	}
	sortObjects(out)
	return out, s.rv
}

func sortObjects(out []runtime.Object) {
	sort.Slice(out, func(i, j int) bool {
		a, b := metaOf(out[i]), metaOf(out[j])
		return objKey(a.GetNamespace(), a.GetName()) < objKey(b.GetNamespace(), b.GetName())
	})
}

// create stores a new object: uid, creationTimestamp and resourceVersion
// are assigned here. With dryRun nothing is stored.
func (s *store) create(res *resource, obj runtime.Object, dryRun bool) (runtime.Object, error) {
	if res.backing != nil {
		o, err := s.create(res.backing, res.toBacking(obj), dryRun)
		if err != nil {
			return nil, viewErr(res, metaOf(obj).GetName(), err)
		}
		return res.fromBacking(o), nil
	}
	s.mu.Lock()
	m := metaOf(obj)
	key := objKey(m.GetNamespace(), m.GetName())
	if _, ok := s.objs[res][key]; ok {
		s.mu.Unlock()
		return nil, apierrors.NewAlreadyExists(res.gr(), m.GetName())
	}
	if res.namespaced && res.plural != "events" {
		if nsObj, ok := s.objs[resNamespaces][objKey("", m.GetNamespace())]; !ok {
			s.mu.Unlock()
			return nil, apierrors.NewNotFound(resNamespaces.gr(), m.GetNamespace())
		} else if metaOf(nsObj).GetDeletionTimestamp() != nil {
			s.mu.Unlock()
			return nil, apierrors.NewForbidden(res.gr(), m.GetName(),
				fmt.Errorf("unable to create new content in namespace %s because it is being terminated", m.GetNamespace()))
		}
	}
	m.SetUID(types.UID(uuid.NewUUID()))
	m.SetCreationTimestamp(metav1.NewTime(time.Now().UTC().Truncate(time.Second)))
	m.SetDeletionTimestamp(nil)
	if dryRun {
		m.SetResourceVersion("")
		s.mu.Unlock()
		return obj, nil
	}
	s.rv++
	m.SetResourceVersion(strconv.FormatUint(s.rv, 10))
	if s.objs[res] == nil {
		s.objs[res] = map[string]runtime.Object{}
	}
	s.objs[res][key] = obj
	s.record(res, watchEvent{Type: "ADDED", RV: s.rv, Obj: obj})
	s.mu.Unlock()
	s.notify(res)
	return obj.DeepCopyObject(), nil
}

// update replaces an object through a function that receives a private
// copy of the current state. mutate returns the new object (or an error);
// if its resourceVersion is set and differs from the stored one the update
// fails with Conflict. A result equal to the current object is a no-op and
// returns the current object unchanged (same resourceVersion).
func (s *store) update(res *resource, ns, name string, dryRun bool,
	mutate func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	if res.backing != nil {
		o, err := s.update(res.backing, ns, name, dryRun, func(cur runtime.Object) (runtime.Object, error) {
			next, err := mutate(res.fromBacking(cur))
			if err != nil {
				return nil, err
			}
			return res.toBacking(next), nil
		})
		if err != nil {
			return nil, viewErr(res, name, err)
		}
		return res.fromBacking(o), nil
	}
	s.mu.Lock()
	cur, ok := s.objs[res][objKey(ns, name)]
	if !ok {
		s.mu.Unlock()
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	next, err := mutate(cur.DeepCopyObject())
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	nm, cm := metaOf(next), metaOf(cur)
	if rv := nm.GetResourceVersion(); rv != "" && rv != cm.GetResourceVersion() {
		s.mu.Unlock()
		return nil, apierrors.NewConflict(res.gr(), name, fmt.Errorf("%s", optimisticLockErrorMsg))
	}
	// Fields only the server owns.
	nm.SetUID(cm.GetUID())
	nm.SetCreationTimestamp(cm.GetCreationTimestamp())
	nm.SetNamespace(cm.GetNamespace())
	nm.SetName(cm.GetName())
	if cm.GetDeletionTimestamp() != nil && nm.GetDeletionTimestamp() == nil {
		nm.SetDeletionTimestamp(cm.GetDeletionTimestamp())
		nm.SetDeletionGracePeriodSeconds(cm.GetDeletionGracePeriodSeconds())
	}
	nm.SetResourceVersion(cm.GetResourceVersion())
	if sameObject(cur, next) {
		s.mu.Unlock()
		return cur.DeepCopyObject(), nil
	}
	if dryRun {
		s.mu.Unlock()
		return next, nil
	}
	s.rv++
	nm.SetResourceVersion(strconv.FormatUint(s.rv, 10))
	if nm.GetDeletionTimestamp() != nil && len(nm.GetFinalizers()) == 0 && cm.GetDeletionTimestamp() != nil &&
		len(cm.GetFinalizers()) > 0 && res != resPods && res != resNamespaces {
		// The last finalizer is gone: the deletion completes.
		delete(s.objs[res], objKey(ns, name))
		s.record(res, watchEvent{Type: "DELETED", RV: s.rv, Obj: next, Old: cur})
		s.mu.Unlock()
		s.notify(res)
		return next.DeepCopyObject(), nil
	}
	s.objs[res][objKey(ns, name)] = next
	s.record(res, watchEvent{Type: "MODIFIED", RV: s.rv, Obj: next, Old: cur})
	s.mu.Unlock()
	s.notify(res)
	return next.DeepCopyObject(), nil
}

// remove deletes an object for good. precondRV, if set, must match.
func (s *store) remove(res *resource, ns, name, precondRV string, precondUID types.UID, dryRun bool) (runtime.Object, error) {
	if res.backing != nil {
		o, err := s.remove(res.backing, ns, name, precondRV, precondUID, dryRun)
		if err != nil {
			return nil, viewErr(res, name, err)
		}
		return res.fromBacking(o), nil
	}
	s.mu.Lock()
	cur, ok := s.objs[res][objKey(ns, name)]
	if !ok {
		s.mu.Unlock()
		return nil, apierrors.NewNotFound(res.gr(), name)
	}
	cm := metaOf(cur)
	if precondRV != "" && precondRV != cm.GetResourceVersion() {
		s.mu.Unlock()
		return nil, apierrors.NewConflict(res.gr(), name, fmt.Errorf(
			"Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", precondRV, cm.GetResourceVersion()))
	}
	if precondUID != "" && precondUID != cm.GetUID() {
		s.mu.Unlock()
		return nil, apierrors.NewConflict(res.gr(), name, fmt.Errorf(
			"Precondition failed: UID in precondition: %s, UID in object meta: %s", precondUID, cm.GetUID()))
	}
	if dryRun {
		s.mu.Unlock()
		return cur.DeepCopyObject(), nil
	}
	s.rv++
	last := cur.DeepCopyObject()
	metaOf(last).SetResourceVersion(strconv.FormatUint(s.rv, 10))
	delete(s.objs[res], objKey(ns, name))
	s.record(res, watchEvent{Type: "DELETED", RV: s.rv, Obj: last, Old: cur})
	s.mu.Unlock()
	s.notify(res)
	return last.DeepCopyObject(), nil
}

// initialEventsEndMarker tags the BOOKMARK that ends a watch's initial
// events (sendInitialEvents=true).
var initialEventsEndMarker runtime.Object = &metav1.Status{}

// viewErr restates a backing resource's error in the view's terms
// (events.events.k8s.io rather than events).
func viewErr(res *resource, name string, err error) error {
	switch {
	case apierrors.IsNotFound(err):
		return apierrors.NewNotFound(res.gr(), name)
	case apierrors.IsAlreadyExists(err):
		return apierrors.NewAlreadyExists(res.gr(), name)
	case apierrors.IsConflict(err):
		return apierrors.NewConflict(res.gr(), name, fmt.Errorf("%s", optimisticLockErrorMsg))
	}
	return err
}

// errTooOld is returned by watch when the requested version has left the
// history window.
type errTooOld struct{ requested, oldest uint64 }

func (e errTooOld) Error() string {
	return fmt.Sprintf("too old resource version: %d (%d)", e.requested, e.oldest)
}

// watch registers a watcher. With fromRV == nil the current objects come
// first as ADDED events (the "resourceVersion=0"/unset semantics);
// otherwise every event after fromRV is replayed from history.
func (s *store) watch(res *resource, ns string, fromRV *uint64, bookmarks bool) (*watcher, error) {
	return s.watchOpts(res, ns, fromRV, bookmarks, false)
}

// watchOpts is watch; with initialEnd (sendInitialEvents) the initial
// ADDED events are followed by a BOOKMARK marking their end.
func (s *store) watchOpts(res *resource, ns string, fromRV *uint64, bookmarks, initialEnd bool) (*watcher, error) {
	if res.backing != nil {
		res = res.backing // events are converted as they are served
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	h := s.histFor(res)
	var backlog []watchEvent
	if fromRV == nil {
		for _, o := range s.objs[res] {
			if ns == "" || metaOf(o).GetNamespace() == ns {
				backlog = append(backlog, watchEvent{Type: "ADDED", RV: rvOf(o), Obj: o})
			}
		}
		sort.Slice(backlog, func(i, j int) bool { return backlog[i].RV < backlog[j].RV })
	} else {
		if *fromRV < h.floor {
			return nil, errTooOld{*fromRV, h.floor + 1}
		}
		for _, ev := range h.events {
			if ev.RV > *fromRV && (ns == "" || metaOf(ev.Obj).GetNamespace() == ns) {
				backlog = append(backlog, ev)
			}
		}
	}
	w := &watcher{ch: make(chan watchEvent, historyWindow+len(backlog)+16), ns: ns, bookmarks: bookmarks}
	for _, ev := range backlog {
		w.ch <- ev
	}
	if initialEnd {
		w.ch <- watchEvent{Type: "BOOKMARK", RV: s.rv, Old: initialEventsEndMarker}
	}
	h.watchers[w] = struct{}{}
	return w, nil
}

func (s *store) unwatch(res *resource, w *watcher) {
	if res.backing != nil {
		res = res.backing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h := s.hist[res]; h != nil {
		if _, ok := h.watchers[w]; ok {
			delete(h.watchers, w)
			close(w.ch)
		}
	}
}

// bookmark queues a BOOKMARK at the current resourceVersion to every
// watcher that asked for them. Because events are queued under the same
// lock, every event up to that version is already ahead of it.
func (s *store) bookmark() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hist {
		for w := range h.watchers {
			if w.bookmarks && len(w.ch) == 0 {
				s.send(h, w, watchEvent{Type: "BOOKMARK", RV: s.rv})
			}
		}
	}
}

// startWatchCache forgets the history so far: like a freshly started
// watch cache, the server can only resume from versions at or after this
// point, and anything older (such as "1") is 410 Expired.
func (s *store) startWatchCache() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, h := range s.hist {
		h.events = nil
		h.floor = s.rv
	}
}

// floorOf is the oldest resourceVersion a list continue token or watch may
// still use for a resource.
func (s *store) floorOf(res *resource) uint64 {
	if res.backing != nil {
		res = res.backing
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.histFor(res).floor
}

const optimisticLockErrorMsg = "the object has been modified; please apply your changes to the latest version and try again"
