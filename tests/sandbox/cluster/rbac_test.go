package cluster

import (
	"fmt"
	"strings"
	"testing"
)

// saToken asks the TokenRequest API for a token of ns/sa (as the admin).
func saToken(t *testing.T, a *apiClient, ns, sa, body string) string {
	t.Helper()
	code, m, _ := a.do("POST", "/api/v1/namespaces/"+ns+"/serviceaccounts/"+sa+"/token", "application/json", body)
	if code != 201 {
		t.Fatalf("token request: %d %v", code, m)
	}
	tok, _ := get(m, "status", "token").(string)
	if strings.Count(tok, ".") != 2 || get(m, "status", "expirationTimestamp") == nil {
		t.Fatalf("token request answer: %v", m)
	}
	return tok
}

func mustDo(t *testing.T, a *apiClient, want int, method, path, ctype, body string) map[string]any {
	t.Helper()
	code, m, _ := a.do(method, path, ctype, body)
	if code != want {
		t.Fatalf("%s %s: %d (want %d) %v", method, path, code, want, m)
	}
	return m
}

func TestRBACServiceAccountRoleBinding(t *testing.T) {
	a := startTest(t)
	mustDo(t, a, 201, "POST", "/api/v1/namespaces", "application/json", `{"metadata":{"name":"app"}}`)
	mustDo(t, a, 201, "POST", "/api/v1/namespaces/app/serviceaccounts", "application/json", `{"metadata":{"name":"deployer"}}`)
	mustDo(t, a, 201, "POST", "/apis/apps/v1/namespaces/app/deployments", "application/json", deployJSON)
	mustDo(t, a, 201, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/app/roles", "application/json",
		`{"metadata":{"name":"deployer"},"rules":[
		  {"apiGroups":["apps"],"resources":["deployments"],"verbs":["get","list","watch"]},
		  {"apiGroups":["apps"],"resources":["deployments/scale"],"verbs":["patch"],"resourceNames":["web"]}]}`)
	mustDo(t, a, 201, "POST", "/apis/rbac.authorization.k8s.io/v1/namespaces/app/rolebindings", "application/json",
		`{"metadata":{"name":"deployer"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"deployer"},
		  "subjects":[{"kind":"ServiceAccount","name":"deployer"}]}`)

	sa := *a
	sa.token = saToken(t, a, "app", "deployer", `{"spec":{}}`)
	mustDo(t, &sa, 200, "GET", "/apis/apps/v1/namespaces/app/deployments/web", "", "")
	mustDo(t, &sa, 200, "GET", "/apis/apps/v1/namespaces/app/deployments?watch=false", "", "")
	mustDo(t, &sa, 200, "GET", "/apis", "", "") // system:discovery
	mustDo(t, &sa, 200, "PATCH", "/apis/apps/v1/namespaces/app/deployments/web/scale", "application/merge-patch+json",
		`{"spec":{"replicas":0}}`)

	m := mustDo(t, &sa, 403, "PATCH", "/apis/apps/v1/namespaces/app/deployments/web", "application/merge-patch+json", `{}`)
	want := `deployments.apps "web" is forbidden: User "system:serviceaccount:app:deployer" cannot patch resource "deployments" in API group "apps" in the namespace "app"`
	if m["message"] != want || m["reason"] != "Forbidden" || get(m, "details", "kind") != "deployments" ||
		get(m, "details", "group") != "apps" || get(m, "details", "name") != "web" || m["kind"] != "Status" {
		t.Fatalf("forbidden status: %v", m)
	}
	m = mustDo(t, &sa, 403, "GET", "/api/v1/namespaces/app/pods/p1/log", "", "")
	if m["message"] != `pods "p1" is forbidden: User "system:serviceaccount:app:deployer" cannot get resource "pods/log" in API group "" in the namespace "app"` {
		t.Fatalf("pods/log: %v", m)
	}
	m = mustDo(t, &sa, 403, "GET", "/api/v1/namespaces/other/configmaps", "", "")
	if m["message"] != `configmaps is forbidden: User "system:serviceaccount:app:deployer" cannot list resource "configmaps" in API group "" in the namespace "other"` {
		t.Fatalf("list elsewhere: %v", m)
	}
	m = mustDo(t, &sa, 403, "GET", "/api/v1/nodes", "", "")
	if m["message"] != `nodes is forbidden: User "system:serviceaccount:app:deployer" cannot list resource "nodes" in API group "" at the cluster scope` {
		t.Fatalf("cluster scope: %v", m)
	}
	// resourceNames: the scale of another deployment is not covered
	mustDo(t, &sa, 403, "PATCH", "/apis/apps/v1/namespaces/app/deployments/other/scale", "application/merge-patch+json", `{}`)
	// a watch is its own verb
	mustDo(t, &sa, 200, "GET", "/apis/apps/v1/namespaces/app/deployments?watch=true&timeoutSeconds=1", "", "")
	// kubectl auth can-i: a SelfSubjectAccessReview answers for the caller
	m = mustDo(t, &sa, 201, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
		`{"spec":{"resourceAttributes":{"namespace":"app","verb":"patch","group":"apps","resource":"deployments","subresource":"scale","name":"web"}}}`)
	if get(m, "status", "allowed") != true ||
		get(m, "status", "reason") != `RBAC: allowed by RoleBinding "deployer/app" of Role "deployer" to ServiceAccount "deployer/app"` {
		t.Fatalf("access review: %v", m)
	}
	m = mustDo(t, &sa, 201, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", "application/json",
		`{"spec":{"resourceAttributes":{"namespace":"app","verb":"delete","group":"apps","resource":"deployments"}}}`)
	if get(m, "status", "allowed") != false {
		t.Fatalf("access review (denied): %v", m)
	}
	// the admin stays all-powerful
	mustDo(t, a, 200, "PATCH", "/apis/apps/v1/namespaces/app/deployments/web", "application/merge-patch+json", `{}`)

	// a RoleBinding to a Role that is gone: the reason says so
	mustDo(t, a, 200, "DELETE", "/apis/rbac.authorization.k8s.io/v1/namespaces/app/roles/deployer", "", "")
	m = mustDo(t, &sa, 403, "GET", "/apis/apps/v1/namespaces/app/deployments/web", "", "")
	if !strings.HasSuffix(m["message"].(string), `in the namespace "app": RBAC: role.rbac.authorization.k8s.io "deployer" not found`) {
		t.Fatalf("missing role: %v", m["message"])
	}

	// deleting the service account invalidates its tokens
	mustDo(t, a, 200, "DELETE", "/api/v1/namespaces/app/serviceaccounts/deployer", "", "")
	mustDo(t, &sa, 401, "GET", "/apis", "", "")
	// a token signed by someone else is not accepted
	bad := sa
	bad.token = sa.token[:len(sa.token)-4] + "AAAA"
	mustDo(t, &bad, 401, "GET", "/apis", "", "")
}

