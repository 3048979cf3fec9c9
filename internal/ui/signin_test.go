package ui_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui"
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
	if code, body := b.post("/signin/token", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "token": {"tok-rita-wrong"}}); code != http.StatusUnauthorized || !strings.Contains(body, "signs nobody in") {
		t.Errorf("wrong token: %d", code)
	}

	// Signing in sets the session cookie with the right attributes.
	_, page = b.get("/signin")
	form := url.Values{"csrf": {testutil.CSRFToken(t, page)}, "token": {w.tokens["rita"]}, "next": {"/audit"}}
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
	if code, page := b.post("/signout", url.Values{"csrf": {testutil.CSRFToken(t, page)}}); code != http.StatusOK || !strings.Contains(page, "You are signed out") {
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

// TestOIDCSignIn signs in through an OpenID provider that speaks GitLab's protocol; the username
// and the groups in the ID token, with their prefixes, are whom the UI acts for.
func TestOIDCSignIn(t *testing.T) {
	provider, oidc := startProvider(t)
	w := newWorld(t, worldOptions{ui: oidc("gitlab:")})
	w.bind([]string{"gitlab:rita"})
	provider.AllowRedirectURI(w.URL + "/signin/oidc/callback")
	provider.SignInAs(oidctest.User{Subject: "7", Username: "rita", Email: "rita@example.com", Groups: []string{"team/release-managers"}})

	b := newClient(t, w.URL)
	code, page := b.get("/signin?next=/audit")
	if code != http.StatusOK || !strings.Contains(page, "Sign in with GitLab") || strings.Contains(page, "Sign-in token") {
		t.Fatalf("sign-in page: %d\n%s", code, page)
	}
	code, page = b.get("/signin/oidc?next=/audit")
	if code != http.StatusOK || !strings.Contains(page, `id="signed-in-user">gitlab:rita<`) || !strings.Contains(page, "<h1>Audit</h1>") {
		t.Fatalf("after the provider: %d\n%s", code, page)
	}

	// A replica whose groups prefix changed (gl:) never names a group signed in without it: the
	// session must sign in again before the UI acts for it.
	other := w.startUI(oidc("gl:"))
	otherURL := mustURL(t, other)
	for _, c := range b.c.Jar.Cookies(mustURL(t, w.URL)) {
		if c.Name == "ferry-session" {
			b.c.Jar.SetCookies(otherURL, []*http.Cookie{c})
		}
	}
	stale := &browserless{t: t, base: other, c: b.c}
	_, page = stale.get("/")
	code, page = stale.post("/releases/"+w.ns+"/shop-1/decide", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "environment": {"prod"}, "decision": {"Approve"}, "from": {"release"}})
	if code != http.StatusForbidden || !strings.Contains(html.UnescapeString(page), `group "gitlab:team/release-managers" of user "gitlab:rita" lacks the groups prefix "gl:"`) {
		t.Errorf("a decision by a session without the groups prefix: %d\n%s", code, page)
	}
	if n := len(w.approvals()); n != 0 {
		t.Errorf("%d Approvals recorded for a session without the groups prefix", n)
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

// startProvider starts an OpenID provider that speaks GitLab's protocol and keeps its client
// secret where the UI's role may read it; oidc configures a UI to sign people in there with
// usernames prefixed gitlab: and groups prefixed groupsPrefix.
func startProvider(t *testing.T) (provider *oidctest.Provider, oidc func(groupsPrefix string) func(*manager.Options)) {
	t.Helper()
	provider, err := oidctest.New("ferry-ui", "oidc-client-secret-value")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(provider.Close)
	ctx := context.Background()
	hub := testutil.CurrentHub(t)
	ensureNamespace(t, testutil.FerryNamespace)
	// The name the UI's role may read.
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: "ferry-ui-oidc"}, Data: map[string][]byte{"client-secret": []byte(provider.ClientSecret)}}
	if err := hub.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Client.Delete(ctx, secret) })
	return provider, func(groupsPrefix string) func(o *manager.Options) {
		return func(o *manager.Options) {
			o.UI.TokenFile = ""
			o.UI.OIDCIssuerURL, o.UI.OIDCClientID, o.UI.OIDCClientSecret = provider.URL, provider.ClientID, secret.Name
			o.UI.OIDCUsernamePrefix, o.UI.OIDCGroupsClaim, o.UI.OIDCGroupsPrefix = "gitlab:", "groups", groupsPrefix
		}
	}
}

