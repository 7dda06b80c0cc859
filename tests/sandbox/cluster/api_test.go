package cluster

import (
	"bufio"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
)

type apiClient struct {
	t     *testing.T
	c     *Cluster
	http  *http.Client
	token string
}

func startTest(t *testing.T) *apiClient {
	t.Helper()
	dir := t.TempDir()
	c, err := Start(Config{Dir: dir, DemoAppArgv: []string{"/bin/sh", "-c", "exec sleep 600"},
		PodEnv: map[string]string{"PGHOST": "127.0.0.1", "FROM_POD_ENV": "sandbox"}, BehaviorsFile: filepath.Join(dir, "b.json")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool.AppendCertsFromPEM(ca)
	return &apiClient{t: t, c: c, token: c.token,
		http: &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, ForceAttemptHTTP2: true},
			Timeout: 20 * time.Second}}
}

// do sends a request and decodes a JSON answer into a map.
func (a *apiClient) do(method, path, ctype, body string) (int, map[string]any, http.Header) {
	a.t.Helper()
	req, _ := http.NewRequest(method, a.c.ServerURL()+path, strings.NewReader(body))
	if a.token != "" {
		req.Header.Set("Authorization", "Bearer "+a.token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := a.http.Do(req)
	if err != nil {
		a.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(b, &m)
	return resp.StatusCode, m, resp.Header
}

func get(m map[string]any, path ...string) any {
	var cur any = m
	for _, p := range path {
		mm, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = mm[p]
	}
	return cur
}

const deployJSON = `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"web"},
 "spec":{"replicas":0,"selector":{"matchLabels":{"app":"web"}},
  "template":{"metadata":{"labels":{"app":"web"}},"spec":{"containers":[{"name":"web","image":"registry.local/physioflow-api:v1"},{"name":"side","image":"registry.local/physioflow-api:v1"}]}}}}`

const nsPath = "/apis/apps/v1/namespaces/physioflow/deployments"

func TestAuthentication(t *testing.T) {
	a := startTest(t)
	a.token = ""
	code, m, _ := a.do("GET", "/api/v1/namespaces", "", "")
	if code != 401 || m["reason"] != "Unauthorized" || m["kind"] != "Status" {
		t.Fatalf("no credentials: %d %v", code, m)
	}
	a.token = "wrong"
	if code, _, _ := a.do("GET", "/version", "", ""); code != 401 {
		t.Fatalf("bad token on /version: %d", code)
	}
	a.token = ""
	if code, _, _ := a.do("GET", "/version", "", ""); code != 200 {
		t.Fatalf("anonymous /version: %d", code)
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(a.c.cfg.Dir, "client.crt"), filepath.Join(a.c.cfg.Dir, "client.key"))
	if err != nil {
		t.Fatal(err)
	}
	a.http.Transport.(*http.Transport).TLSClientConfig.Certificates = []tls.Certificate{cert}
	a.http.Transport.(*http.Transport).CloseIdleConnections()
	if code, _, _ := a.do("GET", "/api/v1/namespaces", "", ""); code != 200 {
		t.Fatalf("client certificate: %d", code)
	}
	kc, _ := os.ReadFile(a.c.KubeconfigPath())
	for _, want := range []string{"certificate-authority-data: ", "server: https://127.0.0.1:", "current-context: sandbox", "namespace: physioflow", "token: " + a.c.token} {
		if !strings.Contains(string(kc), want) {
			t.Errorf("kubeconfig lacks %q", want)
		}
	}
	log, _ := os.ReadFile(filepath.Join(a.c.cfg.Dir, "apiserver.log"))
	if strings.Contains(string(log), a.c.token) || !strings.Contains(string(log), "GET /api/v1/namespaces 401") {
		t.Fatalf("apiserver.log:\n%s", log)
	}
}

func TestStatusErrors(t *testing.T) {
	a := startTest(t)
	code, m, _ := a.do("GET", nsPath+"/nope", "", "")
	if code != 404 || m["message"] != `deployments.apps "nope" not found` || get(m, "details", "kind") != "deployments" ||
		get(m, "details", "group") != "apps" {
		t.Fatalf("404: %d %v", code, m)
	}
	cm := `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x"},"data":{"k":"v"}}`
	if code, _, _ := a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json", cm); code != 201 {
		t.Fatalf("create: %d", code)
	}
	code, m, _ = a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json", cm)
	if code != 409 || m["reason"] != "AlreadyExists" || m["message"] != `configmaps "x" already exists` {
		t.Fatalf("already exists: %d %v", code, m)
	}
	code, m, _ = a.do("POST", "/api/v1/namespaces/nowhere/configmaps", "application/json", cm)
	if code != 404 || m["message"] != `namespaces "nowhere" not found` {
		t.Fatalf("missing namespace: %d %v", code, m)
	}
	code, m, _ = a.do("PATCH", "/api/v1/namespaces/physioflow/configmaps/x", "text/plain", `{}`)
	if code != 415 || m["reason"] != "UnsupportedMediaType" ||
		!strings.HasPrefix(m["message"].(string), "the body of the request was in an unknown format - accepted media types include: ") {
		t.Fatalf("415: %d %v", code, m)
	}
	code, m, _ = a.do("POST", nsPath, "application/json", `{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"bad"},"spec":{"selector":{"matchLabels":{"a":"b"}},"template":{"metadata":{"labels":{"a":"c"}},"spec":{"containers":[{"name":"x","image":"y"}]}}}}`)
	if code != 422 || m["reason"] != "Invalid" || get(m, "details", "causes") == nil {
		t.Fatalf("422: %d %v", code, m)
	}
	for _, p := range []string{"/openapi/v2", "/openapi/v3", "/apis/apps/v1/namespaces/physioflow/widgets"} {
		if code, _, _ := a.do("GET", p, "", ""); code != 404 {
			t.Errorf("%s: %d", p, code)
		}
	}
}

func TestUpdateConflictAndGenerateName(t *testing.T) {
	a := startTest(t)
	code, m, _ := a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"generateName":"lock-"},"data":{"k":"v"}}`)
	name, _ := get(m, "metadata", "name").(string)
	if code != 201 || !strings.HasPrefix(name, "lock-") || len(name) != len("lock-")+5 || get(m, "metadata", "uid") == "" ||
		get(m, "metadata", "creationTimestamp") == nil {
		t.Fatalf("generateName: %d %v", code, m)
	}
	rv := get(m, "metadata", "resourceVersion").(string)
	path := "/api/v1/namespaces/physioflow/configmaps/" + name
	body := func(rv, v string) string {
		return fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"resourceVersion":%q},"data":{"k":%q}}`, name, rv, v)
	}
	code, m, _ = a.do("PUT", path, "application/json", body(rv, "v2"))
	if code != 200 || get(m, "metadata", "resourceVersion") == rv {
		t.Fatalf("update: %d %v", code, m)
	}
	code, m, _ = a.do("PUT", path, "application/json", body(rv, "v3"))
	want := fmt.Sprintf(`Operation cannot be fulfilled on configmaps %q: the object has been modified; please apply your changes to the latest version and try again`, name)
	if code != 409 || m["reason"] != "Conflict" || m["message"] != want {
		t.Fatalf("stale update: %d %v", code, m)
	}
	// A patch carrying a stale resourceVersion is a precondition too.
	code, _, _ = a.do("PATCH", path, "application/merge-patch+json", fmt.Sprintf(`{"metadata":{"resourceVersion":%q},"data":{"k":"v4"}}`, rv))
	if code != 409 {
		t.Fatalf("stale patch: %d", code)
	}
}

