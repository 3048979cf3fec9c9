package gitlabreceiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Keys of a Project's webhook Secret.
const (
	// TokenKey is the secret token GitLab sends in X-Gitlab-Token.
	TokenKey = "token"
	// PreviousTokenKey is accepted as well while a token is rotated.
	PreviousTokenKey = "previousToken"
	// SigningTokenKey is GitLab's webhook signing token (whsec_…); when present, every delivery
	// must carry a valid webhook-signature.
	SigningTokenKey = "signingToken"
)

// projectIndex indexes Projects by lower-cased GitLab path ("path:group/app") and by numeric
// project ID ("id:42").
const projectIndex = "ferry.dev/gitlab-project"

func projectIndexKeys(o client.Object) []string {
	p, ok := o.(*ferryv1.Project)
	if !ok {
		return nil
	}
	keys := []string{"path:" + strings.ToLower(p.Spec.GitLab.ProjectPath)}
	if p.Spec.GitLab.ProjectID != 0 {
		keys = append(keys, "id:"+strconv.FormatInt(p.Spec.GitLab.ProjectID, 10))
	}
	return keys
}

// findProjects returns the Projects, in any namespace, that a delivery from instance (the
// X-Gitlab-Instance header, possibly empty) about key is for.
func findProjects(ctx context.Context, r client.Reader, instance string, key projectKey) ([]ferryv1.Project, error) {
	seen := map[types.NamespacedName]bool{}
	var out []ferryv1.Project
	lookup := func(indexKey string) error {
		var list ferryv1.ProjectList
		// Read-only use: no need for the cache to copy every Project.
		if err := r.List(ctx, &list, client.MatchingFields{projectIndex: indexKey}, client.UnsafeDisableDeepCopy); err != nil {
			return fmt.Errorf("failed to look up Projects: %w", err)
		}
		for _, p := range list.Items {
			nn := types.NamespacedName{Namespace: p.Namespace, Name: p.Name}
			if seen[nn] || !p.DeletionTimestamp.IsZero() || !matches(&p, instance, key) {
				continue
			}
			seen[nn] = true
			out = append(out, *p.DeepCopy())
		}
		return nil
	}
	if key.path != "" {
		if err := lookup("path:" + strings.ToLower(key.path)); err != nil {
			return nil, err
		}
	}
	if key.id != 0 {
		if err := lookup("id:" + strconv.FormatInt(key.id, 10)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// matches decides whether a Project is the one a payload names. A Project with spec.gitlab.
// projectID matches that ID (which survives renames) and refuses another ID on the same path (a
// project deleted and re-created); otherwise the path decides, case-insensitively. When GitLab says
// which instance it is, the Project's URL must name it too.
func matches(p *ferryv1.Project, instance string, key projectKey) bool {
	if instance != "" && instanceKey(p.Spec.GitLab.URL) != instanceKey(instance) {
		return false
	}
	if id := p.Spec.GitLab.ProjectID; id != 0 && key.id != 0 {
		return id == key.id
	}
	return key.path != "" && strings.EqualFold(p.Spec.GitLab.ProjectPath, key.path)
}

// instanceKey reduces a GitLab base URL to host[:port][/path], lower-case, without default port,
// scheme or trailing slash: GitLab's X-Gitlab-Instance is its external_url, which may differ in
// scheme from the URL Ferry uses behind a TLS-terminating proxy.
func instanceKey(raw string) string {
	raw = strings.TrimSpace(raw)
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return strings.ToLower(strings.TrimSuffix(raw, "/"))
	}
	host := strings.ToLower(u.Host)
	if (u.Scheme == "https" && strings.HasSuffix(host, ":443")) || (u.Scheme == "http" && strings.HasSuffix(host, ":80")) {
		host = host[:strings.LastIndex(host, ":")]
	}
	return host + strings.TrimSuffix(u.Path, "/")
}

// webhookSecret is what Ferry keeps of a Project's webhook Secret.
type webhookSecret struct {
	token, previousToken []byte
	// signingKey is the decoded key of the signing token, nil when the Secret has none.
	signingKey []byte
	// problem says why the Secret cannot authenticate anything (missing, no token, bad signing
	// token); it never contains a secret value.
	problem string
}

func newWebhookSecret(s *corev1.Secret) webhookSecret {
	ws := webhookSecret{token: s.Data[TokenKey], previousToken: s.Data[PreviousTokenKey]}
	if len(ws.token) == 0 {
		ws.problem = fmt.Sprintf("Secret %s/%s has no key %q", s.Namespace, s.Name, TokenKey)
		return ws
	}
	if st := strings.TrimSpace(string(s.Data[SigningTokenKey])); st != "" {
		key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(st, "whsec_"))
		if err != nil || !strings.HasPrefix(st, "whsec_") || len(key) == 0 {
			ws.problem = fmt.Sprintf("key %q of Secret %s/%s is not a GitLab signing token (whsec_<base64>)", SigningTokenKey, s.Namespace, s.Name)
			return ws
		}
		ws.signingKey = key
	}
	return ws
}

// equalSecret compares in constant time, also when the lengths differ.
func equalSecret(got string, want []byte) bool {
	if len(want) == 0 {
		return false
	}
	a, b := sha256.Sum256([]byte(got)), sha256.Sum256(want)
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (ws webhookSecret) tokenMatches(token string) bool {
	current := equalSecret(token, ws.token)
	previous := equalSecret(token, ws.previousToken)
	return current || previous
}

// errUnauthorized is every authentication failure; its text is the only thing a caller sees.
var errUnauthorized = errors.New("unauthorized: the X-Gitlab-Token (or webhook signature) does not match a Ferry Project for this GitLab project")

// verifySignature checks a Standard Webhooks signature: HMAC-SHA256 with the signing key over
// "<webhook-id>.<webhook-timestamp>.<body>", sent as one or more "v1,<base64>" in
// webhook-signature, with a timestamp no further than tolerance from now.
func verifySignature(key []byte, h http.Header, body []byte, now time.Time, tolerance time.Duration) error {
	id, ts, sigs := h.Get("webhook-id"), h.Get("webhook-timestamp"), h.Get("webhook-signature")
	if id == "" || ts == "" || sigs == "" {
		return errors.New("the webhook-id, webhook-timestamp or webhook-signature header is missing")
	}
	sec, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return fmt.Errorf("webhook-timestamp %q is not a Unix time", ts)
	}
	if d := now.Sub(time.Unix(sec, 0)); d > tolerance || d < -tolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now, more than %s", d.Round(time.Second), tolerance)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for sig := range strings.FieldsSeq(sigs) {
		version, value, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no webhook-signature matches the body")
}

// secretCache keeps webhook Secrets, read with an uncached reader, for a short time: webhook
// Secrets live in the Projects' namespaces, which the manager does not watch.
type secretCache struct {
	reader client.Reader
	ttl    time.Duration
	// refreshEvery bounds how often a Secret is re-read because a token did not match it (a
	// rotation), so that wrong tokens cannot make the receiver hammer the API server.
	refreshEvery time.Duration
	now          func() time.Time

	group   singleflight.Group
	mu      sync.Mutex
	entries map[types.NamespacedName]*secretEntry
	gets    int
}

type secretEntry struct {
	secret  webhookSecret
	fetched time.Time
}

func newSecretCache(r client.Reader, ttl time.Duration) *secretCache {
	return &secretCache{reader: r, ttl: ttl, refreshEvery: time.Second, now: time.Now, entries: map[types.NamespacedName]*secretEntry{}}
}

// get returns the Secret, from the cache when younger than the TTL; fresh re-reads it unless it
// was read within refreshEvery. The bool says whether the answer came from a read just now.
func (c *secretCache) get(ctx context.Context, key types.NamespacedName, fresh bool) (webhookSecret, bool, error) {
	now := c.now()
	c.mu.Lock()
	e := c.entries[key]
	c.gets++
	if c.gets%1024 == 0 {
		c.sweep(now)
	}
	c.mu.Unlock()
	if e != nil {
		age := now.Sub(e.fetched)
		if age < c.ttl && (!fresh || age < c.refreshEvery) {
			return e.secret, false, nil
		}
	}
	v, err, _ := c.group.Do(key.String(), func() (any, error) {
		s := &corev1.Secret{}
		var ws webhookSecret
		switch err := c.reader.Get(ctx, key, s); {
		case apierrors.IsNotFound(err):
			ws = webhookSecret{problem: fmt.Sprintf("Secret %s not found", key)}
		case err != nil:
			return nil, fmt.Errorf("failed to read the webhook Secret %s: %w", key, err)
		default:
			ws = newWebhookSecret(s)
		}
		c.mu.Lock()
		c.entries[key] = &secretEntry{secret: ws, fetched: c.now()}
		c.mu.Unlock()
		return ws, nil
	})
	if err != nil {
		return webhookSecret{}, false, err
	}
	return v.(webhookSecret), true, nil
}

// sweep drops entries long expired (Projects deleted or renamed).
func (c *secretCache) sweep(now time.Time) {
	for k, e := range c.entries {
		if now.Sub(e.fetched) > 10*c.ttl {
			delete(c.entries, k)
		}
	}
}
