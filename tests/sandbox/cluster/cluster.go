package cluster

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// Config is what the sandbox orchestrator gives the cluster.
type Config struct {
	Dir           string            // state dir (exists); kubeconfig, CA, pod logs go here
	BehaviorsFile string            // exported to demo-app pods as SANDBOX_BEHAVIORS
	PodEnv        map[string]string // extra env every pod process gets (PGHOST, ...)
	DemoAppArgv   []string          // command that runs the demo app
	// TokenIssued, when set, is told every service-account token the
	// TokenRequest API mints (for the tests' secrets sweep).
	TokenIssued func(name, token string)
}

// Cluster is a running sandbox cluster: API server, controllers, pod
// processes and service proxies.
type Cluster struct {
	cfg        Config
	store      *store
	token      string
	apiLn      net.Listener
	adminLn    net.Listener
	apiSrv     *http.Server
	adminSrv   *http.Server
	kubelet    *kubelet
	net        *network
	faults     faultSet
	stats      stats
	logMu      sync.Mutex
	logFile    *os.File
	trigger    chan struct{}
	settingsMu sync.Mutex
	settings   settings
	eventsMu   sync.Mutex
	eventNames map[string]string // aggregation key -> Event name
	stop       chan struct{}
	wg         sync.WaitGroup
	stopOnce   sync.Once
	saKey      *saKey   // signs service-account tokens (satoken.go)
	authzLog   *os.File // every authorization decision (rbac.go)
}

// Start brings the cluster up on free loopback ports and returns once it
// serves. The kubeconfig is written to cfg.Dir/kubeconfig.
func Start(cfg Config) (*Cluster, error) {
	if cfg.Dir == "" {
		return nil, fmt.Errorf("cluster: Config.Dir is required")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	cfg.Dir = dir
	c := &Cluster{cfg: cfg, store: newStore(), trigger: make(chan struct{}, 1), stop: make(chan struct{}),
		settings: settings{HistoryWindow: historyWindow, BookmarkIntervalMS: 1000}}
	c.store.changed = func(*resource) { c.kick() }
	c.net = newNetwork(c)
	c.kubelet = newKubelet(c)
	tokBytes := make([]byte, 24)
	rand.Read(tokBytes)
	c.token = hex.EncodeToString(tokBytes)

	if c.logFile, err = os.OpenFile(filepath.Join(dir, "apiserver.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if c.authzLog, err = os.OpenFile(filepath.Join(dir, "authz.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644); err != nil {
		return nil, err
	}
	if c.saKey, err = newSAKey(); err != nil {
		return nil, err
	}
	pki, err := makePKI(dir)
	if err != nil {
		return nil, err
	}
	for _, ns := range []string{"default", "physioflow", "kube-system"} {
		obj := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}
		if _, err := c.createObject(resNamespaces, "", obj, false); err != nil {
			return nil, err
		}
	}
	if err := c.bootstrapRBAC(); err != nil {
		return nil, err
	}
	now := metav1.Now()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: nodeName, Labels: map[string]string{
		"kubernetes.io/hostname": nodeName, "kubernetes.io/os": "linux", "node-role.kubernetes.io/control-plane": ""}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
				Message: "kubelet is posting ready status", LastHeartbeatTime: now, LastTransitionTime: now}},
			Addresses: []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: "127.0.0.1"}, {Type: corev1.NodeHostName, Address: nodeName}},
			NodeInfo: corev1.NodeSystemInfo{KubeletVersion: "v1.32.0-sandbox", OperatingSystem: "linux", Architecture: "amd64",
				ContainerRuntimeVersion: "sandbox://1", OSImage: "sandbox (loopback processes)", KernelVersion: "sandbox"}}}
	if _, err := c.store.create(resNodes, node, false); err != nil {
		return nil, err
	}
	c.store.startWatchCache()
	if c.apiLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		return nil, err
	}
	if c.adminLn, err = net.Listen("tcp", "127.0.0.1:0"); err != nil {
		c.apiLn.Close()
		return nil, err
	}
	tlsCfg := &tls.Config{
		Certificates: []tls.Certificate{pki.serving},
		ClientCAs:    pki.pool,
		ClientAuth:   tls.VerifyClientCertIfGiven,
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}
	c.apiSrv = &http.Server{Handler: c, TLSConfig: tlsCfg, ReadHeaderTimeout: 10 * time.Second,
		ConnContext: func(ctx context.Context, conn net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, conn)
		}}
	c.adminSrv = &http.Server{Handler: c.adminHandler(), ReadHeaderTimeout: 10 * time.Second}
	go c.apiSrv.ServeTLS(c.apiLn, "", "") // HTTP/2 and HTTP/1.1, as the real API server
	go c.adminSrv.Serve(c.adminLn)

	if err := c.writeKubeconfigs(pki); err != nil {
		c.Stop()
		return nil, err
	}
	c.wg.Add(2)
	go c.controllerLoop()
	go c.bookmarkLoop()
	return c, nil
}