func TestPatchTypesGenerationAndNoOp(t *testing.T) {
	a := startTest(t)
	code, m, _ := a.do("POST", nsPath, "application/json", deployJSON)
	if code != 201 {
		t.Fatalf("create: %d %v", code, m)
	}
	spec := m["spec"].(map[string]any)
	if get(m, "metadata", "generation") != 1.0 || spec["progressDeadlineSeconds"] != 600.0 || spec["revisionHistoryLimit"] != 10.0 ||
		get(m, "spec", "strategy", "rollingUpdate", "maxSurge") != "25%" || get(m, "spec", "strategy", "type") != "RollingUpdate" {
		t.Fatalf("defaults: %v", m)
	}
	// kubectl set image: strategic merge by container name.
	code, m, _ = a.do("PATCH", nsPath+"/web?fieldManager=kubectl-set", "application/strategic-merge-patch+json",
		`{"spec":{"template":{"spec":{"$setElementOrder/containers":[{"name":"web"},{"name":"side"}],"containers":[{"image":"registry.local/physioflow-api:v2","name":"web"}]}}}}`)
	cs := get(m, "spec", "template", "spec", "containers").([]any)
	if code != 200 || len(cs) != 2 || cs[0].(map[string]any)["image"] != "registry.local/physioflow-api:v2" ||
		cs[1].(map[string]any)["image"] != "registry.local/physioflow-api:v1" || get(m, "metadata", "generation") != 2.0 {
		t.Fatalf("strategic: %d %v", code, m)
	}
	// JSON patch.
	code, m, _ = a.do("PATCH", nsPath+"/web", "application/json-patch+json",
		`[{"op":"test","path":"/spec/template/spec/containers/1/name","value":"side"},{"op":"replace","path":"/spec/template/spec/containers/1/image","value":"registry.local/physioflow-api:v3"}]`)
	if code != 200 || get(m, "metadata", "generation") != 3.0 {
		t.Fatalf("json patch: %d %v", code, m)
	}
	code, m, _ = a.do("PATCH", nsPath+"/web", "application/json-patch+json", `[{"op":"test","path":"/spec/replicas","value":7}]`)
	if code != 422 {
		t.Fatalf("failed json patch test op: %d %v", code, m)
	}
	// Merge patch on metadata: no generation bump.
	code, m, _ = a.do("PATCH", nsPath+"/web", "application/merge-patch+json", `{"metadata":{"labels":{"team":"pt"}}}`)
	if code != 200 || get(m, "metadata", "generation") != 3.0 {
		t.Fatalf("metadata patch: %d %v", code, m)
	}
	settle(a.c) // the controllers also write this Deployment
	_, m, _ = a.do("GET", nsPath+"/web", "", "")
	rv := get(m, "metadata", "resourceVersion")
	// No-op: same object, same resourceVersion.
	code, m, _ = a.do("PATCH", nsPath+"/web", "application/merge-patch+json", `{"metadata":{"labels":{"team":"pt"}}}`)
	if code != 200 || get(m, "metadata", "resourceVersion") != rv {
		t.Fatalf("no-op patch changed rv: %v -> %v", rv, get(m, "metadata", "resourceVersion"))
	}
	// Status is not writable through the main resource.
	code, m, _ = a.do("PATCH", nsPath+"/web", "application/merge-patch+json", `{"status":{"replicas":42}}`)
	if code != 200 || get(m, "status", "replicas") == 42.0 {
		t.Fatalf("status via main resource: %v", m)
	}
	code, m, _ = a.do("PATCH", nsPath+"/web/status", "application/merge-patch+json", `{"status":{"collisionCount":3}}`)
	if code != 200 || get(m, "status", "collisionCount") != 3.0 {
		t.Fatalf("status subresource: %d %v", code, m)
	}
}

