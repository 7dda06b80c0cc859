package cluster

// RBAC as kube-apiserver enforces it (--authorization-mode=RBAC): every
// request is turned into attributes (user, verb, API group, resource,
// subresource, namespace, name — k8s.io/apiserver's RequestInfoFactory)
// and allowed when a rule of a Role or ClusterRole bound to the user allows
// it (k8s.io/kubernetes plugin/pkg/auth/authorizer/rbac and
// pkg/apis/rbac/v1/evaluation_helpers.go). Members of system:masters skip
// authorization, as kube-apiserver's privileged-group authorizer lets them:
// the sandbox's admin token and client certificate are such users. A denial
// is the API server's 403 Status, word for word.

import (
	"fmt"
	"net/http"
	"strings"

	authzv1 "k8s.io/api/authorization/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

const rbacGroup = "rbac.authorization.k8s.io"

var (
	resRoles = &resource{group: "rbac.authorization.k8s.io", version: "v1", kind: "Role", plural: "roles", singular: "role",
		namespaced: true,
		newObj:     func() runtime.Object { return &rbacv1.Role{} },
		validate:   func(o runtime.Object) field.ErrorList { return validateRules(o.(*rbacv1.Role).Rules, true) }}
	resClusterRoles = &resource{group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRole", plural: "clusterroles",
		singular: "clusterrole",
		newObj:   func() runtime.Object { return &rbacv1.ClusterRole{} },
		validate: func(o runtime.Object) field.ErrorList { return validateRules(o.(*rbacv1.ClusterRole).Rules, false) }}
	resRoleBindings = &resource{group: "rbac.authorization.k8s.io", version: "v1", kind: "RoleBinding", plural: "rolebindings",
		singular: "rolebinding", namespaced: true,
		newObj: func() runtime.Object { return &rbacv1.RoleBinding{} },
		validate: func(o runtime.Object) field.ErrorList {
			b := o.(*rbacv1.RoleBinding)
			return validateBinding(b.RoleRef, b.Subjects, true)
		}}
	resClusterRoleBindings = &resource{group: "rbac.authorization.k8s.io", version: "v1", kind: "ClusterRoleBinding",
		plural: "clusterrolebindings", singular: "clusterrolebinding",
		newObj: func() runtime.Object { return &rbacv1.ClusterRoleBinding{} },
		validate: func(o runtime.Object) field.ErrorList {
			b := o.(*rbacv1.ClusterRoleBinding)
			return validateBinding(b.RoleRef, b.Subjects, false)
		}}
)

func init() {
	allResources = append(allResources, resRoles, resClusterRoles, resRoleBindings, resClusterRoleBindings)
}

// validateRules is pkg/apis/rbac/validation's ValidatePolicyRule: verbs
// required; a rule names resources (with apiGroups) or non-resource URLs,
// and a Role's rules name no URLs.
func validateRules(rules []rbacv1.PolicyRule, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	for i, r := range rules {
		p := field.NewPath("rules").Index(i)
		if len(r.Verbs) == 0 {
			errs = append(errs, field.Required(p.Child("verbs"), "verbs must contain at least one value"))
		}
		if len(r.NonResourceURLs) > 0 {
			if namespaced {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "namespaced rules cannot apply to non-resource URLs"))
			}
			if len(r.APIGroups) > 0 || len(r.Resources) > 0 || len(r.ResourceNames) > 0 {
				errs = append(errs, field.Invalid(p.Child("nonResourceURLs"), r.NonResourceURLs, "rules cannot apply to both regular resources and non-resource URLs"))
			}
			continue
		}
		if len(r.APIGroups) == 0 {
			errs = append(errs, field.Required(p.Child("apiGroups"), "resource rules must supply at least one api group"))
		}
		if len(r.Resources) == 0 {
			errs = append(errs, field.Required(p.Child("resources"), "resource rules must supply at least one resource"))
		}
	}
	return errs
}

