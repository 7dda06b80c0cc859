package cluster

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Config is what the sandbox orchestrator gives the cluster.
type Config struct {
	Dir           string            // state dir (exists); kubeconfigs, PKI, etcd data, logs go here
	KubeBinary    string            // the control-plane binary (tests/sandbox/kube): etcd, kube-apiserver, kube-controller-manager
	BehaviorsFile string            // exported to demo-app pods as SANDBOX_BEHAVIORS
	PodEnv        map[string]string // extra env every pod process gets (PGHOST, ...)
	DemoAppArgv   []string          // command that runs the demo app
	// TokenIssued, when set, is told every service-account token the
	// TokenRequest API mints (for the tests' secrets sweep).
	TokenIssued func(name, token string)
}

// Cluster is a running sandbox cluster: the real control plane, the front
// proxy, the kubelet and the Service proxies.
type Cluster struct {
	cfg        Config
	pki        *pki
	token      string // the admin's bearer token (token file, system:masters)
	apiURL     string // kube-apiserver itself (the front proxy forwards here)
	etcdURL    string
	adminTLS   tls.Certificate
	components []*component
	front      *front
	adminLn    net.Listener
	adminSrv   *http.Server
	kubelet    *kubelet
	services   *services
	faults     faultList
	stats      stats
	logMu      sync.Mutex
	logFile    *os.File
	authzLog   *os.File // every authorization decision on a user's request (audit.go)
	settingsMu sync.Mutex
	settings   settings
	stopOnce   sync.Once
	cancel     context.CancelFunc
	phases     []string
}

// NoPermServiceAccount is the ServiceAccount (namespace physioflow) whose
// kubeconfig, kubeconfig-noperm, the sandbox writes: no Role grants it
// anything until a test binds one.
const NoPermServiceAccount = "bgrun-noperm"

