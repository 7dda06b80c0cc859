package cluster

// Service-account tokens as clusters since 1.24 issue them: the
// TokenRequest API (POST .../serviceaccounts/NAME/token, what `kubectl
// create token` and the kubelet's projected volume call) returns a JWT
// signed by the API server's service-account key, naming the service
// account (and the Pod or Secret it is bound to), with an audience and an
// expiry. The authenticator accepts it while it has not expired and the
// service account (and bound object) still exist with the same UID; the
// user is system:serviceaccount:NS:NAME in the groups
// system:serviceaccounts, system:serviceaccounts:NS and
// system:authenticated.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/uuid"
	"k8s.io/apimachinery/pkg/util/validation/field"
)

// apiAudience is the API server's audience and issuer
// (--api-audiences, --service-account-issuer), as on kubeadm clusters.
const apiAudience = "https://kubernetes.default.svc.cluster.local"

type saKey struct {
	key *ecdsa.PrivateKey
	kid string
}

func newSAKey() (*saKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return &saKey{key: k, kid: base64.RawURLEncoding.EncodeToString(sum[:])}, nil
}

type objRef struct {
	Name string `json:"name"`
	UID  string `json:"uid"`
}

type k8sClaims struct {
	Namespace      string  `json:"namespace"`
	ServiceAccount objRef  `json:"serviceaccount"`
	Pod            *objRef `json:"pod,omitempty"`
	Secret         *objRef `json:"secret,omitempty"`
}

type privateClaims struct {
	Kubernetes k8sClaims `json:"kubernetes.io"`
}

// serveTokenRequest is POST /api/v1/namespaces/NS/serviceaccounts/NAME/token.
func (c *Cluster) serveTokenRequest(req *apiReq) {
	if req.r.Method != http.MethodPost {
		writeError(req.w, apierrors.NewMethodNotSupported(schema.GroupResource{Resource: "serviceaccounts/token"},
			strings.ToLower(req.r.Method)))
		return
	}
	b, err := c.readBody(req.r)
	if err != nil {
		writeError(req.w, err)
		return
	}
	tr := &authnv1.TokenRequest{}
	if err := decodeBodyAs(req.r, b, tr); err != nil {
		writeError(req.w, err)
		return
	}
	gk := schema.GroupKind{Group: "authentication.k8s.io", Kind: "TokenRequest"}
	if tr.Spec.ExpirationSeconds == nil {
		tr.Spec.ExpirationSeconds = ptr(int64(3600))
	}
	if len(tr.Spec.Audiences) == 0 {
		tr.Spec.Audiences = []string{apiAudience}
	}
	exp := field.NewPath("spec", "expirationSeconds")
	switch {
	case *tr.Spec.ExpirationSeconds < 600:
		writeError(req.w, apierrors.NewInvalid(gk, req.name, field.ErrorList{field.Invalid(exp, *tr.Spec.ExpirationSeconds,
			"may not specify a duration less than 10 minutes")}))
		return
	case *tr.Spec.ExpirationSeconds > 1<<32:
		writeError(req.w, apierrors.NewInvalid(gk, req.name, field.ErrorList{field.Invalid(exp, *tr.Spec.ExpirationSeconds,
			"may not specify a duration larger than 2^32 seconds")}))
		return
	}
	o, err := c.store.get(resServiceAccounts, req.ns, req.name)
	if err != nil {
		writeError(req.w, err)
		return
	}
	sa := o.(*corev1.ServiceAccount)
	claims := privateClaims{Kubernetes: k8sClaims{Namespace: req.ns, ServiceAccount: objRef{Name: sa.Name, UID: string(sa.UID)}}}
	if ref := tr.Spec.BoundObjectRef; ref != nil {
		var res *resource
		switch ref.Kind {
		case "Pod":
			res = resPods
		case "Secret":
			res = resSecrets
		default:
			writeError(req.w, apierrors.NewBadRequest(fmt.Sprintf("cannot bind token for serviceaccount %q to object of type %q",
				sa.Name, ref.Kind)))
			return
		}
		bo, err := c.store.get(res, req.ns, ref.Name)
		if err != nil {
			writeError(req.w, err)
			return
		}
		if ref.UID != "" && metaOf(bo).GetUID() != ref.UID {
			writeError(req.w, apierrors.NewConflict(schema.GroupResource{Resource: res.plural}, ref.Name,
				fmt.Errorf("the UID in the bound object reference (%s) does not match the UID in record. The object might have been deleted and then recreated", ref.UID)))
			return
		}
		r := &objRef{Name: ref.Name, UID: string(metaOf(bo).GetUID())}
		if res == resPods {
			claims.Kubernetes.Pod = r
		} else {
			claims.Kubernetes.Secret = r
		}
	}
	now := time.Now()
	expires := now.Add(time.Duration(*tr.Spec.ExpirationSeconds) * time.Second)
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: c.saKey.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", c.saKey.kid))
	if err != nil {
		writeError(req.w, apierrors.NewInternalError(err))
		return
	}
	pub := jwt.Claims{Issuer: apiAudience, Subject: "system:serviceaccount:" + req.ns + ":" + sa.Name,
		Audience: jwt.Audience(tr.Spec.Audiences), ID: string(uuid.NewUUID()), IssuedAt: jwt.NewNumericDate(now),
		NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(expires)}
	tok, err := jwt.Signed(signer).Claims(pub).Claims(claims).Serialize()
	if err != nil {
		writeError(req.w, apierrors.NewInternalError(err))
		return
	}
	if c.cfg.TokenIssued != nil {
		c.cfg.TokenIssued("serviceaccount token "+req.ns+"/"+sa.Name, tok)
	}
	out := &authnv1.TokenRequest{TypeMeta: metav1.TypeMeta{Kind: "TokenRequest", APIVersion: "authentication.k8s.io/v1"},
		ObjectMeta: metav1.ObjectMeta{Name: sa.Name, Namespace: req.ns, CreationTimestamp: metav1.NewTime(now)},
		Spec:       tr.Spec,
		Status:     authnv1.TokenRequestStatus{Token: tok, ExpirationTimestamp: metav1.NewTime(expires)}}
	writeJSON(req.w, 201, out)
}