// validateBinding is ValidateRoleBinding's subset: a roleRef to a Role
// (only from a RoleBinding) or ClusterRole of rbac.authorization.k8s.io,
// and subjects of a known kind with a name (a ServiceAccount's namespace
// is required in a ClusterRoleBinding).
func validateBinding(ref rbacv1.RoleRef, subjects []rbacv1.Subject, namespaced bool) field.ErrorList {
	var errs field.ErrorList
	rp := field.NewPath("roleRef")
	if ref.APIGroup != rbacv1.GroupName {
		errs = append(errs, field.NotSupported(rp.Child("apiGroup"), ref.APIGroup, []string{rbacv1.GroupName}))
	}
	switch {
	case ref.Kind == "ClusterRole", ref.Kind == "Role" && namespaced:
	case namespaced:
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, []string{"Role", "ClusterRole"}))
	default:
		errs = append(errs, field.NotSupported(rp.Child("kind"), ref.Kind, []string{"ClusterRole"}))
	}
	if ref.Name == "" {
		errs = append(errs, field.Required(rp.Child("name"), ""))
	}
	for i, s := range subjects {
		sp := field.NewPath("subjects").Index(i)
		if s.Name == "" {
			errs = append(errs, field.Required(sp.Child("name"), ""))
		}
		switch s.Kind {
		case rbacv1.ServiceAccountKind:
			if s.APIGroup != "" {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{""}))
			}
			if !namespaced && s.Namespace == "" {
				errs = append(errs, field.Required(sp.Child("namespace"), ""))
			}
		case rbacv1.UserKind, rbacv1.GroupKind:
			if s.APIGroup != rbacv1.GroupName {
				errs = append(errs, field.NotSupported(sp.Child("apiGroup"), s.APIGroup, []string{rbacv1.GroupName}))
			}
		default:
			errs = append(errs, field.NotSupported(sp.Child("kind"), s.Kind, []string{rbacv1.ServiceAccountKind, rbacv1.UserKind, rbacv1.GroupKind}))
		}
	}
	return errs
}

// userInfo is an authenticated user (k8s.io/apiserver's user.Info).
type userInfo struct {
	name   string
	groups []string
}

func (u *userInfo) in(group string) bool {
	for _, g := range u.groups {
		if g == group {
			return true
		}
	}
	return false
}

// requestInfo is k8s.io/apiserver's RequestInfo, as RequestInfoFactory
// (APIPrefixes api and apis, the groupless prefix api) makes it.
type requestInfo struct {
	resourceRequest                        bool
	path, verb, group, version             string
	resource, subresource, namespace, name string
}

func newRequestInfo(r *http.Request) requestInfo {
	ri := requestInfo{path: r.URL.Path, verb: strings.ToLower(r.Method)}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	if len(parts) < 3 || (parts[0] != "api" && parts[0] != "apis") {
		return ri
	}
	prefix := parts[0]
	parts = parts[1:]
	if prefix == "apis" {
		if len(parts) < 3 {
			return ri
		}
		ri.group, parts = parts[0], parts[1:]
	}
	ri.resourceRequest = true
	ri.version, parts = parts[0], parts[1:]
	if parts[0] == "watch" || parts[0] == "proxy" { // the deprecated /watch/ and /proxy/ forms
		if len(parts) < 2 {
			return requestInfo{path: ri.path, verb: ri.verb}
		}
		ri.verb, parts = parts[0], parts[1:]
	} else {
		switch r.Method {
		case http.MethodPost:
			ri.verb = "create"
		case http.MethodGet, http.MethodHead:
			ri.verb = "get"
		case http.MethodPut:
			ri.verb = "update"
		case http.MethodPatch:
			ri.verb = "patch"
		case http.MethodDelete:
			ri.verb = "delete"
		default:
			ri.verb = ""
		}
	}
	if parts[0] == "namespaces" {
		if len(parts) > 1 {
			ri.namespace = parts[1]
			if len(parts) > 2 && parts[2] != "status" && parts[2] != "finalize" {
				parts = parts[2:]
			}
		}
	}
	if len(parts) >= 3 && ri.verb != "proxy" {
		ri.subresource = parts[2]
	}
	if len(parts) >= 2 {
		ri.name = parts[1]
	}
	ri.resource = parts[0]
	if ri.name == "" && ri.verb == "get" {
		q := r.URL.Query()
		ri.verb = "list"
		if isTrue(q.Get("watch")) {
			ri.verb = "watch"
		}
		if fs, err := fields.ParseSelector(q.Get("fieldSelector")); err == nil {
			if name, ok := fs.RequiresExactMatch("metadata.name"); ok && name != "" && !strings.ContainsAny(name, "/%") &&
				name != "." && name != ".." {
				ri.name = name
			}
		}
	}
	if ri.name == "" && ri.verb == "delete" {
		ri.verb = "deletecollection"
	}
	return ri
}