func TestTokenRequestValidation(t *testing.T) {
	a := startTest(t)
	m := mustDo(t, a, 422, "POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "application/json",
		`{"spec":{"expirationSeconds":60}}`)
	if !strings.Contains(m["message"].(string), "spec.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes") {
		t.Fatalf("short token: %v", m)
	}
	mustDo(t, a, 404, "POST", "/api/v1/namespaces/default/serviceaccounts/nobody/token", "application/json", `{}`)
	// a token for another audience does not authenticate to the API server
	code, m2, _ := a.do("POST", "/api/v1/namespaces/default/serviceaccounts/default/token", "application/json",
		`{"spec":{"audiences":["vault"]}}`)
	if code != 201 {
		t.Fatalf("vault token: %d %v", code, m2)
	}
	other := *a
	other.token = get(m2, "status", "token").(string)
	mustDo(t, &other, 401, "GET", "/api", "", "")
}

func TestClusterRoleBindingAndCronJobValidation(t *testing.T) {
	a := startTest(t)
	mustDo(t, a, 201, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterroles", "application/json",
		`{"metadata":{"name":"node-reader"},"rules":[{"apiGroups":[""],"resources":["nodes"],"verbs":["list"]}]}`)
	mustDo(t, a, 201, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "application/json",
		`{"metadata":{"name":"node-reader"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"ClusterRole","name":"node-reader"},
		  "subjects":[{"kind":"ServiceAccount","name":"default","namespace":"default"}]}`)
	m := mustDo(t, a, 422, "POST", "/apis/rbac.authorization.k8s.io/v1/clusterrolebindings", "application/json",
		`{"metadata":{"name":"bad"},"roleRef":{"apiGroup":"rbac.authorization.k8s.io","kind":"Role","name":"x"},
		  "subjects":[{"kind":"ServiceAccount","name":"default"}]}`)
	if !strings.Contains(m["message"].(string), "roleRef.kind") || !strings.Contains(m["message"].(string), "subjects[0].namespace") {
		t.Fatalf("binding validation: %v", m)
	}
	sa := *a
	sa.token = saToken(t, a, "default", "default", `{}`)
	mustDo(t, &sa, 200, "GET", "/api/v1/nodes", "", "")
	mustDo(t, &sa, 403, "GET", "/api/v1/nodes/sandbox", "", "")

	job := `{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"b"},"spec":{"schedule":"%s",
	  "jobTemplate":{"spec":{"template":{"spec":{"restartPolicy":"%s","containers":[{"name":"c","image":"x"}]}}}}}}`
	m = mustDo(t, a, 201, "POST", "/apis/batch/v1/namespaces/default/cronjobs", "application/json",
		fmt.Sprintf(job, "0 */6 * * *", "Never"))
	if get(m, "spec", "concurrencyPolicy") != "Allow" || get(m, "spec", "jobTemplate", "spec", "backoffLimit") != float64(6) {
		t.Fatalf("cronjob defaults: %v", m)
	}
	m = mustDo(t, a, 422, "POST", "/apis/batch/v1/namespaces/default/cronjobs?dryRun=All", "application/json",
		fmt.Sprintf(job, "every six hours", "Always"))
	msg := m["message"].(string)
	if !strings.Contains(msg, `spec.schedule: Invalid value: "every six hours"`) ||
		!strings.Contains(msg, `spec.jobTemplate.spec.template.spec.restartPolicy: Unsupported value: "Always"`) {
		t.Fatalf("cronjob validation: %v", msg)
	}
}
