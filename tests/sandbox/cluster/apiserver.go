package cluster

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	utilrand "k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
	sigsjson "sigs.k8s.io/json"
	"sigs.k8s.io/yaml"
)

// statusWriter records the response status for the request log and
// passes Flush through (watch streams need it).
type statusWriter struct {
	http.ResponseWriter
	status int
	reset  bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = 200
	}
	return w.ResponseWriter.Write(b)
}
func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// connKey holds the request's connection in its context (ConnContext).
type connKey struct{}

// resetConn drops the client's whole connection with a TCP RST, as a
// network or load-balancer failure does; over HTTP/2 every stream on it
// fails. The TCP connection under TLS is closed directly, without a
// close_notify.
func resetConn(w http.ResponseWriter, r *http.Request) {
	if sw, ok := w.(*statusWriter); ok {
		sw.reset = true
	}
	conn, _ := r.Context().Value(connKey{}).(net.Conn)
	if conn == nil {
		panic(http.ErrAbortHandler)
	}
	if tc, ok := conn.(interface{ NetConn() net.Conn }); ok {
		conn = tc.NetConn()
	}
	if t, ok := conn.(*net.TCPConn); ok {
		t.SetLinger(0)
	}
	conn.Close()
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	writeJSONType(w, status, "application/json", v)
}

func writeRaw(w http.ResponseWriter, status int, b []byte) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	w.Write(b)
}

func statusOf(err error) *metav1.Status {
	var se apierrors.APIStatus
	if !errors.As(err, &se) {
		se = apierrors.NewInternalError(err)
	}
	st := se.Status()
	st.Kind, st.APIVersion = "Status", "v1"
	return &st
}

func writeError(w http.ResponseWriter, err error) {
	st := statusOf(err)
	if st.Details != nil && st.Details.RetryAfterSeconds > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(st.Details.RetryAfterSeconds)))
	}
	writeJSON(w, int(st.Code), st)
}

// ServeHTTP is the API server: log, count, authenticate, inject faults,
// route.
func (c *Cluster) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &statusWriter{ResponseWriter: rw}
	defer func() {
		status := w.status
		if w.reset && status == 0 {
			status = -1
		}
		c.logRequest(r, status, time.Since(start))
	}()
	c.countRequest(r)
	w.Header().Set("Audit-Id", string(uuid.NewUUID()))
	w.Header().Set("Cache-Control", "no-cache, private")
	u := c.authenticate(w, r)
	if u == nil || !c.authorize(w, r, u) {
		return
	}
	ctx, proceed := c.applyFaults(w, r)
	if !proceed {
		return
	}
	c.route(trickled(w, ctx), r.WithContext(context.WithValue(ctx, userKey{}, u)))
}

// authenticate names the request's user: the admin token and the client
// certificates the CA signed are system:masters; a service-account token
// is its service account; with no credentials, the health and version
// paths are system:anonymous. Anything else is answered 401 (nil).
func (c *Cluster) authenticate(w http.ResponseWriter, r *http.Request) *userInfo {
	if r.TLS != nil && len(r.TLS.VerifiedChains) > 0 {
		cert := r.TLS.VerifiedChains[0][0]
		return &userInfo{name: cert.Subject.CommonName, groups: append(append([]string{}, cert.Subject.Organization...),
			"system:authenticated")}
	}
	auth := r.Header.Get("Authorization")
	if auth == "" {
		switch r.URL.Path {
		case "/version", "/healthz", "/livez", "/readyz":
			return &userInfo{name: "system:anonymous", groups: []string{"system:unauthenticated"}}
		}
	}
	tok, ok := strings.CutPrefix(auth, "Bearer ")
	tok = strings.TrimSpace(tok)
	if ok && subtle.ConstantTimeCompare([]byte(tok), []byte(c.token)) == 1 {
		return &userInfo{name: "sandbox-admin", groups: []string{"system:masters", "system:authenticated"}}
	}
	if ok {
		if u := c.saUser(tok); u != nil {
			return u
		}
	}
	writeError(w, apierrors.NewUnauthorized("Unauthorized"))
	return nil
}

func (c *Cluster) route(w http.ResponseWriter, r *http.Request) {
	path := strings.Trim(r.URL.Path, "/")
	switch {
	case path == "version":
		writeJSON(w, 200, map[string]string{"major": "1", "minor": "32", "gitVersion": "v1.32.0-sandbox",
			"gitCommit": "sandbox", "gitTreeState": "clean", "buildDate": "2026-01-01T00:00:00Z",
			"goVersion": "go1.26", "compiler": "gc", "platform": "linux/amd64"})
		return
	case path == "healthz" || path == "livez" || path == "readyz":
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Write([]byte("ok"))
		return
	case path == "openapi" || strings.HasPrefix(path, "openapi/"):
		writeError(w, notFoundGeneric())
		return
	}
	parts := strings.Split(path, "/")
	if c.servePodProxy(w, r, parts) || c.serveServiceProxy(w, r, parts) || c.serveSelfSubjectAccessReview(w, r, parts) {
		return
	}
	if r.Method == http.MethodGet && c.serveDiscovery(w, r, parts) {
		return
	}
	req, err := parseAPIPath(parts)
	if err != nil {
		writeError(w, err)
		return
	}
	req.w, req.r, req.q = w, r, r.URL.Query()
	if req.res == resServiceAccounts && req.sub == "token" && req.name != "" && !req.watch {
		c.serveTokenRequest(req)
		return
	}
	c.serveResource(req)
}