// KubeconfigPath is the kubeconfig written at start (token auth).
func (c *Cluster) KubeconfigPath() string { return filepath.Join(c.cfg.Dir, "kubeconfig") }

// AdminURL is the plain-HTTP admin API (faults, stats, pod kill).
func (c *Cluster) AdminURL() string { return "http://" + c.adminLn.Addr().String() }

// ServerURL is the API server's https URL.
func (c *Cluster) ServerURL() string { return "https://" + c.apiLn.Addr().String() }

// Stop kills every pod process group and closes proxies and listeners.
func (c *Cluster) Stop() {
	c.stopOnce.Do(func() {
		close(c.stop)
		if c.apiSrv != nil {
			c.apiSrv.Close()
		}
		if c.adminSrv != nil {
			c.adminSrv.Close()
		}
		c.wg.Wait()
		c.kubelet.stopAll()
		c.net.stopAll()
		c.logMu.Lock()
		c.logFile.Close()
		c.authzLog.Close()
		c.logMu.Unlock()
	})
}

// kick wakes the controllers.
func (c *Cluster) kick() {
	select {
	case c.trigger <- struct{}{}:
	default:
	}
}

func (c *Cluster) bookmarkLoop() {
	defer c.wg.Done()
	for {
		c.settingsMu.Lock()
		every := time.Duration(c.settings.BookmarkIntervalMS) * time.Millisecond
		c.settingsMu.Unlock()
		select {
		case <-c.stop:
			return
		case <-time.After(every):
			c.store.bookmark()
		}
	}
}

func (c *Cluster) logRequest(r *http.Request, status int, d time.Duration) {
	c.logMu.Lock()
	defer c.logMu.Unlock()
	// The URL never carries the token; headers are not logged.
	fmt.Fprintf(c.logFile, "%s %s %s %d %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), r.Method, r.URL.RequestURI(),
		status, d.Round(time.Microsecond), r.Proto)
}

// ---- PKI and kubeconfig ----

type pki struct {
	caPEM    []byte
	serving  tls.Certificate
	pool     *x509.CertPool
	clientCr []byte
	clientKy []byte
}

func makePKI(dir string) (*pki, error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "sandbox-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caCert, _ := x509.ParseCertificate(caDER)
	issue := func(tmpl *x509.Certificate) ([]byte, []byte, error) {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, nil, err
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			return nil, nil, err
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
			pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), nil
	}
	srvCrt, srvKey, err := issue(&x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "kube-apiserver"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
		DNSNames:    []string{"localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"}})
	if err != nil {
		return nil, err
	}
	cliCrt, cliKey, err := issue(&x509.Certificate{SerialNumber: big.NewInt(3),
		Subject:   pkix.Name{CommonName: "sandbox-admin", Organization: []string{"system:masters"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	if err != nil {
		return nil, err
	}
	p := &pki{caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), pool: x509.NewCertPool(),
		clientCr: cliCrt, clientKy: cliKey}
	p.pool.AddCert(caCert)
	if p.serving, err = tls.X509KeyPair(srvCrt, srvKey); err != nil {
		return nil, err
	}
	for name, data := range map[string][]byte{"ca.crt": p.caPEM, "client.crt": cliCrt, "client.key": cliKey} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return nil, err
		}
	}
	return p, nil
}

func (c *Cluster) writeKubeconfigs(p *pki) error {
	b64 := base64.StdEncoding.EncodeToString
	head := fmt.Sprintf(`apiVersion: v1
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
`, c.ServerURL(), b64(p.caPEM))
	tokenCfg := head + fmt.Sprintf("    token: %s\n", c.token)
	certCfg := head + fmt.Sprintf("    client-certificate-data: %s\n    client-key-data: %s\n", b64(p.clientCr), b64(p.clientKy))
	if err := os.WriteFile(c.KubeconfigPath(), []byte(tokenCfg), 0o600); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(c.cfg.Dir, "kubeconfig-cert"), []byte(certCfg), 0o600)
}
