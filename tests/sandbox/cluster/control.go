package cluster

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"bgrun/sandbox/infra"
)

// The addresses Kubernetes hands out. kube-apiserver refuses loopback
// addresses in EndpointSlices and Endpoints ("may not be in the loopback
// range"), so pods and Services cannot live in 127.0.0.0/8 as they did
// in the imitation. They live in 198.18.0.0/15 (RFC 2544's benchmarking
// range: neither private nor routed anywhere), which the sandbox's
// network namespace puts on its loopback interface (tests/sandbox/in-netns).
const (
	podCIDR     = "198.18.0.0/16" // pods: 198.18.x.y, x ≥ 1
	serviceCIDR = "198.19.0.0/16" // Services' cluster IPs
	nodeIP      = "198.18.0.1"    // the Node's InternalIP: the kubelet listens here
	nodeName    = "sandbox"
)

// checkAddresses fails with what to do when the pod and Service ranges are
// not local: the sandbox must run inside its network namespace.
func checkAddresses() error {
	ln, err := net.Listen("tcp", net.JoinHostPort(nodeIP, "0"))
	if err != nil {
		return fmt.Errorf("the sandbox's pod and Service addresses (%s, %s) are not local here (%v): "+
			"run it inside its network namespace, e.g. tests/sandbox/in-netns tests/sandbox/sandbox up DIR", podCIDR, serviceCIDR, err)
	}
	return ln.Close()
}

// component is one control-plane process.
type component struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	log  string
}

// freePorts returns n free loopback ports (all listeners held until chosen).
func freePorts(n int) ([]int, error) {
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	var out []int
	for i := 0; i < n; i++ {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		lns = append(lns, l)
		out = append(out, l.Addr().(*net.TCPAddr).Port)
	}
	return out, nil
}

func (c *Cluster) startComponent(name string, args ...string) (*component, error) {
	logPath := filepath.Join(c.cfg.Dir, name+".log")
	f, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(c.cfg.KubeBinary, append([]string{name}, args...)...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Dir = c.cfg.Dir
	// Its own process group: a signal to the sandbox's terminal is not
	// theirs; Stop ends them in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	comp := &component{name: name, cmd: cmd, done: make(chan struct{}), log: logPath}
	go func() {
		cmd.Wait()
		close(comp.done)
	}()
	c.components = append(c.components, comp)
	return comp, nil
}

// waitHTTP polls url until it answers 200, the component exits, or ctx ends.
func waitHTTP(ctx context.Context, comp *component, client *http.Client, url string) error {
	var last string
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", url, nil)
		resp, err := client.Do(req)
		if err == nil {
			b := make([]byte, 2048)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(b[:n])))
		} else {
			last = err.Error()
		}
		select {
		case <-comp.done:
			return &exitedError{name: comp.name, state: comp.cmd.ProcessState.String(), log: comp.log}
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %s; see %s", comp.name, last, comp.log)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// startControlPlaneRetrying starts the control plane, on new ports (and a
// new etcd) when a component lost one of its ports before binding it; up to
// three attempts.
func (c *Cluster) startControlPlaneRetrying(ctx context.Context) error {
	for attempt := 1; ; attempt++ {
		err := c.startControlPlane(ctx)
		var exited *exitedError
		if err == nil || attempt == 3 || ctx.Err() != nil || !errors.As(err, &exited) || !exited.portTaken() {
			return err
		}
		c.stopControlPlane()
		// the logs are appended to: the failed attempt stays readable
		os.RemoveAll(filepath.Join(c.cfg.Dir, "etcd"))
	}
}

// startControlPlane runs etcd, kube-apiserver and kube-controller-manager
// and returns once the API server is ready.
func (c *Cluster) startControlPlane(ctx context.Context) error {
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	etcdClient, etcdPeer, apiPort := ports[0], ports[1], ports[2]
	dir := c.cfg.Dir
	etcdURL := fmt.Sprintf("http://127.0.0.1:%d", etcdClient)
	c.etcdURL = etcdURL
	peerURL := fmt.Sprintf("http://127.0.0.1:%d", etcdPeer)
	etcd, err := c.startComponent("etcd",
		"--name", "sandbox", "--data-dir", filepath.Join(dir, "etcd"),
		"--listen-client-urls", etcdURL, "--advertise-client-urls", etcdURL,
		"--listen-peer-urls", peerURL, "--initial-advertise-peer-urls", peerURL,
		"--initial-cluster", "sandbox="+peerURL,
		"--unsafe-no-fsync", // a test store: speed over durability
		"--log-level", "warn")
	if err != nil {
		return err
	}
	if err := waitHTTP(ctx, etcd, http.DefaultClient, etcdURL+"/health"); err != nil {
		return err
	}

	p := c.pki
	tokens := fmt.Sprintf("%s,sandbox-admin,sandbox-admin,\"system:masters\"\n", c.token)
	if err := p.write("tokens.csv", []byte(tokens)); err != nil {
		return err
	}
	c.apiURL = fmt.Sprintf("https://127.0.0.1:%d", apiPort)
	audit, err := c.writeAuditConfig(c.adminLn.Addr().String())
	if err != nil {
		return err
	}
	api, err := c.startComponent("kube-apiserver", append(audit,
		"--etcd-servers", etcdURL,
		"--bind-address", "127.0.0.1", "--secure-port", strconv.Itoa(apiPort),
		"--advertise-address", nodeIP,
		// The kubernetes Service's endpoints would name the advertise
		// address; clients reach the API through the front proxy instead.
		"--endpoint-reconciler-type", "none",
		"--tls-cert-file", p.file("apiserver.crt"), "--tls-private-key-file", p.file("apiserver.key"),
		"--client-ca-file", p.file("ca.crt"),
		"--token-auth-file", p.file("tokens.csv"),
		"--requestheader-client-ca-file", p.file("front-proxy-ca.crt"),
		"--requestheader-allowed-names", "front-proxy-client",
		"--requestheader-username-headers", "X-Remote-User",
		"--requestheader-group-headers", "X-Remote-Group",
		"--requestheader-extra-headers-prefix", "X-Remote-Extra-",
		"--proxy-client-cert-file", p.file("front-proxy-client.crt"), "--proxy-client-key-file", p.file("front-proxy-client.key"),
		"--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file", p.file("sa.pub"), "--service-account-signing-key-file", p.file("sa.key"),
		"--authorization-mode", "Node,RBAC",
		"--service-cluster-ip-range", serviceCIDR,
		"--kubelet-client-certificate", p.file("apiserver-kubelet-client.crt"),
		"--kubelet-client-key", p.file("apiserver-kubelet-client.key"),
		"--kubelet-certificate-authority", p.file("ca.crt"),
		"--kubelet-preferred-address-types", "InternalIP",
		"--cert-dir", filepath.Join(dir, "apiserver-certs"),
		"--profiling=false",
		// podtemplates skip the watch cache: their watches go to etcd, so
		// after a compaction (admin POST /compact) an older
		// resourceVersion is 410 Expired at once, which tests need
		"--watch-cache-sizes", "podtemplates#0",
		"--v=1")...)
	if err != nil {
		return err
	}
	admin, err := p.clientTLS("admin")
	if err != nil {
		return err
	}
	c.adminTLS = admin
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: p.pool(), Certificates: []tls.Certificate{admin}}},
		Timeout: 5 * time.Second}
	if err := waitHTTP(ctx, api, client, c.apiURL+"/readyz"); err != nil {
		return err
	}
	if err := writeKubeconfigFile(p.file("controller-manager.kubeconfig"), c.apiURL, p.caPEM, "", p.file("controller-manager.crt"), p.file("controller-manager.key")); err != nil {
		return err
	}
	_, err = c.startComponent("kube-controller-manager",
		"--kubeconfig", p.file("controller-manager.kubeconfig"),
		"--authentication-kubeconfig", p.file("controller-manager.kubeconfig"),
		"--authorization-kubeconfig", p.file("controller-manager.kubeconfig"),
		"--bind-address", "127.0.0.1", "--secure-port", "0",
		"--leader-elect=false",
		// Everything on by default but storage and devices: the sandbox's
		// kubelet mounts no volumes and has no devices, and building those
		// controllers' plugins was a second of every start.
		"--controllers", "*,"+strings.Join(storageControllers, ","),
		"--use-service-account-credentials",
		"--service-account-private-key-file", p.file("sa.key"),
		"--root-ca-file", p.file("ca.crt"),
		"--cluster-signing-cert-file", p.file("ca.crt"), "--cluster-signing-key-file", p.file("ca.key"),
		"--cluster-cidr", podCIDR, "--service-cluster-ip-range", serviceCIDR,
		"--v=1")
	return err
}