func notFoundGeneric() error {
	return apierrors.NewGenericServerResponse(404, "", schema.GroupResource{}, "", "", 0, false)
}

type apiReq struct {
	w               http.ResponseWriter
	r               *http.Request
	q               url.Values
	res             *resource
	ns, name, sub   string
	watch           bool
	namespacedQuery bool // the URL named a namespace
}

// parseAPIPath splits /api/v1/namespaces/ns/pods/name/log and its
// relatives.
func parseAPIPath(parts []string) (*apiReq, error) {
	var group, version string
	var rest []string
	switch {
	case len(parts) >= 3 && parts[0] == "api":
		version, rest = parts[1], parts[2:]
	case len(parts) >= 4 && parts[0] == "apis":
		group, version, rest = parts[1], parts[2], parts[3:]
	default:
		return nil, notFoundGeneric()
	}
	req := &apiReq{}
	if rest[0] == "watch" {
		req.watch, rest = true, rest[1:]
	}
	if len(rest) >= 3 && rest[0] == "namespaces" {
		if r := findResource(group, version, rest[2]); r != nil && r.namespaced {
			req.ns, req.namespacedQuery, rest = rest[1], true, rest[2:]
		}
	}
	if len(rest) == 0 || len(rest) > 3 {
		return nil, notFoundGeneric()
	}
	req.res = findResource(group, version, rest[0])
	if req.res == nil {
		return nil, notFoundGeneric()
	}
	if len(rest) > 1 {
		req.name = rest[1]
	}
	if len(rest) > 2 {
		req.sub = rest[2]
	}
	if req.res.namespaced && req.name != "" && !req.namespacedQuery {
		return nil, notFoundGeneric()
	}
	return req, nil
}

func (c *Cluster) serveResource(req *apiReq) {
	res, r := req.res, req.r
	if req.sub != "" {
		ok := (req.sub == "status" && res.hasStatus) || (req.sub == "scale" && res.hasScale) ||
			(req.sub == "log" && res == resPods) || (req.sub == "finalize" && res == resNamespaces)
		if !ok {
			writeError(req.w, notFoundGeneric())
			return
		}
		allowed := map[string]bool{http.MethodGet: true, http.MethodPut: req.sub != "log", http.MethodPatch: req.sub != "log"}
		if !allowed[r.Method] {
			writeError(req.w, apierrors.NewMethodNotSupported(schema.GroupResource{Group: res.group, Resource: res.plural + "/" + req.sub},
				strings.ToLower(r.Method)))
			return
		}
	}
	dryRun := false
	if dr := req.q["dryRun"]; len(dr) > 0 {
		for _, v := range dr {
			if v != "All" {
				writeError(req.w, apierrors.NewBadRequest(fmt.Sprintf("Invalid dryRun: unsupported value: %q: supported values: \"All\"", v)))
				return
			}
		}
		dryRun = true
	}
	var obj runtime.Object
	var err error
	status := 200
	switch r.Method {
	case http.MethodGet:
		switch {
		case req.name == "" && (req.watch || isTrue(req.q.Get("watch"))):
			c.serveWatch(req)
			return
		case req.watch && req.sub == "":
			// Legacy /watch/.../NAME: a watch narrowed to one object.
			fs := "metadata.name=" + req.name
			if v := req.q.Get("fieldSelector"); v != "" {
				fs += "," + v
			}
			req.q.Set("fieldSelector", fs)
			c.serveWatch(req)
			return
		case req.name == "":
			c.serveList(req)
			return
		case req.sub == "log":
			c.serveLog(req)
			return
		case req.sub == "scale":
			obj, err = c.getScale(res, req.ns, req.name)
		default:
			obj, err = c.store.get(res, req.ns, req.name)
			if err == nil && req.sub == "" && wantsTable(r) {
				writeJSON(req.w, 200, toTable(res, []runtime.Object{obj}, metaOf(obj).GetResourceVersion(), "", req.q.Get("includeObject"), true))
				return
			}
		}
	case http.MethodPost:
		if req.name != "" {
			err = apierrors.NewMethodNotSupported(res.gr(), "create")
			break
		}
		obj, err = c.decodeBody(req)
		if err == nil {
			obj, err = c.createObject(res, req.ns, trackUpdate(req, nil, obj), dryRun)
			status = 201
		}
	case http.MethodPut:
		if req.name == "" {
			err = apierrors.NewMethodNotSupported(res.gr(), "update")
			break
		}
		if req.sub == "scale" {
			obj, err = c.updateScale(req, dryRun)
			break
		}
		var body runtime.Object
		body, err = c.decodeBody(req)
		if err == nil {
			obj, err = c.updateObject(res, req.ns, req.name, req.sub, dryRun, func(cur runtime.Object) (runtime.Object, error) {
				return trackUpdate(req, cur, body.DeepCopyObject()), nil
			})
		}
	case http.MethodPatch:
		if req.name == "" {
			err = apierrors.NewMethodNotSupported(res.gr(), "patch")
			break
		}
		obj, status, err = c.patch(req, dryRun)
	case http.MethodDelete:
		if req.name == "" {
			c.deleteCollection(req, dryRun)
			return
		}
		var out any
		out, status, err = c.deleteRequest(req, dryRun)
		if err == nil {
			writeJSON(req.w, status, out)
			return
		}
	default:
		err = apierrors.NewMethodNotSupported(res.gr(), strings.ToLower(r.Method))
	}
	if err != nil {
		writeError(req.w, err)
		return
	}
	if sc, ok := obj.(*autoscalingv1.Scale); ok {
		writeJSON(req.w, status, sc)
		return
	}
	writeRaw(req.w, status, encodeObj(res, obj))
}