// ---- the RBAC authorizer ----

func verbMatches(r *rbacv1.PolicyRule, verb string) bool {
	for _, v := range r.Verbs {
		if v == rbacv1.VerbAll || v == verb {
			return true
		}
	}
	return false
}

func apiGroupMatches(r *rbacv1.PolicyRule, group string) bool {
	for _, g := range r.APIGroups {
		if g == rbacv1.APIGroupAll || g == group {
			return true
		}
	}
	return false
}

func resourceMatches(r *rbacv1.PolicyRule, combined, sub string) bool {
	for _, res := range r.Resources {
		if res == rbacv1.ResourceAll || res == combined {
			return true
		}
		if sub != "" && len(res) == len(sub)+2 && strings.HasPrefix(res, "*/") && strings.HasSuffix(res, sub) {
			return true
		}
	}
	return false
}

func resourceNameMatches(r *rbacv1.PolicyRule, name string) bool {
	if len(r.ResourceNames) == 0 {
		return true
	}
	for _, n := range r.ResourceNames {
		if n == name {
			return true
		}
	}
	return false
}

func nonResourceURLMatches(r *rbacv1.PolicyRule, path string) bool {
	for _, u := range r.NonResourceURLs {
		if u == rbacv1.NonResourceAll || u == path ||
			(strings.HasSuffix(u, "*") && strings.HasPrefix(path, strings.TrimRight(u, "*"))) {
			return true
		}
	}
	return false
}

// ruleAllows is RuleAllows of pkg/apis/rbac/v1/evaluation_helpers.go.
func ruleAllows(ri *requestInfo, r *rbacv1.PolicyRule) bool {
	if ri.resourceRequest {
		combined := ri.resource
		if ri.subresource != "" {
			combined += "/" + ri.subresource
		}
		return verbMatches(r, ri.verb) && apiGroupMatches(r, ri.group) && resourceMatches(r, combined, ri.subresource) &&
			resourceNameMatches(r, ri.name)
	}
	return verbMatches(r, ri.verb) && nonResourceURLMatches(r, ri.path)
}

// appliesTo is the rule resolver's subject match; a ServiceAccount subject
// without a namespace means the binding's own.
func appliesTo(u *userInfo, subjects []rbacv1.Subject, namespace string) bool {
	for _, s := range subjects {
		switch s.Kind {
		case rbacv1.UserKind:
			if u.name == s.Name {
				return true
			}
		case rbacv1.GroupKind:
			if u.in(s.Name) {
				return true
			}
		case rbacv1.ServiceAccountKind:
			ns := namespace
			if s.Namespace != "" {
				ns = s.Namespace
			}
			if ns != "" && u.name == "system:serviceaccount:"+ns+":"+s.Name {
				return true
			}
		}
	}
	return false
}

