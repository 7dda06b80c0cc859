//go:build nocluster

package main

// A stand-in API server that only answers /version, so the rest of the
// sandbox builds and runs without the cluster package (-tags nocluster).

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"
)

type stubCluster struct {
	kubeconfig string
	srv        *http.Server
}

func (s *stubCluster) KubeconfigPath() string { return s.kubeconfig }
func (s *stubCluster) AdminURL() string       { return "http://127.0.0.1:1" }
func (s *stubCluster) Stop()                  { s.srv.Close() }

func startCluster(dir, behaviors string, podEnv map[string]string, demoApp []string) (clusterHandle, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "stub"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, `{"major":"1","minor":"31","gitVersion":"v1.31.0-stub"}`)
	})}
	srv.TLSConfig = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	go srv.ServeTLS(ln, "", "")
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	kc := filepath.Join(dir, "kubeconfig")
	os.WriteFile(kc, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: stub
  cluster:
    server: https://%s
    certificate-authority-data: %s
contexts:
- name: stub
  context: {cluster: stub, user: stub}
current-context: stub
users:
- name: stub
  user: {token: stub}
`, ln.Addr(), base64.StdEncoding.EncodeToString(ca))), 0o600)
	return &stubCluster{kubeconfig: kc, srv: srv}, nil
}
