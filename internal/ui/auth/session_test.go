package auth

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
)

// replicas returns two Session managers over one Secret store, as two manager replicas would be.
func replicas(t *testing.T, now *time.Time) (*Sessions, *Sessions, client.Client) {
	t.Helper()
	c := fake.NewClientBuilder().Build()
	mk := func() *Sessions {
		return &Sessions{
			Store:   &Store{Reader: c, APIReader: c, Writer: c, Namespace: "ferry-system", Name: "ferry-ui-session", Now: func() time.Time { return *now }},
			Cookies: Cookies{TTL: time.Hour},
		}
	}
	return mk(), mk(), c
}

func requestWith(cookies []*http.Cookie) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://ui.example.com/", nil)
	for _, c := range cookies {
		r.AddCookie(c)
	}
	return r
}

func TestSessionsWorkAcrossReplicasUntilSignOut(t *testing.T) {
	now := time.Date(2026, 11, 23, 9, 0, 0, 0, time.UTC)
	a, b, c := replicas(t, &now)
	ctx := context.Background()

	w := httptest.NewRecorder()
	sess, err := a.Start(ctx, w, Identity{User: "alice", Groups: []string{"release-managers"}}, "token")
	if err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	if len(cookies) != 1 || cookies[0].Name != "ferry-session" || !cookies[0].HttpOnly || cookies[0].SameSite != http.SameSiteLaxMode || cookies[0].Path != "/" || cookies[0].MaxAge != 3600 {
		t.Fatalf("session cookie: %+v", cookies)
	}
	if strings.Contains(cookies[0].Value, "alice") || strings.Contains(cookies[0].Value, "release-managers") {
		t.Error("the cookie shows who is signed in; it must be encrypted")
	}

	// The other replica reads it: same key from the same Secret.
	got, err := b.Get(requestWith(cookies))
	if err != nil || got.User != "alice" || got.Groups[0] != "release-managers" || got.ID != sess.ID {
		t.Fatalf("replica b: %+v, %v", got, err)
	}

	// CSRF tokens agree between replicas and differ between sessions.
	tokA, _ := a.CSRFToken(ctx, sess)
	tokB, _ := b.CSRFToken(ctx, got)
	other := *sess
	other.ID = "someone-else"
	tokOther, _ := a.CSRFToken(ctx, &other)
	if tokA != tokB || tokA == tokOther || tokA == "" {
		t.Errorf("CSRF tokens: a=%q b=%q other=%q", tokA, tokB, tokOther)
	}

	// A cookie that was altered, or sealed for another purpose, is refused.
	altered := *cookies[0]
	altered.Value = altered.Value[:len(altered.Value)-2] + "AA"
	if _, err := b.Get(requestWith([]*http.Cookie{&altered})); !errors.Is(err, ErrInvalidSession) {
		t.Errorf("altered cookie: %v", err)
	}
	sealed, _ := a.Store.Seal(ctx, "ferry-oidc", sess)
	if _, err := b.Get(requestWith([]*http.Cookie{{Name: "ferry-session", Value: sealed}})); !errors.Is(err, ErrInvalidSession) {
		t.Errorf("a value sealed for another cookie: %v", err)
	}

	// Signing out on replica a: both replicas refuse the old cookie from then on.
	w = httptest.NewRecorder()
	if err := a.End(ctx, w, sess); err != nil {
		t.Fatal(err)
	}
	if cleared := w.Result().Cookies(); len(cleared) != 1 || cleared[0].MaxAge >= 0 {
		t.Errorf("sign-out did not clear the cookie: %+v", cleared)
	}
	for name, m := range map[string]*Sessions{"a": a, "b": b} {
		if _, err := m.Get(requestWith(cookies)); !errors.Is(err, ErrSessionRevoked) {
			t.Errorf("replica %s accepted a signed-out session: %v", name, err)
		}
	}

	// A new sign-in works; time passing ends it; expired revocations are pruned on the next write.
	w = httptest.NewRecorder()
	sess2, err := b.Start(ctx, w, Identity{User: "bob"}, "oidc")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Get(requestWith(w.Result().Cookies())); err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Hour)
	if _, err := a.Get(requestWith(w.Result().Cookies())); !errors.Is(err, ErrSessionExpired) {
		t.Errorf("expired session: %v", err)
	}
	if err := a.Store.Revoke(ctx, sess2.ID, now.Add(time.Hour).Unix()); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: "ferry-system", Name: "ferry-ui-session"}, secret); err != nil {
		t.Fatal(err)
	}
	if r := string(secret.Data[RevokedKey]); strings.Contains(r, sess.ID) || !strings.Contains(r, sess2.ID) {
		t.Errorf("revoked list %s: want only the unexpired session", r)
	}
}

func TestSecureCookies(t *testing.T) {
	now := time.Now()
	a, _, _ := replicas(t, &now)
	a.Cookies.Secure = true
	w := httptest.NewRecorder()
	if _, err := a.Start(context.Background(), w, Identity{User: "alice"}, "oidc"); err != nil {
		t.Fatal(err)
	}
	ck := w.Result().Cookies()[0]
	if ck.Name != "__Host-ferry-session" || !ck.Secure || !ck.HttpOnly || ck.Domain != "" || ck.Path != "/" {
		t.Errorf("cookie over TLS: %+v", ck)
	}
}

