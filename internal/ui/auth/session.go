// Package auth signs people in to Ferry's UI and keeps their sessions: OIDC against GitLab (or
// any OpenID provider) for real installs, tokens mapped to a user and groups for `ferry dev`,
// encrypted and authenticated session cookies that every replica can read (the key lives in a
// Secret in Ferry's namespace), sign-out that every replica honours, and CSRF tokens bound to the
// session.
//
// A session is only a name and groups: the UI asks the API server what RBAC lets that identity
// do, and names it on what it writes for the person, so RBAC and Ferry's admission webhooks decide.
package auth

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Keys of the session Secret.
const (
	// KeyKey holds 32 random bytes from which the cookie encryption key and the CSRF key derive.
	KeyKey = "key"
	// RevokedKey holds the sessions that signed out and have not expired yet, as JSON
	// {"<session id>": <expiry, Unix seconds>}.
	RevokedKey = "revoked"
)

// DefaultSessionTTL is how long a session lasts when the Store is not told otherwise.
const DefaultSessionTTL = 12 * time.Hour

// Identity is who a person is to the API server: the UI acts for exactly this.
type Identity struct {
	// User is the username.
	User string `json:"u"`
	// Groups are the groups.
	Groups []string `json:"g,omitempty"`
}

// Session is one sign-in.
type Session struct {
	Identity
	// ID identifies the session; signing out revokes it.
	ID string `json:"i"`
	// Method is how the person signed in: MethodOIDC or MethodToken.
	Method string `json:"m"`
	// Expires is when the session ends, Unix seconds.
	Expires int64 `json:"e"`
}

// How people sign in.
const (
	// MethodOIDC: with an OpenID provider; the identity comes from the provider's ID token.
	MethodOIDC = "oidc"
	// MethodToken: with a token from a list the administrator wrote.
	MethodToken = "token"
)

// ExpiresAt is when the session ends.
func (s *Session) ExpiresAt() time.Time { return time.Unix(s.Expires, 0) }

// Errors of Open.
var (
	// ErrNoSession: the request carries no session cookie.
	ErrNoSession = errors.New("not signed in")
	// ErrInvalidSession: the cookie was not made with this installation's key, or was altered.
	ErrInvalidSession = errors.New("the session cookie is not valid")
	// ErrSessionExpired: the session's time is up.
	ErrSessionExpired = errors.New("the session has expired")
	// ErrSessionRevoked: the person signed out of this session.
	ErrSessionRevoked = errors.New("the session was signed out")
)

// Store keeps the session key and the list of signed-out sessions in a Secret in Ferry's
// namespace, so that every replica accepts the same cookies and refuses the same signed-out ones.
type Store struct {
	// Reader reads the Secret; the manager's cache, which watches Ferry's namespace, makes a
	// sign-out on one replica known to the others within moments.
	Reader client.Reader
	// APIReader reads the Secret uncached, before the cache has seen it.
	APIReader client.Reader
	// Writer creates the Secret when it is missing and records sign-outs.
	Writer client.Writer
	// Namespace and Name locate the Secret.
	Namespace, Name string
	// Now returns the current time. Default time.Now.
	Now func() time.Time

	mu    sync.Mutex
	state *keyState
}

// keyState is the parsed Secret at one resourceVersion.
type keyState struct {
	resourceVersion string
	aead            cipher.AEAD
	macKey          []byte
	revoked         map[string]int64
}

func (s *Store) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// Ensure reads the Secret, creating it with a new random key when it does not exist.
func (s *Store) Ensure(ctx context.Context) error {
	_, err := s.current(ctx)
	return err
}

