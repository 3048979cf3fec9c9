package auth

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
)

// OIDCConfig configures sign-in with an OpenID Connect provider such as GitLab. Name the claims
// as the API server's own OIDC authenticator does (--oidc-username-claim, --oidc-groups-claim and
// their prefixes), so that the UI acts for exactly who kubectl would authenticate.
type OIDCConfig struct {
	// IssuerURL is the provider, for example https://gitlab.example.com.
	IssuerURL string
	// ClientID and ClientSecret are the UI's OAuth application (in GitLab: an application with
	// the openid, profile and email scopes and the redirect URI <ui-url>/signin/oidc/callback).
	ClientID, ClientSecret string
	// Scopes requested besides openid. Default profile and email.
	Scopes []string
	// UsernameClaim names the username. Default "preferred_username" (GitLab's username).
	UsernameClaim string
	// UsernamePrefix is put before the username, as the API server's --oidc-username-prefix.
	UsernamePrefix string
	// GroupsClaim names the groups; when the token has no such claim, GitLab's "groups_direct"
	// is read. Empty: the person has no groups from the provider, as with the API server.
	GroupsClaim string
	// GroupsPrefix is put before each group, as the API server's --oidc-groups-prefix. Set it
	// whenever groups are read from a provider where people create their own groups (GitLab):
	// otherwise anyone can make a group named like one that RBAC or an approval policy trusts.
	GroupsPrefix string
	// HTTPClient talks to the provider. Default a client with a 15 s timeout.
	HTTPClient *http.Client
}

// OIDC signs people in with an OpenID provider: the authorization code flow with PKCE, state and
// nonce, and an ID token verified against the provider's published keys.
type OIDC struct {
	cfg  OIDCConfig
	disc *discovery
}

// discovery is the provider's configuration, read once and shared.
type discovery struct {
	mu       sync.Mutex
	provider *oidc.Provider
}

