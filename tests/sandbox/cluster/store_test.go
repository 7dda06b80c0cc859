package cluster

import (
	"errors"
	"fmt"
	"testing"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

func newTestStore(t *testing.T) *store {
	t.Helper()
	s := newStore()
	if _, err := s.create(resNamespaces, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ns"}}, false); err != nil {
		t.Fatal(err)
	}
	return s
}

func cm(name, v string) *corev1.ConfigMap {
	return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns"}, Data: map[string]string{"v": v}}
}

func setData(v string) func(runtime.Object) (runtime.Object, error) {
	return func(o runtime.Object) (runtime.Object, error) {
		o.(*corev1.ConfigMap).Data["v"] = v
		return o, nil
	}
}

func drain(w *watcher) []watchEvent {
	var out []watchEvent
	for {
		select {
		case ev := <-w.ch:
			out = append(out, ev)
		default:
			return out
		}
	}
}

func TestResourceVersionIsGlobalAndMonotonic(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resConfigMaps, cm("a", "1"), false)
	b, _ := s.create(resSecrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "b", Namespace: "ns"}}, false)
	a2, _ := s.update(resConfigMaps, "ns", "a", false, setData("2"))
	if !(rvOf(a) < rvOf(b) && rvOf(b) < rvOf(a2)) {
		t.Fatalf("resourceVersions not increasing: %d %d %d", rvOf(a), rvOf(b), rvOf(a2))
	}
}

func TestNoOpUpdateKeepsResourceVersion(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resConfigMaps, cm("a", "1"), false)
	same, err := s.update(resConfigMaps, "ns", "a", false, setData("1"))
	if err != nil {
		t.Fatal(err)
	}
	if metaOf(same).GetResourceVersion() != metaOf(a).GetResourceVersion() {
		t.Fatalf("no-op update changed the resourceVersion")
	}
	if s.currentRV() != rvOf(a) {
		t.Fatalf("no-op update bumped the store")
	}
}

func TestStaleUpdateConflicts(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resConfigMaps, cm("a", "1"), false)
	s.update(resConfigMaps, "ns", "a", false, setData("2"))
	_, err := s.update(resConfigMaps, "ns", "a", false, func(o runtime.Object) (runtime.Object, error) {
		o.(*corev1.ConfigMap).Data["v"] = "3"
		metaOf(o).SetResourceVersion(metaOf(a).GetResourceVersion())
		return o, nil
	})
	if !apierrors.IsConflict(err) {
		t.Fatalf("want Conflict, got %v", err)
	}
	want := `Operation cannot be fulfilled on configmaps "a": the object has been modified; please apply your changes to the latest version and try again`
	if err.Error() != want {
		t.Fatalf("message\n got %s\nwant %s", err, want)
	}
}

func TestCreateTwiceAlreadyExists(t *testing.T) {
	s := newTestStore(t)
	s.create(resConfigMaps, cm("a", "1"), false)
	_, err := s.create(resConfigMaps, cm("a", "1"), false)
	if !apierrors.IsAlreadyExists(err) || err.Error() != `configmaps "a" already exists` {
		t.Fatalf("got %v", err)
	}
}

func TestDryRunStoresNothing(t *testing.T) {
	s := newTestStore(t)
	before := s.currentRV()
	if _, err := s.create(resConfigMaps, cm("a", "1"), true); err != nil {
		t.Fatal(err)
	}
	if _, err := s.get(resConfigMaps, "ns", "a"); !apierrors.IsNotFound(err) {
		t.Fatalf("dry-run create stored the object")
	}
	if s.currentRV() != before {
		t.Fatalf("dry run bumped the resourceVersion")
	}
}

func TestWatchReplaysHistoryAfterVersion(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resConfigMaps, cm("a", "1"), false)
	from := rvOf(a)
	s.update(resConfigMaps, "ns", "a", false, setData("2"))
	s.create(resConfigMaps, cm("b", "1"), false)
	s.remove(resConfigMaps, "ns", "a", "", "", false)
	w, err := s.watch(resConfigMaps, "ns", &from, false)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, ev := range drain(w) {
		got = append(got, ev.Type+" "+metaOf(ev.Obj).GetName())
	}
	if fmt.Sprint(got) != "[MODIFIED a ADDED b DELETED a]" {
		t.Fatalf("replay = %v", got)
	}
	// And live events follow.
	s.create(resConfigMaps, cm("c", "1"), false)
	if evs := drain(w); len(evs) != 1 || evs[0].Type != "ADDED" {
		t.Fatalf("live events = %v", evs)
	}
}