func TestScaleSubresource(t *testing.T) {
	a := startTest(t)
	a.do("POST", nsPath, "application/json", deployJSON)
	code, m, _ := a.do("GET", nsPath+"/web/scale", "", "")
	if code != 200 || m["kind"] != "Scale" || m["apiVersion"] != "autoscaling/v1" || get(m, "status", "selector") != "app=web" {
		t.Fatalf("get scale: %d %v", code, m)
	}
	code, m, _ = a.do("PATCH", nsPath+"/web/scale", "application/merge-patch+json", `{"spec":{"replicas":0}}`)
	if code != 200 || get(m, "spec", "replicas") != nil && get(m, "spec", "replicas") != 0.0 {
		t.Fatalf("patch scale: %d %v", code, m)
	}
	// PUT without a Content-Type, as kubectl sends it.
	code, m, _ = a.do("PUT", nsPath+"/web/scale", "", `{"kind":"Scale","apiVersion":"autoscaling/v1","metadata":{"name":"web","resourceVersion":"1"},"spec":{"replicas":0}}`)
	if code != 409 {
		t.Fatalf("stale scale: %d %v", code, m)
	}
}

// settle waits until the controllers stop writing.
func settle(c *Cluster) uint64 {
	rv := c.store.currentRV()
	for i := 0; i < 50; i++ {
		time.Sleep(100 * time.Millisecond)
		if now := c.store.currentRV(); now == rv && i > 3 {
			return rv
		} else {
			rv = now
		}
	}
	return rv
}

