package main

import (
	"encoding/base64"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
)

// secretsFile is DIR/secrets (0600): every credential value the sandbox
// hands out, one "NAME<TAB>VALUE" line each, for the tests' secrets sweep
// (tests/sweep), which fails the suite when any value shows up in a file
// the tests wrote. Values minted while the sandbox runs (STS session
// tokens, TokenRequest tokens) are appended as they are issued; tests add
// the ones they make up themselves (SANDBOX_SECRETS_FILE). A new
// credential source belongs here.
const secretsName = "secrets"

// storesName is DIR/secret-stores: the paths (one a line) that hold the
// credentials by design (the secrets file, state, env, kubeconfigs) or
// are a server's own data (PostgreSQL's and SeaweedFS's directories),
// which the sweep skips.
const storesName = "secret-stores"

type secretsFile struct {
	mu   sync.Mutex
	path string
	seen map[string]bool
}

// newSecretsFile creates (truncates) the file.
func newSecretsFile(path string) (*secretsFile, error) {
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		return nil, err
	}
	return &secretsFile{path: path, seen: map[string]bool{}}, nil
}

// add appends one value under a name (names need not be unique); empty
// values and values already listed are skipped.
func (s *secretsFile) add(name, value string) {
	value = strings.TrimSpace(value)
	if s == nil || value == "" || strings.ContainsAny(value, "\t\n") {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seen[value] {
		return
	}
	s.seen[value] = true
	f, err := os.OpenFile(s.path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
	if err != nil {
		logf("secrets: %v", err)
		return
	}
	defer f.Close()
	fmt.Fprintf(f, "%s\t%s\n", name, value)
}

var kubeconfigSecretRE = regexp.MustCompile(`(?m)^\s*(token|client-key-data):\s*"?([^"\s]+)"?`)

// addKubeconfig lists a kubeconfig's bearer tokens and client keys.
func (s *secretsFile) addKubeconfig(name, path string) {
	data, err := os.ReadFile(path)
	if err != nil {
		return
	}
	for _, m := range kubeconfigSecretRE.FindAllStringSubmatch(string(data), -1) {
		s.add(name+" "+m[1], m[2])
		if m[1] == "client-key-data" {
			// the key as a PEM file shows it: its first line of base64
			if pem, err := base64.StdEncoding.DecodeString(m[2]); err == nil {
				if lines := strings.Split(string(pem), "\n"); len(lines) > 2 && len(lines[1]) >= 32 {
					s.add(name+" client key (PEM)", lines[1])
				}
			}
		}
	}
}

// addStarted lists the credentials of a sandbox that has just started.
func (s *secretsFile) addStarted(st *state, clusterDir string) {
	s.add("PGPASSWORD", st.PGPassword)
	if u, err := url.Parse(st.PGSuperURL); err == nil && u.User != nil {
		if pw, ok := u.User.Password(); ok {
			s.add("postgres superuser password", pw)
		}
	}
	s.add("AWS_SECRET_ACCESS_KEY", st.S3SecretKey)
	s.add("web identity token", readTrim(st.WebTokenFile))
	s.add("SANDBOX_CONTAINER_AUTHORIZATION_TOKEN", st.ContainerToken)
	s.add("PROMETHEUS_PASSWORD", st.PrometheusPassword)
	s.add("PROMETHEUS_TOKEN", st.PrometheusToken)
	s.addKubeconfig("kubeconfig", st.Kubeconfig)
	s.addKubeconfig("kubeconfig-cert", clusterDir+"/kubeconfig-cert")
	s.addKubeconfig("kubeconfig-noperm", clusterDir+"/kubeconfig-noperm")
}

// writeStores lists the paths the sweep skips.
func writeStores(dir string, st *state, clusterDir string) error {
	paths := []string{filepath.Join(dir, secretsName), filepath.Join(dir, storesName), filepath.Join(dir, stateFile),
		filepath.Join(dir, envFile), filepath.Join(dir, "s3.json"), st.WebTokenFile, st.Kubeconfig,
		filepath.Join(clusterDir, "kubeconfig-cert"), filepath.Join(clusterDir, "client.key"), filepath.Join(dir, "pg"),
		filepath.Join(dir, "s3"),
		// the control plane's own: etcd's data (Secrets are stored there in
		// the clear, as etcd without an encryption provider keeps them), the
		// admin's key and token file, the no-permission ServiceAccount's
		// kubeconfig
		filepath.Join(clusterDir, "etcd"), filepath.Join(clusterDir, "admin.key"), filepath.Join(clusterDir, "tokens.csv"),
		filepath.Join(clusterDir, "kubeconfig-noperm")}
	return writeFileAtomic(filepath.Join(dir, storesName), []byte(strings.Join(paths, "\n")+"\n"), 0o600)
}

func readTrim(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(data))
}
