package infra

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"
)

// AWSFake serves, on loopback, the places AWS SDKs take credentials
// from: STS (AssumeRole, AssumeRoleWithWebIdentity) under /sts/, the
// container credentials endpoint under /container/ and IMDSv2 under
// /imds/ (and /imds-bad/, which hands out a wrong secret). Every
// credential it hands out is the S3 store's own key pair with a session
// token, which SeaweedFS accepts (it ignores x-amz-security-token).
type AWSFake struct {
	Creds          Credentials // what S3 accepts
	WebToken       string      // the web identity token STS wants
	WebTokenFile   string      // written at start
	ContainerToken string      // the Authorization the container endpoint wants
	Lifetime       time.Duration
	// Issued, when set, is told every credential minted after start
	// (session tokens, the IMDS token, /imds-bad/'s wrong secret).
	Issued func(name, value string)

	srv    *http.Server
	ln     net.Listener
	mu     sync.Mutex
	counts map[string]int
	imdsTk string
}

// NewAWSFake describes the fake for the store's credentials c.
func NewAWSFake(dir string, c Credentials) *AWSFake {
	return &AWSFake{
		Creds:          c,
		WebToken:       "sandbox-oidc." + RandomSecret(24),
		WebTokenFile:   dir + "/web-identity-token",
		ContainerToken: "sandbox-container-" + RandomSecret(16),
		Lifetime:       time.Hour,
		counts:         map[string]int{},
		imdsTk:         "sandbox-imds-" + RandomSecret(16),
	}
}

// URL is the fake's base URL (no trailing slash).
func (f *AWSFake) URL() string { return "http://" + f.ln.Addr().String() }

// Start listens on a free loopback port and writes the token file.
func (f *AWSFake) Start() error {
	if err := os.WriteFile(f.WebTokenFile, []byte(f.WebToken+"\n"), 0o600); err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	f.ln = ln
	f.issued("IMDS session token", f.imdsTk)
	mux := http.NewServeMux()
	mux.HandleFunc("/sts/", f.sts)
	mux.HandleFunc("/container/", f.container)
	mux.HandleFunc("/imds/", func(w http.ResponseWriter, r *http.Request) { f.imds(w, r, "/imds", false) })
	mux.HandleFunc("/imds-bad/", func(w http.ResponseWriter, r *http.Request) { f.imds(w, r, "/imds-bad", true) })
	mux.HandleFunc("/counts", func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		defer f.mu.Unlock()
		json.NewEncoder(w).Encode(f.counts)
	})
	f.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go f.srv.Serve(ln)
	return nil
}

// Stop closes the listener.
func (f *AWSFake) Stop() {
	if f.srv != nil {
		f.srv.Close()
	}
}

func (f *AWSFake) issued(name, value string) {
	if f.Issued != nil {
		f.Issued(name, value)
	}
}

func (f *AWSFake) count(what string) {
	f.mu.Lock()
	f.counts[what]++
	f.mu.Unlock()
}

type tempCreds struct {
	AccessKeyId, SecretAccessKey, SessionToken, Expiration string
}

// hand out the store's keys with a fresh session token; ?lifetime=SECONDS
// on the URL shortens Expiration (refresh tests).
func (f *AWSFake) temp(r *http.Request, bad bool) tempCreds {
	life := f.Lifetime
	if s := r.URL.Query().Get("lifetime"); s != "" {
		var n int
		fmt.Sscanf(s, "%d", &n)
		life = time.Duration(n) * time.Second
	}
	sk := f.Creds.SecretKey
	if bad {
		sk = "wrong" + RandomSecret(18)
	}
	c := tempCreds{f.Creds.AccessKey, sk, "sandbox-session-" + RandomSecret(24),
		time.Now().UTC().Add(life).Format(time.RFC3339)}
	f.issued("AWS session token", c.SessionToken)
	f.issued("AWS session secret key", c.SecretAccessKey)
	return c
}

func stsError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(status)
	fmt.Fprintf(w, `<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><Error><Type>Sender</Type><Code>%s</Code><Message>%s</Message></Error><RequestId>sandbox</RequestId></ErrorResponse>`,
		code, xmlEscape(msg))
}

func xmlEscape(s string) string {
	var b strings.Builder
	xml.EscapeText(&b, []byte(s))
	return b.String()
}