func isTrue(s string) bool { return s == "true" || s == "1" }

func (c *Cluster) readBody(r *http.Request) ([]byte, error) {
	b, err := io.ReadAll(io.LimitReader(r.Body, 3<<20))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if strings.Contains(ct, "yaml") {
		if b, err = yaml.YAMLToJSON(b); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	}
	return b, nil
}

// decodeBody reads a full object from a POST or PUT body and checks its
// apiVersion and kind.
func (c *Cluster) decodeBody(req *apiReq) (runtime.Object, error) {
	b, err := c.readBody(req.r)
	if err != nil {
		return nil, err
	}
	if ct, _, _ := mime.ParseMediaType(req.r.Header.Get("Content-Type")); ct == protobufType {
		return decodeProtobuf(req.res, b)
	}
	obj, err := decodeChecked(req.res, b)
	if err != nil {
		return nil, err
	}
	// fieldValidation: Strict rejects unknown and duplicate fields, Warn
	// (the default) reports them in Warning headers, Ignore does neither.
	mode := req.q.Get("fieldValidation")
	if mode == "Ignore" {
		return obj, nil
	}
	strict, _ := sigsjson.UnmarshalStrict(b, req.res.newObj(), sigsjson.DisallowDuplicateFields, sigsjson.DisallowUnknownFields)
	if len(strict) == 0 {
		return obj, nil
	}
	if mode == "Strict" {
		msgs := make([]string, len(strict))
		for i, e := range strict {
			msgs[i] = e.Error()
		}
		return nil, apierrors.NewBadRequest(fmt.Sprintf("%s in version %q cannot be handled as a %s: strict decoding error: %s",
			req.res.kind, req.res.version, req.res.kind, strings.Join(msgs, ", ")))
	}
	for _, e := range strict {
		req.w.Header().Add("Warning", fmt.Sprintf("299 - %q", e.Error()))
	}
	return obj, nil
}

const protobufType = "application/vnd.kubernetes.protobuf"

// decodeProtobuf reads the Kubernetes protobuf envelope ("k8s\x00" and a
// runtime.Unknown) that typed clients such as `kubectl create namespace`
// send.
func decodeProtobuf(res *resource, b []byte) (runtime.Object, error) {
	if len(b) < 4 || string(b[:4]) != "k8s\x00" {
		return nil, apierrors.NewBadRequest("the object provided is unrecognized: missing protobuf envelope")
	}
	var u runtime.Unknown
	if err := u.Unmarshal(b[4:]); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
	}
	if (u.APIVersion != "" && u.APIVersion != res.apiVersion()) || (u.Kind != "" && u.Kind != res.kind) {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)",
			u.APIVersion, res.apiVersion()))
	}
	obj := res.newObj()
	pm, ok := obj.(interface{ Unmarshal([]byte) error })
	if !ok {
		return nil, apierrors.NewGenericServerResponse(415, "", schema.GroupResource{}, "", "protobuf is not supported for "+res.plural, 0, false)
	}
	if err := pm.Unmarshal(u.Raw); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
	}
	obj.GetObjectKind().SetGroupVersionKind(res.gvk())
	return obj, nil
}

func decodeChecked(res *resource, b []byte) (runtime.Object, error) {
	var tm metav1.TypeMeta
	if err := json.Unmarshal(b, &tm); err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
	}
	if (tm.APIVersion != "" && tm.APIVersion != res.apiVersion()) || (tm.Kind != "" && tm.Kind != res.kind) {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the API version in the data (%s) does not match the expected API version (%s)",
			tm.APIVersion, res.apiVersion()))
	}
	obj, err := decodeObj(res, b)
	if err != nil {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
	}
	return obj, nil
}

// ---- create / update ----