func TestDryRunOnEveryVerb(t *testing.T) {
	a := startTest(t)
	a.do("POST", nsPath, "application/json", deployJSON)
	before := settle(a.c)
	cmPath := "/api/v1/namespaces/physioflow/configmaps"
	for _, r := range []struct{ method, path, ctype, body string }{
		{"POST", cmPath + "?dryRun=All", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"}}`},
		{"PUT", nsPath + "/web?dryRun=All", "application/json", strings.Replace(deployJSON, `"replicas":0`, `"replicas":5`, 1)},
		{"PATCH", nsPath + "/web?dryRun=All", "application/merge-patch+json", `{"spec":{"replicas":4}}`},
		{"PATCH", nsPath + "/web/scale?dryRun=All", "application/merge-patch+json", `{"spec":{"replicas":4}}`},
		{"DELETE", nsPath + "/web?dryRun=All", "", ""},
	} {
		code, m, _ := a.do(r.method, r.path, r.ctype, r.body)
		if code >= 300 {
			t.Fatalf("%s %s: %d %v", r.method, r.path, code, m)
		}
	}
	if after := a.c.store.currentRV(); after != before {
		t.Fatalf("dry runs wrote: rv %d -> %d", before, after)
	}
	if code, _, _ := a.do("GET", nsPath+"/web", "", ""); code != 200 {
		t.Fatalf("dry-run delete deleted")
	}
	if code, m, _ := a.do("POST", cmPath+"?dryRun=Some", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"d"}}`); code != 400 {
		t.Fatalf("bad dryRun value: %d %v", code, m)
	}
}

func TestListPagingAndSelectors(t *testing.T) {
	a := startTest(t)
	for i := 0; i < 5; i++ {
		a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json",
			fmt.Sprintf(`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"c%d","labels":{"n":"%d","odd":"%v"}}}`, i, i, i%2 == 1))
	}
	var names []string
	cont := ""
	pages := 0
	for {
		code, m, _ := a.do("GET", "/api/v1/namespaces/physioflow/configmaps?limit=2&continue="+cont, "", "")
		if code != 200 {
			t.Fatalf("list: %d %v", code, m)
		}
		pages++
		for _, it := range m["items"].([]any) {
			names = append(names, get(it.(map[string]any), "metadata", "name").(string))
		}
		cont, _ = get(m, "metadata", "continue").(string)
		if cont == "" {
			break
		}
	}
	if pages != 3 || fmt.Sprint(names) != "[c0 c1 c2 c3 c4]" {
		t.Fatalf("pages %d names %v", pages, names)
	}
	_, m, _ := a.do("GET", "/api/v1/namespaces/physioflow/configmaps?labelSelector=odd%3Dtrue", "", "")
	if n := len(m["items"].([]any)); n != 2 {
		t.Fatalf("label selector: %d items", n)
	}
	_, m, _ = a.do("GET", "/api/v1/configmaps?fieldSelector=metadata.name%3Dc3,metadata.namespace%3Dphysioflow", "", "")
	if n := len(m["items"].([]any)); n != 1 {
		t.Fatalf("field selector: %d items", n)
	}
	code, m, _ := a.do("GET", "/api/v1/namespaces/physioflow/pods?fieldSelector=status.phase%3DRunning", "", "")
	if code != 200 || m["kind"] != "PodList" {
		t.Fatalf("pod phase selector: %d %v", code, m)
	}
	if code, _, _ := a.do("GET", "/api/v1/namespaces/physioflow/configmaps?fieldSelector=data.k%3Dv", "", ""); code != 400 {
		t.Fatalf("unsupported field: %d", code)
	}
}

func watchLines(t *testing.T, a *apiClient, path string, n int) []map[string]any {
	t.Helper()
	req, _ := http.NewRequest("GET", a.c.ServerURL()+path, nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("watch: %d", resp.StatusCode)
	}
	var out []map[string]any
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for len(out) < n && sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("bad watch line %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

func TestWatchSelectorTransitionsAndExpiry(t *testing.T) {
	a := startTest(t)
	_, m, _ := a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json",
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"w","labels":{"c":"blue"}}}`)
	rv := get(m, "metadata", "resourceVersion").(string)
	a.do("PATCH", "/api/v1/namespaces/physioflow/configmaps/w", "application/merge-patch+json", `{"metadata":{"labels":{"c":"green"}}}`)
	a.do("PATCH", "/api/v1/namespaces/physioflow/configmaps/w", "application/merge-patch+json", `{"metadata":{"labels":{"c":"blue"}}}`)
	a.do("DELETE", "/api/v1/namespaces/physioflow/configmaps/w", "", "")
	evs := watchLines(t, a, "/api/v1/namespaces/physioflow/configmaps?watch=true&labelSelector=c%3Dblue&timeoutSeconds=2&resourceVersion="+rv, 3)
	var types []string
	for _, e := range evs {
		types = append(types, e["type"].(string))
	}
	// Leaving the selector is a DELETED, coming back an ADDED.
	if fmt.Sprint(types) != "[DELETED ADDED DELETED]" {
		t.Fatalf("events %v", types)
	}
	a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"churn"}}`)
	for i := 0; i < historyWindow+10; i++ {
		a.c.store.update(resConfigMaps, "physioflow", "churn", false, func(o runtime.Object) (runtime.Object, error) {
			o.(*corev1.ConfigMap).Data = map[string]string{"i": fmt.Sprint(i)}
			return o, nil
		})
	}
	evs = watchLines(t, a, "/api/v1/namespaces/physioflow/configmaps?watch=1&resourceVersion="+rv, 1)
	if evs[0]["type"] != "ERROR" || get(evs[0], "object", "code") != 410.0 || get(evs[0], "object", "reason") != "Expired" ||
		!strings.HasPrefix(get(evs[0], "object", "message").(string), "too old resource version: "+rv+" (") {
		t.Fatalf("expired watch: %v", evs)
	}
}

func TestFaultsAndStats(t *testing.T) {
	a := startTest(t)
	admin := func(method, path, body string) int {
		req, _ := http.NewRequest(method, a.c.AdminURL()+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	cm := "/api/v1/namespaces/physioflow/configmaps"
	a.do("POST", cm, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"f"}}`)
	admin("DELETE", "/stats", "")
	if admin("POST", "/faults", `{"method":"GET","path":"/configmaps/f$","status":429,"count":2,"retry_after":3}`) != 201 {
		t.Fatal("POST /faults")
	}
	for i := 0; i < 2; i++ {
		code, m, h := a.do("GET", cm+"/f", "", "")
		if code != 429 || m["reason"] != "TooManyRequests" || h.Get("Retry-After") != "3" {
			t.Fatalf("429 #%d: %d %v %v", i, code, m, h)
		}
	}
	if code, _, _ := a.do("GET", cm+"/f", "", ""); code != 200 {
		t.Fatalf("fault outlived its count: %d", code)
	}
	admin("POST", "/faults", `{"method":"PATCH","path":"/configmaps/f","status":500}`)
	code, m, _ := a.do("PATCH", cm+"/f", "application/merge-patch+json", `{}`)
	if code != 500 || m["reason"] != "InternalError" {
		t.Fatalf("500: %d %v", code, m)
	}
	admin("POST", "/faults", `{"path":"/configmaps/f$","reset":true}`)
	a.http.Transport.(*http.Transport).CloseIdleConnections() // else the client retries on a fresh one
	req, _ := http.NewRequest("GET", a.c.ServerURL()+cm+"/f", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	if _, err := a.http.Do(req); err == nil {
		t.Fatalf("reset fault: request succeeded")
	}
	// A watch cut after 300 ms, and one ended by an injected ERROR event.
	admin("POST", "/faults", `{"path":"/configmaps\\?.*watch=true","reset":true,"delay_ms":300}`)
	start := time.Now()
	req, _ = http.NewRequest("GET", a.c.ServerURL()+cm+"?watch=true&resourceVersion=0", nil)
	req.Header.Set("Authorization", "Bearer "+a.token)
	resp, err := a.http.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, err = io.ReadAll(resp.Body)
	if err == nil || time.Since(start) < 250*time.Millisecond {
		t.Fatalf("mid-stream reset: err=%v after %s", err, time.Since(start))
	}
	admin("POST", "/faults", `{"path":"/configmaps\\?.*watch=true","status":410,"in_stream":true,"delay_ms":100}`)
	evs := watchLines(t, a, cm+"?watch=true&resourceVersion=0", 3)
	if last := evs[len(evs)-1]; last["type"] != "ERROR" || get(last, "object", "code") != 410.0 {
		t.Fatalf("in-stream error: %v", evs)
	}
	resp2, _ := http.Get(a.c.AdminURL() + "/stats")
	var st map[string]int
	json.NewDecoder(resp2.Body).Decode(&st)
	resp2.Body.Close()
	if st["GET /api/v1/namespaces/physioflow/configmaps/f"] != 4 || st["PATCH /api/v1/namespaces/physioflow/configmaps/f"] != 1 {
		t.Fatalf("stats %v", st)
	}
}