// roleRules are the rules a roleRef points at; a missing role is the
// lister's NotFound, which the authorizer reports after "RBAC: ".
func (c *Cluster) roleRules(ref rbacv1.RoleRef, namespace string) ([]rbacv1.PolicyRule, error) {
	if ref.Kind == "Role" {
		o, err := c.store.get(resRoles, namespace, ref.Name)
		if err != nil {
			return nil, apierrors.NewNotFound(schema.GroupResource{Group: rbacv1.GroupName, Resource: "role"}, ref.Name)
		}
		return o.(*rbacv1.Role).Rules, nil
	}
	o, err := c.store.get(resClusterRoles, "", ref.Name)
	if err != nil {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: rbacv1.GroupName, Resource: "clusterrole"}, ref.Name)
	}
	return o.(*rbacv1.ClusterRole).Rules, nil
}

// rbacAuthorize visits the rules bound to u — ClusterRoleBindings, then
// the RoleBindings of the request's namespace — and allows on the first
// match. Otherwise it returns the reason kube-apiserver appends to the
// message: "RBAC: " and the roles that could not be read.
func (c *Cluster) rbacAuthorize(u *userInfo, ri *requestInfo) (bool, string) {
	allowed, reason, _ := c.rbacDecide(u, ri)
	return allowed, reason
}

// describeSubject is the rule resolver's subject description.
func describeSubject(s rbacv1.Subject, namespace string) string {
	if s.Kind == rbacv1.ServiceAccountKind {
		ns := s.Namespace
		if ns == "" {
			ns = namespace
		}
		return fmt.Sprintf("%s %q", s.Kind, s.Name+"/"+ns)
	}
	return fmt.Sprintf("%s %q", s.Kind, s.Name)
}

func firstApplying(u *userInfo, subjects []rbacv1.Subject, namespace string) rbacv1.Subject {
	for _, s := range subjects {
		if appliesTo(u, []rbacv1.Subject{s}, namespace) {
			return s
		}
	}
	return rbacv1.Subject{}
}

// rbacDecide also says which binding allowed the request ("RBAC: allowed
// by RoleBinding ..."), as SubjectAccessReviews report it.
func (c *Cluster) rbacDecide(u *userInfo, ri *requestInfo) (bool, string, string) {
	var errs []string
	visit := func(rules []rbacv1.PolicyRule, err error) bool {
		if err != nil {
			errs = append(errs, err.Error())
			return false
		}
		for i := range rules {
			if ruleAllows(ri, &rules[i]) {
				return true
			}
		}
		return false
	}
	crbs, _ := c.store.list(resClusterRoleBindings, "")
	for _, o := range crbs {
		b := o.(*rbacv1.ClusterRoleBinding)
		if appliesTo(u, b.Subjects, "") && visit(c.roleRules(b.RoleRef, "")) {
			return true, "", fmt.Sprintf("RBAC: allowed by ClusterRoleBinding %q of ClusterRole %q to %s", b.Name,
				b.RoleRef.Name, describeSubject(firstApplying(u, b.Subjects, ""), ""))
		}
	}
	if ri.namespace != "" {
		rbs, _ := c.store.list(resRoleBindings, ri.namespace)
		for _, o := range rbs {
			b := o.(*rbacv1.RoleBinding)
			if appliesTo(u, b.Subjects, ri.namespace) && visit(c.roleRules(b.RoleRef, ri.namespace)) {
				return true, "", fmt.Sprintf("RBAC: allowed by RoleBinding %q of %s %q to %s", b.Name+"/"+ri.namespace,
					b.RoleRef.Kind, b.RoleRef.Name, describeSubject(firstApplying(u, b.Subjects, ri.namespace), ri.namespace))
			}
		}
	}
	switch len(errs) {
	case 0:
		return false, "", ""
	case 1:
		return false, "RBAC: " + errs[0], ""
	}
	return false, "RBAC: [" + strings.Join(errs, ", ") + "]", ""
}

type userKey struct{}