func (c *Cluster) createObject(res *resource, ns string, obj runtime.Object, dryRun bool) (runtime.Object, error) {
	m := metaOf(obj)
	if res.namespaced {
		if m.GetNamespace() != "" && m.GetNamespace() != ns {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		m.SetNamespace(ns)
	} else {
		m.SetNamespace("")
	}
	if m.GetName() == "" && m.GetGenerateName() != "" {
		base := m.GetGenerateName()
		if len(base) > 58 {
			base = base[:58]
		}
		m.SetName(base + utilrand.String(5))
	}
	if m.GetResourceVersion() != "" {
		return nil, apierrors.NewInternalError(errors.New("resourceVersion should not be set on objects to be created"))
	}
	if res.hasStatus && res != resNamespaces {
		resetStatus(obj)
	}
	if res.specGeneration {
		m.SetGeneration(1)
	}
	if res.defaults != nil {
		res.defaults(obj)
	}
	if errs := c.validate(res, obj); errs != nil {
		return nil, errs
	}
	if svc, ok := obj.(*corev1.Service); ok && !dryRun {
		c.net.allocateClusterIP(svc)
	}
	return c.store.create(res, obj, dryRun)
}

func resetStatus(obj runtime.Object) {
	switch o := obj.(type) {
	case *appsv1.Deployment:
		o.Status = appsv1.DeploymentStatus{}
	case *appsv1.ReplicaSet:
		o.Status = appsv1.ReplicaSetStatus{}
	case *corev1.Pod:
		o.Status = corev1.PodStatus{}
	case *corev1.Service:
		o.Status = corev1.ServiceStatus{}
	}
}

func (c *Cluster) validate(res *resource, obj runtime.Object) error {
	m := metaOf(obj)
	errs := validateName(res, m.GetName())
	errs = append(errs, validateLabels(m)...)
	if res.validate != nil {
		errs = append(errs, res.validate(obj)...)
	}
	if len(errs) > 0 {
		return apierrors.NewInvalid(schema.GroupKind{Group: res.group, Kind: res.kind}, m.GetName(), errs)
	}
	return nil
}

// jsonSwap returns dst with its top-level key replaced by src's.
func jsonSwap(res *resource, dst, src runtime.Object, key string) runtime.Object {
	var dm, sm map[string]json.RawMessage
	json.Unmarshal(encodeObj(res, dst), &dm)
	json.Unmarshal(encodeObj(res, src), &sm)
	if v, ok := sm[key]; ok {
		dm[key] = v
	} else {
		delete(dm, key)
	}
	b, _ := json.Marshal(dm)
	out, err := decodeObj(res, b)
	if err != nil {
		panic(err)
	}
	return out
}

func specOf(res *resource, obj runtime.Object) string {
	var m map[string]json.RawMessage
	json.Unmarshal(encodeObj(res, obj), &m)
	return string(m["spec"]) + string(m["template"])
}

// updateObject is PUT and PATCH: makeNew builds the requested object from
// a copy of the current one, inside the store's lock (so a patch applies
// to the latest version and never conflicts spuriously). For the main
// resource of a type with a status subresource the status is kept; for
// /status only the status changes.
func (c *Cluster) updateObject(res *resource, ns, name, sub string, dryRun bool,
	makeNew func(cur runtime.Object) (runtime.Object, error)) (runtime.Object, error) {
	return c.store.update(res, ns, name, dryRun, func(cur runtime.Object) (runtime.Object, error) {
		next, err := makeNew(cur.DeepCopyObject())
		if err != nil {
			return nil, err
		}
		nm := metaOf(next)
		if nm.GetName() != "" && nm.GetName() != name {
			return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", nm.GetName(), name))
		}
		if res.namespaced && nm.GetNamespace() != "" && nm.GetNamespace() != ns {
			return nil, apierrors.NewBadRequest("the namespace of the provided object does not match the namespace sent on the request")
		}
		rv := nm.GetResourceVersion()
		switch {
		case sub == "status":
			next = jsonSwap(res, cur, next, "status")
		case res.hasStatus:
			next = jsonSwap(res, next, cur, "status")
		}
		nm = metaOf(next)
		nm.SetResourceVersion(rv)
		nm.SetGeneration(metaOf(cur).GetGeneration())
		if svc, ok := next.(*corev1.Service); ok {
			old := cur.(*corev1.Service)
			if svc.Spec.ClusterIP == "" {
				svc.Spec.ClusterIP, svc.Spec.ClusterIPs = old.Spec.ClusterIP, old.Spec.ClusterIPs
			} else if old.Spec.ClusterIP != "" && svc.Spec.ClusterIP != old.Spec.ClusterIP {
				return nil, apierrors.NewInvalid(schema.GroupKind{Kind: "Service"}, name, field.ErrorList{
					field.Invalid(field.NewPath("spec", "clusterIPs").Index(0), svc.Spec.ClusterIP, "may not change once set")})
			}
			if len(svc.Spec.ClusterIPs) == 0 {
				svc.Spec.ClusterIPs = old.Spec.ClusterIPs
			}
		}
		if res.defaults != nil {
			res.defaults(next)
		}
		if res.specGeneration && specOf(res, next) != specOf(res, cur) {
			nm.SetGeneration(metaOf(cur).GetGeneration() + 1)
		}
		if err := c.validate(res, next); err != nil {
			return nil, err
		}
		return next, nil
	})
}

// ---- patch ----

func (c *Cluster) patch(req *apiReq, dryRun bool) (runtime.Object, int, error) {
	res := req.res
	ct, _, _ := mime.ParseMediaType(req.r.Header.Get("Content-Type"))
	body, err := io.ReadAll(io.LimitReader(req.r.Body, 3<<20))
	if err != nil {
		return nil, 0, apierrors.NewBadRequest(err.Error())
	}
	switch ct {
	case "application/json-patch+json", "application/merge-patch+json", "application/strategic-merge-patch+json":
	case "application/apply-patch+yaml", "application/apply-patch+cbor":
		if req.q.Get("fieldManager") == "" {
			return nil, 0, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "PatchOptions"}, "",
				field.ErrorList{field.Required(field.NewPath("fieldManager"), "is required for apply patch")})
		}
		if body, err = yaml.YAMLToJSON(body); err != nil {
			return nil, 0, apierrors.NewBadRequest(err.Error())
		}
		if req.sub != "" {
			ct = "application/strategic-merge-patch+json"
			break
		}
		if _, gerr := c.store.get(res, req.ns, req.name); apierrors.IsNotFound(gerr) {
			obj, err := serverSideApply(req, nil, body)
			if err != nil {
				return nil, 0, err
			}
			obj, err = c.createObject(res, req.ns, obj, dryRun)
			return obj, 201, err
		}
		obj, err := c.updateObject(res, req.ns, req.name, req.sub, dryRun, func(cur runtime.Object) (runtime.Object, error) {
			return serverSideApply(req, cur, body)
		})
		return obj, 200, err
	default:
		return nil, 0, apierrors.NewGenericServerResponse(415, "", schema.GroupResource{}, "",
			fmt.Sprintf("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json"),
			0, false)
	}
	apply := func(doc []byte, schemaObj runtime.Object) ([]byte, error) {
		switch ct {
		case "application/json-patch+json":
			p, err := jsonpatch.DecodePatch(body)
			if err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			out, err := p.Apply(doc)
			if err != nil {
				return nil, apierrors.NewGenericServerResponse(422, "", schema.GroupResource{}, "", err.Error(), 0, false)
			}
			return out, nil
		case "application/merge-patch+json":
			out, err := jsonpatch.MergePatch(doc, body)
			if err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			return out, nil
		default:
			var pm map[string]any
			if err := json.Unmarshal(body, &pm); err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			out, err := strategicpatch.StrategicMergePatch(doc, body, schemaObj)
			if err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			return out, nil
		}
	}
	if req.sub == "scale" {
		obj, err := c.changeScale(req, dryRun, func(sc *autoscalingv1.Scale) (*autoscalingv1.Scale, error) {
			doc, _ := json.Marshal(sc)
			out, err := apply(doc, &autoscalingv1.Scale{})
			if err != nil {
				return nil, err
			}
			var ns autoscalingv1.Scale
			if err := json.Unmarshal(out, &ns); err != nil {
				return nil, apierrors.NewBadRequest(err.Error())
			}
			return &ns, nil
		})
		return obj, 200, err
	}
	obj, err := c.updateObject(res, req.ns, req.name, req.sub, dryRun, func(cur runtime.Object) (runtime.Object, error) {
		out, err := apply(encodeObj(res, cur), res.newObj())
		if err != nil {
			return nil, err
		}
		obj, err := decodeObj(res, out)
		if err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		return trackUpdate(req, cur, obj), nil
	})
	return obj, 200, err
}

