package gitlabreceiver_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	watchtools "k8s.io/client-go/tools/watch"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil"
)

// The push both receivers get: a real Push Hook captured from gitlab.com (Tekton Triggers' own
// GitLab example), sent with the header set of a real GitLab 17.11 delivery. Every delivery replaces
// its commit with a unique one and gets a fresh Idempotency-Key and X-Gitlab-Event-UUID.
const (
	comparedPush       = "tekton_triggers/gitlab_com_push_event.json"
	comparedPushSHA    = "1a1736ec3d7b03349b31218a2f2c572c7c7206d6"
	comparedPushPath   = "dibyom/triggers"
	comparedPushID     = 16507326
	triggersShaLabel   = "bench.ferry.dev/sha"
	triggersSecretName = "gitlab-webhook"
)

var (
	buildsGVR       = ferryv1.GroupVersion.WithResource("builds")
	pipelineRunsGVR = schema.GroupVersionResource{Group: "tekton.dev", Version: "v1", Resource: "pipelineruns"}
)

// comparedDelivery is one delivery of the compared push.
type comparedDelivery struct {
	header http.Header
	body   []byte
	sha    string
}

// comparedPushes makes deliveries of the compared push with token.
type comparedPushes struct {
	header http.Header
	body   []byte
}

func newComparedPushes(t testing.TB, token string) *comparedPushes {
	t.Helper()
	body, err := os.ReadFile(filepath.Join(fixtures, comparedPush))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(body, []byte(comparedPushSHA)) {
		t.Fatalf("%s does not push %s", comparedPush, comparedPushSHA)
	}
	h := realHeaders(t, "Push Hook")
	h.Set("X-Gitlab-Token", token)
	return &comparedPushes{header: h, body: body}
}

// delivery is a delivery of commit sha, a new one (its own Idempotency-Key and X-Gitlab-Event-UUID).
func (p *comparedPushes) delivery(sha string) comparedDelivery {
	h := p.header.Clone()
	h.Set("Idempotency-Key", newUUID())
	h.Set("X-Gitlab-Event-UUID", newUUID())
	return comparedDelivery{header: h, body: bytes.ReplaceAll(p.body, []byte(comparedPushSHA), []byte(sha)), sha: sha}
}

// send posts d to url and returns the status.
func (d comparedDelivery) send(c *http.Client, url string) (int, error) {
	req, err := http.NewRequest(http.MethodPost, url, bytes.NewReader(d.body))
	if err != nil {
		return 0, err
	}
	req.Header = d.header.Clone()
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode, nil
}

// triggersSide is Tekton Triggers v0.36's answer to the same push, in a namespace of an API server:
// its core interceptors and EventListener sinks as processes of this machine (no Triggers
// controller is needed for them), an EventListener whose trigger has the GitLab interceptor check
// the token (X-Gitlab-Token) and the event type, and a TriggerBinding and TriggerTemplate that
// create a PipelineRun of the pushed commit, labelled with it.
type triggersSide struct {
	t    testing.TB
	api  *controlplane.APIServer
	opts controlplane.TriggersOptions
}