// storageControllers are kube-controller-manager's controllers for volumes
// and devices, which the sandbox turns off (as "-name").
var storageControllers = []string{
	"-persistentvolume-attach-detach-controller", "-persistentvolume-binder-controller",
	"-persistentvolume-expander-controller", "-persistentvolume-protection-controller",
	"-persistentvolumeclaim-protection-controller", "-ephemeral-volume-controller",
	"-volumeattributesclass-protection-controller", "-resourceclaim-controller",
	"-device-taint-eviction-controller",
}

// exitedError is a component that exited while starting; its log's last
// lines are in the message.
type exitedError struct {
	name, state, log string
}

func (e *exitedError) Error() string {
	return fmt.Sprintf("%s exited (%s); last lines of %s:\n%s", e.name, e.state, e.log, infra.Tail(e.log, 15))
}

// portTaken says whether the component exited because a port chosen free
// was taken before it bound it (by another part of the sandbox starting,
// or an outgoing connection's ephemeral port).
func (e *exitedError) portTaken() bool {
	b, _ := os.ReadFile(e.log)
	return strings.Contains(string(b), "address already in use")
}

// stopControlPlane ends the components newest first.
func (c *Cluster) stopControlPlane() {
	defer func() { c.components = nil }()
	for i := len(c.components) - 1; i >= 0; i-- {
		comp := c.components[i]
		comp.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-comp.done:
		case <-time.After(5 * time.Second):
			comp.cmd.Process.Kill()
			<-comp.done
		}
	}
}

// compact compacts etcd's history up to its current revision, as
// kube-apiserver does every 5 minutes (--etcd-compaction-interval): a
// watch or list from an older resourceVersion then gets 410 Expired.
// It returns the revision compacted to.
func (c *Cluster) compact() (int64, error) {
	post := func(path, body string, out any) error {
		resp, err := http.Post(c.etcdURL+path, "application/json", strings.NewReader(body))
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
			return fmt.Errorf("etcd %s: %s %s", path, resp.Status, b)
		}
		if out != nil {
			return json.NewDecoder(resp.Body).Decode(out)
		}
		return nil
	}
	var r struct {
		Header struct {
			Revision string `json:"revision"`
		} `json:"header"`
	}
	// any key: the answer's header carries the store's revision
	if err := post("/v3/kv/range", `{"key":"L3JlZ2lzdHJ5"}`, &r); err != nil {
		return 0, err
	}
	rev, err := strconv.ParseInt(r.Header.Revision, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("etcd revision %q: %v", r.Header.Revision, err)
	}
	return rev, post("/v3/kv/compaction", fmt.Sprintf(`{"revision":"%d","physical":true}`, rev), nil)
}
