package infra

import (
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The fake STS's verifier accepts what Sign produces and nothing else.
func TestVerifySigV4(t *testing.T) {
	c := Credentials{AccessKey: "AKIDEXAMPLE", SecretKey: "secret-example-key", Region: "us-east-1"}
	req, _ := http.NewRequest("POST", "http://127.0.0.1:1/sts/", nil)
	Sign(req, c, "", time.Now())
	auth := req.Header.Get("Authorization")
	if !verifySigV4(req, nil, auth, c.SecretKey) {
		t.Fatalf("a good signature is refused: %s", auth)
	}
	if verifySigV4(req, nil, auth, "another-secret") {
		t.Fatal("a signature by another secret is accepted")
	}
	if verifySigV4(req, []byte("x"), auth, c.SecretKey) {
		t.Fatal("a signature over another body is accepted")
	}
}

func TestAWSFakeWebIdentityAndIMDS(t *testing.T) {
	f := NewAWSFake(t.TempDir(), Credentials{AccessKey: "AKIDEXAMPLE", SecretKey: "secret-example-key"})
	if err := f.Start(); err != nil {
		t.Fatal(err)
	}
	defer f.Stop()
	post := func(token string) (int, string) {
		form := url.Values{"Action": {"AssumeRoleWithWebIdentity"}, "Version": {"2011-06-15"},
			"RoleArn": {"arn:aws:iam::0:role/x"}, "RoleSessionName": {"t"}, "WebIdentityToken": {token}}
		resp, err := http.Post(f.URL()+"/sts/", "application/x-www-form-urlencoded", strings.NewReader(form.Encode()))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, body := post(f.WebToken); st != 200 || !strings.Contains(body, "<SecretAccessKey>secret-example-key<") {
		t.Fatalf("good token: %d %s", st, body)
	}
	if st, body := post("wrong"); st != 403 || !strings.Contains(body, "AccessDenied") {
		t.Fatalf("wrong token: %d %s", st, body)
	}
	req, _ := http.NewRequest("GET", f.URL()+"/imds/latest/meta-data/iam/security-credentials/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("IMDS without a session token: %d", resp.StatusCode)
	}
}