// serveSelfSubjectAccessReview answers POST
// /apis/authorization.k8s.io/v1/selfsubjectaccessreviews (`kubectl auth
// can-i`): may the caller do what the spec describes?
func (c *Cluster) serveSelfSubjectAccessReview(w http.ResponseWriter, r *http.Request, parts []string) bool {
	if len(parts) != 4 || parts[0] != "apis" || parts[1] != "authorization.k8s.io" || parts[2] != "v1" ||
		parts[3] != "selfsubjectaccessreviews" {
		return false
	}
	if r.Method != http.MethodPost {
		writeError(w, apierrors.NewMethodNotSupported(schema.GroupResource{Group: "authorization.k8s.io",
			Resource: "selfsubjectaccessreviews"}, strings.ToLower(r.Method)))
		return true
	}
	u, _ := r.Context().Value(userKey{}).(*userInfo)
	b, err := c.readBody(r)
	if err != nil {
		writeError(w, err)
		return true
	}
	rev := &authzv1.SelfSubjectAccessReview{}
	if err := decodeBodyAs(r, b, rev); err != nil {
		writeError(w, err)
		return true
	}
	if u == nil {
		writeError(w, apierrors.NewUnauthorized("Unauthorized"))
		return true
	}
	var ri requestInfo
	switch ra, na := rev.Spec.ResourceAttributes, rev.Spec.NonResourceAttributes; {
	case ra != nil && na == nil:
		ri = requestInfo{resourceRequest: true, verb: ra.Verb, group: ra.Group, version: ra.Version, resource: ra.Resource,
			subresource: ra.Subresource, namespace: ra.Namespace, name: ra.Name}
	case na != nil && ra == nil:
		ri = requestInfo{path: na.Path, verb: na.Verb}
	default:
		writeError(w, apierrors.NewInvalid(schema.GroupKind{Group: "authorization.k8s.io", Kind: "SelfSubjectAccessReview"}, "",
			field.ErrorList{field.Invalid(field.NewPath("spec", "resourceAttributes"), rev.Spec.ResourceAttributes,
				"exactly one of nonResourceAttributes or resourceAttributes must be specified")}))
		return true
	}
	allowed, reason := true, ""
	if !u.in("system:masters") {
		var why string
		allowed, why, reason = c.rbacDecide(u, &ri)
		if !allowed {
			reason = why
		}
	}
	rev.TypeMeta = metav1.TypeMeta{Kind: "SelfSubjectAccessReview", APIVersion: "authorization.k8s.io/v1"}
	rev.CreationTimestamp = metav1.Now()
	rev.Status = authzv1.SubjectAccessReviewStatus{Allowed: allowed, Reason: reason}
	writeJSON(w, 201, rev)
	return true
}

// authorize lets the request through or answers 403 as
// responsewriters.Forbidden does, and records the decision in
// Dir/authz.log (user, verb, resource, namespace, name; no credentials).
func (c *Cluster) authorize(w http.ResponseWriter, r *http.Request, u *userInfo) bool {
	ri := newRequestInfo(r)
	allowed, reason := true, ""
	if !u.in("system:masters") {
		allowed, reason = c.rbacAuthorize(u, &ri)
	}
	c.logDecision(u, &ri, allowed)
	if allowed {
		return true
	}
	msg := forbiddenMessage(u, &ri)
	if reason != "" {
		msg += ": " + reason
	}
	writeError(w, apierrors.NewForbidden(schema.GroupResource{Group: ri.group, Resource: ri.resource}, ri.name, fmt.Errorf("%s", msg)))
	return false
}

