package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// pki is the cluster's certificates, as kubeadm lays them out: one cluster
// CA for serving and client certificates, a separate front-proxy CA whose
// client certificate lets the sandbox's front proxy tell kube-apiserver
// who the caller is (request-header authentication), and the key pair
// that signs ServiceAccount tokens. Everything is written to dir (0600
// keys); the file names are what the control plane's flags point at.
type pki struct {
	dir     string
	ca      *x509.Certificate
	caKey   *ecdsa.PrivateKey
	caPEM   []byte
	frontCA *x509.Certificate
	frontK  *ecdsa.PrivateKey
	serial  int64
}

// file is a path inside the PKI directory.
func (p *pki) file(name string) string { return filepath.Join(p.dir, name) }

func newPKI(dir string) (*pki, error) {
	p := &pki{dir: dir, serial: 1}
	var err error
	if p.ca, p.caKey, err = p.selfSigned("sandbox-ca"); err != nil {
		return nil, err
	}
	if p.frontCA, p.frontK, err = p.selfSigned("sandbox-front-proxy-ca"); err != nil {
		return nil, err
	}
	p.caPEM = pemCert(p.ca.Raw)
	if err := p.write("ca.crt", p.caPEM); err != nil {
		return nil, err
	}
	if err := p.write("ca.key", pemKey(p.caKey)); err != nil {
		return nil, err
	}
	if err := p.write("front-proxy-ca.crt", pemCert(p.frontCA.Raw)); err != nil {
		return nil, err
	}
	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := p.write("sa.key", pemKey(saKey)); err != nil {
		return nil, err
	}
	return p, p.write("sa.pub", pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pub}))
}

func (p *pki) write(name string, data []byte) error {
	return os.WriteFile(p.file(name), data, 0o600)
}

func (p *pki) selfSigned(cn string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature, IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return cert, key, err
}

// issue signs a leaf certificate and writes NAME.crt and NAME.key. A
// serving certificate lists ips and dns; a client certificate carries the
// user (CN) and groups (O) kube-apiserver reads from it.
func (p *pki) issue(name string, front bool, cn string, orgs []string, server bool, ips []net.IP, dns []string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	p.serial++
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(p.serial), Subject: pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(365 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, IPAddresses: ips, DNSNames: dns}
	if server {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	} else {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	ca, caKey := p.ca, p.caKey
	if front {
		ca, caKey = p.frontCA, p.frontK
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return tls.Certificate{}, err
	}
	crt, kb := pemCert(der), pemKey(key)
	if err := p.write(name+".crt", crt); err != nil {
		return tls.Certificate{}, err
	}
	if err := p.write(name+".key", kb); err != nil {
		return tls.Certificate{}, err
	}
	return tls.X509KeyPair(crt, kb)
}

// pool is the cluster CA as a certificate pool.
func (p *pki) pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.ca)
	return pool
}

func pemCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

func pemKey(k *ecdsa.PrivateKey) []byte {
	b, _ := x509.MarshalECPrivateKey(k)
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: b})
}
