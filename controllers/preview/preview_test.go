package preview_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/preview"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/webhooks/gitlabreceiver"
)

// apiToken must never appear in a log line, event, condition or error.
const apiToken = "glpat-preview-token-that-must-not-leak-3"

var logs *testutil.Logs

func TestMain(m *testing.M) {
	logs = testutil.CaptureLogs()
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{})
	if sharedCluster != nil {
		_ = sharedCluster.Stop()
	}
	if code != 0 {
		for _, line := range strings.Split(logs.String(), "\n") {
			if strings.Contains(line, "ERROR") || strings.Contains(line, "preview") {
				fmt.Fprintln(os.Stderr, line)
			}
		}
	}
	os.Exit(logs.Leaked(code, "the GitLab token", apiToken))
}

var (
	clusterOnce   sync.Once
	sharedCluster *controlplane.Cluster
	clusterName   string
	clusterErr    error
	clusterClient client.Client
)

// targetCluster starts one simulated cluster for the package's tests and registers it as a
// Cluster on the hub.
func targetCluster(t *testing.T) (string, client.Client) {
	t.Helper()
	hub := testutil.CurrentHub(t)
	clusterOnce.Do(func() {
		ctx := context.Background()
		dir, err := os.MkdirTemp("", "preview-cluster-")
		if err != nil {
			clusterErr = err
			return
		}
		sharedCluster, clusterErr = controlplane.StartCluster(ctx, controlplane.ClusterOptions{
			APIServer: controlplane.APIServerOptions{Name: "previews", Dir: filepath.Join(dir, "cluster")},
		})
		if clusterErr != nil {
			return
		}
		kubeconfig, err := os.ReadFile(sharedCluster.KubeconfigPath)
		if err != nil {
			clusterErr = err
			return
		}
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
		if err := hub.Client.Create(ctx, ns); client.IgnoreAlreadyExists(err) != nil {
			clusterErr = err
			return
		}
		clusterName = releasetest.Unique("previews")
		secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: clusterName + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
		if clusterErr = hub.Client.Create(ctx, secret); clusterErr != nil {
			return
		}
		if clusterErr = hub.Client.Create(ctx, &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: clusterName}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: secret.Name}}}); clusterErr != nil {
			return
		}
		clusterClient, clusterErr = client.New(sharedCluster.Config, client.Options{Scheme: manager.Scheme()})
	})
	if clusterErr != nil {
		t.Fatal(clusterErr)
	}
	return clusterName, clusterClient
}

// env is a simulated GitLab with a project and a merge request, a Project with previews on the
// shared simulated cluster, and a manager running the preview controller and the receiver.
type env struct {
	t       *testing.T
	c       client.Client
	target  client.Client
	ns      string
	project string
	fake    *gitlabsim.Server
	gid     int64
	commits []string
	clock   *clock
	// failDeletes is how many namespace deletions on the target cluster fail.
	failDeletes atomic.Int32
}

type clock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = c.now.Add(d)
}

// faultyClusters fails namespace deletions while the env says so.
type faultyClusters struct {
	cache *clusters.Cache
	e     *env
}

func (f *faultyClusters) Client(ctx context.Context, name string) (client.Client, error) {
	c, err := f.cache.Client(ctx, name)
	if err != nil {
		return nil, err
	}
	return &faultyClient{Client: c, e: f.e}, nil
}

// faultyClient fails namespace deletions while the env says so.
type faultyClient struct {
	client.Client
	e *env
}

func (c *faultyClient) Delete(ctx context.Context, obj client.Object, opts ...client.DeleteOption) error {
	if _, ok := obj.(*corev1.Namespace); ok && c.e.failDeletes.Load() > 0 {
		c.e.failDeletes.Add(-1)
		return errors.New("simulated: the cluster refused to delete the namespace")
	}
	return c.Client.Delete(ctx, obj, opts...)
}

