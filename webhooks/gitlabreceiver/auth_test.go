package gitlabreceiver

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func sign(key []byte, id, ts string, body []byte) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

func TestVerifySignature(t *testing.T) {
	key := []byte("0123456789abcdef0123456789abcdef")
	body := []byte(`{"object_kind":"push"}`)
	now := time.Unix(1_800_000_000, 0)
	ts := strconv.FormatInt(now.Unix(), 10)
	good := sign(key, "msg-1", ts, body)
	headers := func(id, ts, sig string) http.Header {
		h := http.Header{}
		if id != "" {
			h.Set("webhook-id", id)
		}
		if ts != "" {
			h.Set("webhook-timestamp", ts)
		}
		if sig != "" {
			h.Set("webhook-signature", sig)
		}
		return h
	}
	cases := []struct {
		name    string
		h       http.Header
		body    []byte
		wantErr string
	}{
		{"valid", headers("msg-1", ts, good), body, ""},
		{"one of several signatures", headers("msg-1", ts, "v1,AAAA "+good+" v2,zzz"), body, ""},
		{"tampered body", headers("msg-1", ts, good), []byte(`{"object_kind":"tag_push"}`), "no webhook-signature matches"},
		{"other id", headers("msg-2", ts, good), body, "no webhook-signature matches"},
		{"other key", headers("msg-1", ts, sign([]byte("other"), "msg-1", ts, body)), body, "no webhook-signature matches"},
		{"unknown version", headers("msg-1", ts, strings.Replace(good, "v1,", "v2,", 1)), body, "no webhook-signature matches"},
		{"missing signature", headers("msg-1", ts, ""), body, "missing"},
		{"missing id", headers("", ts, good), body, "missing"},
		{"stale", headers("msg-1", "1799999000", sign(key, "msg-1", "1799999000", body)), body, "more than 5m0s"},
		{"from the future", headers("msg-1", "1800001000", sign(key, "msg-1", "1800001000", body)), body, "more than 5m0s"},
		{"timestamp not a number", headers("msg-1", "yesterday", good), body, "not a Unix time"},
	}
	for _, c := range cases {
		err := verifySignature(key, c.h, c.body, now, 5*time.Minute)
		if c.wantErr == "" && err != nil || c.wantErr != "" && (err == nil || !strings.Contains(err.Error(), c.wantErr)) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.wantErr)
		}
	}
}

func TestNewWebhookSecret(t *testing.T) {
	secret := func(data map[string]string) *corev1.Secret {
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "hook"}, Data: map[string][]byte{}}
		for k, v := range data {
			s.Data[k] = []byte(v)
		}
		return s
	}
	key := base64.StdEncoding.EncodeToString([]byte("0123456789abcdef0123456789abcdef"))
	cases := []struct {
		name    string
		data    map[string]string
		problem string
		signed  bool
	}{
		{"token only", map[string]string{"token": "t0p"}, "", false},
		{"with a signing token", map[string]string{"token": "t0p", "signingToken": "whsec_" + key}, "", true},
		{"no token", map[string]string{"previousToken": "old"}, `Secret team/hook has no key "token"`, false},
		{"signing token without prefix", map[string]string{"token": "t0p", "signingToken": key}, "is not a GitLab signing token", false},
		{"signing token not base64", map[string]string{"token": "t0p", "signingToken": "whsec_!!!secret!!!"}, "is not a GitLab signing token", false},
	}
	for _, c := range cases {
		ws := newWebhookSecret(secret(c.data))
		if c.problem == "" && ws.problem != "" || c.problem != "" && !strings.Contains(ws.problem, c.problem) {
			t.Errorf("%s: problem = %q, want %q", c.name, ws.problem, c.problem)
		}
		for _, v := range c.data {
			if strings.Contains(ws.problem, v) {
				t.Errorf("%s: the problem reveals a secret value: %q", c.name, ws.problem)
			}
		}
		if (ws.signingKey != nil) != c.signed {
			t.Errorf("%s: signing key set = %v", c.name, ws.signingKey != nil)
		}
	}
	ws := newWebhookSecret(secret(map[string]string{"token": "new", "previousToken": "old"}))
	for token, ok := range map[string]bool{"new": true, "old": true, "": false, "ne": false, "new ": false, "other": false} {
		if ws.tokenMatches(token) != ok {
			t.Errorf("tokenMatches(%q) = %v", token, !ok)
		}
	}
	if newWebhookSecret(secret(map[string]string{"token": "x"})).tokenMatches("") {
		t.Error("an empty token must never match (no previousToken set)")
	}
}