func TestContainerEnv(t *testing.T) {
	a := startTest(t)
	c := a.c
	c.store.create(resSecrets, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: "physioflow"},
		Data: map[string][]byte{"password": []byte("s3cret")}}, false)
	c.store.create(resConfigMaps, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "cfg", Namespace: "physioflow"},
		Data: map[string]string{"mode": "blue"}}, false)
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "physioflow"}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "api", Image: "registry.local/physioflow-api:v7",
			Ports: []corev1.ContainerPort{{ContainerPort: 9090}},
			Env: []corev1.EnvVar{
				{Name: "PGHOST", Value: "db.physioflow.internal"},
				{Name: "PGPASSWORD", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "db"}, Key: "password"}}},
				{Name: "MODE", ValueFrom: &corev1.EnvVarSource{ConfigMapKeyRef: &corev1.ConfigMapKeySelector{
					LocalObjectReference: corev1.LocalObjectReference{Name: "cfg"}, Key: "mode"}}},
				{Name: "ME", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "metadata.name"}}},
				{Name: "MY_IP", ValueFrom: &corev1.EnvVarSource{FieldRef: &corev1.ObjectFieldSelector{FieldPath: "status.podIP"}}},
				{Name: "URL", Value: "http://$(MY_IP):9090/$(MODE)"},
			}}}}}
	obj, err := c.createObject(resPods, "physioflow", pod, false)
	if err != nil {
		t.Fatal(err)
	}
	p := obj.(*corev1.Pod)
	c.kubelet.mu.Lock() // allocIP's lock
	w := newPodWorker(c.kubelet, p)
	c.kubelet.mu.Unlock()
	ct := w.ctrs[0]
	ct.tag = "v7"
	env, err := w.containerEnv(ct)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, kv := range env {
		k, v, _ := strings.Cut(kv, "=")
		got[k] = v
	}
	want := map[string]string{"PGHOST": "db.physioflow.internal", // the manifest wins over PodEnv
		"PGPASSWORD": "s3cret", "MODE": "blue", "ME": "p", "MY_IP": w.ip,
		"URL": "http://" + w.ip + ":9090/blue", "POD_IP": w.ip, "POD_NAME": "p", "POD_NAMESPACE": "physioflow",
		"APP_VERSION": "v7", "PORT": "9090", "SANDBOX_BEHAVIORS": c.cfg.BehaviorsFile, "FROM_POD_ENV": "sandbox"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
	if !strings.HasPrefix(w.ip, "127.10.") {
		t.Errorf("pod IP %s", w.ip)
	}
	// A missing secret is a CreateContainerConfigError.
	ct.spec.Env = append(ct.spec.Env, corev1.EnvVar{Name: "X", ValueFrom: &corev1.EnvVarSource{SecretKeyRef: &corev1.SecretKeySelector{
		LocalObjectReference: corev1.LocalObjectReference{Name: "nope"}, Key: "k"}}})
	if _, err := w.containerEnv(ct); err == nil || err.Error() != `secret "nope" not found` {
		t.Fatalf("missing secret: %v", err)
	}
}