func newEnv(t *testing.T, settings ferryv1.PreviewSettings) *env {
	t.Helper()
	hub := testutil.CurrentHub(t)
	cluster, target := targetCluster(t)
	fake := gitlabsim.New()
	t.Cleanup(fake.Close)
	fake.AddUser("ferry-bot", apiToken)
	fake.AddUser("alice", "alice-token")
	e := &env{t: t, c: hub.Client, target: target, ns: testutil.Namespace(t, hub.Client), fake: fake,
		project: releasetest.Unique("shop"), clock: &clock{now: time.Now()}}
	e.gid = fake.AddProject(gitlabsim.Project{PathWithNamespace: "team/shop"})
	if err := fake.SetRole(e.gid, "alice", gitlabsim.DeveloperAccess); err != nil {
		t.Fatal(err)
	}
	parent := []string(nil)
	for i := range 4 {
		sha, err := fake.AddCommit(e.gid, gitlabsim.Commit{Message: fmt.Sprintf("commit %d", i), ParentIDs: parent})
		if err != nil {
			t.Fatal(err)
		}
		e.commits = append(e.commits, sha)
		parent = []string{sha}
	}
	if err := fake.SetBranch(e.gid, "main", e.commits[0]); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	for name, data := range map[string]string{"shop-webhook": "hook-secret", "shop-gitlab": apiToken} {
		if err := e.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: name}, Data: map[string][]byte{"token": []byte(data)}}); err != nil {
			t.Fatal(err)
		}
	}
	// The registry needs credentials to pull: the Project's pull Secret goes to its previews.
	if err := e.c.Create(ctx, pullSecret(e.ns)); err != nil {
		t.Fatal(err)
	}
	settings.Enabled = true
	settings.Cluster = cluster
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: e.project},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL: fake.URL, ProjectPath: "team/shop", ProjectID: e.gid,
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: "shop-webhook"},
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: "shop-gitlab"},
			},
			Repository: ferryv1.Repository{CloneURL: fake.URL + "/team/shop.git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/shop", PullSecretRef: &ferryv1.LocalObjectReference{Name: "shop-pull"}},
			Triggers:   ferryv1.Triggers{Branches: []string{"main"}, MergeRequests: true},
			Preview:    &settings,
		},
	}
	if err := e.c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	e.start()
	return e
}

func (e *env) start() {
	hub := testutil.CurrentHub(e.t)
	mgr, err := ctrl.NewManager(hub.Config, ctrl.Options{Scheme: manager.Scheme(), Metrics: metricsserver.Options{BindAddress: "0"}, HealthProbeBindAddress: "0",
		Controller: config.Controller{SkipNameValidation: ptr.To(true)}})
	if err != nil {
		e.t.Fatal(err)
	}
	cache := &clusters.Cache{Loader: &clusters.Loader{Reader: mgr.GetClient(), Namespace: testutil.FerryNamespace}, Reader: mgr.GetClient(), Scheme: mgr.GetScheme()}
	r := &preview.Reconciler{
		Client: mgr.GetClient(), APIReader: mgr.GetAPIReader(),
		Clusters:  &faultyClusters{cache: cache, e: e},
		Recorder:  mgr.GetEventRecorder("ferry-preview-controller"),
		UIBaseURL: "https://ferry.example.com", FerryNamespace: testutil.FerryNamespace,
		Now: e.clock.Now,
	}
	if err := r.SetupWithManager(mgr); err != nil {
		e.t.Fatal(err)
	}
	recv, err := gitlabreceiver.New(mgr, gitlabreceiver.Options{Addr: "127.0.0.1:0"})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := mgr.Add(recv); err != nil {
		e.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	e.t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("the manager stopped with: %v", err)
		}
	})
	testutil.EventuallyWithin(e.t, 30*time.Second, "the receiver to listen", func() (bool, error) { return recv.Addr() != "", nil })
	if err := e.fake.AddHook(e.gid, gitlabsim.Hook{URL: "http://" + recv.Addr() + "/hooks/gitlab", Token: "hook-secret", MergeRequestsEvents: true}); err != nil {
		e.t.Fatal(err)
	}
}

// openMR opens a merge request at commits[i] and returns its IID and the Build the receiver made.
func (e *env) openMR(i int) (int64, *ferryv1.Build) {
	e.t.Helper()
	iid, d, err := e.fake.OpenMergeRequest(context.Background(), e.gid, gitlabsim.MergeRequest{SourceBranch: fmt.Sprintf("feature-%d", i), TargetBranch: "main", SHA: e.commits[i], Title: "Feature"}, "alice")
	if err != nil || len(d) != 1 || d[0].Status != http.StatusCreated {
		e.t.Fatalf("MR delivery: %+v %v", d, err)
	}
	return iid, e.buildOf(e.commits[i])
}