func TestInstanceAndProjectMatching(t *testing.T) {
	for a, b := range map[string]string{
		"https://gitlab.example.com":        "https://GitLab.example.com/",
		"https://gitlab.example.com:443":    "http://gitlab.example.com",
		"https://example.com/gitlab/":       "https://example.com/gitlab",
		"http://127.0.0.1:8080":             "http://127.0.0.1:8080/",
		"https://gitlab.example.com:8443/x": "https://gitlab.example.com:8443/x",
	} {
		if instanceKey(a) != instanceKey(b) {
			t.Errorf("instanceKey(%q) = %q differs from instanceKey(%q) = %q", a, instanceKey(a), b, instanceKey(b))
		}
	}
	if instanceKey("https://gitlab.example.com") == instanceKey("https://gitlab.example.org") || instanceKey("https://example.com/a") == instanceKey("https://example.com/b") {
		t.Error("different instances must not match")
	}

	project := func(url, path string, id int64) *ferryv1.Project {
		return &ferryv1.Project{Spec: ferryv1.ProjectSpec{GitLab: ferryv1.GitLabProject{URL: url, ProjectPath: path, ProjectID: id}}}
	}
	cases := []struct {
		name     string
		p        *ferryv1.Project
		instance string
		key      projectKey
		want     bool
	}{
		{"path", project("https://gl.example.com", "Group/App", 0), "", projectKey{path: "group/app", id: 9}, true},
		{"path and instance", project("https://gl.example.com", "group/app", 0), "https://gl.example.com", projectKey{path: "group/app"}, true},
		{"other instance", project("https://gl.example.com", "group/app", 0), "https://gitlab.com", projectKey{path: "group/app"}, false},
		{"other path", project("https://gl.example.com", "group/app", 0), "", projectKey{path: "group/app2"}, false},
		{"renamed, matched by ID", project("https://gl.example.com", "group/old", 9), "", projectKey{path: "group/new", id: 9}, true},
		{"same path, other project ID", project("https://gl.example.com", "group/app", 9), "", projectKey{path: "group/app", id: 10}, false},
		{"ID set, payload without ID", project("https://gl.example.com", "group/app", 9), "", projectKey{path: "group/app"}, true},
		{"nothing named", project("https://gl.example.com", "group/app", 0), "", projectKey{}, false},
	}
	for _, c := range cases {
		if got := matches(c.p, c.instance, c.key); got != c.want {
			t.Errorf("%s: matches = %v, want %v", c.name, got, c.want)
		}
	}
}

// countingReader answers Secret reads and counts them.
type countingReader struct {
	client.Reader
	gets   atomic.Int32
	secret *corev1.Secret
}

func (r *countingReader) Get(_ context.Context, key client.ObjectKey, obj client.Object, _ ...client.GetOption) error {
	r.gets.Add(1)
	if r.secret == nil {
		return apierrors.NewNotFound(schema.GroupResource{Resource: "secrets"}, key.Name)
	}
	r.secret.DeepCopyInto(obj.(*corev1.Secret))
	return nil
}

func TestSecretCache(t *testing.T) {
	r := &countingReader{secret: &corev1.Secret{Data: map[string][]byte{"token": []byte("one")}}}
	c := newSecretCache(r, 10*time.Second)
	now := time.Unix(1_800_000_000, 0)
	c.now = func() time.Time { return now }
	key := types.NamespacedName{Namespace: "team", Name: "hook"}
	ctx := context.Background()

	for range 5 {
		if ws, _, err := c.get(ctx, key, false); err != nil || !ws.tokenMatches("one") {
			t.Fatalf("get: %v", err)
		}
	}
	if n := r.gets.Load(); n != 1 {
		t.Fatalf("reads = %d, want 1 within the TTL", n)
	}
	// A mismatch may force a re-read, but only once per refresh interval.
	r.secret.Data["token"] = []byte("two")
	for range 5 {
		if _, _, err := c.get(ctx, key, true); err != nil {
			t.Fatal(err)
		}
	}
	if n := r.gets.Load(); n != 1 {
		t.Fatalf("reads = %d: a forced re-read within a second of the last read must be skipped", n)
	}
	now = now.Add(1500 * time.Millisecond)
	ws, fresh, _ := c.get(ctx, key, true)
	if !fresh || !ws.tokenMatches("two") || r.gets.Load() != 2 {
		t.Fatalf("after a second a forced re-read must read the rotated Secret (fresh=%v, reads=%d)", fresh, r.gets.Load())
	}
	// The TTL expires.
	r.secret.Data["token"] = []byte("three")
	now = now.Add(11 * time.Second)
	if ws, _, _ := c.get(ctx, key, false); !ws.tokenMatches("three") {
		t.Fatal("after the TTL the Secret must be read again")
	}
	// A missing Secret is a problem, cached like any answer.
	r.secret = nil
	now = now.Add(11 * time.Second)
	ws, _, err := c.get(ctx, key, false)
	if err != nil || !strings.Contains(ws.problem, "Secret team/hook not found") || ws.tokenMatches("three") {
		t.Fatalf("missing Secret: %+v %v", ws, err)
	}
}
