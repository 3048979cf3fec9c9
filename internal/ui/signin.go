package ui

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"golang.org/x/oauth2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/ferryci/ferry/internal/ui/auth"
)

// oidcCookie carries the state of one OIDC sign-in between the redirect and the callback.
const oidcCookie = "ferry-oidc"

// oidcState is sealed into oidcCookie.
type oidcState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	Next     string `json:"x"`
	Expires  int64  `json:"e"`
}

type signinData struct {
	Next    string
	OIDC    bool
	Tokens  bool
	CSRF    string
	Error   string
	Message string
}

// localPath keeps a post-sign-in destination on this site: a path, never another host.
func localPath(next string) string {
	if next == "" || !strings.HasPrefix(next, "/") || strings.HasPrefix(next, "//") || strings.HasPrefix(next, "/\\") {
		return "/"
	}
	if u, err := url.Parse(next); err != nil || u.Host != "" || u.Scheme != "" {
		return "/"
	}
	return next
}

func (s *Server) signinPage(w http.ResponseWriter, r *http.Request) {
	s.renderSignin(w, r, http.StatusOK, localPath(r.URL.Query().Get("next")), "")
}

func (s *Server) renderSignin(w http.ResponseWriter, r *http.Request, status int, next, errMsg string) {
	data := signinData{Next: next, OIDC: s.oidc != nil, Tokens: s.tokens != nil, Error: errMsg}
	if r.URL.Query().Get("signedout") == "1" {
		data.Message = "You are signed out."
	}
	if s.tokens != nil {
		tok, err := s.sessions.SigninToken(r.Context(), w, r)
		if err != nil {
			s.renderError(w, r, nil, http.StatusServiceUnavailable, "Sign-in unavailable", err.Error())
			return
		}
		data.CSRF = tok
	}
	s.render(w, r, nil, status, "signin", "Sign in", data)
}

// signinToken signs in with a token from the token file or Secret (`ferry dev`).
func (s *Server) signinToken(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.PostFormValue("next"))
	if s.tokens == nil {
		s.renderError(w, r, nil, http.StatusNotFound, "Token sign-in is off", "This installation signs people in with its identity provider.")
		return
	}
	if err := s.sessions.CheckSigninCSRF(w, r); err != nil {
		s.renderSignin(w, r, http.StatusForbidden, next, err.Error())
		return
	}
	entries, err := s.tokens.Tokens(r.Context())
	if err != nil {
		s.log.Error(err, "Cannot read the sign-in tokens")
		s.renderSignin(w, r, http.StatusServiceUnavailable, next, "Sign-in tokens cannot be read right now: "+err.Error())
		return
	}
	id, ok := auth.MatchToken(entries, strings.TrimSpace(r.PostFormValue("token")))
	if !ok {
		s.renderSignin(w, r, http.StatusUnauthorized, next, "That token signs nobody in.")
		return
	}
	if _, err := s.sessions.Start(r.Context(), w, id, auth.MethodToken); err != nil {
		s.renderSignin(w, r, http.StatusInternalServerError, next, err.Error())
		return
	}
	s.log.Info("Signed in", "user", id.User, "method", "token")
	http.Redirect(w, r, next, http.StatusSeeOther) //nolint:gosec // G710: next went through localPath: a path on this site
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(b), nil
}

// signinOIDC sends the browser to the provider with a fresh state, nonce and PKCE verifier,
// remembered in a sealed cookie.
func (s *Server) signinOIDC(w http.ResponseWriter, r *http.Request) {
	next := localPath(r.URL.Query().Get("next"))
	if s.oidc == nil {
		s.renderError(w, r, nil, http.StatusNotFound, "OIDC sign-in is off", "This installation has no identity provider configured.")
		return
	}
	state, err1 := randomToken()
	nonce, err2 := randomToken()
	if err := errors.Join(err1, err2); err != nil {
		s.renderError(w, r, nil, http.StatusInternalServerError, "Sign-in failed", err.Error())
		return
	}
	st := oidcState{State: state, Nonce: nonce, Verifier: oauth2.GenerateVerifier(), Next: next, Expires: time.Now().Add(10 * time.Minute).Unix()}
	sealed, err := s.sessions.Store.Seal(r.Context(), oidcCookie, st)
	if err != nil {
		s.renderError(w, r, nil, http.StatusServiceUnavailable, "Sign-in failed", err.Error())
		return
	}
	authURL, err := s.oidc.AuthCodeURL(r.Context(), s.redirectURL(r), st.State, st.Nonce, st.Verifier)
	if err != nil {
		s.log.Error(err, "Cannot reach the OIDC provider")
		s.renderSignin(w, r, http.StatusBadGateway, next, err.Error())
		return
	}
	http.SetCookie(w, s.sessions.Cookies.Cookie(oidcCookie, sealed, 10*time.Minute))
	http.Redirect(w, r, authURL, http.StatusFound) //nolint:gosec // G710: the configured provider's authorization endpoint
}