// ---- scale ----

func scaleOf(obj runtime.Object) (*autoscalingv1.Scale, error) {
	sc := &autoscalingv1.Scale{TypeMeta: metav1.TypeMeta{Kind: "Scale", APIVersion: "autoscaling/v1"}}
	var sel *metav1.LabelSelector
	switch o := obj.(type) {
	case *appsv1.Deployment:
		sc.ObjectMeta = o.ObjectMeta
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	case *appsv1.ReplicaSet:
		sc.ObjectMeta = o.ObjectMeta
		sc.Spec.Replicas = *o.Spec.Replicas
		sc.Status.Replicas = o.Status.Replicas
		sel = o.Spec.Selector
	}
	sc.ObjectMeta = metav1.ObjectMeta{Name: sc.Name, Namespace: sc.Namespace, UID: sc.UID,
		ResourceVersion: sc.ResourceVersion, CreationTimestamp: sc.CreationTimestamp}
	if s, err := metav1.LabelSelectorAsSelector(sel); err == nil {
		sc.Status.Selector = s.String()
	}
	return sc, nil
}

func (c *Cluster) getScale(res *resource, ns, name string) (runtime.Object, error) {
	obj, err := c.store.get(res, ns, name)
	if err != nil {
		return nil, err
	}
	return scaleOf(obj)
}

func (c *Cluster) updateScale(req *apiReq, dryRun bool) (runtime.Object, error) {
	b, err := io.ReadAll(io.LimitReader(req.r.Body, 1<<20))
	if err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	var in autoscalingv1.Scale
	if err := json.Unmarshal(b, &in); err != nil {
		return nil, apierrors.NewBadRequest(err.Error())
	}
	if in.Name != "" && in.Name != req.name {
		return nil, apierrors.NewBadRequest(fmt.Sprintf("the name of the object (%s) does not match the name on the URL (%s)", in.Name, req.name))
	}
	return c.changeScale(req, dryRun, func(*autoscalingv1.Scale) (*autoscalingv1.Scale, error) { return &in, nil })
}

func (c *Cluster) changeScale(req *apiReq, dryRun bool, makeNew func(*autoscalingv1.Scale) (*autoscalingv1.Scale, error)) (runtime.Object, error) {
	obj, err := c.updateObject(req.res, req.ns, req.name, "", dryRun, func(cur runtime.Object) (runtime.Object, error) {
		sc, _ := scaleOf(cur)
		next, err := makeNew(sc)
		if err != nil {
			return nil, err
		}
		if next.Spec.Replicas < 0 {
			return nil, apierrors.NewInvalid(schema.GroupKind{Group: "autoscaling", Kind: "Scale"}, req.name,
				field.ErrorList{field.Invalid(field.NewPath("spec", "replicas"), next.Spec.Replicas, "must be greater than or equal to 0")})
		}
		switch o := cur.(type) {
		case *appsv1.Deployment:
			o.Spec.Replicas = ptr(next.Spec.Replicas)
		case *appsv1.ReplicaSet:
			o.Spec.Replicas = ptr(next.Spec.Replicas)
		}
		metaOf(cur).SetResourceVersion(next.ResourceVersion)
		return cur, nil
	})
	if err != nil {
		return nil, err
	}
	return scaleOf(obj)
}

// ---- delete ----

