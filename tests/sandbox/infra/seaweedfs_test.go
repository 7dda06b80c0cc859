package infra

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"
)

func TestSeaweedFS(t *testing.T) {
	dir := t.TempDir()
	ports, err := FreePorts(WeedPortsNeeded())
	if err != nil {
		t.Fatal(err)
	}
	s := NewSeaweedFS(dir, ports, "physioflow-backups-local")
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	start := time.Now()
	err = s.Start(ctx)
	t.Logf("weed ready in %v", time.Since(start))
	defer s.Stop()
	if err != nil {
		t.Fatalf("%v\n%s", err, Tail(s.LogFile, 30))
	}
	client := &http.Client{Timeout: 5 * time.Second}
	status, body, err := S3Do(client, "GET", s.Endpoint()+"/", s.Creds)
	if err != nil || status != 200 || !strings.Contains(body, "<Name>physioflow-backups-local</Name>") {
		t.Errorf("ListBuckets: %d %v %s", status, err, body)
	}
	wrong := s.Creds
	wrong.SecretKey = "wrong"
	status, body, err = S3Do(client, "GET", s.Endpoint()+"/", wrong)
	if err != nil || status != 403 || !strings.Contains(body, "SignatureDoesNotMatch") {
		t.Errorf("wrong secret: %d %v %s", status, err, body)
	}
	status, body, _ = S3Do(client, "GET", s.Endpoint()+"/", Credentials{})
	if status != 403 {
		t.Errorf("anonymous ListBuckets: %d %s", status, body)
	}
	if err := s.Stop(); err != nil {
		t.Error(err)
	}
}