// buildOf waits for the receiver's Build of a commit.
func (e *env) buildOf(sha string) *ferryv1.Build {
	e.t.Helper()
	var found *ferryv1.Build
	testutil.Eventually(e.t, "a Build of "+sha, func() (bool, error) {
		list := &ferryv1.BuildList{}
		if err := e.c.List(context.Background(), list, client.InNamespace(e.ns)); err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].Spec.Revision == sha {
				found = &list.Items[i]
				return true, nil
			}
		}
		return false, nil
	})
	return found
}

// succeed plays the Build controller: the Build pushed an image and has deploy settings.
func (e *env) succeed(b *ferryv1.Build) {
	e.t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &ferryv1.Build{}
		if err := e.c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return err
		}
		now := metav1.Now()
		cur.Status.Image = releasetest.Image(b.Name)
		cur.Status.Deploy = releasetest.Deploy(1, nil)
		cur.Status.StartTime, cur.Status.CompletionTime = &now, &now
		meta.SetStatusCondition(&cur.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "image pushed"})
		return e.c.Status().Update(context.Background(), cur)
	})
	if err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) previewName(iid int64) string { return ferryv1.PreviewName(e.project, iid) }

// waitPreview waits until the Preview satisfies cond.
func (e *env) waitPreview(iid int64, what string, cond func(*ferryv1.Preview) bool) *ferryv1.Preview {
	e.t.Helper()
	pv := &ferryv1.Preview{}
	testutil.Eventually(e.t, what, func() (bool, error) {
		if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: e.previewName(iid)}, pv); err != nil {
			return false, err
		}
		return cond(pv), fmt.Errorf("preview status %+v", pv.Status)
	})
	return pv
}

func (e *env) waitPreviewGone(iid int64) {
	e.t.Helper()
	testutil.Eventually(e.t, "preview "+e.previewName(iid)+" to be gone", func() (bool, error) {
		err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: e.previewName(iid)}, &ferryv1.Preview{})
		return apierrors.IsNotFound(err), err
	})
}

// waitNamespaceDeleted waits until the preview namespace is gone or terminating.
func (e *env) waitNamespaceDeleted(iid int64) {
	e.t.Helper()
	testutil.Eventually(e.t, "namespace "+e.previewName(iid)+" deleted", func() (bool, error) {
		ns := &corev1.Namespace{}
		err := e.target.Get(context.Background(), client.ObjectKey{Name: e.previewName(iid)}, ns)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && !ns.DeletionTimestamp.IsZero(), err
	})
}

func ready(pv *ferryv1.Preview) bool {
	return meta.IsStatusConditionTrue(pv.Status.Conditions, ferryv1.ReadyCondition)
}

// previewNotes are the merge request's notes that tell about the preview.
func (e *env) previewNotes(iid int64) []gitlabsim.Note {
	var out []gitlabsim.Note
	for _, n := range e.fake.Notes(e.gid, iid) {
		if strings.Contains(n.Body, "<!-- ferry-preview:") {
			out = append(out, n)
		}
	}
	return out
}