func (c *Cluster) deleteOptions(req *apiReq) (*metav1.DeleteOptions, error) {
	opts := &metav1.DeleteOptions{}
	b, _ := io.ReadAll(io.LimitReader(req.r.Body, 1<<20))
	if ct, _, _ := mime.ParseMediaType(req.r.Header.Get("Content-Type")); ct == protobufType && len(b) > 4 {
		var u runtime.Unknown
		if err := u.Unmarshal(b[4:]); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
		if err := opts.Unmarshal(u.Raw); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	} else if len(strings.TrimSpace(string(b))) > 0 {
		if err := json.Unmarshal(b, opts); err != nil {
			return nil, apierrors.NewBadRequest(err.Error())
		}
	}
	if v := req.q.Get("propagationPolicy"); v != "" {
		p := metav1.DeletionPropagation(v)
		opts.PropagationPolicy = &p
	}
	if v := req.q.Get("gracePeriodSeconds"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return nil, apierrors.NewBadRequest("invalid gracePeriodSeconds")
		}
		opts.GracePeriodSeconds = &n
	}
	if isTrue(req.q.Get("orphanDependents")) || (opts.OrphanDependents != nil && *opts.OrphanDependents) {
		p := metav1.DeletePropagationOrphan
		opts.PropagationPolicy = &p
	}
	if opts.PropagationPolicy != nil {
		switch *opts.PropagationPolicy {
		case metav1.DeletePropagationOrphan, metav1.DeletePropagationBackground, metav1.DeletePropagationForeground:
		default:
			return nil, apierrors.NewBadRequest(fmt.Sprintf("DeleteOptions.meta.k8s.io \"\" is invalid: propagationPolicy: Unsupported value: %q: supported values: \"Foreground\", \"Background\", \"Orphan\", \"nil\"", *opts.PropagationPolicy))
		}
	}
	return opts, nil
}

func (c *Cluster) deleteRequest(req *apiReq, dryRun bool) (any, int, error) {
	opts, err := c.deleteOptions(req)
	if err != nil {
		return nil, 0, err
	}
	if len(opts.DryRun) > 0 {
		dryRun = true
	}
	obj, pending, err := c.deleteObject(req.res, req.ns, req.name, opts, dryRun)
	if err != nil {
		return nil, 0, err
	}
	if pending {
		return json.RawMessage(encodeObj(req.res, obj)), 200, nil
	}
	m := metaOf(obj)
	return &metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: metav1.StatusSuccess,
		Details: &metav1.StatusDetails{Name: m.GetName(), Group: req.res.group, Kind: req.res.plural, UID: m.GetUID()}}, 200, nil
}

// deleteObject deletes one object. Pods and namespaces terminate
// gracefully (pending=true: the object is returned with its
// deletionTimestamp); dependents follow the propagation policy.
func (c *Cluster) deleteObject(res *resource, ns, name string, opts *metav1.DeleteOptions, dryRun bool) (runtime.Object, bool, error) {
	var precondRV string
	var precondUID types.UID
	if opts.Preconditions != nil {
		if opts.Preconditions.ResourceVersion != nil {
			precondRV = *opts.Preconditions.ResourceVersion
		}
		if opts.Preconditions.UID != nil {
			precondUID = *opts.Preconditions.UID
		}
	}
	cur, err := c.store.get(res, ns, name)
	if err != nil {
		return nil, false, err
	}
	switch res {
	case resPods:
		pod := cur.(*corev1.Pod)
		grace := *pod.Spec.TerminationGracePeriodSeconds
		if opts.GracePeriodSeconds != nil {
			grace = *opts.GracePeriodSeconds
		}
		if grace > 0 && pod.Status.Phase != corev1.PodSucceeded && pod.Status.Phase != corev1.PodFailed {
			obj, err := c.markDeleted(res, ns, name, precondRV, grace, dryRun)
			return obj, true, err
		}
		obj, err := c.store.remove(res, ns, name, precondRV, precondUID, dryRun)
		if err == nil && !dryRun {
			c.kubelet.forget(pod)
		}
		return obj, false, err
	case resNamespaces:
		obj, err := c.markDeleted(res, ns, name, precondRV, 0, dryRun)
		return obj, true, err
	}
	policy := metav1.DeletePropagationBackground
	if opts.PropagationPolicy != nil {
		policy = *opts.PropagationPolicy
	}
	cm := metaOf(cur)
	uid := cm.GetUID()
	if cm.GetDeletionTimestamp() != nil {
		return cur, true, nil // already being deleted
	}
	foreground := policy == metav1.DeletePropagationForeground && (res == resDeployments || res == resReplicaSets || res == resServices)
	if foreground || len(cm.GetFinalizers()) > 0 {
		// Deletion waits: for the dependents (foreground, finished by the
		// garbage collector) or for the finalizers to be removed.
		obj, err := c.store.update(res, ns, name, dryRun, func(o runtime.Object) (runtime.Object, error) {
			m := metaOf(o)
			if precondRV != "" && precondRV != m.GetResourceVersion() {
				return nil, apierrors.NewConflict(res.gr(), name, fmt.Errorf(
					"Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", precondRV, m.GetResourceVersion()))
			}
			ts := metav1.NewTime(time.Now().UTC().Truncate(time.Second))
			m.SetDeletionTimestamp(&ts)
			m.SetDeletionGracePeriodSeconds(ptr(int64(0)))
			if foreground {
				m.SetFinalizers(append(m.GetFinalizers(), metav1.FinalizerDeleteDependents))
			}
			return o, nil
		})
		if err == nil && !dryRun {
			c.kick()
		}
		return obj, true, err
	}
	if !dryRun && policy == metav1.DeletePropagationOrphan {
		c.orphanDependents(ns, uid)
	}
	obj, err := c.store.remove(res, ns, name, precondRV, precondUID, dryRun)
	if err == nil && !dryRun {
		c.kick()
	}
	return obj, false, err
}

