package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
)

// kube-apiserver reports every request of a user (not the control plane's
// own components) to the sandbox's audit webhook, blocking, at
// ResponseComplete: the event carries the authorizer's decision. The
// sandbox writes one line per request to DIR/authz.log:
//
//	allow|deny USER VERB RESOURCE[/SUBRESOURCE][.GROUP] namespace=NS name=NAME
//
// (a non-resource request names its path), which is how the least-privilege
// spec checks that a Role has no rule the playbooks do not use.

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived", "ResponseStarted"]
rules:
- level: None
  users: ["system:kube-controller-manager", "system:kube-scheduler", "system:apiserver", "kube-apiserver-kubelet-client"]
- level: None
  userGroups: ["system:nodes", "system:serviceaccounts:kube-system"]
- level: Metadata
`

// writeAuditConfig writes the policy and the webhook's kubeconfig and
// returns kube-apiserver's flags for them.
func (c *Cluster) writeAuditConfig(adminAddr string) ([]string, error) {
	dir := c.cfg.Dir
	policy := filepath.Join(dir, "audit-policy.yaml")
	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		return nil, err
	}
	hook := filepath.Join(dir, "audit-webhook.kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: sandbox-audit
  cluster:
    server: http://%s/audit
contexts:
- name: sandbox-audit
  context:
    cluster: sandbox-audit
current-context: sandbox-audit
`, adminAddr)
	if err := os.WriteFile(hook, []byte(cfg), 0o600); err != nil {
		return nil, err
	}
	return []string{"--audit-policy-file", policy, "--audit-webhook-config-file", hook,
		"--audit-webhook-mode", "blocking", "--audit-webhook-version", "audit.k8s.io/v1"}, nil
}

type auditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ObjectRef *struct {
		Resource    string `json:"resource"`
		Subresource string `json:"subresource"`
		APIGroup    string `json:"apiGroup"`
		Namespace   string `json:"namespace"`
		Name        string `json:"name"`
	} `json:"objectRef"`
	Annotations map[string]string `json:"annotations"`
}

// serveAudit receives kube-apiserver's audit EventLists.
func (c *Cluster) serveAudit(w http.ResponseWriter, r *http.Request) {
	var list struct {
		Items []auditEvent `json:"items"`
	}
	if err := json.NewDecoder(r.Body).Decode(&list); err != nil {
		http.Error(w, err.Error(), 400)
		return
	}
	c.logMu.Lock()
	defer c.logMu.Unlock()
	for _, ev := range list.Items {
		decision := "deny"
		if ev.Annotations["authorization.k8s.io/decision"] == "allow" {
			decision = "allow"
		} else if _, ok := ev.Annotations["authorization.k8s.io/decision"]; !ok {
			continue // not authorized at all (authentication failed)
		}
		what, ns, name := ev.RequestURI, "", ""
		if i := len(what); i > 0 {
			if q := indexByte(what, '?'); q >= 0 {
				what = what[:q]
			}
		}
		if o := ev.ObjectRef; o != nil && o.Resource != "" {
			what, ns, name = o.Resource, o.Namespace, o.Name
			if o.Subresource != "" {
				what += "/" + o.Subresource
			}
			if o.APIGroup != "" {
				what += "." + o.APIGroup
			}
		}
		if c.authzLog != nil {
			fmt.Fprintf(c.authzLog, "%s %s %s %s namespace=%s name=%s\n", decision, ev.User.Username, ev.Verb, what, ns, name)
		}
	}
	w.WriteHeader(200)
}

func indexByte(s string, b byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == b {
			return i
		}
	}
	return -1
}