// current returns the parsed Secret, reading it from the cache (or the API server when the cache
// has not seen it yet) and creating it when it does not exist.
func (s *Store) current(ctx context.Context) (*keyState, error) {
	key := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	secret := &corev1.Secret{}
	err := s.Reader.Get(ctx, key, secret)
	if apierrors.IsNotFound(err) && s.APIReader != nil {
		err = s.APIReader.Get(ctx, key, secret)
	}
	if apierrors.IsNotFound(err) {
		secret, err = s.create(ctx)
	}
	if err == nil && len(secret.Data[KeyKey]) == 0 {
		secret, err = s.initialize(ctx)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the UI's session Secret %s: %w", key, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	// The cache may still hold an older version than one this replica just wrote.
	if s.state != nil && !newer(secret.ResourceVersion, s.state.resourceVersion) {
		return s.state, nil
	}
	st, err := parseSecret(secret)
	if err != nil {
		return nil, err
	}
	s.state = st
	return st, nil
}

// newer reports whether resourceVersion a differs from b and is not known to be older. Resource
// versions are opaque, but the API server's are integers, and a watch cache delivers them in order.
func newer(a, b string) bool {
	if a == b {
		return false
	}
	var ai, bi uint64
	if _, err := fmt.Sscan(a, &ai); err != nil {
		return true
	}
	if _, err := fmt.Sscan(b, &bi); err != nil {
		return true
	}
	return ai > bi
}

func (s *Store) create(ctx context.Context) (*corev1.Secret, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, err
	}
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: s.Namespace, Name: s.Name,
			Labels: map[string]string{ferryv1.ManagedByLabel: ferryv1.ManagedByValue},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{KeyKey: key},
	}
	err := s.Writer.Create(ctx, secret)
	if apierrors.IsForbidden(err) {
		return nil, fmt.Errorf("the Secret does not exist and the UI may not create it (the install creates it empty, config/ui): %w", err)
	}
	if apierrors.IsAlreadyExists(err) {
		// Another replica made it first: use theirs.
		secret = &corev1.Secret{}
		err = s.APIReader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, secret)
	}
	if err != nil {
		return nil, err
	}
	return secret, nil
}

// initialize puts a new random key into a session Secret that has none: the install creates the
// Secret empty, so that the UI needs no right to create Secrets in Ferry's namespace.
func (s *Store) initialize(ctx context.Context) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		if err := s.APIReader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, secret); err != nil {
			return err
		}
		if len(secret.Data[KeyKey]) > 0 {
			// Another replica was first.
			return nil
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return err
		}
		if secret.Data == nil {
			secret.Data = map[string][]byte{}
		}
		secret.Data[KeyKey] = key
		return s.Writer.Update(ctx, secret)
	})
	if err != nil {
		return nil, fmt.Errorf("failed to put a session key into the empty Secret: %w", err)
	}
	return secret, nil
}

func parseSecret(secret *corev1.Secret) (*keyState, error) {
	key := secret.Data[KeyKey]
	if len(key) < 32 {
		return nil, fmt.Errorf("secret %s/%s: key %q must hold at least 32 bytes; delete the Secret and Ferry makes a new one (everyone signs in again)", secret.Namespace, secret.Name, KeyKey)
	}
	block, err := aes.NewCipher(derive(key, "ferry-ui session cookie"))
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	st := &keyState{resourceVersion: secret.ResourceVersion, aead: aead, macKey: derive(key, "ferry-ui csrf"), revoked: map[string]int64{}}
	if raw := secret.Data[RevokedKey]; len(raw) > 0 {
		if err := json.Unmarshal(raw, &st.revoked); err != nil {
			return nil, fmt.Errorf("secret %s/%s: key %q is not a JSON map of session IDs to expiry times: %w", secret.Namespace, secret.Name, RevokedKey, err)
		}
	}
	return st, nil
}

// derive makes a purpose-specific 32-byte key.
func derive(key []byte, purpose string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(purpose))
	return m.Sum(nil)
}

// seal encrypts and authenticates v. The purpose (a cookie name) is authenticated with it, so a
// value sealed for one cookie is no good in another.
func seal(st *keyState, purpose string, v any) (string, error) {
	plain, err := json.Marshal(v)
	if err != nil {
		return "", err
	}
	nonce := make([]byte, st.aead.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return "", err
	}
	return base64.RawURLEncoding.EncodeToString(st.aead.Seal(nonce, nonce, plain, []byte(purpose))), nil
}

