package cluster

// Server-side apply and field ownership, as kube-apiserver does them: the
// same managedfields package (structured-merge-diff) with the built-in
// types' schema from client-go, so managedFields, merges and conflicts
// (409, "Apply failed with N conflict(s): conflict with \"m\" ...") are
// the real ones. Creates, updates and patches record their manager
// (fieldManager, else the User-Agent's product) as an Update. Subresources
// (status, scale) are not tracked.

import (
	"encoding/json"
	"strings"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/managedfields"
	"k8s.io/client-go/applyconfigurations"
	"k8s.io/client-go/kubernetes/scheme"
)

var (
	ssaOnce      sync.Once
	ssaConverter managedfields.TypeConverter
	ssaMu        sync.Mutex
	ssaManagers  = map[*resource]*managedfields.FieldManager{}
)

func fieldManagerFor(res *resource) (*managedfields.FieldManager, error) {
	ssaOnce.Do(func() { ssaConverter = applyconfigurations.NewTypeConverter(scheme.Scheme) })
	ssaMu.Lock()
	defer ssaMu.Unlock()
	if fm := ssaManagers[res]; fm != nil {
		return fm, nil
	}
	gvk := res.gvk()
	fm, err := managedfields.NewDefaultFieldManager(ssaConverter, scheme.Scheme, scheme.Scheme, scheme.Scheme, gvk,
		gvk.GroupVersion(), "", nil)
	if err != nil {
		return nil, apierrors.NewInternalError(err)
	}
	ssaManagers[res] = fm
	return fm, nil
}

// managerOf is the request's field manager: fieldManager, else the
// User-Agent up to its first "/" (k8s.io/apiserver's managerOrUserAgent).
func managerOf(req *apiReq) string {
	if m := req.q.Get("fieldManager"); m != "" {
		return m
	}
	ua := strings.Split(req.r.UserAgent(), "/")[0]
	if len(ua) > 128 {
		ua = ua[:128]
	}
	return ua
}

// trackUpdate records next's changes from live (nil for a create) under
// the request's manager.
func trackUpdate(req *apiReq, live, next runtime.Object) runtime.Object {
	if req.sub != "" || req.res.backing != nil {
		return next
	}
	fm, err := fieldManagerFor(req.res)
	if err != nil {
		return next
	}
	if live == nil {
		live = req.res.newObj()
	}
	next.GetObjectKind().SetGroupVersionKind(req.res.gvk())
	live.GetObjectKind().SetGroupVersionKind(req.res.gvk())
	return fm.UpdateNoErrors(live, next, managerOf(req))
}

// serverSideApply merges an apply patch (JSON) into live (nil when the
// object does not exist yet) for the request's manager.
func serverSideApply(req *apiReq, live runtime.Object, patch []byte) (runtime.Object, error) {
	if req.res.backing != nil {
		return nil, apierrors.NewMethodNotSupported(req.res.gr(), "apply")
	}
	fm, err := fieldManagerFor(req.res)
	if err != nil {
		return nil, err
	}
	u := &unstructured.Unstructured{}
	if err := json.Unmarshal(patch, &u.Object); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if u.GetAPIVersion() != req.res.apiVersion() || u.GetKind() != req.res.kind {
		return nil, apierrors.NewBadRequest("the API version in the data (" + u.GetAPIVersion() +
			") does not match the expected API version (" + req.res.apiVersion() + ")")
	}
	if u.GetName() != req.name {
		return nil, apierrors.NewBadRequest("the name of the object (" + u.GetName() +
			") does not match the name on the URL (" + req.name + ")")
	}
	if live == nil {
		live = req.res.newObj()
	}
	live.GetObjectKind().SetGroupVersionKind(req.res.gvk())
	force := isTrue(req.q.Get("force"))
	return fm.Apply(live, u, req.q.Get("fieldManager"), force)
}