// TestGitLabGroupNamedLikeAKubernetesGroup: anyone may create a GitLab group named
// release-managers. The UI does not start with GitLab's groups taken as they are, and with the
// prefix its members are gitlab:release-managers, whom neither RBAC nor a gate that admits
// release-managers lets decide.
func TestGitLabGroupNamedLikeAKubernetesGroup(t *testing.T) {
	provider, oidc := startProvider(t)
	// The flags' defaults with GitLab as the provider: groups from the groups claim, no prefix.
	naive := manager.Options{Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"-*"}, UIAddr: "127.0.0.1:0"}
	oidc("")(&naive)
	naive.UI.OIDCUsernamePrefix = ""
	if _, err := manager.New(uiConfig(t), naive); err == nil || !strings.Contains(err.Error(), "OIDC sign-in needs a username prefix") {
		t.Errorf("a UI that takes GitLab's usernames and groups as they are: %v, want a refusal to start", err)
	}
	naive.UI.OIDCUsernamePrefix = "gitlab:"
	if _, err := manager.New(uiConfig(t), naive); err == nil || !strings.Contains(err.Error(), `OIDC groups claim "groups" needs a groups prefix`) {
		t.Errorf("a UI that takes GitLab's groups as they are: %v, want a refusal to start", err)
	}

	w := newWorld(t, worldOptions{ui: oidc("gitlab:")})
	// Kubernetes' release-managers may decide; mallory is in GitLab's group of that name.
	w.bind(nil, "release-managers")
	prod := w.environment("prod", gate(1, "release-managers"))
	w.project("shop", "https://gitlab.example.com", 0, prod)
	rel := w.release(w.c, "shop-1", "shop", w.build("shop-b1", "shop", revision("1"), image("1"), "dave", nil))
	w.setReleaseStatus(rel, func(st *ferryv1.ReleaseStatus) {
		st.Environments = []ferryv1.ReleaseEnvironmentStatus{waitingFor(prod, 1)}
	})
	provider.AllowRedirectURI(w.URL + "/signin/oidc/callback")
	provider.SignInAs(oidctest.User{Subject: "666", Username: "mallory", Email: "mallory@example.com", Groups: []string{"release-managers"}})

	mallory := newClient(t, w.URL)
	code, page := mallory.get("/signin/oidc?next=/")
	if code != http.StatusOK || !strings.Contains(page, `id="signed-in-user">gitlab:mallory<`) {
		t.Fatalf("mallory signing in: %d\n%s", code, page)
	}
	// RBAC lets gitlab:release-managers see nothing of the Release.
	if code, page := mallory.get("/releases/" + w.ns + "/shop-1"); code != http.StatusNotFound || strings.Contains(page, "Approve") {
		t.Errorf("mallory sees Release shop-1: %d\n%s", code, page)
	}
	code, page = mallory.post("/releases/"+w.ns+"/shop-1/decide", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}, "decision": {"Approve"}, "from": {"release"}})
	if want := `User "gitlab:mallory" cannot create resource "approvals"`; code != http.StatusForbidden || !strings.Contains(html.UnescapeString(page), want) {
		t.Errorf("mallory's decision as a member of GitLab's release-managers: %d, want 403 saying %q\n%s", code, want, page)
	}
	if n := len(w.approvals()); n != 0 {
		t.Errorf("%d Approvals recorded for a member of GitLab's group release-managers", n)
	}
}

// TestOIDCGroupsNeedAPrefix: anyone can create a GitLab group named release-managers, so the UI
// refuses to start when it would take groups from GitLab without a prefix, or usernames without
// one, unless told that the provider is trusted.
func TestOIDCGroupsNeedAPrefix(t *testing.T) {
	cfg := uiConfig(t)
	base := manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"-*"}, UIAddr: "127.0.0.1:0",
		UI: ui.Config{OIDCIssuerURL: "https://gitlab.example.com", OIDCClientID: "ferry", OIDCUsernamePrefix: "gitlab:", OIDCGroupsClaim: "groups"},
	}
	for _, tc := range []struct {
		name   string
		change func(*ui.Config)
		want   string
	}{
		{name: "groups without a prefix", change: func(*ui.Config) {}, want: `OIDC groups claim "groups" needs a groups prefix (--ui-oidc-groups-prefix`},
		{name: "usernames without a prefix", change: func(c *ui.Config) { c.OIDCUsernamePrefix, c.OIDCGroupsPrefix = "", "gitlab:" }, want: "OIDC sign-in needs a username prefix (--ui-oidc-username-prefix"},
		{name: "prefixed", change: func(c *ui.Config) { c.OIDCGroupsPrefix = "gitlab:" }},
		{name: "no groups", change: func(c *ui.Config) { c.OIDCGroupsClaim = "" }},
		{name: "a trusted provider", change: func(c *ui.Config) { c.OIDCUsernamePrefix, c.OIDCAllowUnprefixed = "", true }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			opts := base
			tc.change(&opts.UI)
			_, err := manager.New(cfg, opts)
			switch {
			case tc.want == "" && err != nil:
				t.Errorf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Errorf("got %v, want a refusal saying %q", err, tc.want)
			}
		})
	}
}