// signinOIDCCallback finishes the sign-in: the state must match the cookie, the code is redeemed
// with the verifier, and the ID token must carry the nonce.
func (s *Server) signinOIDCCallback(w http.ResponseWriter, r *http.Request) {
	if s.oidc == nil {
		s.renderError(w, r, nil, http.StatusNotFound, "OIDC sign-in is off", "This installation has no identity provider configured.")
		return
	}
	q := r.URL.Query()
	var st oidcState
	ck, err := r.Cookie(oidcCookie)
	if err == nil {
		err = s.sessions.Store.Unseal(r.Context(), oidcCookie, ck.Value, &st)
	}
	http.SetCookie(w, s.sessions.Cookies.Cookie(oidcCookie, "", -1))
	switch {
	case err != nil || st.State == "" || time.Now().Unix() > st.Expires:
		s.renderSignin(w, r, http.StatusBadRequest, "/", "The sign-in took too long or was started in another browser: try again.")
		return
	case q.Get("state") != st.State:
		s.renderSignin(w, r, http.StatusBadRequest, "/", "The sign-in answer does not belong to this sign-in: try again.")
		return
	case q.Get("error") != "":
		s.renderSignin(w, r, http.StatusUnauthorized, st.Next, fmt.Sprintf("The identity provider refused the sign-in: %s %s", q.Get("error"), q.Get("error_description")))
		return
	}
	secret, err := s.oidcClientSecret(r.Context())
	if err != nil {
		s.log.Error(err, "Cannot read the OIDC client secret")
		s.renderSignin(w, r, http.StatusServiceUnavailable, st.Next, err.Error())
		return
	}
	id, err := s.oidc.WithClientSecret(secret).Exchange(r.Context(), s.redirectURL(r), q.Get("code"), st.Verifier, st.Nonce)
	if err != nil {
		s.log.Info("OIDC sign-in refused", "reason", err.Error())
		s.renderSignin(w, r, http.StatusUnauthorized, st.Next, err.Error())
		return
	}
	if _, err := s.sessions.Start(r.Context(), w, id, auth.MethodOIDC); err != nil {
		s.renderSignin(w, r, http.StatusInternalServerError, st.Next, err.Error())
		return
	}
	s.log.Info("Signed in", "user", id.User, "method", "oidc")
	http.Redirect(w, r, st.Next, http.StatusSeeOther)
}

// oidcClientSecret reads the client secret at every sign-in, so that a rotation needs no restart.
func (s *Server) oidcClientSecret(ctx context.Context) (string, error) {
	if s.opts.OIDCClientSecret == "" {
		return "", nil
	}
	secret := &corev1.Secret{}
	key := types.NamespacedName{Namespace: s.opts.Namespace, Name: s.opts.OIDCClientSecret}
	if err := s.apiReader.Get(ctx, key, secret); err != nil {
		return "", fmt.Errorf("failed to read the OIDC client Secret %s: %w", key, err)
	}
	v, ok := secret.Data[OIDCClientSecretKey]
	if !ok {
		return "", fmt.Errorf("the OIDC client Secret %s has no key %s", key, OIDCClientSecretKey)
	}
	return strings.TrimSpace(string(v)), nil
}

// signout ends the session on every replica.
func (s *Server) signout(w http.ResponseWriter, r *http.Request, sess *auth.Session) {
	if err := s.sessions.CheckCSRF(r, sess); err != nil {
		s.renderError(w, r, sess, http.StatusForbidden, "Refused", err.Error())
		return
	}
	if err := s.sessions.End(r.Context(), w, sess); err != nil {
		s.log.Error(err, "Cannot sign out", "user", sess.User)
		s.renderError(w, r, sess, http.StatusServiceUnavailable, "Sign-out failed", err.Error())
		return
	}
	s.events.disconnect(sess.ID)
	s.log.Info("Signed out", "user", sess.User)
	http.Redirect(w, r, "/signin?signedout=1", http.StatusSeeOther)
}