// markDeleted sets deletionTimestamp (the start of graceful termination).
func (c *Cluster) markDeleted(res *resource, ns, name, precondRV string, grace int64, dryRun bool) (runtime.Object, error) {
	return c.store.update(res, ns, name, dryRun, func(cur runtime.Object) (runtime.Object, error) {
		m := metaOf(cur)
		if precondRV != "" && precondRV != m.GetResourceVersion() {
			return nil, apierrors.NewConflict(res.gr(), name, fmt.Errorf(
				"Precondition failed: ResourceVersion in precondition: %s, ResourceVersion in object meta: %s", precondRV, m.GetResourceVersion()))
		}
		if m.GetDeletionTimestamp() == nil || (m.GetDeletionGracePeriodSeconds() != nil && grace < *m.GetDeletionGracePeriodSeconds()) {
			ts := metav1.NewTime(time.Now().UTC().Add(time.Duration(grace) * time.Second).Truncate(time.Second))
			m.SetDeletionTimestamp(&ts)
			m.SetDeletionGracePeriodSeconds(&grace)
			if nsObj, ok := cur.(*corev1.Namespace); ok {
				nsObj.Status.Phase = corev1.NamespaceTerminating
			}
		}
		return cur, nil
	})
}

func (c *Cluster) deleteCollection(req *apiReq, dryRun bool) {
	sel, fsel, err := selectors(req)
	if err != nil {
		writeError(req.w, err)
		return
	}
	opts, err := c.deleteOptions(req)
	if err != nil {
		writeError(req.w, err)
		return
	}
	objs, rv := c.store.list(req.res, req.ns)
	var items []json.RawMessage
	for _, o := range objs {
		if !sel.Matches(labels.Set(metaOf(o).GetLabels())) || !fsel.Matches(objectFields(req.res, o)) {
			continue
		}
		m := metaOf(o)
		if d, _, err := c.deleteObject(req.res, m.GetNamespace(), m.GetName(), opts, dryRun); err == nil {
			items = append(items, encodeObj(req.res, d))
		}
	}
	writeJSON(req.w, 200, listBody(req.res, items, rv, "", nil))
}

// ---- list and watch ----