// startTriggers sets Triggers up in ns for deliveries with token; it skips the test when Triggers'
// binaries are not built.
func startTriggers(t testing.TB, api *controlplane.APIServer, c client.Client, ns, token string) *triggersSide {
	t.Helper()
	if _, err := controlplane.TriggersAssets(); err != nil {
		t.Skipf("Ferry is compared with Tekton Triggers here, whose binaries are not built: %v", err)
	}
	ctx := context.Background()
	opts := controlplane.TriggersOptions{Namespace: ns, ClientQPS: controlplane.Unthrottled, ClientBurst: int(controlplane.Unthrottled), LogDir: t.TempDir()}
	interceptors, err := controlplane.StartTriggersInterceptors(ctx, api, c, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := interceptors.Stop(context.Background()); err != nil {
			t.Errorf("failed to stop Triggers' interceptors: %v", err)
		}
	})
	objects := []map[string]any{
		{
			"apiVersion": "v1", "kind": "Secret",
			"metadata":   map[string]any{"name": triggersSecretName},
			"stringData": map[string]any{"token": token},
		},
		{
			"apiVersion": "triggers.tekton.dev/v1beta1", "kind": "TriggerBinding",
			"metadata": map[string]any{"name": "gitlab-push"},
			"spec": map[string]any{"params": []any{
				map[string]any{"name": "sha", "value": "$(body.checkout_sha)"},
				map[string]any{"name": "ref", "value": "$(body.ref)"},
				map[string]any{"name": "project", "value": "$(body.project.path_with_namespace)"},
				map[string]any{"name": "user", "value": "$(body.user_username)"},
			}},
		},
		{
			"apiVersion": "triggers.tekton.dev/v1beta1", "kind": "TriggerTemplate",
			"metadata": map[string]any{"name": "build"},
			"spec": map[string]any{
				"params": []any{
					map[string]any{"name": "sha"}, map[string]any{"name": "ref"},
					map[string]any{"name": "project"}, map[string]any{"name": "user"},
				},
				"resourcetemplates": []any{map[string]any{
					"apiVersion": "tekton.dev/v1", "kind": "PipelineRun",
					"metadata": map[string]any{
						"generateName": "push-",
						"labels":       map[string]any{triggersShaLabel: "$(tt.params.sha)"},
					},
					"spec": map[string]any{
						"pipelineRef": map[string]any{"name": "build"},
						"params": []any{
							map[string]any{"name": "revision", "value": "$(tt.params.sha)"},
							map[string]any{"name": "ref", "value": "$(tt.params.ref)"},
							map[string]any{"name": "project", "value": "$(tt.params.project)"},
							map[string]any{"name": "user", "value": "$(tt.params.user)"},
						},
					},
				}},
			},
		},
		{
			"apiVersion": "triggers.tekton.dev/v1beta1", "kind": "EventListener",
			"metadata": map[string]any{"name": "gitlab"},
			"spec": map[string]any{
				"serviceAccountName": "default",
				"triggers": []any{map[string]any{
					"name": "push",
					"interceptors": []any{map[string]any{
						"ref": map[string]any{"name": "gitlab", "kind": "ClusterInterceptor"},
						"params": []any{
							map[string]any{"name": "secretRef", "value": map[string]any{"secretName": triggersSecretName, "secretKey": "token"}},
							map[string]any{"name": "eventTypes", "value": []any{"Push Hook"}},
						},
					}},
					"bindings": []any{map[string]any{"ref": "gitlab-push"}},
					"template": map[string]any{"ref": "build"},
				}},
			},
		},
	}
	for _, o := range objects {
		u := &unstructured.Unstructured{Object: o}
		u.SetNamespace(ns)
		if err := c.Create(ctx, u); err != nil {
			t.Fatalf("failed to create %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}
	return &triggersSide{t: t, api: api, opts: opts}
}

// sink starts a sink of the EventListener with the client rate limit qps (0: client-go's
// default, 5 requests/s) and returns its URL.
func (s *triggersSide) sink(qps float64) string {
	s.t.Helper()
	opts := s.opts
	opts.ClientQPS, opts.ClientBurst = qps, int(qps)
	name := "gitlab"
	sink, err := controlplane.StartEventListenerSink(context.Background(), s.api, name, opts)
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() {
		if err := sink.Stop(); err != nil {
			s.t.Errorf("failed to stop Triggers' sink: %v", err)
		}
	})
	return sink.URL
}

// createdWatch watches a kind of object in a namespace and tells when an object of a commit is
// created, and how many there are.
type createdWatch struct {
	mu      sync.Mutex
	waiting map[string][]chan time.Time
	created map[string]int
}

// watchCreated watches gvr in ns until the test ends; shaOf is the commit an object is of.
func watchCreated(t testing.TB, cfg *rest.Config, gvr schema.GroupVersionResource, ns string, shaOf func(*unstructured.Unstructured) string) *createdWatch {
	t.Helper()
	dc, err := dynamic.NewForConfig(rest.CopyConfig(cfg))
	if err != nil {
		t.Fatal(err)
	}
	ri := dc.Resource(gvr).Namespace(ns)
	ctx, cancel := context.WithCancel(context.Background())
	list, err := ri.List(ctx, metav1.ListOptions{})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	rw, err := watchtools.NewRetryWatcherWithContext(ctx, list.GetResourceVersion(), &cache.ListWatch{
		WatchFuncWithContext: func(ctx context.Context, o metav1.ListOptions) (watch.Interface, error) {
			return ri.Watch(ctx, o)
		},
	})
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	w := &createdWatch{waiting: map[string][]chan time.Time{}, created: map[string]int{}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ev := range rw.ResultChan() {
			if ev.Type != watch.Added {
				continue
			}
			at := time.Now()
			u, ok := ev.Object.(*unstructured.Unstructured)
			if !ok {
				continue
			}
			sha := shaOf(u)
			w.mu.Lock()
			w.created[sha]++
			for _, ch := range w.waiting[sha] {
				ch <- at
			}
			delete(w.waiting, sha)
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		rw.Stop()
		cancel()
		<-done
	})
	return w
}

// expect returns a channel that receives the time an object of sha is seen created; call it
// before the delivery.
func (w *createdWatch) expect(sha string) <-chan time.Time {
	ch := make(chan time.Time, 1)
	w.mu.Lock()
	defer w.mu.Unlock()
	w.waiting[sha] = append(w.waiting[sha], ch)
	return ch
}

// count is how many objects of sha were seen created.
func (w *createdWatch) count(sha string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.created[sha]
}

func buildSHA(u *unstructured.Unstructured) string {
	sha, _, _ := unstructured.NestedString(u.Object, "spec", "revision")
	return sha
}

func pipelineRunSHA(u *unstructured.Unstructured) string { return u.GetLabels()[triggersShaLabel] }

// comparedProject creates the Ferry Project the compared push is for and returns its token.
func (e *env) comparedProject() string {
	e.t.Helper()
	return e.project("triggers", comparedPushPath, projectOptions{mutate: func(p *ferryv1.Project) {
		p.Spec.GitLab.ProjectID = comparedPushID
	}})
}

// TestWrongTokenAndRedeliveryAgainstTriggers sends the same deliveries to Ferry's receiver and to
// Tekton Triggers' EventListener (with the GitLab interceptor checking the token) and checks what
// a GitLab admin and an attacker see: Ferry refuses a wrong token with 401 where Triggers answers
// 202 (and builds nothing), and a delivery GitLab sends again (same Idempotency-Key and
// X-Gitlab-Event-UUID: a retry, or "Resend Request") builds once in Ferry and twice in Triggers.
// It runs where Triggers is built (make triggers), else it is skipped.
func TestWrongTokenAndRedeliveryAgainstTriggers(t *testing.T) {
	hub := testutil.CurrentHub(t)
	if _, err := controlplane.TriggersAssets(); err != nil {
		t.Skipf("Ferry is compared with Tekton Triggers here, whose binaries are not built: %v", err)
	}
	e := newEnv(t)
	token := e.comparedProject()
	triggers := startTriggers(t, hub.APIServer, e.c, e.ns, token)
	sinkURL := triggers.sink(controlplane.Unthrottled)
	builds := watchCreated(t, hub.Config, buildsGVR, e.ns, buildSHA)
	runs := watchCreated(t, hub.Config, pipelineRunsGVR, e.ns, pipelineRunSHA)
	pushes := newComparedPushes(t, token)
	c := &http.Client{Timeout: 30 * time.Second}

	// Triggers is ready when a delivery makes a PipelineRun (its informers have synced).
	testutil.EventuallyWithin(t, 60*time.Second, "Triggers to create a PipelineRun", func() (bool, error) {
		d := pushes.delivery(sha(int(time.Now().UnixNano() % 1e9)))
		seen := runs.expect(d.sha)
		if _, err := d.send(c, sinkURL); err != nil {
			return false, err
		}
		select {
		case <-seen:
			return true, nil
		case <-time.After(3 * time.Second):
			return false, fmt.Errorf("no PipelineRun of %s", d.sha)
		}
	})

	t.Run("wrong token", func(t *testing.T) {
		wrong := &comparedPushes{header: pushes.header.Clone(), body: pushes.body}
		wrong.header.Set("X-Gitlab-Token", token+"-wrong")
		d := wrong.delivery(sha(101))
		ferry, err := d.send(c, e.r.url)
		if err != nil {
			t.Fatal(err)
		}
		tekton, err := d.send(c, sinkURL)
		if err != nil {
			t.Fatal(err)
		}
		if ferry != http.StatusUnauthorized {
			t.Errorf("Ferry answered %d to a wrong token, want 401", ferry)
		}
		if tekton != http.StatusAccepted {
			t.Errorf("Triggers answered %d to a wrong token; it answered 202 in v0.36 (the lead Ferry keeps: GitLab shows the admin the wrong token)", tekton)
		}
		// A correct delivery after it: once both have built it, the wrong one would have too.
		ok := pushes.delivery(sha(102))
		built, ran := builds.expect(ok.sha), runs.expect(ok.sha)
		for _, url := range []string{e.r.url, sinkURL} {
			if _, err := ok.send(c, url); err != nil {
				t.Fatal(err)
			}
		}
		waitSeen(t, built, "Ferry's Build of the correct delivery")
		waitSeen(t, ran, "Triggers' PipelineRun of the correct delivery")
		if n, m := builds.count(d.sha), runs.count(d.sha); n != 0 || m != 0 {
			t.Errorf("a wrong token made %d Builds and %d PipelineRuns, want none", n, m)
		}
	})

	t.Run("redelivery", func(t *testing.T) {
		d := pushes.delivery(sha(201))
		built, ran := builds.expect(d.sha), runs.expect(d.sha)
		var ferry, tekton []int
		for range 2 {
			f, err := d.send(c, e.r.url)
			if err != nil {
				t.Fatal(err)
			}
			tk, err := d.send(c, sinkURL)
			if err != nil {
				t.Fatal(err)
			}
			ferry, tekton = append(ferry, f), append(tekton, tk)
		}
		waitSeen(t, built, "Ferry's Build")
		waitSeen(t, ran, "Triggers' PipelineRun")
		if ferry[0] != http.StatusCreated || ferry[1] != http.StatusOK {
			t.Errorf("Ferry answered %v to a delivery and its redelivery, want [201 200]", ferry)
		}
		// Triggers creates after it answers: wait for its second PipelineRun. Ferry created its
		// Build before its first answer, in the same API server, so by then its watch has seen
		// any second one.
		testutil.EventuallyWithin(t, 30*time.Second, "Triggers' second PipelineRun of one delivery sent twice (v0.36 made two; the lead Ferry keeps)", func() (bool, error) {
			n := runs.count(d.sha)
			return n == 2, fmt.Errorf("%d PipelineRuns, answers %v", n, tekton)
		})
		if n := builds.count(d.sha); n != 1 {
			t.Errorf("Ferry made %d Builds of one delivery sent twice, want 1", n)
		}
	})
}

// waitSeen waits for an object seen created.
func waitSeen(t testing.TB, seen <-chan time.Time, what string) {
	t.Helper()
	select {
	case <-seen:
	case <-time.After(30 * time.Second):
		t.Fatalf("%s was not created within 30s", what)
	}
}
