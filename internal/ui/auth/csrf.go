package auth

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"net/http"
	"net/url"
	"time"
)

// CSRFField is the form field that carries the CSRF token of every POST.
const CSRFField = "csrf"

// CSRFHeader carries the CSRF token of a POST sent by script.
const CSRFHeader = "X-Ferry-CSRF"

// signinCookie holds the nonce that the sign-in form's CSRF token is bound to, before there is a
// session.
const signinCookie = "ferry-signin"

// signinTTL bounds how long a sign-in form stays valid.
const signinTTL = 30 * time.Minute

// ErrCSRF refuses a POST without a valid CSRF token, or from another site.
var ErrCSRF = errors.New("the form is missing its CSRF token or it does not match your session: reload the page and try again")

// CSRFToken is the token every form of sess must send back. It is an HMAC of the session ID, so
// it is the same on every replica and worthless for any other session.
func (m *Sessions) CSRFToken(ctx context.Context, sess *Session) (string, error) {
	return m.Store.MAC(ctx, "session", sess.ID)
}

// CheckCSRF refuses a state-changing request unless it comes from the UI's own pages (Origin
// and Sec-Fetch-Site, when the browser sends them) and carries sess's CSRF token.
func (m *Sessions) CheckCSRF(r *http.Request, sess *Session) error {
	if err := SameOrigin(r, m.ExternalHost); err != nil {
		return err
	}
	want, err := m.CSRFToken(r.Context(), sess)
	if err != nil {
		return err
	}
	return compareToken(r, want)
}

// SigninToken returns the CSRF token of the sign-in form, binding it to a nonce in a short-lived
// cookie (set here when missing): nobody else's page can sign a browser in as someone else.
func (m *Sessions) SigninToken(ctx context.Context, w http.ResponseWriter, r *http.Request) (string, error) {
	nonce := ""
	if ck, err := r.Cookie(signinCookie); err == nil && len(ck.Value) >= 22 {
		nonce = ck.Value
	} else {
		b := make([]byte, 18)
		if _, err := rand.Read(b); err != nil {
			return "", err
		}
		nonce = base64.RawURLEncoding.EncodeToString(b)
		http.SetCookie(w, m.Cookies.Cookie(signinCookie, nonce, signinTTL))
	}
	return m.Store.MAC(ctx, "signin", nonce)
}

// CheckSigninCSRF verifies the sign-in form's token against its cookie and clears the cookie.
func (m *Sessions) CheckSigninCSRF(w http.ResponseWriter, r *http.Request) error {
	if err := SameOrigin(r, m.ExternalHost); err != nil {
		return err
	}
	ck, err := r.Cookie(signinCookie)
	if err != nil || ck.Value == "" {
		return ErrCSRF
	}
	want, err := m.Store.MAC(r.Context(), "signin", ck.Value)
	if err != nil {
		return err
	}
	if err := compareToken(r, want); err != nil {
		return err
	}
	http.SetCookie(w, m.Cookies.Cookie(signinCookie, "", -1))
	return nil
}

func compareToken(r *http.Request, want string) error {
	got := r.Header.Get(CSRFHeader)
	if got == "" {
		got = r.PostFormValue(CSRFField)
	}
	if got == "" || !hmac.Equal([]byte(got), []byte(want)) {
		return ErrCSRF
	}
	return nil
}

// SameOrigin refuses a request that the browser says comes from another site: Sec-Fetch-Site
// cross-site, or an Origin whose host is neither the request's own nor externalHost (the host of
// the UI's external URL, when a proxy in front of it changes the Host header).
func SameOrigin(r *http.Request, externalHost string) error {
	if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
		return ErrCSRF
	}
	origin := r.Header.Get("Origin")
	if origin == "" {
		return nil
	}
	u, err := url.Parse(origin)
	if err != nil || (u.Host != r.Host && (externalHost == "" || u.Host != externalHost)) {
		return ErrCSRF
	}
	return nil
}