// Start brings the cluster up and returns once the API answers through the
// front proxy and the node is registered. Kubeconfigs are written to
// cfg.Dir: kubeconfig (admin token), kubeconfig-cert (admin client
// certificate), kubeconfig-noperm (a ServiceAccount with no permissions).
func Start(cfg Config) (_ *Cluster, err error) {
	if cfg.Dir == "" || cfg.KubeBinary == "" {
		return nil, fmt.Errorf("cluster: Config.Dir and Config.KubeBinary are required")
	}
	if cfg.Dir, err = filepath.Abs(cfg.Dir); err != nil {
		return nil, err
	}
	if err := checkAddresses(); err != nil {
		return nil, err
	}
	tok := make([]byte, 24)
	rand.Read(tok)
	c := &Cluster{cfg: cfg, token: hex.EncodeToString(tok)}
	defer func() {
		if err != nil {
			c.Stop()
		}
	}()
	if c.logFile, err = os.OpenFile(filepath.Join(cfg.Dir, "apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if c.pki, err = newPKI(cfg.Dir); err != nil {
		return nil, err
	}
	if err = c.issueCerts(); err != nil {
		return nil, err
	}
	if c.authzLog, err = os.OpenFile(filepath.Join(cfg.Dir, "authz.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	// The admin API first: kube-apiserver's audit webhook is on it.
	if c.adminLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	c.adminSrv = &http.Server{Handler: c.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go c.adminSrv.Serve(c.adminLn)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	last := time.Now()
	mark := func(phase string) {
		c.phases = append(c.phases, fmt.Sprintf("%s %.2fs", phase, time.Since(last).Seconds()))
		last = time.Now()
	}
	if err = c.startControlPlaneRetrying(ctx); err != nil {
		return nil, err
	}
	mark("control plane")
	if err = c.startFront(); err != nil {
		return nil, err
	}

	admin, err := c.clientset("admin")
	if err != nil {
		return nil, err
	}
	if err = c.bootstrap(ctx, admin); err != nil {
		return nil, err
	}
	runCtx, runCancel := context.WithCancel(context.Background())
	c.cancel = runCancel
	if c.kubelet, err = startKubelet(runCtx, c); err != nil {
		return nil, err
	}
	if c.services, err = startServices(runCtx, c, admin); err != nil {
		return nil, err
	}
	if err = c.writeKubeconfigs(ctx, admin); err != nil {
		return nil, err
	}
	mark("node and services")
	// meanwhile kube-controller-manager has been starting its controllers
	if err = waitDefaultServiceAccounts(ctx, admin); err != nil {
		return nil, err
	}
	mark("default ServiceAccounts")
	return c, nil
}

// Phases says how long each part of Start took ("control plane 3.71s, ...").
func (c *Cluster) Phases() string { return strings.Join(c.phases, ", ") }

// issueCerts makes every certificate the components use.
func (c *Cluster) issueCerts() error {
	p := c.pki
	loop := net.ParseIP("127.0.0.1")
	kubeSvc := net.ParseIP("198.19.0.1") // the kubernetes Service's cluster IP, first of serviceCIDR
	type leaf struct {
		name, cn string
		orgs     []string
		server   bool
		front    bool
		ips      []net.IP
		dns      []string
	}
	for _, l := range []leaf{
		{name: "apiserver", cn: "kube-apiserver", server: true, ips: []net.IP{loop, kubeSvc, net.ParseIP(nodeIP)},
			dns: []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"}},
		{name: "apiserver-kubelet-client", cn: "kube-apiserver-kubelet-client", orgs: []string{"system:masters"}},
		{name: "front-proxy-client", cn: "front-proxy-client", front: true},
		{name: "admin", cn: "sandbox-admin", orgs: []string{"system:masters"}},
		{name: "controller-manager", cn: "system:kube-controller-manager"},
		{name: "scheduler", cn: "system:kube-scheduler"},
		{name: "kubelet-client", cn: "system:node:" + nodeName, orgs: []string{"system:nodes"}},
		{name: "kubelet-serving", cn: "system:node:" + nodeName, server: true, ips: []net.IP{net.ParseIP(nodeIP), loop},
			dns: []string{nodeName, "localhost"}},
	} {
		if _, err := p.issue(l.name, l.front, l.cn, l.orgs, l.server, l.ips, l.dns); err != nil {
			return err
		}
	}
	// The admin's client certificate under the names the imitation used.
	for from, to := range map[string]string{"admin.crt": "client.crt", "admin.key": "client.key"} {
		b, err := os.ReadFile(p.file(from))
		if err != nil {
			return err
		}
		if err := p.write(to, b); err != nil {
			return err
		}
	}
	return nil
}

func (p *pki) clientTLS(name string) (tls.Certificate, error) {
	return tls.LoadX509KeyPair(p.file(name+".crt"), p.file(name+".key"))
}

// restConfig talks to kube-apiserver directly (not through the front
// proxy: injected faults are for bgrun and kubectl, not for the cluster's
// own components) as the identity of certificate name.
func (c *Cluster) restConfig(name string) *rest.Config {
	return &rest.Config{Host: c.apiURL, QPS: 200, Burst: 400, UserAgent: "sandbox-" + name,
		TLSClientConfig: rest.TLSClientConfig{CAFile: c.pki.file("ca.crt"),
			CertFile: c.pki.file(name + ".crt"), KeyFile: c.pki.file(name + ".key")}}
}

func (c *Cluster) clientset(name string) (*kubernetes.Clientset, error) {
	return kubernetes.NewForConfig(c.restConfig(name))
}

// bootstrap creates what every sandbox user expects: the physioflow
// namespace and the no-permission ServiceAccount.
func (c *Cluster) bootstrap(ctx context.Context, cs *kubernetes.Clientset) error {
	for _, ns := range []string{"physioflow"} {
		_, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			return fmt.Errorf("create namespace %s: %w", ns, err)
		}
	}
	sa := &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: NoPermServiceAccount, Namespace: "physioflow"}}
	if _, err := cs.CoreV1().ServiceAccounts("physioflow").Create(ctx, sa, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("create serviceaccount %s: %w", NoPermServiceAccount, err)
	}
	return nil
}

// waitDefaultServiceAccounts returns once kube-controller-manager has made
// the default ServiceAccounts: admission refuses pods until their
// namespace has one, so ready means ready.
func waitDefaultServiceAccounts(ctx context.Context, cs *kubernetes.Clientset) error {
	for _, ns := range []string{"default", "physioflow"} {
		for {
			_, err := cs.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
			if err == nil {
				break
			}
			if !apierrors.IsNotFound(err) || ctx.Err() != nil {
				return fmt.Errorf("serviceaccount %s/default: %w", ns, err)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

// KubeconfigPath is the admin kubeconfig (token auth) written at start.
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.cfg.Dir, "kubeconfig") }

// AdminURL is the plain-HTTP admin API (faults, stats, pod kill).
func (c *Cluster) AdminURL() string { return "http://" + c.adminLn.Addr().String() }

// ServerURL is the API's https URL as clients see it (the front proxy).
func (c *Cluster) ServerURL() string { return c.front.URL() }

// Stop ends the pods, the proxies and the control plane.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		if c.adminSrv != nil {
			c.adminSrv.Close()
		}
		c.front.close()
		if c.kubelet != nil {
			c.kubelet.stopAll()
		}
		if c.cancel != nil {
			c.cancel()
		}
		if c.services != nil {
			c.services.stopAll()
		}
		c.stopControlPlane()
		c.logMu.Lock()
		if c.logFile != nil {
			c.logFile.Close()
		}
		if c.authzLog != nil {
			c.authzLog.Close()
		}
		c.logMu.Unlock()
	})
}