func (f *AWSFake) sts(w http.ResponseWriter, r *http.Request) {
	if r.Method != "POST" {
		stsError(w, 405, "MethodNotAllowed", "POST only")
		return
	}
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, err := url.ParseQuery(string(body))
	if err != nil {
		stsError(w, 400, "MalformedInput", err.Error())
		return
	}
	action := form.Get("Action")
	f.count("sts:" + action)
	if form.Get("RoleArn") == "" || form.Get("RoleSessionName") == "" {
		stsError(w, 400, "MissingParameter", "RoleArn and RoleSessionName are required")
		return
	}
	switch action {
	case "AssumeRoleWithWebIdentity":
		if r.Header.Get("Authorization") != "" {
			stsError(w, 400, "InvalidRequest", "AssumeRoleWithWebIdentity is not signed")
			return
		}
		if form.Get("WebIdentityToken") != f.WebToken {
			stsError(w, 403, "AccessDenied", "Not authorized to perform sts:AssumeRoleWithWebIdentity")
			return
		}
	case "AssumeRole":
		// A SigV4 signature for service sts by the store's key pair,
		// recomputed over the signed headers the request names.
		auth := r.Header.Get("Authorization")
		if !strings.HasPrefix(auth, "AWS4-HMAC-SHA256 Credential="+f.Creds.AccessKey+"/") {
			stsError(w, 403, "InvalidClientTokenId", "The security token included in the request is invalid.")
			return
		}
		if !verifySigV4(r, body, auth, f.Creds.SecretKey) {
			stsError(w, 403, "SignatureDoesNotMatch", "The request signature we calculated does not match the signature you provided.")
			return
		}
	default:
		stsError(w, 400, "InvalidAction", "Could not find operation "+action)
		return
	}
	c := f.temp(r, false)
	w.Header().Set("Content-Type", "text/xml")
	fmt.Fprintf(w, `<%sResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><%sResult><Credentials><AccessKeyId>%s</AccessKeyId><SecretAccessKey>%s</SecretAccessKey><SessionToken>%s</SessionToken><Expiration>%s</Expiration></Credentials><AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROASANDBOX:%s</AssumedRoleId></AssumedRoleUser></%sResult><ResponseMetadata><RequestId>sandbox</RequestId></ResponseMetadata></%sResponse>`,
		action, action, c.AccessKeyId, xmlEscape(c.SecretAccessKey), c.SessionToken, c.Expiration,
		xmlEscape(form.Get("RoleArn")), xmlEscape(form.Get("RoleSessionName")), xmlEscape(form.Get("RoleSessionName")),
		action, action)
}

// verifySigV4 recomputes an Authorization header's signature for r (a
// POST to a plain path, no query) and its body.
func verifySigV4(r *http.Request, body []byte, auth, secret string) bool {
	fields := map[string]string{}
	for _, part := range strings.Split(strings.TrimPrefix(auth, "AWS4-HMAC-SHA256 "), ",") {
		if k, v, ok := strings.Cut(strings.TrimSpace(part), "="); ok {
			fields[k] = v
		}
	}
	cred := strings.Split(fields["Credential"], "/") // AK/day/region/service/aws4_request
	date := r.Header.Get("X-Amz-Date")
	if len(cred) != 5 || cred[4] != "aws4_request" || len(date) < 8 || date[:8] != cred[1] {
		return false
	}
	var canon strings.Builder
	for _, h := range strings.Split(fields["SignedHeaders"], ";") {
		v := r.Header.Get(h)
		if h == "host" {
			v = r.Host
		}
		fmt.Fprintf(&canon, "%s:%s\n", h, strings.Join(strings.Fields(v), " "))
	}
	sum := sha256.Sum256(body)
	path := r.URL.EscapedPath()
	creq := strings.Join([]string{r.Method, path, r.URL.RawQuery, canon.String(), fields["SignedHeaders"],
		hex.EncodeToString(sum[:])}, "\n")
	h := sha256.Sum256([]byte(creq))
	toSign := "AWS4-HMAC-SHA256\n" + date + "\n" + strings.Join(cred[1:], "/") + "\n" + hex.EncodeToString(h[:])
	key := hmacSHA256([]byte("AWS4"+secret), cred[1])
	for _, p := range cred[2:] {
		key = hmacSHA256(key, p)
	}
	return hmac.Equal([]byte(hex.EncodeToString(hmacSHA256(key, toSign))), []byte(fields["Signature"]))
}

func (f *AWSFake) container(w http.ResponseWriter, r *http.Request) {
	f.count("container")
	if r.Header.Get("Authorization") != f.ContainerToken {
		w.WriteHeader(401)
		fmt.Fprintln(w, `{"message":"invalid authorization token"}`)
		return
	}
	c := f.temp(r, false)
	json.NewEncoder(w).Encode(map[string]string{
		"AccessKeyId": c.AccessKeyId, "SecretAccessKey": c.SecretAccessKey, "Token": c.SessionToken,
		"Expiration": c.Expiration, "RoleArn": "arn:aws:iam::000000000000:role/sandbox",
	})
}

func (f *AWSFake) imds(w http.ResponseWriter, r *http.Request, prefix string, bad bool) {
	path := strings.TrimPrefix(r.URL.Path, prefix)
	f.count("imds:" + r.Method + " " + path)
	switch {
	case path == "/latest/api/token":
		if r.Method != "PUT" || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
			w.WriteHeader(400)
			return
		}
		fmt.Fprint(w, f.imdsTk)
		return
	case strings.HasPrefix(path, "/latest/meta-data/"):
		if r.Header.Get("X-aws-ec2-metadata-token") != f.imdsTk {
			w.WriteHeader(401)
			return
		}
	default:
		w.WriteHeader(404)
		return
	}
	switch path {
	case "/latest/meta-data/iam/security-credentials/":
		fmt.Fprint(w, "sandbox-role")
	case "/latest/meta-data/iam/security-credentials/sandbox-role":
		c := f.temp(r, bad)
		json.NewEncoder(w).Encode(map[string]string{
			"Code": "Success", "LastUpdated": time.Now().UTC().Format(time.RFC3339), "Type": "AWS-HMAC",
			"AccessKeyId": c.AccessKeyId, "SecretAccessKey": c.SecretAccessKey, "Token": c.SessionToken,
			"Expiration": c.Expiration,
		})
	default:
		w.WriteHeader(404)
	}
}
