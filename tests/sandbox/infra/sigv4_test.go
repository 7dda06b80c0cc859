package infra

import (
	"net/http"
	"strings"
	"testing"
	"time"
)

// The AWS S3 documentation's header-signing examples.
func TestSignAWSExamples(t *testing.T) {
	c := Credentials{AccessKey: "AKIAIOSFODNN7EXAMPLE", SecretKey: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", Region: "us-east-1"}
	when := time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC)
	cases := []struct{ method, url, want string }{
		{"GET", "https://examplebucket.s3.amazonaws.com/?lifecycle", "fea454ca298b7da1c68078a5d1bdbfbbe0d65c699e0f91ac7a200a0136783543"},
		{"GET", "https://examplebucket.s3.amazonaws.com/?max-keys=2&prefix=J", "34b48302e7b5fa45bde8084f4b7868a86f0a534bc59db6670ed5711ef69dc6f7"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest(tc.method, tc.url, nil)
		Sign(req, c, "", when)
		auth := req.Header.Get("Authorization")
		if !strings.HasSuffix(auth, "Signature="+tc.want) {
			t.Errorf("%s %s: %s", tc.method, tc.url, auth)
		}
	}
}
