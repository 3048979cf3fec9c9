package registry

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"slices"
	"strings"
	"time"

	"github.com/distribution/distribution/v3/registry/auth/token"
)

// Harbor's token service constants (src/common/models/token.go and the registry's config).
const (
	// HarborService is the `service` Harbor's registry names in its challenges.
	HarborService = "harbor-registry"
	// HarborIssuer is the `iss` of Harbor's registry tokens.
	HarborIssuer = "harbor-token-issuer"
	// TokenPath is where Harbor serves its token endpoint.
	TokenPath = "/service/token"
	// tokenTTL is Harbor's default token_expiration (30 minutes).
	tokenTTL = 30 * time.Minute
)

// Access decides which of the requested actions (pull, push, delete, *) user may perform on a
// repository; user is "" for anonymous requests. Actions it leaves out are silently dropped from
// the token, as Harbor does: the request then fails at the registry with 401/403.
type Access func(user, repository string, requested []string) []string

// AllowAuthenticated grants every authenticated user every requested action and anonymous
// requests nothing. It is the default.
func AllowAuthenticated(user, _ string, requested []string) []string {
	if user == "" {
		return nil
	}
	return requested
}

// ProjectAccess grants each user pull and push on the repositories of its projects (a
// repository's project is its first path segment, as in Harbor), and nothing elsewhere.
func ProjectAccess(projects map[string][]string) Access {
	return func(user, repository string, requested []string) []string {
		project, _, _ := strings.Cut(repository, "/")
		if user == "" || !slices.Contains(projects[user], project) {
			return nil
		}
		var granted []string
		for _, a := range requested {
			if a == "pull" || a == "push" {
				granted = append(granted, a)
			}
		}
		return granted
	}
}

// tokenService issues registry tokens the way Harbor's core does.
type tokenService struct {
	service string
	issuer  string
	key     *rsa.PrivateKey
	kid     string
	users   map[string]string
	access  Access
}

// newTokenService makes a signing key and the self-signed certificate (PEM) the registry trusts.
func newTokenService(service string, users map[string]string, access Access) (*tokenService, []byte, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to generate the token signing key: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: HarborIssuer},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, fmt.Errorf("failed to make the token certificate: %w", err)
	}
	if access == nil {
		access = AllowAuthenticated
	}
	ts := &tokenService{
		service: service,
		issuer:  HarborIssuer,
		key:     key,
		kid:     token.GetJWKThumbprint(&key.PublicKey),
		users:   users,
		access:  access,
	}
	return ts, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), nil
}

// ServeHTTP answers GET /service/token?service=…&scope=… like Harbor: 405 for other methods, 400
// for another service, 401 for wrong credentials, else 200 with a token whose access claim holds
// only what the user may do.
func (ts *tokenService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeRegistryError(w, http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED", "method not allowed")
		return
	}
	q := r.URL.Query()
	if svc := q.Get("service"); svc != ts.service {
		writeRegistryError(w, http.StatusBadRequest, "BAD_REQUEST", "Unable to handle service: "+svc)
		return
	}
	user := ""
	if _, _, sent := r.BasicAuth(); sent {
		u, ok := checkBasic(ts.users, r)
		if !ok {
			writeRegistryError(w, http.StatusUnauthorized, "UNAUTHORIZED", "invalid credentials")
			return
		}
		user = u
	}
	var scopes []string
	for _, s := range q["scope"] {
		scopes = append(scopes, strings.Fields(s)...)
	}
	signed, err := ts.issue(user, ts.grant(user, scopes), time.Now())
	if err != nil {
		writeRegistryError(w, http.StatusInternalServerError, "UNKNOWN", "internal server error")
		return
	}
	now := time.Now().UTC()
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{
		"token":      signed,
		"expires_in": int(tokenTTL.Seconds()),
		"issued_at":  now.Format(time.RFC3339),
	})
}

// grant turns "repository:team-a/app:pull,push" scopes into the access claim, keeping only what
// Access allows.
func (ts *tokenService) grant(user string, scopes []string) []*token.ResourceActions {
	var out []*token.ResourceActions
	for _, s := range scopes {
		// The name may contain ':' only in registry-qualified forms we never issue; split at the ends.
		typ, rest, ok := strings.Cut(s, ":")
		i := strings.LastIndex(rest, ":")
		if !ok || i < 0 || typ != "repository" {
			continue
		}
		name, actions := rest[:i], strings.Split(rest[i+1:], ",")
		granted := ts.access(user, name, actions)
		if len(granted) == 0 {
			continue
		}
		out = append(out, &token.ResourceActions{Type: typ, Name: name, Actions: granted})
	}
	return out
}

// harborClaims are the claims of Harbor's registry tokens; unlike distribution's ClaimSet, the
// audience is a single string.
type harborClaims struct {
	Issuer     string                   `json:"iss"`
	Subject    string                   `json:"sub"`
	Audience   string                   `json:"aud"`
	Expiration int64                    `json:"exp"`
	NotBefore  int64                    `json:"nbf"`
	IssuedAt   int64                    `json:"iat"`
	JWTID      string                   `json:"jti"`
	Access     []*token.ResourceActions `json:"access"`
}

// issue signs a JWT (RS256, kid = the key's JWK thumbprint, which the registry looks up among the
// keys of its root certificate bundle).
func (ts *tokenService) issue(user string, access []*token.ResourceActions, now time.Time) (string, error) {
	if access == nil {
		access = []*token.ResourceActions{}
	}
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	header, err := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": ts.kid})
	if err != nil {
		return "", err
	}
	claims, err := json.Marshal(harborClaims{
		Issuer:     ts.issuer,
		Subject:    user,
		Audience:   ts.service,
		Expiration: now.Add(tokenTTL).Unix(),
		NotBefore:  now.Add(-time.Minute).Unix(),
		IssuedAt:   now.Unix(),
		JWTID:      hex.EncodeToString(jti),
		Access:     access,
	})
	if err != nil {
		return "", err
	}
	enc := base64.RawURLEncoding
	signingInput := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signingInput))
	sig, err := rsa.SignPKCS1v15(rand.Reader, ts.key, crypto.SHA256, sum[:])
	if err != nil {
		return "", err
	}
	return signingInput + "." + enc.EncodeToString(sig), nil
}