func TestSettingsShrinkWindowAndHTTP410(t *testing.T) {
	a := startTest(t)
	put := func(body string) int {
		req, _ := http.NewRequest("PUT", a.c.AdminURL()+"/settings", strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if put(`{"history_window":3,"expired_as_http":true}`) != 200 {
		t.Fatal("PUT /settings")
	}
	cm := "/api/v1/namespaces/physioflow/configmaps"
	_, m, _ := a.do("POST", cm, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"s"}}`)
	rv := get(m, "metadata", "resourceVersion").(string)
	for i := 0; i < 5; i++ {
		a.do("PATCH", cm+"/s", "application/merge-patch+json", fmt.Sprintf(`{"data":{"i":"%d"}}`, i))
	}
	code, m, _ := a.do("GET", cm+"?watch=true&resourceVersion="+rv, "", "")
	if code != 410 || m["reason"] != "Expired" {
		t.Fatalf("HTTP 410: %d %v", code, m)
	}
	if put(`{"history_window":0}`) != 400 {
		t.Fatal("bad settings accepted")
	}
}

func TestVersionsBeforeStartAreExpired(t *testing.T) {
	a := startTest(t)
	evs := watchLines(t, a, "/api/v1/namespaces/physioflow/configmaps?watch=true&resourceVersion=1", 1)
	if evs[0]["type"] != "ERROR" || get(evs[0], "object", "reason") != "Expired" {
		t.Fatalf("watch from 1: %v", evs)
	}
	_, m, _ := a.do("GET", "/api/v1/namespaces", "", "")
	rv := get(m, "metadata", "resourceVersion").(string)
	a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"after"}}`)
	evs = watchLines(t, a, "/api/v1/namespaces/physioflow/configmaps?watch=true&resourceVersion="+rv, 1)
	if evs[0]["type"] != "ADDED" {
		t.Fatalf("watch from the list's version: %v", evs)
	}
}