// NewOIDC checks the configuration; the provider is contacted at the first sign-in, so that a
// provider that is down does not keep the UI from starting.
func NewOIDC(cfg OIDCConfig) (*OIDC, error) {
	if cfg.IssuerURL == "" || cfg.ClientID == "" {
		return nil, errors.New("OIDC sign-in needs an issuer URL and a client ID")
	}
	if !strings.HasPrefix(cfg.IssuerURL, "https://") && !isLoopbackURL(cfg.IssuerURL) {
		return nil, fmt.Errorf("OIDC issuer %s must be an https URL", cfg.IssuerURL)
	}
	if cfg.UsernameClaim == "" {
		cfg.UsernameClaim = "preferred_username"
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{"profile", "email"}
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	return &OIDC{cfg: cfg, disc: &discovery{}}, nil
}

// WithClientSecret returns the same provider with another client secret (read from its Secret at
// each sign-in, so that a rotation needs no restart).
func (o *OIDC) WithClientSecret(secret string) *OIDC {
	cfg := o.cfg
	cfg.ClientSecret = secret
	return &OIDC{cfg: cfg, disc: o.disc}
}

// isLoopbackURL admits http issuers on loopback, for tests and `ferry dev`.
func isLoopbackURL(u string) bool {
	for _, p := range []string{"http://127.0.0.1:", "http://localhost:", "http://[::1]:"} {
		if strings.HasPrefix(u, p) {
			return true
		}
	}
	return false
}

func (o *OIDC) ctx(ctx context.Context) context.Context {
	return oidc.ClientContext(ctx, o.cfg.HTTPClient)
}

// discover reads the provider's discovery document once it answers.
func (o *OIDC) discover(ctx context.Context) (*oidc.Provider, error) {
	o.disc.mu.Lock()
	defer o.disc.mu.Unlock()
	if o.disc.provider != nil {
		return o.disc.provider, nil
	}
	p, err := oidc.NewProvider(o.ctx(ctx), o.cfg.IssuerURL)
	if err != nil {
		return nil, fmt.Errorf("failed to read the OIDC provider's configuration from %s: %w", o.cfg.IssuerURL, err)
	}
	o.disc.provider = p
	return p, nil
}

func (o *OIDC) oauth2Config(p *oidc.Provider, redirectURL string) *oauth2.Config {
	return &oauth2.Config{
		ClientID:     o.cfg.ClientID,
		ClientSecret: o.cfg.ClientSecret,
		Endpoint:     p.Endpoint(),
		RedirectURL:  redirectURL,
		Scopes:       append([]string{oidc.ScopeOpenID}, o.cfg.Scopes...),
	}
}

// AuthCodeURL is where the browser goes to sign in: the provider's authorization endpoint with
// state, nonce and the PKCE challenge of verifier.
func (o *OIDC) AuthCodeURL(ctx context.Context, redirectURL, state, nonce, verifier string) (string, error) {
	p, err := o.discover(ctx)
	if err != nil {
		return "", err
	}
	return o.oauth2Config(p, redirectURL).AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// Exchange redeems the authorization code, verifies the ID token (signature, issuer, audience,
// expiry, nonce) and returns the identity it names.
func (o *OIDC) Exchange(ctx context.Context, redirectURL, code, verifier, nonce string) (Identity, error) {
	p, err := o.discover(ctx)
	if err != nil {
		return Identity{}, err
	}
	tok, err := o.oauth2Config(p, redirectURL).Exchange(o.ctx(ctx), code, oauth2.VerifierOption(verifier))
	if err != nil {
		return Identity{}, fmt.Errorf("the OIDC provider refused the sign-in: %w", describeOAuthError(err))
	}
	raw, ok := tok.Extra("id_token").(string)
	if !ok || raw == "" {
		return Identity{}, errors.New("the OIDC provider returned no ID token: is the openid scope allowed for the application?")
	}
	idToken, err := p.Verifier(&oidc.Config{ClientID: o.cfg.ClientID}).Verify(o.ctx(ctx), raw)
	if err != nil {
		return Identity{}, fmt.Errorf("the ID token is not valid: %w", err)
	}
	if idToken.Nonce != nonce {
		return Identity{}, errors.New("the ID token's nonce does not match this sign-in")
	}
	var claims map[string]any
	if err := idToken.Claims(&claims); err != nil {
		return Identity{}, fmt.Errorf("failed to read the ID token's claims: %w", err)
	}
	return o.identity(claims)
}

// identity reads username and groups from the claims.
func (o *OIDC) identity(claims map[string]any) (Identity, error) {
	name, _ := claims[o.cfg.UsernameClaim].(string)
	if name == "" {
		return Identity{}, fmt.Errorf("the ID token has no %q claim to take the username from", o.cfg.UsernameClaim)
	}
	if o.cfg.UsernameClaim == "email" {
		// As the API server does: an unverified address names nobody.
		if v, ok := claims["email_verified"].(bool); ok && !v {
			return Identity{}, fmt.Errorf("the email address %s is not verified", name)
		}
	}
	id := Identity{User: o.cfg.UsernamePrefix + name}
	if strings.HasPrefix(id.User, "system:") {
		return Identity{}, fmt.Errorf("username %q is reserved by Kubernetes; set a username prefix", id.User)
	}
	if o.cfg.GroupsClaim == "" {
		return id, nil
	}
	groups, ok := claims[o.cfg.GroupsClaim]
	if !ok {
		groups = claims["groups_direct"]
	}
	list, err := stringList(groups)
	if err != nil {
		return Identity{}, fmt.Errorf("the ID token's groups claim: %w", err)
	}
	for _, g := range list {
		g = o.cfg.GroupsPrefix + g
		// Kubernetes' own groups (system:masters above all) are never taken from a token.
		if g == "" || strings.HasPrefix(g, "system:") {
			continue
		}
		id.Groups = append(id.Groups, g)
	}
	return id, nil
}

func stringList(v any) ([]string, error) {
	switch v := v.(type) {
	case nil:
		return nil, nil
	case string:
		return []string{v}, nil
	case []any:
		out := make([]string, 0, len(v))
		for _, e := range v {
			s, ok := e.(string)
			if !ok {
				return nil, fmt.Errorf("%v is not a string", e)
			}
			out = append(out, s)
		}
		return out, nil
	}
	return nil, fmt.Errorf("want a list of strings, got %T", v)
}

// describeOAuthError keeps the provider's error code and description and drops the rest.
func describeOAuthError(err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.ErrorCode != "" {
		if re.ErrorDescription != "" {
			return fmt.Errorf("%s: %s", re.ErrorCode, re.ErrorDescription)
		}
		return errors.New(re.ErrorCode)
	}
	return err
}
