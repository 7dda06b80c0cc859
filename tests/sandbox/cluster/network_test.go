package cluster

import (
	"io"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// A Service selecting pods of two versions (a canary: `app` alone) spreads
// connections over every ready endpoint, round robin, as kube-proxy does
// over its endpoints; a pod being deleted leaves the rotation at once,
// while its preStop sleep keeps it serving what already reached it.
func TestServiceSpreadsOverBothColoursAndDropsTerminatingPods(t *testing.T) {
	if _, err := exec.LookPath("python3"); err != nil {
		t.Skip("python3 serves the pods here")
	}
	dir := t.TempDir()
	// each pod answers /who with its own name
	serve := `d="` + dir + `/$POD_NAME"; mkdir -p "$d"; printf %s "$POD_NAME" >"$d/who"; ` +
		`exec python3 -m http.server "$PORT" --bind "$POD_IP" --directory "$d"`
	c, err := Start(Config{Dir: dir, BehaviorsFile: filepath.Join(dir, "b.json"),
		DemoAppArgv: []string{"/bin/sh", "-c", serve}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	grace := int64(30)
	for _, colour := range []string{"blue", "green"} {
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "api-" + colour, Namespace: "default",
			Labels: map[string]string{"app": "api", "version": colour}},
			Spec: corev1.PodSpec{TerminationGracePeriodSeconds: &grace, Containers: []corev1.Container{{
				Name: "api", Image: "registry.local/physioflow-api:v1",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 9090}},
				// ready once it answers: the proxy must not find it before it listens
				ReadinessProbe: &corev1.Probe{PeriodSeconds: 1, ProbeHandler: corev1.ProbeHandler{
					HTTPGet: &corev1.HTTPGetAction{Path: "/who", Port: intstr.FromString("http")}}},
				Lifecycle: &corev1.Lifecycle{PreStop: &corev1.LifecycleHandler{
					Sleep: &corev1.SleepAction{Seconds: 2}}}}}}}
		if _, err := c.createObject(resPods, "default", pod, false); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: "default"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "api"},
			Ports: []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}}}}
	o, err := c.createObject(resServices, "default", svc, false)
	if err != nil {
		t.Fatal(err)
	}
	addr := net.JoinHostPort(o.(*corev1.Service).Spec.ClusterIP, "80")
	// one new connection per request, as kube-proxy balances connections
	hc := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
	who := func(hostport string) (string, error) {
		resp, err := hc.Get("http://" + hostport + "/who")
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 {
			return "", &net.AddrError{Err: resp.Status, Addr: hostport}
		}
		return string(b), nil
	}
	counts := func(n int) map[string]int {
		seen := map[string]int{}
		for i := 0; i < n; i++ {
			name, err := who(addr)
			if err != nil {
				t.Fatalf("request %d through the Service: %v", i, err)
			}
			seen[name]++
		}
		return seen
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		if _, err := who(addr); err == nil && len(c.net.mustBackends(t, "default", "api")) == 2 {
			break
		}
		if time.Now().After(deadline) {
			_, err := who(addr)
			t.Fatalf("the Service never had both pods ready behind it: %v, backends %v", err,
				c.net.mustBackends(t, "default", "api"))
		}
		time.Sleep(100 * time.Millisecond)
	}
	if seen := counts(20); seen["api-blue"] != 10 || seen["api-green"] != 10 {
		t.Fatalf("20 connections over two ready pods, round robin: %v", seen)
	}

	green, err := c.store.get(resPods, "default", "api-green")
	if err != nil {
		t.Fatal(err)
	}
	greenIP := green.(*corev1.Pod).Status.PodIP
	if _, _, err := c.deleteObject(resPods, "default", "api-green", &metav1.DeleteOptions{}, false); err != nil {
		t.Fatal(err)
	}
	deleted := time.Now()
	if seen := counts(20); seen["api-blue"] != 20 {
		t.Fatalf("a pod being deleted still gets new connections: %v", seen)
	}
	// the preStop sleep: the terminating pod still answers on its own address
	if name, err := who(net.JoinHostPort(greenIP, "9090")); err != nil || name != "api-green" {
		t.Fatalf("during its preStop sleep the pod answers: %q %v", name, err)
	}
	// then the kubelet stops it
	for {
		if _, err := who(net.JoinHostPort(greenIP, "9090")); err != nil {
			break
		}
		if time.Since(deleted) > 10*time.Second {
			t.Fatal("the pod still serves 10 s after its 2 s preStop sleep")
		}
		time.Sleep(100 * time.Millisecond)
	}
	if took := time.Since(deleted); took < 1500*time.Millisecond {
		t.Fatalf("the pod stopped %s after its deletion, before its 2 s preStop sleep ended", took)
	}
	if !strings.HasPrefix(greenIP, "127.") {
		t.Fatalf("pod IP %s", greenIP)
	}
}

// mustBackends is what a new connection to the Service would choose from.
func (n *network) mustBackends(t *testing.T, ns, name string) []backend {
	t.Helper()
	bs, _ := n.backends(ns, name, "http")
	return bs
}