// saUser authenticates a service-account JWT; nil when it is not one of
// ours, has expired, or names an object that is gone.
func (c *Cluster) saUser(raw string) *userInfo {
	if c.saKey == nil || strings.Count(raw, ".") != 2 {
		return nil
	}
	t, err := jwt.ParseSigned(raw, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil
	}
	var pub jwt.Claims
	var priv privateClaims
	if err := t.Claims(&c.saKey.key.PublicKey, &pub, &priv); err != nil {
		return nil
	}
	if pub.ValidateWithLeeway(jwt.Expected{Issuer: apiAudience, AnyAudience: jwt.Audience{apiAudience}, Time: time.Now()}, 0) != nil {
		return nil
	}
	k := priv.Kubernetes
	if pub.Subject != "system:serviceaccount:"+k.Namespace+":"+k.ServiceAccount.Name {
		return nil
	}
	alive := func(res *resource, ref *objRef) bool {
		if ref == nil {
			return true
		}
		o, err := c.store.get(res, k.Namespace, ref.Name)
		return err == nil && metaOf(o).GetUID() == types.UID(ref.UID) && metaOf(o).GetDeletionTimestamp() == nil
	}
	if !alive(resServiceAccounts, &k.ServiceAccount) || !alive(resPods, k.Pod) || !alive(resSecrets, k.Secret) {
		return nil
	}
	return &userInfo{name: pub.Subject, groups: []string{"system:serviceaccounts", "system:serviceaccounts:" + k.Namespace,
		"system:authenticated"}}
}

// decodeBodyAs reads a request body that typed clients send as JSON or in
// the protobuf envelope ("k8s\x00" and a runtime.Unknown), as kubectl does
// for TokenRequests and SelfSubjectAccessReviews.
func decodeBodyAs(r *http.Request, b []byte, obj interface{ Unmarshal([]byte) error }) error {
	if ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); ct == protobufType {
		var u runtime.Unknown
		if len(b) < 4 || string(b[:4]) != "k8s\x00" {
			return apierrors.NewBadRequest("the object provided is unrecognized: missing protobuf envelope")
		}
		if err := u.Unmarshal(b[4:]); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
		}
		if err := obj.Unmarshal(u.Raw); err != nil {
			return apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
		}
		return nil
	}
	if err := json.Unmarshal(b, obj); err != nil {
		return apierrors.NewBadRequest(fmt.Sprintf("the object provided is unrecognized: %v", err))
	}
	return nil
}