func TestWatchListInitialEventsEnd(t *testing.T) {
	a := startTest(t)
	a.do("POST", "/api/v1/namespaces/physioflow/configmaps", "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"one"}}`)
	evs := watchLines(t, a, "/api/v1/namespaces/physioflow/configmaps?watch=true&sendInitialEvents=true&resourceVersionMatch=NotOlderThan&allowWatchBookmarks=true", 2)
	if evs[0]["type"] != "ADDED" || evs[1]["type"] != "BOOKMARK" ||
		get(evs[1], "object", "metadata", "annotations").(map[string]any)["k8s.io/initial-events-end"] != "true" {
		t.Fatalf("watch list: %v", evs)
	}
	if code, _, _ := a.do("GET", "/api/v1/namespaces/physioflow/configmaps?watch=true&sendInitialEvents=true", "", ""); code != 422 {
		t.Fatalf("sendInitialEvents without NotOlderThan: %d", code)
	}
}

func waitGone(t *testing.T, a *apiClient, path string) {
	t.Helper()
	for i := 0; i < 100; i++ {
		if code, _, _ := a.do("GET", path, "", ""); code == 404 {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s still exists", path)
}

func TestForegroundDeletionAndFinalizers(t *testing.T) {
	a := startTest(t)
	a.do("POST", nsPath, "application/json", strings.Replace(deployJSON, `"replicas":0`, `"replicas":1`, 1))
	settle(a.c)
	code, m, _ := a.do("DELETE", nsPath+"/web", "application/json", `{"kind":"DeleteOptions","apiVersion":"v1","propagationPolicy":"Foreground"}`)
	fins, _ := get(m, "metadata", "finalizers").([]any)
	if code != 200 || get(m, "metadata", "deletionTimestamp") == nil || len(fins) != 1 || fins[0] != "foregroundDeletion" {
		t.Fatalf("foreground delete: %d %v", code, m)
	}
	waitGone(t, a, nsPath+"/web")
	_, m, _ = a.do("GET", "/apis/apps/v1/namespaces/physioflow/replicasets", "", "")
	if n := len(m["items"].([]any)); n != 0 {
		t.Fatalf("%d ReplicaSets left", n)
	}
	// A finalizer holds an object until an update removes it.
	cm := "/api/v1/namespaces/physioflow/configmaps"
	a.do("POST", cm, "application/json", `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"held","finalizers":["example.com/hold"]}}`)
	code, m, _ = a.do("DELETE", cm+"/held", "", "")
	if code != 200 || get(m, "metadata", "deletionTimestamp") == nil {
		t.Fatalf("delete with finalizer: %d %v", code, m)
	}
	if code, _, _ := a.do("GET", cm+"/held", "", ""); code != 200 {
		t.Fatalf("finalized object vanished early")
	}
	if code, m, _ := a.do("PATCH", cm+"/held", "application/merge-patch+json", `{"metadata":{"finalizers":null}}`); code != 200 {
		t.Fatalf("remove finalizer: %d %v", code, m)
	}
	waitGone(t, a, cm+"/held")
	// Orphan keeps the dependents, without their owner reference.
	a.do("POST", nsPath, "application/json", deployJSON)
	settle(a.c)
	a.do("DELETE", nsPath+"/web?propagationPolicy=Orphan", "", "")
	settle(a.c)
	_, m, _ = a.do("GET", "/apis/apps/v1/namespaces/physioflow/replicasets", "", "")
	items := m["items"].([]any)
	if len(items) != 1 || get(items[0].(map[string]any), "metadata", "ownerReferences") != nil {
		t.Fatalf("orphaned ReplicaSets: %v", items)
	}
}

func TestServesHTTP2AndHTTP1(t *testing.T) {
	a := startTest(t)
	for _, h2 := range []bool{true, false} {
		tr := a.http.Transport.(*http.Transport).Clone()
		tr.ForceAttemptHTTP2 = h2
		if !h2 {
			tr.TLSClientConfig = tr.TLSClientConfig.Clone()
			tr.TLSClientConfig.NextProtos = []string{"http/1.1"}
			tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
		}
		req, _ := http.NewRequest("GET", a.c.ServerURL()+"/api/v1/namespaces", nil)
		req.Header.Set("Authorization", "Bearer "+a.token)
		resp, err := (&http.Client{Transport: tr}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if want := map[bool]int{true: 2, false: 1}[h2]; resp.StatusCode != 200 || resp.ProtoMajor != want {
			t.Fatalf("h2=%v: %d %s", h2, resp.StatusCode, resp.Proto)
		}
	}
}

func TestEventsAPIsShareObjects(t *testing.T) {
	a := startTest(t)
	code, m, _ := a.do("POST", "/apis/events.k8s.io/v1/namespaces/physioflow/events", "application/json",
		`{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e1"},"eventTime":"2026-01-02T03:04:05.000000Z",
		  "regarding":{"kind":"Deployment","name":"web","namespace":"physioflow"},"note":"switched","reason":"BlueGreenSwitch",
		  "type":"Normal","action":"Switch","reportingController":"bgrun","reportingInstance":"host-1"}`)
	if code != 201 || m["apiVersion"] != "events.k8s.io/v1" || m["note"] != "switched" {
		t.Fatalf("create: %d %v", code, m)
	}
	code, m, _ = a.do("GET", "/api/v1/namespaces/physioflow/events/e1", "", "")
	if code != 200 || m["message"] != "switched" || get(m, "involvedObject", "name") != "web" || m["reportingComponent"] != "bgrun" {
		t.Fatalf("core view: %d %v", code, m)
	}
	if code, m, _ := a.do("POST", "/apis/events.k8s.io/v1/namespaces/physioflow/events", "application/json",
		`{"apiVersion":"events.k8s.io/v1","kind":"Event","metadata":{"name":"e2"},"regarding":{"kind":"Pod","name":"p"}}`); code != 422 {
		t.Fatalf("eventTime is required: %d %v", code, m)
	}
	code, m, _ = a.do("GET", "/apis/events.k8s.io/v1/namespaces/physioflow/events/nope", "", "")
	if code != 404 || m["message"] != `events.events.k8s.io "nope" not found` {
		t.Fatalf("404: %d %v", code, m)
	}
	_, m, _ = a.do("GET", "/apis/events.k8s.io/v1/namespaces/physioflow/events?fieldSelector=regarding.name%3Dweb", "", "")
	if items := m["items"].([]any); len(items) != 1 || items[0].(map[string]any)["note"] != "switched" {
		t.Fatalf("list: %v", m)
	}
	evs := watchLines(t, a, "/apis/events.k8s.io/v1/namespaces/physioflow/events?watch=true&fieldSelector=reason%3DBlueGreenSwitch", 1)
	if evs[0]["type"] != "ADDED" || get(evs[0], "object", "note") != "switched" {
		t.Fatalf("watch: %v", evs)
	}
}

func TestStartIsFastAndStopKillsPods(t *testing.T) {
	t0 := time.Now()
	dir := t.TempDir()
	c, err := Start(Config{Dir: dir, DemoAppArgv: []string{"/bin/sh", "-c", "exec sleep 600"}})
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > time.Second {
		t.Errorf("Start took %s", d)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "default"},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "physioflow-api:v1"}}}}
	if _, err := c.createObject(resPods, "default", pod, false); err != nil {
		t.Fatal(err)
	}
	var pgid int
	for i := 0; i < 100 && pgid == 0; i++ {
		time.Sleep(20 * time.Millisecond)
		if w := c.kubelet.find("default", "p"); w != nil {
			w.mu.Lock()
			pgid = w.ctrs[0].pgid
			w.mu.Unlock()
		}
	}
	if pgid == 0 {
		t.Fatal("pod process never started")
	}
	c.Stop()
	if err := syscall.Kill(-pgid, 0); err == nil {
		t.Fatalf("process group %d survived Stop", pgid)
	}
}
