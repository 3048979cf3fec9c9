package auth_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/ferryci/ferry/internal/ui/auth"
	"github.com/ferryci/ferry/internal/ui/oidctest"
)

const redirectURL = "http://127.0.0.1:9999/signin/oidc/callback"

// browse follows the authorization URL like a browser until the provider redirects back to the
// UI, and returns the callback's query.
func browse(t *testing.T, authURL string) url.Values {
	t.Helper()
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Get(authURL)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	loc, err := resp.Location()
	if err != nil {
		t.Fatalf("the provider did not redirect back (%s): %v", resp.Status, err)
	}
	if !strings.HasPrefix(loc.String(), redirectURL+"?") {
		t.Fatalf("redirected to %s", loc)
	}
	return loc.Query()
}

func signIn(t *testing.T, o *auth.OIDC, state, nonce string) (auth.Identity, error) {
	t.Helper()
	ctx := context.Background()
	verifier := oauth2.GenerateVerifier()
	authURL, err := o.AuthCodeURL(ctx, redirectURL, state, nonce, verifier)
	if err != nil {
		t.Fatal(err)
	}
	q := browse(t, authURL)
	if q.Get("state") != state {
		t.Fatalf("state %q came back as %q", state, q.Get("state"))
	}
	if e := q.Get("error"); e != "" {
		t.Fatalf("the provider answered %s: %s", e, q.Get("error_description"))
	}
	return o.Exchange(ctx, redirectURL, q.Get("code"), verifier, nonce)
}

func TestOIDCSignInAgainstAProvider(t *testing.T) {
	p, err := oidctest.New("ferry-ui", "s3cret-client-secret")
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	p.AllowRedirectURI(redirectURL)
	p.SignInAs(oidctest.User{Subject: "42", Username: "rita", Email: "rita@example.com", Groups: []string{"team-a/release-managers", "team-a"}})

	o, err := auth.NewOIDC(auth.OIDCConfig{IssuerURL: p.URL, ClientID: p.ClientID, ClientSecret: p.ClientSecret, GroupsClaim: "groups"})
	if err != nil {
		t.Fatal(err)
	}
	id, err := signIn(t, o, "state-1", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if id.User != "rita" || strings.Join(id.Groups, ",") != "team-a/release-managers,team-a" {
		t.Errorf("identity %+v: want rita with GitLab's groups_direct", id)
	}

	// Prefixes, as the API server's --oidc-username-prefix and --oidc-groups-prefix.
	o2, _ := auth.NewOIDC(auth.OIDCConfig{IssuerURL: p.URL, ClientID: p.ClientID, ClientSecret: p.ClientSecret, UsernamePrefix: "gitlab:", GroupsClaim: "groups", GroupsPrefix: "gitlab:"})
	if id, err := signIn(t, o2, "s", "n"); err != nil || id.User != "gitlab:rita" || strings.Join(id.Groups, ",") != "gitlab:team-a/release-managers,gitlab:team-a" {
		t.Errorf("prefixed identity %+v, %v", id, err)
	}
	// No groups claim: no groups, not even GitLab's groups_direct.
	o3, _ := auth.NewOIDC(auth.OIDCConfig{IssuerURL: p.URL, ClientID: p.ClientID, ClientSecret: p.ClientSecret, UsernamePrefix: "gitlab:"})
	if id, err := signIn(t, o3, "s", "n"); err != nil || id.User != "gitlab:rita" || len(id.Groups) != 0 {
		t.Errorf("identity without a groups claim %+v, %v", id, err)
	}

	// What the relying party must refuse.
	refusals := []struct {
		name   string
		mutate func(map[string]any)
		setup  func()
		want   string
	}{
		{name: "another audience", mutate: func(c map[string]any) { c["aud"] = "someone-else" }, want: "audience"},
		{name: "another issuer", mutate: func(c map[string]any) { c["iss"] = "https://evil.example.com" }, want: "different provider"},
		{name: "expired", mutate: func(c map[string]any) { c["exp"] = time.Now().Add(-time.Hour).Unix() }, want: "expired"},
		{name: "replayed nonce", mutate: func(c map[string]any) { c["nonce"] = "another-sign-in" }, want: "nonce"},
		{name: "a system: username", mutate: func(c map[string]any) { c["preferred_username"] = "system:admin" }, want: "reserved"},
		{name: "signed with another key", setup: func() { p.SignWithForeignKey(true) }, want: "signature"},
	}
	for _, tc := range refusals {
		p.MutateIDTokens(tc.mutate)
		if tc.setup != nil {
			tc.setup()
		}
		id, err := signIn(t, o, "s", "n")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: signed in as %+v (err %v), want an error about %s", tc.name, id, err, tc.want)
		}
		p.MutateIDTokens(nil)
		p.SignWithForeignKey(false)
	}

	// Kubernetes' own groups are never taken from a token.
	p.MutateIDTokens(func(c map[string]any) { c["groups_direct"] = []any{"system:masters", "ops"} })
	if id, err := signIn(t, o, "s", "n"); err != nil || strings.Join(id.Groups, ",") != "ops" {
		t.Errorf("system group in token: %+v, %v", id, err)
	}
	p.MutateIDTokens(nil)

	// A code is good once, and only with its PKCE verifier.
	verifier := oauth2.GenerateVerifier()
	authURL, _ := o.AuthCodeURL(context.Background(), redirectURL, "s", "n", verifier)
	code := browse(t, authURL).Get("code")
	if _, err := o.Exchange(context.Background(), redirectURL, code, oauth2.GenerateVerifier(), "n"); err == nil || !strings.Contains(err.Error(), "invalid_grant") {
		t.Errorf("wrong verifier: %v", err)
	}
	if _, err := o.Exchange(context.Background(), redirectURL, code, verifier, "n"); err == nil {
		t.Error("a used code was accepted again")
	}

	// A wrong client secret is refused by the provider, and the secret appears in no error.
	bad, _ := auth.NewOIDC(auth.OIDCConfig{IssuerURL: p.URL, ClientID: p.ClientID, ClientSecret: "wrong-secret-value"})
	_, err = signIn(t, bad, "s", "n")
	if err == nil || !strings.Contains(err.Error(), "invalid_client") || strings.Contains(err.Error(), "wrong-secret-value") {
		t.Errorf("wrong client secret: %v", err)
	}
}

func TestOIDCConfiguration(t *testing.T) {
	if _, err := auth.NewOIDC(auth.OIDCConfig{IssuerURL: "http://gitlab.example.com", ClientID: "x"}); err == nil {
		t.Error("a plain-http issuer off loopback was accepted")
	}
	if _, err := auth.NewOIDC(auth.OIDCConfig{ClientID: "x"}); err == nil {
		t.Error("no issuer was accepted")
	}
	// An unreachable provider fails the sign-in, not the start.
	o, err := auth.NewOIDC(auth.OIDCConfig{IssuerURL: "http://127.0.0.1:1", ClientID: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.AuthCodeURL(context.Background(), redirectURL, "s", "n", oauth2.GenerateVerifier()); err == nil || !strings.Contains(err.Error(), "127.0.0.1:1") {
		t.Errorf("unreachable provider: %v", err)
	}
}