func unseal(st *keyState, purpose, value string, v any) error {
	raw, err := base64.RawURLEncoding.DecodeString(value)
	if err != nil || len(raw) < st.aead.NonceSize() {
		return ErrInvalidSession
	}
	n := st.aead.NonceSize()
	plain, err := st.aead.Open(nil, raw[:n], raw[n:], []byte(purpose))
	if err != nil {
		return ErrInvalidSession
	}
	if err := json.Unmarshal(plain, v); err != nil {
		return ErrInvalidSession
	}
	return nil
}

// Seal encrypts and authenticates v for purpose (a cookie name), for short-lived values such as
// the OIDC state.
func (s *Store) Seal(ctx context.Context, purpose string, v any) (string, error) {
	st, err := s.current(ctx)
	if err != nil {
		return "", err
	}
	return seal(st, purpose, v)
}

// Unseal reverses Seal.
func (s *Store) Unseal(ctx context.Context, purpose, value string, v any) error {
	st, err := s.current(ctx)
	if err != nil {
		return err
	}
	return unseal(st, purpose, value, v)
}

// MAC returns a base64url HMAC of parts under the installation's CSRF key.
func (s *Store) MAC(ctx context.Context, parts ...string) (string, error) {
	st, err := s.current(ctx)
	if err != nil {
		return "", err
	}
	return mac(st, parts...), nil
}

func mac(st *keyState, parts ...string) string {
	m := hmac.New(sha256.New, st.macKey)
	for _, p := range parts {
		// Length-prefixed, so that ("ab","c") and ("a","bc") differ.
		fmt.Fprintf(m, "%d:%s|", len(p), p)
	}
	return base64.RawURLEncoding.EncodeToString(m.Sum(nil))
}

// Revoke records that session id signed out; it is refused until expires, after which it would
// be refused anyway.
func (s *Store) Revoke(ctx context.Context, id string, expires int64) error {
	now := s.now().Unix()
	var written *corev1.Secret
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		secret := &corev1.Secret{}
		if err := s.APIReader.Get(ctx, types.NamespacedName{Namespace: s.Namespace, Name: s.Name}, secret); err != nil {
			return err
		}
		revoked := map[string]int64{}
		if raw := secret.Data[RevokedKey]; len(raw) > 0 {
			if err := json.Unmarshal(raw, &revoked); err != nil {
				return fmt.Errorf("secret %s/%s: key %q is not valid JSON: %w", s.Namespace, s.Name, RevokedKey, err)
			}
		}
		maps.DeleteFunc(revoked, func(_ string, exp int64) bool { return exp < now })
		revoked[id] = expires
		raw, err := json.Marshal(revoked)
		if err != nil {
			return err
		}
		if secret.Data == nil {
			secret.Data = map[string][]byte{}
		}
		secret.Data[RevokedKey] = raw
		if err := s.Writer.Update(ctx, secret); err != nil {
			return err
		}
		written = secret
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to record the sign-out in Secret %s/%s: %w", s.Namespace, s.Name, err)
	}
	// This replica refuses the session at once, whatever its cache says.
	st, err := parseSecret(written)
	if err != nil {
		return err
	}
	s.mu.Lock()
	if s.state == nil || newer(st.resourceVersion, s.state.resourceVersion) {
		s.state = st
	}
	s.mu.Unlock()
	return nil
}

// Cookies configures the session cookie.
type Cookies struct {
	// Secure marks cookies Secure and gives the session cookie the __Host- prefix: set it when the
	// UI is served over TLS or behind an https URL.
	Secure bool
	// TTL is how long a session lasts. Default DefaultSessionTTL.
	TTL time.Duration
}

// SessionCookie is the name of the session cookie.
func (c Cookies) SessionCookie() string {
	if c.Secure {
		// Browsers only accept __Host- cookies that are Secure, for path /, without a domain: no
		// sibling host can plant or read one.
		return "__Host-ferry-session"
	}
	return "ferry-session"
}