func writeKubeconfigFile(path, server string, caPEM []byte, token, certFile, keyFile string) error {
	b64 := base64.StdEncoding.EncodeToString
	user := ""
	switch {
	case token != "":
		user = "    token: " + token + "\n"
	default:
		crt, err := os.ReadFile(certFile)
		if err != nil {
			return err
		}
		key, err := os.ReadFile(keyFile)
		if err != nil {
			return err
		}
		user = "    client-certificate-data: " + b64(crt) + "\n    client-key-data: " + b64(key) + "\n"
	}
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
current-context: sandbox
preferences: {}
clusters:
- name: sandbox
  cluster:
    server: %s
    certificate-authority-data: %s
contexts:
- name: sandbox
  context:
    cluster: sandbox
    user: sandbox-admin
    namespace: physioflow
users:
- name: sandbox-admin
  user:
%s`, server, b64(caPEM), user)
	return os.WriteFile(path, []byte(cfg), 0o600)
}

// writeKubeconfigs writes the admin kubeconfigs (token, certificate) and
// the no-permission ServiceAccount's, all pointing at the front proxy.
func (c *Cluster) writeKubeconfigs(ctx context.Context, cs *kubernetes.Clientset) error {
	p := c.pki
	if err := writeKubeconfigFile(c.KubeconfigPath(), c.ServerURL(), p.caPEM, c.token, "", ""); err != nil {
		return err
	}
	if err := writeKubeconfigFile(filepath.Join(c.cfg.Dir, "kubeconfig-cert"), c.ServerURL(), p.caPEM, "",
		p.file("admin.crt"), p.file("admin.key")); err != nil {
		return err
	}
	ttl := int64(7 * 24 * 3600)
	tr, err := cs.CoreV1().ServiceAccounts("physioflow").CreateToken(ctx, NoPermServiceAccount,
		&authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: &ttl}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("token for serviceaccount %s: %w", NoPermServiceAccount, err)
	}
	if c.cfg.TokenIssued != nil {
		c.cfg.TokenIssued("serviceaccount token physioflow/"+NoPermServiceAccount, tr.Status.Token)
	}
	return writeKubeconfigFile(filepath.Join(c.cfg.Dir, "kubeconfig-noperm"), c.ServerURL(), p.caPEM, tr.Status.Token, "", "")
}