// TestPreviewLifecycle: a merge request's successful Build runs in {project}-mr-{iid} and the
// merge request gets one note (a 503 on the create delays it, never doubles it); a new push
// moves the preview to the new Build and edits that note (through a 429); merging deletes the
// namespace and the Preview.
func TestPreviewLifecycle(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	ctx := context.Background()
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPost, PathContains: "/notes", Status: http.StatusServiceUnavailable, Times: 1})
	iid, b1 := e.openMR(1)
	e.succeed(b1)
	pv := e.waitPreview(iid, "the preview to be ready with its note", func(pv *ferryv1.Preview) bool {
		return ready(pv) && pv.Status.NoteID != 0 && pv.Status.DeployedBuild == b1.Name
	})
	ns := &corev1.Namespace{}
	if err := e.target.Get(ctx, client.ObjectKey{Name: e.previewName(iid)}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels[ferryv1.PreviewLabel] != pv.Name || ns.Labels[ferryv1.EnvironmentLabel] != preview.EnvironmentName {
		t.Errorf("namespace labels = %v", ns.Labels)
	}
	d := &appsv1.Deployment{}
	if err := e.target.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: e.project}, d); err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != releasetest.Image(b1.Name) {
		t.Errorf("deployment image = %s, want %s", img, releasetest.Image(b1.Name))
	}
	if ps := d.Spec.Template.Spec.ImagePullSecrets; len(ps) != 1 || ps[0].Name != "shop-pull" {
		t.Errorf("deployment imagePullSecrets = %v, want the Project's shop-pull", ps)
	}
	copied := &corev1.Secret{}
	if err := e.target.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: "shop-pull"}, copied); err != nil || !bytes.Equal(copied.Data[corev1.DockerConfigJsonKey], pullSecret(e.ns).Data[corev1.DockerConfigJsonKey]) {
		t.Errorf("the pull Secret in the preview namespace: %v %v", err, copied.Data)
	}
	notes := e.previewNotes(iid)
	if len(notes) != 1 || !strings.Contains(notes[0].Body, b1.Name) || !strings.Contains(notes[0].Body, pv.Status.URL) || notes[0].ID != pv.Status.NoteID {
		t.Fatalf("preview notes = %+v (status %+v)", notes, pv.Status)
	}
	want := fmt.Sprintf("http://%s.%s.svc.cluster.local:8080", e.project, e.previewName(iid))
	if pv.Status.URL != want {
		t.Errorf("url = %q, want %q", pv.Status.URL, want)
	}

	// A new push: the same note is edited, through a rate limit.
	e.fake.Inject(gitlabsim.Fault{Method: http.MethodPut, PathContains: "/notes/", Status: http.StatusTooManyRequests, RetryAfter: "1", Times: 1})
	if d, err := e.fake.UpdateMergeRequest(ctx, e.gid, iid, e.commits[2], "alice"); err != nil || d[0].Status != http.StatusCreated {
		t.Fatalf("update delivery: %+v %v", d, err)
	}
	b2 := e.buildOf(e.commits[2])
	e.succeed(b2)
	e.waitPreview(iid, "the preview to run the new Build", func(pv *ferryv1.Preview) bool {
		return ready(pv) && pv.Status.DeployedBuild == b2.Name && strings.Contains(pv.Status.NoteBody, b2.Name)
	})
	notes = e.previewNotes(iid)
	if len(notes) != 1 || !strings.Contains(notes[0].Body, b2.Name) || notes[0].ID != pv.Status.NoteID {
		t.Fatalf("preview notes after the push = %+v", notes)
	}
	if err := e.target.Get(ctx, client.ObjectKey{Namespace: ns.Name, Name: e.project}, d); err != nil {
		t.Fatal(err)
	}
	if img := d.Spec.Template.Spec.Containers[0].Image; img != releasetest.Image(b2.Name) {
		t.Errorf("deployment image after the push = %s", img)
	}
	var puts, posts int
	for _, c := range e.fake.Calls() {
		switch {
		case c.Method == http.MethodPut && strings.Contains(c.Path, "/notes/"):
			puts++
		case c.Method == http.MethodPost && strings.Contains(c.Path, "/notes"):
			posts++
		}
	}
	if posts != 2 || puts < 2 {
		t.Errorf("note calls: %d POST (want 2: a 503 and the note), %d PUT (want the 429 and the edit)", posts, puts)
	}

	// Merge: the namespace and the Preview go.
	if d, err := e.fake.MergeRequestEvent(ctx, e.gid, iid, "merge", "", "alice"); err != nil || d[0].Status != http.StatusOK || !bytes.Contains(d[0].Response, []byte("deleting preview")) {
		t.Fatalf("merge delivery: %+v %v", d, err)
	}
	e.waitPreviewGone(iid)
	e.waitNamespaceDeleted(iid)
}

// TestPreviewPullSecretMissing: a Project whose pull Secret is gone gets a preview that says so
// (never its content) and deploys once the Secret is back.
func TestPreviewPullSecretMissing(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	ctx := context.Background()
	if err := e.c.Delete(ctx, pullSecret(e.ns)); err != nil {
		t.Fatal(err)
	}
	iid, b := e.openMR(1)
	e.succeed(b)
	e.waitPreview(iid, "the preview to name the missing pull Secret", func(pv *ferryv1.Preview) bool {
		c := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.ReadyCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ferryv1.SecretNotFoundReason && strings.Contains(c.Message, "pull Secret "+e.ns+"/shop-pull not found")
	})
	if err := e.c.Create(ctx, pullSecret(e.ns)); err != nil {
		t.Fatal(err)
	}
	e.waitPreview(iid, "the preview to deploy once the Secret is back", func(pv *ferryv1.Preview) bool { return ready(pv) })
}

