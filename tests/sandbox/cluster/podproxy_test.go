package cluster

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// The pods proxy reaches a pod's port as kube-apiserver's does: the path
// after /proxy and the query go on, the caller's credentials do not.
func TestPodProxy(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 serves the pod here")
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "hello.txt"), []byte("hello from the pod\n"), 0o644)
	c, err := Start(Config{Dir: dir, BehaviorsFile: filepath.Join(dir, "b.json"),
		DemoAppArgv: []string{"/bin/sh", "-c", "exec python3 -m http.server \"$PORT\" --bind \"$POD_IP\" --directory " + dir}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	pool := x509.NewCertPool()
	ca, _ := os.ReadFile(filepath.Join(dir, "ca.crt"))
	pool.AppendCertsFromPEM(ca)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	get := func(path string, auth bool) (int, string) {
		req, _ := http.NewRequest("GET", c.ServerURL()+path, nil)
		if auth {
			req.Header.Set("Authorization", "Bearer "+c.token)
		}
		resp, err := hc.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p", Namespace: "physioflow", Labels: map[string]string{"app": "p"}}, Spec: corev1.PodSpec{
		Containers: []corev1.Container{{Name: "api", Image: "registry.local/physioflow-api:v1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}}}}}}
	if _, err := c.createObject(resPods, "physioflow", pod, false); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := get("/api/v1/namespaces/physioflow/pods/p:9090/proxy/hello.txt", true)
		if code == 200 {
			if body != "hello from the pod\n" {
				t.Fatalf("body %q", body)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the pod never answered through the proxy: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// the first container port by default, a named port, the query kept
	for _, p := range []string{"p/proxy/hello.txt", "p:http/proxy/hello.txt?x=1"} {
		if code, body := get("/api/v1/namespaces/physioflow/pods/"+p, true); code != 200 || body != "hello from the pod\n" {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	if code, body := get("/api/v1/namespaces/physioflow/pods/p:9090/proxy/nope", true); code != 404 || strings.Contains(body, "Status") {
		t.Errorf("the pod's own 404 comes back: %d %s", code, body)
	}
	if code, body := get("/api/v1/namespaces/physioflow/pods/gone:9090/proxy/", true); code != 404 || !strings.Contains(body, `pods \"gone\" not found`) {
		t.Errorf("unknown pod: %d %s", code, body)
	}
	if code, _ := get("/api/v1/namespaces/physioflow/pods/p:9090/proxy/hello.txt", false); code != 401 {
		t.Errorf("without credentials: %d", code)
	}
	if code, body := get("/api/v1/namespaces/physioflow/pods/p:1/proxy/", true); code != 503 || !strings.Contains(body, "error trying to reach") {
		t.Errorf("a closed port: %d %s", code, body)
	}

	// the services proxy: a Service port (by number, by name, the first)
	// to a ready address of its Endpoints
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "s", Namespace: "physioflow"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "p"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(9090)}}}}
	if _, err := c.createObject(resServices, "physioflow", svc, false); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(15 * time.Second)
	for {
		code, body := get("/api/v1/namespaces/physioflow/services/s:80/proxy/hello.txt", true)
		if code == 200 && body == "hello from the pod\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the Service never answered through the proxy: %d %s", code, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
	for _, p := range []string{"s:http/proxy/hello.txt", "s/proxy/hello.txt?x=1"} {
		if code, body := get("/api/v1/namespaces/physioflow/services/"+p, true); code != 200 || body != "hello from the pod\n" {
			t.Errorf("%s: %d %q", p, code, body)
		}
	}
	if code, body := get("/api/v1/namespaces/physioflow/services/gone:80/proxy/", true); code != 404 || !strings.Contains(body, `services \"gone\" not found`) {
		t.Errorf("unknown service: %d %s", code, body)
	}
	if code, body := get("/api/v1/namespaces/physioflow/services/s:81/proxy/", true); code != 503 || !strings.Contains(body, `no service port \"81\" found`) {
		t.Errorf("unknown service port: %d %s", code, body)
	}
	empty := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "e", Namespace: "physioflow"}, Spec: corev1.ServiceSpec{
		Selector: map[string]string{"app": "nobody"},
		Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromInt32(9090)}}}}
	if _, err := c.createObject(resServices, "physioflow", empty, false); err != nil {
		t.Fatal(err)
	}
	if code, body := get("/api/v1/namespaces/physioflow/services/e:80/proxy/", true); code != 503 || !strings.Contains(body, `no endpoints available for service \"e\"`) {
		t.Errorf("no endpoints: %d %s", code, body)
	}
}