func (c Cookies) ttl() time.Duration {
	if c.TTL > 0 {
		return c.TTL
	}
	return DefaultSessionTTL
}

// Cookie returns a cookie with the UI's attributes: HttpOnly, SameSite=Lax (links from GitLab land
// signed in; every POST needs a CSRF token anyway), Secure when configured, for the whole site.
func (c Cookies) Cookie(name, value string, maxAge time.Duration) *http.Cookie {
	//nolint:gosec // G124: Secure is set whenever the UI is served over TLS or behind an https URL; plain-HTTP installs (ferry dev on loopback) cannot use it
	ck := &http.Cookie{Name: name, Value: value, Path: "/", HttpOnly: true, Secure: c.Secure, SameSite: http.SameSiteLaxMode}
	switch {
	case maxAge > 0:
		ck.MaxAge = int(maxAge.Seconds())
	case maxAge < 0:
		ck.MaxAge = -1
	}
	return ck
}

// Sessions starts, reads and ends sessions.
type Sessions struct {
	// Store keeps the key and the signed-out sessions.
	Store *Store
	// Cookies configures the cookies.
	Cookies Cookies
	// ExternalHost is the host of the UI's external URL, accepted as a POST's Origin besides the
	// request's Host.
	ExternalHost string
}

// Start signs id in: a new session with a random ID, sealed into the session cookie.
func (m *Sessions) Start(ctx context.Context, w http.ResponseWriter, id Identity, method string) (*Session, error) {
	sid := make([]byte, 18)
	if _, err := rand.Read(sid); err != nil {
		return nil, err
	}
	ttl := m.Cookies.ttl()
	sess := &Session{Identity: id, ID: base64.RawURLEncoding.EncodeToString(sid), Method: method, Expires: m.Store.now().Add(ttl).Unix()}
	value, err := m.Store.Seal(ctx, m.Cookies.SessionCookie(), sess)
	if err != nil {
		return nil, err
	}
	if len(value) > 3800 {
		return nil, fmt.Errorf("user %s is in %d groups, too many to keep in a session cookie", id.User, len(id.Groups))
	}
	http.SetCookie(w, m.Cookies.Cookie(m.Cookies.SessionCookie(), value, ttl))
	return sess, nil
}

// Get returns the request's session, or ErrNoSession, ErrInvalidSession, ErrSessionExpired or
// ErrSessionRevoked.
func (m *Sessions) Get(r *http.Request) (*Session, error) {
	ck, err := r.Cookie(m.Cookies.SessionCookie())
	if err != nil || ck.Value == "" {
		return nil, ErrNoSession
	}
	st, err := m.Store.current(r.Context())
	if err != nil {
		return nil, err
	}
	sess := &Session{}
	if err := unseal(st, m.Cookies.SessionCookie(), ck.Value, sess); err != nil {
		return nil, err
	}
	return sess, m.Valid(r.Context(), sess)
}

// Valid returns nil while sess has neither expired nor been signed out.
func (m *Sessions) Valid(ctx context.Context, sess *Session) error {
	if m.Store.now().Unix() >= sess.Expires {
		return ErrSessionExpired
	}
	st, err := m.Store.current(ctx)
	if err != nil {
		return err
	}
	if _, ok := st.revoked[sess.ID]; ok {
		return ErrSessionRevoked
	}
	return nil
}

// End signs the session out on every replica and clears the cookie.
func (m *Sessions) End(ctx context.Context, w http.ResponseWriter, sess *Session) error {
	if err := m.Store.Revoke(ctx, sess.ID, sess.Expires); err != nil {
		return err
	}
	m.Clear(w)
	return nil
}

// Clear removes the session cookie from the browser.
func (m *Sessions) Clear(w http.ResponseWriter) {
	http.SetCookie(w, m.Cookies.Cookie(m.Cookies.SessionCookie(), "", -1))
}
