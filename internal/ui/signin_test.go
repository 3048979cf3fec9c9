package ui_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui/oidctest"
)

// TestTokenSignInSessionsAndSignOut: a token signs in; the session cookie is HttpOnly and
// SameSite and works on every replica; forms without the CSRF token are refused; signing out
// ends the session everywhere, and the old cookie cannot be replayed.
func TestTokenSignInSessionsAndSignOut(t *testing.T) {
	w := newWorld(t, worldOptions{people: []person{{name: "rita", groups: []string{"release-managers"}}}})
	second := w.startUI(nil)

	b := newClient(t, w.URL)
	// Signed out, a page sends the browser to sign in and back.
	resp, err := b.noRedirects().c.Get(w.URL + "/audit?project=x")
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if loc := resp.Header.Get("Location"); resp.StatusCode != http.StatusSeeOther || loc != "/signin?next="+url.QueryEscape("/audit?project=x") {
		t.Fatalf("signed out: %d to %q", resp.StatusCode, loc)
	}

	// The sign-in form needs its CSRF token, and a known token.
	b.get("/signin")
	if code, _ := b.post("/signin/token", url.Values{"token": {w.tokens["rita"]}}); code != http.StatusForbidden {
		t.Errorf("sign-in without the form's CSRF token: %d, want 403", code)
	}
	_, page := b.get("/signin")
	if code, body := b.post("/signin/token", url.Values{"csrf": {csrf(t, page)}, "token": {"tok-rita-wrong"}}); code != http.StatusUnauthorized || !strings.Contains(body, "signs nobody in") {
		t.Errorf("wrong token: %d", code)
	}

	// Signing in sets the session cookie with the right attributes.
	_, page = b.get("/signin")
	form := url.Values{"csrf": {csrf(t, page)}, "token": {w.tokens["rita"]}, "next": {"/audit"}}
	resp, err = b.noRedirects().c.PostForm(w.URL+"/signin/token", form)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/audit" {
		t.Fatalf("sign-in: %d to %q", resp.StatusCode, resp.Header.Get("Location"))
	}
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "ferry-session" {
			session = c
		}
	}
	if session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode || session.Path != "/" || session.MaxAge <= 0 {
		t.Fatalf("session cookie %+v: want HttpOnly, SameSite=Lax, Path=/, an expiry", session)
	}
	if strings.Contains(session.Value, "rita") {
		t.Error("the session cookie shows who is signed in")
	}
	if code, page := b.get("/"); code != http.StatusOK || !strings.Contains(page, `id="signed-in-user">rita<`) {
		t.Fatalf("after sign-in: %d\n%s", code, page)
	}

	// The other replica accepts the same cookie: the key is in the Secret they share.
	other := newClient(t, second)
	other.c.Jar.SetCookies(mustURL(t, second), []*http.Cookie{{Name: "ferry-session", Value: session.Value}})
	code, page := other.get("/")
	if code != http.StatusOK || !strings.Contains(page, `id="signed-in-user">rita<`) {
		t.Fatalf("second replica: %d", code)
	}

	// POSTs without the CSRF token, or with another session's, are refused.
	if code, _ := b.post("/signout", nil); code != http.StatusForbidden {
		t.Errorf("sign-out without CSRF: %d, want 403", code)
	}
	if code, _ := b.post("/releases/"+w.ns+"/r/decide", url.Values{"environment": {"prod"}, "decision": {"Approve"}}); code != http.StatusForbidden {
		t.Errorf("decision without CSRF: %d, want 403", code)
	}
	if n := len(w.approvals()); n != 0 {
		t.Errorf("%d Approvals were created without a CSRF token", n)
	}

	// Signing out on one replica ends the session on both; the cookie cannot be replayed.
	_, page = b.get("/")
	if code, page := b.post("/signout", url.Values{"csrf": {csrf(t, page)}}); code != http.StatusOK || !strings.Contains(page, "You are signed out") {
		t.Fatalf("sign-out: %d\n%s", code, page)
	}
	for _, base := range []string{w.URL, second} {
		replay := newClient(t, base).noRedirects()
		replay.c.Jar.SetCookies(mustURL(t, base), []*http.Cookie{{Name: "ferry-session", Value: session.Value}})
		testutil.Eventually(t, "the signed-out session to be refused by "+base, func() (bool, error) {
			resp, err := replay.c.Get(base + "/")
			if err != nil {
				return false, err
			}
			_ = resp.Body.Close()
			return resp.StatusCode == http.StatusSeeOther && strings.HasPrefix(resp.Header.Get("Location"), "/signin"), nil
		})
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestOIDCSignIn signs in through an OpenID provider that speaks GitLab's protocol; the groups
// in the ID token are the groups the UI impersonates.
func TestOIDCSignIn(t *testing.T) {
	provider, err := oidctest.New("ferry-ui", "oidc-client-secret-value")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(provider.Close)
	ctx := context.Background()
	hub := testutil.CurrentHub(t)
	ensureNamespace(t, testutil.FerryNamespace)
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: "ui-oidc-" + randomHex(4)}, Data: map[string][]byte{"client-secret": []byte(provider.ClientSecret)}}
	if err := hub.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Client.Delete(ctx, secret) })

	w := newWorld(t, worldOptions{ui: func(o *manager.Options) {
		o.UI.TokenFile = ""
		o.UI.OIDCIssuerURL, o.UI.OIDCClientID, o.UI.OIDCClientSecret = provider.URL, provider.ClientID, secret.Name
	}})
	provider.AllowRedirectURI(w.URL + "/signin/oidc/callback")
	provider.SignInAs(oidctest.User{Subject: "7", Username: "rita", Email: "rita@example.com", Groups: []string{"team/release-managers"}})

	b := newClient(t, w.URL)
	code, page := b.get("/signin?next=/audit")
	if code != http.StatusOK || !strings.Contains(page, "Sign in with GitLab") || strings.Contains(page, "Sign-in token") {
		t.Fatalf("sign-in page: %d\n%s", code, page)
	}
	code, page = b.get("/signin/oidc?next=/audit")
	if code != http.StatusOK || !strings.Contains(page, `id="signed-in-user">rita<`) || !strings.Contains(page, "<h1>Audit</h1>") {
		t.Fatalf("after the provider: %d\n%s", code, page)
	}
	if provider.TokensIssued() != 1 {
		t.Errorf("%d token requests, want 1", provider.TokensIssued())
	}

	// A callback that does not belong to a sign-in of this browser is refused.
	stranger := newClient(t, w.URL)
	if code, page := stranger.get("/signin/oidc/callback?code=x&state=y"); code != http.StatusBadRequest || !strings.Contains(page, "try again") {
		t.Errorf("foreign callback: %d", code)
	}
	// The provider refusing shows its reason.
	provider.MutateIDTokens(func(c map[string]any) { c["aud"] = "another-client" })
	code, page = newClient(t, w.URL).get("/signin/oidc")
	if code != http.StatusUnauthorized || !strings.Contains(page, "audience") {
		t.Errorf("wrong audience: %d\n%s", code, page)
	}
}