func TestCSRF(t *testing.T) {
	now := time.Now()
	a, _, _ := replicas(t, &now)
	ctx := context.Background()
	w := httptest.NewRecorder()
	sess, err := a.Start(ctx, w, Identity{User: "alice"}, "token")
	if err != nil {
		t.Fatal(err)
	}
	token, _ := a.CSRFToken(ctx, sess)
	post := func(form url.Values, header map[string]string) *http.Request {
		r := httptest.NewRequest(http.MethodPost, "http://ui.example.com/approve", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for k, v := range header {
			r.Header.Set(k, v)
		}
		return r
	}
	cases := []struct {
		name   string
		req    *http.Request
		wantOK bool
	}{
		{"form token", post(url.Values{CSRFField: {token}}, nil), true},
		{"header token", post(nil, map[string]string{CSRFHeader: token}), true},
		{"same origin", post(url.Values{CSRFField: {token}}, map[string]string{"Origin": "http://ui.example.com", "Sec-Fetch-Site": "same-origin"}), true},
		{"no token", post(url.Values{"decision": {"Approve"}}, nil), false},
		{"wrong token", post(url.Values{CSRFField: {token + "x"}}, nil), false},
		{"another site with the token", post(url.Values{CSRFField: {token}}, map[string]string{"Origin": "https://evil.example.net"}), false},
		{"cross-site fetch", post(url.Values{CSRFField: {token}}, map[string]string{"Sec-Fetch-Site": "cross-site"}), false},
	}
	for _, tc := range cases {
		err := a.CheckCSRF(tc.req, sess)
		if (err == nil) != tc.wantOK {
			t.Errorf("%s: CheckCSRF = %v, want ok=%v", tc.name, err, tc.wantOK)
		}
	}

	// The external URL's host is accepted as the Origin behind a proxy.
	a.ExternalHost = "ferry.example.com"
	if err := a.CheckCSRF(post(url.Values{CSRFField: {token}}, map[string]string{"Origin": "https://ferry.example.com"}), sess); err != nil {
		t.Errorf("external origin: %v", err)
	}
}

func TestSigninCSRF(t *testing.T) {
	now := time.Now()
	a, _, _ := replicas(t, &now)
	ctx := context.Background()
	w := httptest.NewRecorder()
	token, err := a.SigninToken(ctx, w, httptest.NewRequest(http.MethodGet, "http://ui/signin", nil))
	if err != nil {
		t.Fatal(err)
	}
	cookies := w.Result().Cookies()
	post := func(form url.Values, cookies []*http.Cookie) error {
		r := httptest.NewRequest(http.MethodPost, "http://ui/signin/token", strings.NewReader(form.Encode()))
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		for _, c := range cookies {
			r.AddCookie(c)
		}
		return a.CheckSigninCSRF(httptest.NewRecorder(), r)
	}
	if err := post(url.Values{CSRFField: {token}}, cookies); err != nil {
		t.Errorf("valid sign-in form: %v", err)
	}
	if err := post(url.Values{CSRFField: {token}}, nil); err == nil {
		t.Error("a sign-in form without its cookie was accepted (login CSRF)")
	}
	if err := post(url.Values{}, cookies); err == nil {
		t.Error("a sign-in form without its token was accepted")
	}
}

func TestTokens(t *testing.T) {
	good := `
- token: 0123456789abcdef-alice
  user: alice
  groups: [release-managers]
- token: 0123456789abcdef-bob
  user: bob
`
	entries, err := ParseTokens("tokens.yaml", []byte(good))
	if err != nil {
		t.Fatal(err)
	}
	if id, ok := MatchToken(entries, "0123456789abcdef-alice"); !ok || id.User != "alice" || id.Groups[0] != "release-managers" {
		t.Errorf("alice: %+v %v", id, ok)
	}
	for _, tok := range []string{"", "0123456789abcdef", "0123456789abcdef-alicE"} {
		if id, ok := MatchToken(entries, tok); ok {
			t.Errorf("token %q matched %+v", tok, id)
		}
	}

	bad := map[string]string{
		"short token":   "- {token: short-secret, user: alice}",
		"no user":       "- {token: 0123456789abcdef-x}",
		"system user":   "- {token: 0123456789abcdef-x, user: 'system:admin'}",
		"system group":  "- {token: 0123456789abcdef-x, user: eve, groups: ['system:masters']}",
		"duplicate":     "- {token: 0123456789abcdef-x, user: a}\n- {token: 0123456789abcdef-x, user: b}",
		"unknown field": "- {token: 0123456789abcdef-x, user: a, admin: true}",
		"not a list":    "token: 0123456789abcdef-x",
	}
	for name, data := range bad {
		_, err := ParseTokens("tokens.yaml", []byte(data))
		if err == nil {
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.HasPrefix(err.Error(), "tokens.yaml: ") || strings.Contains(err.Error(), "0123456789abcdef") || strings.Contains(err.Error(), "short-secret") {
			t.Errorf("%s: error %q must name the file and never the token", name, err)
		}
	}
}