// forbiddenMessage is responsewriters' forbiddenMessage.
func forbiddenMessage(u *userInfo, ri *requestInfo) string {
	if !ri.resourceRequest {
		return fmt.Sprintf("User %q cannot %s path %q", u.name, ri.verb, ri.path)
	}
	res := ri.resource
	if ri.subresource != "" {
		res += "/" + ri.subresource
	}
	if ri.namespace != "" {
		return fmt.Sprintf("User %q cannot %s resource %q in API group %q in the namespace %q", u.name, ri.verb, res, ri.group, ri.namespace)
	}
	return fmt.Sprintf("User %q cannot %s resource %q in API group %q at the cluster scope", u.name, ri.verb, res, ri.group)
}

func (c *Cluster) logDecision(u *userInfo, ri *requestInfo, allowed bool) {
	if c.authzLog == nil {
		return
	}
	decision := "allow"
	if !allowed {
		decision = "deny"
	}
	what := ri.path
	if ri.resourceRequest {
		what = ri.resource
		if ri.subresource != "" {
			what += "/" + ri.subresource
		}
		if ri.group != "" {
			what += "." + ri.group
		}
	}
	c.logMu.Lock()
	defer c.logMu.Unlock()
	fmt.Fprintf(c.authzLog, "%s %s %s %s namespace=%s name=%s\n", decision, u.name, ri.verb, what, ri.namespace, ri.name)
}

// ---- the bootstrap policy (plugin/pkg/auth/authorizer/rbac/bootstrappolicy) ----

func bootstrapMeta(name string) metav1.ObjectMeta {
	return metav1.ObjectMeta{Name: name, Labels: map[string]string{"kubernetes.io/bootstrapping": "rbac-defaults"},
		Annotations: map[string]string{"rbac.authorization.kubernetes.io/autoupdate": "true"}}
}

// bootstrapRBAC stores the default ClusterRoles and ClusterRoleBindings a
// new cluster has that matter here: cluster-admin for system:masters, and
// what every authenticated user may do (discovery, version and health,
// reviewing its own access).
func (c *Cluster) bootstrapRBAC() error {
	roles := []*rbacv1.ClusterRole{
		{ObjectMeta: bootstrapMeta("cluster-admin"), Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"*"}, APIGroups: []string{"*"}, Resources: []string{"*"}},
			{Verbs: []string{"*"}, NonResourceURLs: []string{"*"}}}},
		{ObjectMeta: bootstrapMeta("system:discovery"), Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"get"}, NonResourceURLs: []string{"/api", "/api/*", "/apis", "/apis/*", "/healthz", "/livez",
				"/openapi", "/openapi/*", "/readyz", "/version", "/version/"}}}},
		{ObjectMeta: bootstrapMeta("system:public-info-viewer"), Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"get"}, NonResourceURLs: []string{"/healthz", "/livez", "/readyz", "/version", "/version/"}}}},
		{ObjectMeta: bootstrapMeta("system:basic-user"), Rules: []rbacv1.PolicyRule{
			{Verbs: []string{"create"}, APIGroups: []string{"authorization.k8s.io"},
				Resources: []string{"selfsubjectaccessreviews", "selfsubjectrulesreviews"}}}},
	}
	group := func(names ...string) []rbacv1.Subject {
		var out []rbacv1.Subject
		for _, n := range names {
			out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: n})
		}
		return out
	}
	bindings := []*rbacv1.ClusterRoleBinding{
		{ObjectMeta: bootstrapMeta("cluster-admin"), Subjects: group("system:masters")},
		{ObjectMeta: bootstrapMeta("system:discovery"), Subjects: group("system:authenticated")},
		{ObjectMeta: bootstrapMeta("system:public-info-viewer"), Subjects: group("system:authenticated", "system:unauthenticated")},
		{ObjectMeta: bootstrapMeta("system:basic-user"), Subjects: group("system:authenticated")},
	}
	for _, r := range roles {
		if _, err := c.createObject(resClusterRoles, "", r, false); err != nil {
			return err
		}
	}
	for _, b := range bindings {
		b.RoleRef = rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: b.Name}
		if _, err := c.createObject(resClusterRoleBindings, "", b, false); err != nil {
			return err
		}
	}
	return nil
}
