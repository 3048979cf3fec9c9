// Package oidctest is a small OpenID Connect provider for tests, shaped like GitLab's: discovery at
// /.well-known/openid-configuration, /oauth/authorize, /oauth/token, /oauth/userinfo and the keys at
// /oauth/discovery/keys, ID tokens signed RS256 with the username in preferred_username and
// nickname and the groups in groups_direct. It speaks the real protocol — the authorization code
// flow with PKCE (S256 only), one-time codes bound to the client, redirect URI and nonce, client
// authentication by HTTP Basic or form — so that a relying party tested against it works against
// GitLab.
//
// The person who signs in at the authorization endpoint is whoever the test said with SignInAs:
// the provider shows no login form.
package oidctest

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// User is a person who can sign in.
type User struct {
	// Subject is the stable user ID (GitLab's numeric user ID as a string).
	Subject string
	// Username is GitLab's username: preferred_username and nickname.
	Username string
	// Email is the verified email address.
	Email string
	// Groups are the full paths of the user's direct groups: groups_direct in the ID token.
	Groups []string
}

// Provider is a running OpenID provider on loopback.
type Provider struct {
	// URL is the issuer.
	URL string
	// ClientID and ClientSecret are the one registered client.
	ClientID, ClientSecret string

	srv     *httptest.Server
	key     *rsa.PrivateKey
	foreign *rsa.PrivateKey

	mu           sync.Mutex
	redirectURIs []string
	user         *User
	codes        map[string]*grant
	access       map[string]*User
	mutate       func(claims map[string]any)
	signForeign  bool
	tokens       int
}

type grant struct {
	user        User
	redirectURI string
	nonce       string
	challenge   string
	expires     time.Time
}

// New starts a provider with one client; Close stops it.
func New(clientID, clientSecret string) (*Provider, error) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	foreign, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, err
	}
	p := &Provider{ClientID: clientID, ClientSecret: clientSecret, key: key, foreign: foreign, codes: map[string]*grant{}, access: map[string]*User{}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", p.discovery)
	mux.HandleFunc("GET /oauth/discovery/keys", p.keys)
	mux.HandleFunc("GET /oauth/authorize", p.authorize)
	mux.HandleFunc("POST /oauth/token", p.token)
	mux.HandleFunc("GET /oauth/userinfo", p.userinfo)
	p.srv = httptest.NewServer(mux)
	p.URL = p.srv.URL
	return p, nil
}

// Close stops the provider.
func (p *Provider) Close() { p.srv.Close() }

// AllowRedirectURI registers a redirect URI of the client; only registered ones are accepted.
func (p *Provider) AllowRedirectURI(uri string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.redirectURIs = append(p.redirectURIs, uri)
}

// SignInAs makes u the person who signs in at the authorization endpoint from now on.
func (p *Provider) SignInAs(u User) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.user = &u
}

// MutateIDTokens changes the claims of every ID token issued from now on (nil stops it), to test
// how a relying party handles a wrong audience, nonce or expiry.
func (p *Provider) MutateIDTokens(f func(claims map[string]any)) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.mutate = f
}

// SignWithForeignKey makes the provider sign ID tokens with a key it does not publish.
func (p *Provider) SignWithForeignKey(on bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.signForeign = on
}

// TokensIssued counts successful token requests.
func (p *Provider) TokensIssued() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.tokens
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func oauthError(w http.ResponseWriter, status int, code, description string) {
	writeJSON(w, status, map[string]string{"error": code, "error_description": description})
}

func (p *Provider) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{
		"issuer":                                p.URL,
		"authorization_endpoint":                p.URL + "/oauth/authorize",
		"token_endpoint":                        p.URL + "/oauth/token",
		"userinfo_endpoint":                     p.URL + "/oauth/userinfo",
		"jwks_uri":                              p.URL + "/oauth/discovery/keys",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256"},
		"scopes_supported":                      []string{"openid", "profile", "email"},
		"token_endpoint_auth_methods_supported": []string{"client_secret_basic", "client_secret_post"},
		"code_challenge_methods_supported":      []string{"S256"},
		"claims_supported":                      []string{"iss", "sub", "aud", "exp", "iat", "nonce", "preferred_username", "nickname", "email", "email_verified", "groups_direct"},
	})
}

func (p *Provider) keys(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "test-key", Algorithm: "RS256", Use: "sig"}}})
}