func TestWatchWithoutVersionStartsWithCurrentState(t *testing.T) {
	s := newTestStore(t)
	s.create(resConfigMaps, cm("a", "1"), false)
	s.update(resConfigMaps, "ns", "a", false, setData("2"))
	s.create(resConfigMaps, cm("b", "1"), false)
	w, err := s.watch(resConfigMaps, "", nil, false)
	if err != nil {
		t.Fatal(err)
	}
	evs := drain(w)
	if len(evs) != 2 || evs[0].Type != "ADDED" || evs[1].Type != "ADDED" {
		t.Fatalf("initial events = %v", evs)
	}
	if evs[0].Obj.(*corev1.ConfigMap).Data["v"] != "2" {
		t.Fatalf("initial ADDED carries an old state")
	}
}

func TestWatchTooOldVersionExpires(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resConfigMaps, cm("a", "0"), false)
	first := rvOf(a)
	for i := 1; i <= historyWindow+5; i++ {
		if _, err := s.update(resConfigMaps, "ns", "a", false, setData(fmt.Sprint(i))); err != nil {
			t.Fatal(err)
		}
	}
	_, err := s.watch(resConfigMaps, "ns", &first, false)
	var old errTooOld
	if !errors.As(err, &old) {
		t.Fatalf("want errTooOld, got %v", err)
	}
	floor := s.floorOf(resConfigMaps)
	if want := fmt.Sprintf("too old resource version: %d (%d)", first, floor+1); err.Error() != want {
		t.Fatalf("message %q, want %q", err, want)
	}
	st := statusOf(apierrors.NewResourceExpired(err.Error()))
	if st.Code != 410 || st.Reason != metav1.StatusReasonExpired {
		t.Fatalf("status = %d %s", st.Code, st.Reason)
	}
	// The oldest version still in the window works and replays exactly the
	// window.
	w, err := s.watch(resConfigMaps, "ns", &floor, false)
	if err != nil {
		t.Fatalf("watch from the floor: %v", err)
	}
	if n := len(drain(w)); n != historyWindow {
		t.Fatalf("replayed %d events, want %d", n, historyWindow)
	}
}

func TestOtherResourcesDoNotExpireAQuietOne(t *testing.T) {
	s := newTestStore(t)
	a, _ := s.create(resSecrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "quiet", Namespace: "ns"}}, false)
	from := rvOf(a)
	s.create(resConfigMaps, cm("a", "0"), false)
	for i := 0; i < historyWindow*2; i++ {
		s.update(resConfigMaps, "ns", "a", false, setData(fmt.Sprint(i)))
	}
	if _, err := s.watch(resSecrets, "ns", &from, false); err != nil {
		t.Fatalf("quiet resource expired: %v", err)
	}
}

func TestSlowWatcherIsClosed(t *testing.T) {
	s := newTestStore(t)
	s.create(resConfigMaps, cm("a", "0"), false)
	w, _ := s.watch(resConfigMaps, "ns", nil, false)
	for i := 0; i < historyWindow*2+100; i++ {
		s.update(resConfigMaps, "ns", "a", false, setData(fmt.Sprint(i)))
	}
	n := 0
	for range w.ch {
		n++
	}
	if !w.dead || n == 0 {
		t.Fatalf("slow watcher: dead=%v after %d events", w.dead, n)
	}
}

func TestBookmarkCarriesCurrentVersionAfterQueuedEvents(t *testing.T) {
	s := newTestStore(t)
	w, _ := s.watch(resConfigMaps, "ns", nil, true)
	s.create(resConfigMaps, cm("a", "0"), false)
	drain(w)
	s.create(resSecrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "ns"}}, false)
	s.bookmark()
	evs := drain(w)
	if len(evs) != 1 || evs[0].Type != "BOOKMARK" || evs[0].RV != s.currentRV() {
		t.Fatalf("bookmark = %+v (rv %d)", evs, s.currentRV())
	}
}