// pullSecret is the Project's pull Secret of the preview tests.
func pullSecret(ns string) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-pull"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"harbor.example.com":{"auth":"cHVsbDpzM2NyM3Q="}}}`)},
	}
}

// TestPreviewClose: closing the merge request deletes its preview.
func TestPreviewClose(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	iid, b := e.openMR(1)
	e.succeed(b)
	e.waitPreview(iid, "the preview to be ready", ready)
	if d, err := e.fake.MergeRequestEvent(context.Background(), e.gid, iid, "close", "", "alice"); err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("close delivery: %+v %v", d, err)
	}
	e.waitPreviewGone(iid)
	e.waitNamespaceDeleted(iid)
}

// TestPreviewNotAfterClose: a Build that finishes after its merge request was closed does not
// bring a preview back — the controller asks GitLab for the merge request's state first.
func TestPreviewNotAfterClose(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	ctx := context.Background()
	iid, b := e.openMR(1)
	if d, err := e.fake.MergeRequestEvent(ctx, e.gid, iid, "close", "", "alice"); err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("close delivery: %+v %v", d, err)
	}
	e.succeed(b)
	mrPath := fmt.Sprintf("/merge_requests/%d", iid)
	testutil.Eventually(t, "the controller to ask for the merge request and drop the preview", func() (bool, error) {
		asked := false
		for _, c := range e.fake.Calls() {
			asked = asked || (c.Method == http.MethodGet && strings.HasSuffix(c.Path, mrPath))
		}
		err := e.c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: e.previewName(iid)}, &ferryv1.Preview{})
		return asked && apierrors.IsNotFound(err), fmt.Errorf("asked GitLab: %v, Preview: %w", asked, err)
	})
	if err := e.target.Get(ctx, client.ObjectKey{Name: e.previewName(iid)}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("the preview namespace of a closed merge request: %v, want it never made", err)
	}
	if notes := e.previewNotes(iid); len(notes) != 0 {
		t.Errorf("preview notes on a closed merge request: %+v", notes)
	}
}

// TestPreviewRefusesForeignNamespace: a namespace of the preview's name that Ferry did not create
// for it — unlabelled, or another Project's — is neither deployed into nor deleted.
func TestPreviewRefusesForeignNamespace(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	ctx := context.Background()
	// The next merge request of the fresh GitLab project is !1.
	theirs := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.previewName(1), Labels: map[string]string{
		// Another team's Project of the same name: the same preview name, another UID.
		ferryv1.PreviewLabel: e.previewName(1), ferryv1.ProjectUIDLabel: "5f0c4d1e-0000-4000-8000-000000000001",
	}}}
	if err := e.target.Create(ctx, theirs); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.target.Delete(ctx, theirs) })
	iid, b := e.openMR(1)
	if iid != 1 {
		t.Fatalf("iid = %d", iid)
	}
	e.succeed(b)
	pv := e.waitPreview(iid, "the preview to be refused", func(pv *ferryv1.Preview) bool {
		c := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.ReadyCondition)
		return c != nil && c.Reason == ferryv1.NamespaceNotOwnedReason
	})
	if msg := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "was not created by Ferry for preview") {
		t.Errorf("message = %q", msg)
	}
	list := &appsv1.DeploymentList{}
	if err := e.target.List(ctx, list, client.InNamespace(theirs.Name)); err != nil || len(list.Items) != 0 {
		t.Errorf("deployments in the foreign namespace: %d %v", len(list.Items), err)
	}
	if len(e.previewNotes(iid)) != 0 {
		t.Errorf("a refused preview was announced: %+v", e.previewNotes(iid))
	}
	if d, err := e.fake.MergeRequestEvent(ctx, e.gid, iid, "close", "", "alice"); err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("close delivery: %+v %v", d, err)
	}
	e.waitPreviewGone(iid)

	// A namespace someone made by hand, without any record, is not taken over either.
	bare := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: e.previewName(2)}}
	if err := e.target.Create(ctx, bare); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.target.Delete(ctx, bare) })
	iid2, b2 := e.openMR(2)
	e.succeed(b2)
	e.waitPreview(iid2, "the preview into a bare namespace to be refused", func(pv *ferryv1.Preview) bool {
		c := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.ReadyCondition)
		return c != nil && c.Reason == ferryv1.NamespaceNotOwnedReason
	})
	if d, err := e.fake.MergeRequestEvent(ctx, e.gid, iid2, "merge", "", "alice"); err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("merge delivery: %+v %v", d, err)
	}
	e.waitPreviewGone(iid2)
	for _, name := range []string{theirs.Name, bare.Name} {
		ns := &corev1.Namespace{}
		if err := e.target.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil || !ns.DeletionTimestamp.IsZero() {
			t.Errorf("namespace %s, not Ferry's, was deleted: %v %+v", name, err, ns.ObjectMeta)
		}
		if ns.Labels[ferryv1.ProjectUIDLabel] != theirs.Labels[ferryv1.ProjectUIDLabel] && name == theirs.Name || name == bare.Name && len(ns.Labels) > 1 {
			t.Errorf("namespace %s was relabelled: %v", name, ns.Labels)
		}
	}
}