// authorize answers as GitLab does once the person has signed in and authorised the application:
// a redirect to the client's redirect URI with a code, or with an error.
func (p *Provider) authorize(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	p.mu.Lock()
	defer p.mu.Unlock()
	redirect := q.Get("redirect_uri")
	if q.Get("client_id") != p.ClientID || !slices.Contains(p.redirectURIs, redirect) {
		// Never redirect to an unregistered URI: answer in the page.
		http.Error(w, "The redirect URI included is not valid.", http.StatusBadRequest)
		return
	}
	back := func(params url.Values) {
		params.Set("state", q.Get("state"))
		http.Redirect(w, r, redirect+"?"+params.Encode(), http.StatusFound) //nolint:gosec // G710: only registered redirect URIs get here
	}
	switch {
	case q.Get("response_type") != "code":
		back(url.Values{"error": {"unsupported_response_type"}})
		return
	case !slices.Contains(strings.Fields(q.Get("scope")), "openid"):
		back(url.Values{"error": {"invalid_scope"}, "error_description": {"openid is required"}})
		return
	case q.Get("code_challenge_method") != "S256" || q.Get("code_challenge") == "":
		back(url.Values{"error": {"invalid_request"}, "error_description": {"PKCE with S256 is required"}})
		return
	case p.user == nil:
		back(url.Values{"error": {"access_denied"}, "error_description": {"nobody signed in"}})
		return
	}
	code := randomString()
	p.codes[code] = &grant{user: *p.user, redirectURI: redirect, nonce: q.Get("nonce"), challenge: q.Get("code_challenge"), expires: time.Now().Add(time.Minute)}
	back(url.Values{"code": {code}})
}

func (p *Provider) clientAuthenticated(r *http.Request) bool {
	id, secret, ok := r.BasicAuth()
	if ok {
		id, _ = url.QueryUnescape(id)
		secret, _ = url.QueryUnescape(secret)
	} else {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	return id == p.ClientID && subtle.ConstantTimeCompare([]byte(secret), []byte(p.ClientSecret)) == 1
}

func (p *Provider) token(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		oauthError(w, http.StatusBadRequest, "invalid_request", err.Error())
		return
	}
	if !p.clientAuthenticated(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="oauth"`)
		oauthError(w, http.StatusUnauthorized, "invalid_client", "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.")
		return
	}
	if r.PostForm.Get("grant_type") != "authorization_code" {
		oauthError(w, http.StatusBadRequest, "unsupported_grant_type", "")
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	code := r.PostForm.Get("code")
	g := p.codes[code]
	// A code is good once, whatever happens next.
	delete(p.codes, code)
	invalid := func(why string) { oauthError(w, http.StatusBadRequest, "invalid_grant", why) }
	switch {
	case g == nil || time.Now().After(g.expires):
		invalid("The provided authorization grant is invalid, expired, revoked, or was issued to another client.")
		return
	case r.PostForm.Get("redirect_uri") != g.redirectURI:
		invalid("The redirect URI does not match the one of the authorization request.")
		return
	case !pkceMatches(r.PostForm.Get("code_verifier"), g.challenge):
		invalid("The code verifier does not match the code challenge.")
		return
	}
	idToken, err := p.idToken(g)
	if err != nil {
		oauthError(w, http.StatusInternalServerError, "server_error", err.Error())
		return
	}
	access := randomString()
	u := g.user
	p.access[access] = &u
	p.tokens++
	writeJSON(w, http.StatusOK, map[string]any{
		"access_token": access, "token_type": "Bearer", "expires_in": 7200,
		"scope": "openid profile email", "created_at": time.Now().Unix(), "id_token": idToken,
	})
}

func pkceMatches(verifier, challenge string) bool {
	if len(verifier) < 43 {
		return false
	}
	sum := sha256.Sum256([]byte(verifier))
	return subtle.ConstantTimeCompare([]byte(base64.RawURLEncoding.EncodeToString(sum[:])), []byte(challenge)) == 1
}

func (p *Provider) idToken(g *grant) (string, error) {
	now := time.Now()
	claims := map[string]any{
		"iss": p.URL, "sub": g.user.Subject, "aud": p.ClientID,
		"exp": now.Add(2 * time.Minute).Unix(), "iat": now.Unix(), "auth_time": now.Unix(),
		"sub_legacy":         fmt.Sprintf("%x", sha256.Sum256([]byte(g.user.Subject))),
		"name":               g.user.Username,
		"nickname":           g.user.Username,
		"preferred_username": g.user.Username,
		"email":              g.user.Email,
		"email_verified":     true,
		"groups_direct":      g.user.Groups,
	}
	if g.nonce != "" {
		claims["nonce"] = g.nonce
	}
	if p.mutate != nil {
		p.mutate(claims)
	}
	key := p.key
	if p.signForeign {
		key = p.foreign
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: key, KeyID: "test-key"}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (p *Provider) userinfo(w http.ResponseWriter, r *http.Request) {
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	p.mu.Lock()
	u := p.access[token]
	p.mu.Unlock()
	if !ok || u == nil {
		w.Header().Set("WWW-Authenticate", `Bearer error="invalid_token"`)
		oauthError(w, http.StatusUnauthorized, "invalid_token", "The access token is invalid")
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"sub": u.Subject, "name": u.Username, "nickname": u.Username, "preferred_username": u.Username,
		"email": u.Email, "email_verified": true, "groups": u.Groups,
	})
}

func randomString() string {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return base64.RawURLEncoding.EncodeToString(b)
}
