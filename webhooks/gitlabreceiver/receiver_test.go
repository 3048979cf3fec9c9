package gitlabreceiver_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestMain(m *testing.M) {
	os.Exit(testutil.RunWithHub(m, controlplane.APIServerOptions{}))
}

// fixtures is the GitLab webhook corpus (see testdata/gitlab-webhooks/SOURCES.md).
const fixtures = "testdata/gitlab-webhooks"

// instance is the X-Gitlab-Instance of the corpus's real header set.
const instance = "https://hellogitlab.top"

// testMaxBody is the receiver's body cap in these tests.
const testMaxBody = 1 << 20

// receiver is a running manager with only the GitLab receiver.
type receiver struct {
	url  string
	stop func()
}

// startReceiver runs Ferry's manager against the hub with the receiver on a loopback port and no
// controllers, until stop or the end of the test.
func startReceiver(t testing.TB) *receiver {
	t.Helper()
	return startReceiverWith(t, nil)
}

// startReceiverWith is startReceiver with changed manager options.
func startReceiverWith(t testing.TB, mutate func(*manager.Options)) *receiver {
	t.Helper()
	hub := testutil.CurrentHub(t)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
	if err := hub.Client.Create(context.Background(), ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	opts := manager.Options{
		Namespace:            testutil.FerryNamespace,
		MetricsAddr:          "0",
		ProbeAddr:            "0",
		Controllers:          []string{"-*"},
		ReceiverAddr:         "127.0.0.1:0",
		ReceiverMaxBodyBytes: testMaxBody,
	}
	if mutate != nil {
		mutate(&opts)
	}
	m, err := manager.New(hub.Config, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	stopped := false
	r := &receiver{stop: func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		if err := <-done; err != nil {
			t.Errorf("the manager stopped with: %v", err)
		}
	}}
	t.Cleanup(r.stop)
	testutil.EventuallyWithin(t, 30*time.Second, "the receiver to listen", func() (bool, error) {
		return m.Receiver.Addr() != "", nil
	})
	r.url = "http://" + m.Receiver.Addr() + "/hooks/gitlab"
	return r
}

// defaultTriggers track what most of the corpus pushes to.
var defaultTriggers = ferryv1.Triggers{Branches: []string{"main", "master"}, Tags: []string{"v*"}, MergeRequests: true}

// env is one test's namespace and receiver.
type env struct {
	t  testing.TB
	c  client.Client
	ns string
	r  *receiver
}

func newEnv(t testing.TB) *env {
	t.Helper()
	hub := testutil.CurrentHub(t)
	return &env{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), r: startReceiver(t)}
}

// projectOptions change the Project or its webhook Secret.
type projectOptions struct {
	mutate func(*ferryv1.Project)
	// secret replaces the Secret's data (default: a random token).
	secret map[string]string
}

// project creates a Project for a GitLab path with its webhook Secret, waits until the receiver
// knows it, and returns the Secret's token.
func (e *env) project(name, path string, opts projectOptions) string {
	e.t.Helper()
	ctx := context.Background()
	data := opts.secret
	if data == nil {
		data = map[string]string{"token": "tok-" + name + "-" + randomHex(8)}
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name + "-webhook"}, Data: map[string][]byte{}}
	for k, v := range data {
		secret.Data[k] = []byte(v)
	}
	if err := e.c.Create(ctx, secret); err != nil {
		e.t.Fatal(err)
	}
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL:              instance,
				ProjectPath:      path,
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: secret.Name},
			},
			Repository: ferryv1.Repository{CloneURL: instance + "/" + path + ".git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/" + name},
			Triggers:   defaultTriggers,
		},
	}
	if opts.mutate != nil {
		opts.mutate(p)
	}
	if err := e.c.Create(ctx, p); err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() {
		_ = e.c.Delete(ctx, p)
		_ = e.c.Delete(ctx, secret)
	})
	if data["token"] != "" {
		e.waitForProject(p, data)
	}
	return data["token"]
}