// TestPreviewTTLAndCap: with a cap of two, a third merge request's preview pushes out the least
// recently active; a preview without a Build for longer than its TTL goes.
func TestPreviewTTLAndCap(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{MaxPreviews: 2, TTL: &metav1.Duration{Duration: time.Hour}})
	var iids []int64
	for i := 1; i <= 3; i++ {
		iid, b := e.openMR(i)
		e.succeed(b)
		e.waitPreview(iid, fmt.Sprintf("preview %d ready", i), ready)
		iids = append(iids, iid)
		e.clock.Add(time.Minute)
	}
	e.waitPreviewGone(iids[0])
	e.waitNamespaceDeleted(iids[0])
	for _, iid := range iids[1:] {
		e.waitPreview(iid, "a recent preview to stay", ready)
	}

	// Past the TTL of the older one only.
	e.clock.Add(time.Hour - 90*time.Second)
	for _, iid := range iids[1:] {
		e.poke(iid)
	}
	e.waitPreviewGone(iids[1])
	e.waitNamespaceDeleted(iids[1])
	e.waitPreview(iids[2], "the newest preview to stay", ready)
}

// poke makes the controller look at a Preview again (its clock moved).
func (e *env) poke(iid int64) {
	e.t.Helper()
	pv := &ferryv1.Preview{}
	if err := e.c.Get(context.Background(), client.ObjectKey{Namespace: e.ns, Name: e.previewName(iid)}, pv); err != nil {
		e.t.Fatal(err)
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{"test.ferry.dev/poke":"%d"}}}`, time.Now().UnixNano()))
	if err := e.c.Patch(context.Background(), pv, client.RawPatch("application/merge-patch+json", patch)); err != nil {
		e.t.Fatal(err)
	}
}

// TestPreviewDeleteRetried: a namespace that fails to delete is shown on the Preview and
// retried until it goes.
func TestPreviewDeleteRetried(t *testing.T) {
	e := newEnv(t, ferryv1.PreviewSettings{})
	iid, b := e.openMR(1)
	e.succeed(b)
	e.waitPreview(iid, "the preview to be ready", ready)
	e.failDeletes.Store(3)
	if d, err := e.fake.MergeRequestEvent(context.Background(), e.gid, iid, "close", "", "alice"); err != nil || d[0].Status != http.StatusOK {
		t.Fatalf("close delivery: %+v %v", d, err)
	}
	e.waitPreview(iid, "the failed deletion to be shown", func(pv *ferryv1.Preview) bool {
		c := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.PreviewDeletedCondition)
		return c != nil && c.Status == metav1.ConditionFalse && c.Reason == ferryv1.NamespaceDeleteFailedReason && strings.Contains(c.Message, "refused to delete")
	})
	e.waitPreviewGone(iid)
	e.waitNamespaceDeleted(iid)
	if n := e.failDeletes.Load(); n != 0 {
		t.Errorf("%d failures left: the deletion was not retried through them", n)
	}
}