func selectors(req *apiReq) (labels.Selector, fields.Selector, error) {
	sel, err := labels.Parse(req.q.Get("labelSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("unable to parse requirement: %v", err))
	}
	fsel, err := fields.ParseSelector(req.q.Get("fieldSelector"))
	if err != nil {
		return nil, nil, apierrors.NewBadRequest(err.Error())
	}
	// An unsupported field is an error, as in the real server.
	probe := objectFields(req.res, req.res.newObj())
	for _, r := range fsel.Requirements() {
		if _, ok := probe[r.Field]; !ok {
			return nil, nil, apierrors.NewBadRequest(fmt.Sprintf("field label not supported: %s", r.Field))
		}
	}
	return sel, fsel, nil
}

func listBody(res *resource, items []json.RawMessage, rv uint64, cont string, remaining *int64) map[string]any {
	if items == nil {
		items = []json.RawMessage{}
	}
	md := map[string]any{"resourceVersion": strconv.FormatUint(rv, 10)}
	if cont != "" {
		md["continue"] = cont
	}
	if remaining != nil {
		md["remainingItemCount"] = *remaining
	}
	return map[string]any{"kind": res.kind + "List", "apiVersion": res.apiVersion(), "metadata": md, "items": items}
}

type continueToken struct {
	RV    uint64 `json:"rv"`
	Start string `json:"start"`
}

func (c *Cluster) serveList(req *apiReq) {
	sel, fsel, err := selectors(req)
	if err != nil {
		writeError(req.w, err)
		return
	}
	limit, _ := strconv.Atoi(req.q.Get("limit"))
	var start string
	if tok := req.q.Get("continue"); tok != "" {
		var ct continueToken
		b, err := base64.RawURLEncoding.DecodeString(tok)
		if err == nil {
			err = json.Unmarshal(b, &ct)
		}
		if err != nil {
			writeError(req.w, apierrors.NewBadRequest(fmt.Sprintf("continue key is not valid: %v", err)))
			return
		}
		if ct.RV < c.store.floorOf(req.res) {
			writeError(req.w, apierrors.NewResourceExpired("The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter, or use the continue token in this response to retrieve the remainder of the results. Continuing with the provided token results in an inconsistent list - objects that were created, modified, or deleted between the time the first chunk was returned and now may show up in the list."))
			return
		}
		start = ct.Start
	}
	objs, rv := c.store.list(req.res, req.ns)
	var items []json.RawMessage
	var picked []runtime.Object
	var cont string
	var remaining *int64
	for i, o := range objs {
		m := metaOf(o)
		key := objKey(m.GetNamespace(), m.GetName())
		if start != "" && key <= start {
			continue
		}
		if !sel.Matches(labels.Set(m.GetLabels())) || !fsel.Matches(objectFields(req.res, o)) {
			continue
		}
		if limit > 0 && len(picked) == limit {
			var n int64
			for _, rest := range objs[i:] {
				rm := metaOf(rest)
				if sel.Matches(labels.Set(rm.GetLabels())) && fsel.Matches(objectFields(req.res, rest)) {
					n++
				}
			}
			last := metaOf(objs[i-1])
			b, _ := json.Marshal(continueToken{RV: rv, Start: objKey(last.GetNamespace(), last.GetName())})
			cont, remaining = base64.RawURLEncoding.EncodeToString(b), &n
			break
		}
		picked = append(picked, o)
	}
	if wantsTable(req.r) {
		writeJSON(req.w, 200, toTable(req.res, picked, strconv.FormatUint(rv, 10), cont, req.q.Get("includeObject"), true))
		return
	}
	for _, o := range picked {
		items = append(items, encodeObj(req.res, o.DeepCopyObject()))
	}
	writeJSON(req.w, 200, listBody(req.res, items, rv, cont, remaining))
}

type watchCutKey struct{}
type watchErrKey struct{}

// wireEvent is one line of a watch stream, fields in the API server's
// order.
type wireEvent struct {
	Type   string `json:"type"`
	Object any    `json:"object"`
}

func (c *Cluster) serveWatch(req *apiReq) {
	sel, fsel, err := selectors(req)
	if err != nil {
		writeError(req.w, err)
		return
	}
	res := req.res
	var from *uint64
	if v := req.q.Get("resourceVersion"); v != "" && v != "0" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeError(req.w, apierrors.NewBadRequest(fmt.Sprintf("invalid resource version: %s", v)))
			return
		}
		from = &n
	}
	timeout := 30 * time.Minute
	if v := req.q.Get("timeoutSeconds"); v != "" {
		n, err := strconv.Atoi(v)
		if err == nil && n > 0 {
			timeout = time.Duration(n) * time.Second
		}
	}
	bookmarks := isTrue(req.q.Get("allowWatchBookmarks"))
	initialEnd := false
	if isTrue(req.q.Get("sendInitialEvents")) {
		// The WatchList protocol: current state as ADDED events, then a
		// bookmark annotated k8s.io/initial-events-end.
		if req.q.Get("resourceVersionMatch") != "NotOlderThan" || !bookmarks {
			writeError(req.w, apierrors.NewInvalid(schema.GroupKind{Group: "meta.k8s.io", Kind: "ListOptions"}, "",
				field.ErrorList{field.Forbidden(field.NewPath("sendInitialEvents"),
					"sendInitialEvents is forbidden for watch unless resourceVersionMatch is NotOlderThan and allowWatchBookmarks is true")}))
			return
		}
		from, initialEnd = nil, true
	}
	w, werr := c.store.watchOpts(res, req.ns, from, bookmarks, initialEnd)
	if werr != nil && c.expiredAsHTTP() {
		writeError(req.w, apierrors.NewResourceExpired(werr.Error()))
		return
	}
	req.w.Header().Set("Content-Type", "application/json")
	req.w.Header().Set("Cache-Control", "no-cache, private")
	req.w.WriteHeader(200)
	flusher := req.w.(http.Flusher)
	enc := json.NewEncoder(req.w)
	if werr != nil {
		// A too-old version is reported inside the stream, as the watch
		// cache does.
		st := statusOf(apierrors.NewResourceExpired(werr.Error()))
		enc.Encode(wireEvent{Type: "ERROR", Object: st})
		flusher.Flush()
		return
	}
	defer c.store.unwatch(res, w)
	flusher.Flush()
	view := func(o runtime.Object) runtime.Object {
		if o == nil || res.backing == nil {
			return o
		}
		return res.fromBacking(o)
	}
	matches := func(o runtime.Object) bool {
		if o == nil {
			return false
		}
		m := metaOf(o)
		return sel.Matches(labels.Set(m.GetLabels())) && fsel.Matches(objectFields(res, o))
	}
	cut, _ := req.r.Context().Value(watchCutKey{}).(<-chan struct{})
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	asTable, first := wantsTable(req.r), true
	for {
		select {
		case <-req.r.Context().Done():
			return
		case <-deadline.C:
			return
		case <-cut:
			if ferr, ok := req.r.Context().Value(watchErrKey{}).(error); ok {
				// An injected error event ends the stream, as the watch
				// cache reports errors.
				enc.Encode(wireEvent{Type: "ERROR", Object: statusOf(ferr)})
				flusher.Flush()
				return
			}
			flusher.Flush()
			resetConn(req.w, req.r)
			return
		case ev, ok := <-w.ch:
			if !ok {
				return
			}
			typ := ev.Type
			var out []byte
			switch typ {
			case "BOOKMARK":
				ann := ""
				if ev.Old == initialEventsEndMarker {
					ann = `,"annotations":{"k8s.io/initial-events-end":"true"}`
				}
				out = []byte(fmt.Sprintf(`{"type":"BOOKMARK","object":{"kind":%q,"apiVersion":%q,"metadata":{"resourceVersion":"%d"%s}}}`,
					res.kind, res.apiVersion(), ev.RV, ann))
			default:
				ev.Obj, ev.Old = view(ev.Obj), view(ev.Old)
				now, before := matches(ev.Obj), matches(ev.Old)
				switch {
				case typ == "MODIFIED" && now && !before:
					typ = "ADDED"
				case typ == "MODIFIED" && !now && before:
					typ = "DELETED"
				case typ == "DELETED" && !before && !now:
					continue
				case typ != "DELETED" && !now:
					continue
				}
				var b []byte
				if asTable {
					b, _ = json.Marshal(toTable(res, []runtime.Object{ev.Obj}, "", "", req.q.Get("includeObject"), first))
					first = false
				} else {
					b = encodeObj(res, ev.Obj.DeepCopyObject())
				}
				out, _ = json.Marshal(wireEvent{Type: typ, Object: json.RawMessage(b)})
			}
			out = append(out, '\n')
			if _, err := req.w.Write(out); err != nil {
				return
			}
			if len(w.ch) == 0 {
				flusher.Flush()
			}
		}
	}
}