// waitForProject posts a branch deletion (authenticated, never built) until the receiver's cache
// has the Project and answers 200.
func (e *env) waitForProject(p *ferryv1.Project, secret map[string]string) {
	e.t.Helper()
	body := fmt.Appendf(nil, `{"object_kind":"push","ref":"refs/heads/ferry-probe","before":"%s","after":"%s","checkout_sha":null,"project_id":%d,"project":{"path_with_namespace":%q}}`,
		strings.Repeat("1", 40), strings.Repeat("0", 40), p.Spec.GitLab.ProjectID, p.Spec.GitLab.ProjectPath)
	testutil.EventuallyWithin(e.t, 20*time.Second, "the receiver to know Project "+p.Name, func() (bool, error) {
		h := http.Header{}
		h.Set("X-Gitlab-Event", "Push Hook")
		h.Set("X-Gitlab-Token", secret["token"])
		h.Set("X-Gitlab-Instance", p.Spec.GitLab.URL)
		if st := secret["signingToken"]; st != "" {
			signDelivery(h, st, newUUID(), time.Now(), body)
		}
		r := post(e.t, e.r.url, h, body)
		return r.status == http.StatusOK, fmt.Errorf("%d %s", r.status, r.body)
	})
}

type reply struct {
	status int
	body   string
	answer struct {
		Result  string   `json:"result"`
		Builds  []string `json:"builds"`
		Reason  string   `json:"reason"`
		Message string   `json:"message"`
		Error   string   `json:"error"`
	}
}

func post(t testing.TB, url string, h http.Header, body []byte) reply {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = h.Clone()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	r := reply{status: resp.StatusCode, body: string(b)}
	if err := json.Unmarshal(b, &r.answer); err != nil {
		t.Fatalf("the answer is not JSON: %q", b)
	}
	return r
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x", b)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

// realHeaders is the header set of a real GitLab 17.11.1-ee delivery, with a fresh Idempotency-Key.
func realHeaders(t testing.TB, event string) http.Header {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtures, "headers_real_gitlab_17.11.1-ee.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]string
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatal(err)
	}
	h := http.Header{}
	for k, v := range m {
		h.Set(k, v)
	}
	h.Set("X-Gitlab-Event", event)
	h.Set("Idempotency-Key", newUUID())
	return h
}

// loadFixture returns a corpus file as a delivery: the bundles (requests/ and the *_with_headers
// captures) carry their own headers; bare payloads get the real header set with the event GitLab
// would name for them.
func loadFixture(t testing.TB, rel string) (http.Header, []byte) {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(fixtures, rel))
	if err != nil {
		t.Fatal(err)
	}
	var bundle struct {
		Headers map[string]string `json:"headers"`
		Body    json.RawMessage   `json:"body"`
	}
	if err := json.Unmarshal(raw, &bundle); err == nil && bundle.Headers != nil && bundle.Body != nil {
		h := http.Header{}
		for k, v := range bundle.Headers {
			h.Set(k, v)
		}
		return h, bundle.Body
	}
	var payload map[string]any
	if err := json.Unmarshal(raw, &payload); err != nil {
		t.Fatal(err)
	}
	if _, derived := payload["_derived_note"]; derived {
		// The derived file asks for its note to be removed before use.
		delete(payload, "_derived_note")
		raw, _ = json.Marshal(payload)
	}
	event := "System Hook"
	switch payload["object_kind"] {
	case "push":
		event = "Push Hook"
	case "tag_push":
		event = "Tag Push Hook"
	case "merge_request":
		event = "Merge Request Hook"
	case "note":
		event = "Note Hook"
	case "pipeline":
		event = "Pipeline Hook"
	case "build":
		event = "Job Hook"
	case "release":
		event = "Release Hook"
	}
	return realHeaders(t, event), raw
}

// projectPath is the path_with_namespace a payload names ("" when none).
func projectPath(body []byte) string {
	var p struct {
		Project struct {
			Path string `json:"path_with_namespace"`
		} `json:"project"`
	}
	_ = json.Unmarshal(body, &p)
	return p.Project.Path
}

func listBuilds(t testing.TB, c client.Client, ns, project string) []ferryv1.Build {
	t.Helper()
	var list ferryv1.BuildList
	if err := c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{ferryv1.ProjectLabel: project}); err != nil {
		t.Fatal(err)
	}
	return list.Items
}

func mustContain(t testing.TB, what, got, want string) {
	t.Helper()
	if !strings.Contains(got, want) {
		t.Errorf("%s = %q, want it to contain %q", what, got, want)
	}
}
