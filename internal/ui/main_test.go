package ui_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	localexecutor "github.com/ferryci/ferry/controllers/build/local"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui"
)

func TestMain(m *testing.M) {
	if os.Getenv("FERRY_TEST_LOGS") != "" {
		ctrl.SetLogger(zap.New(zap.UseDevMode(true)))
	} else {
		ctrl.SetLogger(logr.Discard())
	}
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{FerryWebhooks: true})
	closeBrowser()
	os.Exit(code)
}

// uiUser is the UI's ServiceAccount in the tests: a user bound to nothing but the roles that
// `make manifests` generates from the UI's markers (config/rbac/ui/role.yaml).
const uiUser = "system:serviceaccount:ferry-system:ferry-ui"

// gitLabTokenReader is config/rbac/ui/gitlab_token_reader_role.yaml as installed.
const gitLabTokenReader = "ferry-ui-gitlab-token-reader"

var uiRBACOnce sync.Once

// uiConfig returns a client config of the UI's ServiceAccount, after installing its roles, the
// role that lets it read GitLab tokens (unbound) and its empty session Secret, as config/default
// does.
func uiConfig(t *testing.T) *rest.Config {
	t.Helper()
	hub := testutil.CurrentHub(t)
	ctx := context.Background()
	uiRBACOnce.Do(func() {
		root, err := controlplane.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		raw, err := os.ReadFile(filepath.Join(root, "config", "rbac", "ui", "role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		reader, err := os.ReadFile(filepath.Join(root, "config", "rbac", "ui", "gitlab_token_reader_role.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		tokenRole := &rbacv1.ClusterRole{}
		if err := yaml.UnmarshalStrict(reader, tokenRole); err != nil {
			t.Fatal(err)
		}
		tokenRole.Name = gitLabTokenReader
		ensureNamespace(t, testutil.FerryNamespace)
		session := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: ui.DefaultSessionSecret}}
		for _, o := range []client.Object{tokenRole, session} {
			if err := hub.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
				t.Fatal(err)
			}
		}
		for _, doc := range bytes.Split(raw, []byte("\n---\n")) {
			if len(bytes.TrimSpace(bytes.Trim(doc, "-\n"))) == 0 {
				continue
			}
			var objs []client.Object
			head := &metav1.TypeMeta{}
			if err := yaml.Unmarshal(doc, head); err != nil {
				t.Fatal(err)
			}
			subject := []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: uiUser}}
			switch head.Kind {
			case "ClusterRole":
				role := &rbacv1.ClusterRole{}
				if err := yaml.UnmarshalStrict(doc, role); err != nil {
					t.Fatal(err)
				}
				role.Name = "ferry-ui"
				objs = append(objs, role, &rbacv1.ClusterRoleBinding{
					ObjectMeta: metav1.ObjectMeta{Name: "ferry-ui"},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "ferry-ui"},
					Subjects:   subject,
				})
			case "Role":
				role := &rbacv1.Role{}
				if err := yaml.UnmarshalStrict(doc, role); err != nil {
					t.Fatal(err)
				}
				role.Name = "ferry-ui"
				objs = append(objs, role, &rbacv1.RoleBinding{
					ObjectMeta: metav1.ObjectMeta{Namespace: role.Namespace, Name: "ferry-ui"},
					RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "ferry-ui"},
					Subjects:   subject,
				})
			default:
				t.Fatalf("config/rbac/ui/role.yaml: unexpected %s", head.Kind)
			}
			for _, o := range objs {
				ensureNamespace(t, o.GetNamespace())
				if err := hub.Client.Create(ctx, o); err != nil && !apierrors.IsAlreadyExists(err) {
					t.Fatal(err)
				}
			}
		}
	})
	cfg, err := hub.AddUser(uiUser, "system:serviceaccounts", "system:serviceaccounts:ferry-system")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func ensureNamespace(t *testing.T, name string) {
	t.Helper()
	if name == "" {
		return
	}
	err := testutil.CurrentHub(t).Client.Create(context.Background(), &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name}})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
}

// person is someone who signs in.
type person struct {
	name   string
	groups []string
}

// world is one test's installation: a namespace, Ferry's manager with its webhooks (as admin),
// and the UI in a manager of its own that runs as the UI's ServiceAccount.
type world struct {
	t      *testing.T
	c      client.Client
	ns     string
	tokens map[string]string
	uis    []*manager.Manager
	// URL is the first UI replica.
	URL string
	// LogDir is where local executors' step logs are read from.
	LogDir string

	tokenFile string
}

type worldOptions struct {
	people []person
	// controllers run in the webhook manager; default none.
	controllers []string
	// ui changes the UI replicas' options.
	ui func(*manager.Options)
}

func newWorld(t *testing.T, o worldOptions) *world {
	t.Helper()
	hub := testutil.CurrentHub(t)
	w := &world{t: t, c: hub.Client, ns: testutil.Namespace(t, hub.Client), tokens: map[string]string{}, LogDir: t.TempDir()}
	var entries []map[string]any
	for _, p := range o.people {
		tok := "tok-" + p.name + "-" + randomHex(12)
		w.tokens[p.name] = tok
		entries = append(entries, map[string]any{"token": tok, "user": p.name, "groups": p.groups})
	}
	data, err := yaml.Marshal(entries)
	if err != nil {
		t.Fatal(err)
	}
	w.tokenFile = filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(w.tokenFile, data, 0o600); err != nil {
		t.Fatal(err)
	}
	controllers := o.controllers
	if controllers == nil {
		controllers = []string{"-*"}
	}
	testutil.StartManager(t, manager.Options{Controllers: controllers, LogDir: w.LogDir, UIIdentity: uiUser})
	w.URL = w.startUI(o.ui)
	return w
}

// startUI starts one more UI replica and returns its URL.
func (w *world) startUI(change func(*manager.Options)) string {
	t := w.t
	t.Helper()
	opts := manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"-*"},
		UIAddr: "127.0.0.1:0", LogDir: w.LogDir, UI: ui.Config{TokenFile: w.tokenFile},
	}
	if change != nil {
		change(&opts)
	}
	m, err := manager.New(uiConfig(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("UI manager stopped with an error: %v", err)
		}
	})
	testutil.Eventually(t, "the UI to listen", func() (bool, error) {
		select {
		case err := <-done:
			done <- err
			return false, fmt.Errorf("the UI manager stopped: %w", err)
		default:
		}
		return m.UI.Addr() != "", nil
	})
	w.uis = append(w.uis, m)
	return "http://" + m.UI.Addr()
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)[:n]
}

// bind gives users and groups the release-manager role that Ferry installs
// (config/rbac/release_manager_role.yaml) in the test's namespace: RBAC lets them try, the
// Approval webhook decides whose decision counts.
func (w *world) bind(users []string, groups ...string) {
	t := w.t
	t.Helper()
	releasetest.BindReleaseManagers(t, w.c, w.ns, users, groups)
	// Namespaces never finish terminating without a namespace controller: what is left of this
	// test must not show to the same people in the next one.
	t.Cleanup(func() {
		_ = w.c.Delete(context.Background(), &rbacv1.RoleBinding{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "release-managers"}})
	})
}

// allowGitLabTokens lets the UI read the GitLab tokens of the test's namespace, as the README's
// install section says to bind config/rbac/ui/gitlab_token_reader_role.yaml.
func (w *world) allowGitLabTokens() {
	w.t.Helper()
	w.roleBinding("ferry-ui-gitlab-tokens", "ClusterRole", gitLabTokenReader, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: uiUser})
}

// allowLogs lets users read the logs of pods in the test's namespace (get pods/log), what
// `kubectl logs` needs and what the UI asks before it shows a Build's log.
func (w *world) allowLogs(users ...string) {
	t := w.t
	t.Helper()
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "log-readers"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}}},
	}
	if err := w.c.Create(context.Background(), role); err != nil {
		t.Fatal(err)
	}
	var subjects []rbacv1.Subject
	for _, u := range users {
		subjects = append(subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u})
	}
	w.roleBinding("log-readers", "Role", role.Name, subjects...)
}

// roleBinding binds a role in the test's namespace, and removes the binding when the test ends:
// namespaces never finish terminating without a namespace controller.
func (w *world) roleBinding(name, kind, role string, subjects ...rbacv1.Subject) {
	t := w.t
	t.Helper()
	b := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: kind, Name: role},
		Subjects:   subjects,
	}
	if err := w.c.Create(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.c.Delete(context.Background(), b) })
}

// environment creates a cluster-scoped Environment with a unique name and deletes it at the end.
func (w *world) environment(prefix string, gate *ferryv1.ApprovalPolicy, clusters ...string) string {
	t := w.t
	t.Helper()
	if len(clusters) == 0 {
		clusters = []string{"eu-west-1"}
	}
	env := &ferryv1.Environment{
		ObjectMeta: metav1.ObjectMeta{Name: prefix + "-" + randomHex(4)},
		Spec:       ferryv1.EnvironmentSpec{Clusters: clusters, Approval: gate, Rollout: ferryv1.RolloutStrategy{Type: ferryv1.RollingStrategy}},
	}
	if err := w.c.Create(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = w.c.Delete(context.Background(), env) })
	return env.Name
}

func gate(minApprovals int32, groups ...string) *ferryv1.ApprovalPolicy {
	return &ferryv1.ApprovalPolicy{Groups: groups, MinApprovals: minApprovals, ForbidSelfApproval: ptr.To(true)}
}

// digest makes a different valid image digest for every seed.
func image(seed string) string {
	return "harbor.example.com/team/shop@sha256:" + strings.Repeat(fmt.Sprintf("%x", []byte(seed))+"0", 64)[:64]
}

func revision(seed string) string {
	return strings.Repeat(fmt.Sprintf("%x", []byte("rev"+seed))+"1", 40)[:40]
}

// project creates a Project with a promotion path.
func (w *world) project(name, gitlabURL string, gitlabID int64, path ...string) *ferryv1.Project {
	t := w.t
	t.Helper()
	p := &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name},
		Spec: ferryv1.ProjectSpec{
			GitLab:     ferryv1.GitLabProject{URL: gitlabURL, ProjectPath: "team/" + name, ProjectID: gitlabID, WebhookSecretRef: ferryv1.LocalObjectReference{Name: name + "-webhook"}},
			Repository: ferryv1.Repository{CloneURL: gitlabURL + "/team/" + name + ".git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/" + name},
			Promotion:  ferryv1.Promotion{Environments: path},
		},
	}
	if err := w.c.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// build creates a Build of rev that succeeded with img, triggered by user.
func (w *world) build(name, project, rev, img, user string, lineage *ferryv1.ImageLineage) *ferryv1.Build {
	t := w.t
	t.Helper()
	ctx := context.Background()
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec:       ferryv1.BuildSpec{Project: project, Revision: rev, Ref: "refs/heads/main", Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: user}},
	}
	if err := w.c.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	start := metav1.NewTime(time.Now().Add(-3 * time.Minute).Truncate(time.Second))
	end := metav1.NewTime(start.Add(95 * time.Second))
	b.Status = ferryv1.BuildStatus{
		ObservedGeneration: b.Generation, Executor: "local", Image: img, Lineage: lineage, StartTime: &start, CompletionTime: &end,
		Tags: []string{rev},
		Steps: []ferryv1.StepStatus{
			{Name: "clone", State: "Succeeded", ExitCode: ptr.To[int32](0), StartTime: &start, CompletionTime: &start},
			{Name: "test", State: "Succeeded", ExitCode: ptr.To[int32](0), StartTime: &start, CompletionTime: &end},
			{Name: "assemble", State: "Succeeded", ExitCode: ptr.To[int32](0), StartTime: &end, CompletionTime: &end},
		},
	}
	meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "image pushed"})
	if err := w.c.Status().Update(ctx, b); err != nil {
		t.Fatal(err)
	}
	return b
}

// writeLog writes a Build's log where the local executor with the world's log directory writes
// it, and points the Build's status at it as the executor does.
func (w *world) writeLog(b *ferryv1.Build, text string) string {
	t := w.t
	t.Helper()
	path := localexecutor.LogPath(w.LogDir, b)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	b.Status.LogURL = "file://" + path
	if err := w.c.Status().Update(context.Background(), b); err != nil {
		t.Fatal(err)
	}
	return path
}

// release creates a Release of b's image as user (the webhook records who asked).
func (w *world) release(as client.Client, name, project string, b *ferryv1.Build) *ferryv1.Release {
	t := w.t
	t.Helper()
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: name, Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec:       ferryv1.ReleaseSpec{Project: project, Build: b.Name, Image: b.Status.Image, Revision: b.Spec.Revision},
	}
	if err := as.Create(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

// setReleaseStatus writes a Release's status as a controller would.
func (w *world) setReleaseStatus(rel *ferryv1.Release, change func(*ferryv1.ReleaseStatus)) {
	t := w.t
	t.Helper()
	ctx := context.Background()
	if err := w.c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
		t.Fatal(err)
	}
	change(&rel.Status)
	if err := w.c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
}

func cond(t, reason, msg string, status metav1.ConditionStatus) metav1.Condition {
	return metav1.Condition{Type: t, Status: status, Reason: reason, Message: msg, LastTransitionTime: metav1.NewTime(time.Now().Add(-10 * time.Minute).Truncate(time.Second))}
}

// waitingFor is an environment status whose gate waits.
func waitingFor(env string, required int32) ferryv1.ReleaseEnvironmentStatus {
	since := metav1.NewTime(time.Now().Add(-10 * time.Minute).Truncate(time.Second))
	return ferryv1.ReleaseEnvironmentStatus{
		Name: env,
		Conditions: []metav1.Condition{
			cond(ferryv1.ApprovedCondition, ferryv1.WaitingForApprovalReason, fmt.Sprintf("0 of %d approvals", required), metav1.ConditionUnknown),
			cond(ferryv1.ReadyCondition, ferryv1.WaitingForApprovalReason, fmt.Sprintf("0 of %d approvals", required), metav1.ConditionUnknown),
		},
		Gate:      &ferryv1.GateStatus{RequiredApprovals: required, WaitingSince: &since},
		StartTime: &since,
	}
}

// browserless is an HTTP client with its own cookie jar, like one browser.
type browserless struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newClient(t *testing.T, base string) *browserless {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &browserless{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 30 * time.Second}}
}

// noRedirects stops at the first answer.
func (b *browserless) noRedirects() *browserless {
	c := *b.c
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &browserless{t: b.t, base: b.base, c: &c}
}

func (b *browserless) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	return readBody(b.t, resp)
}

func (b *browserless) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	return readBody(b.t, resp)
}

func readBody(t *testing.T, resp *http.Response) (int, string) {
	t.Helper()
	defer func() { _ = resp.Body.Close() }()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, buf.String()
}

// signIn signs in with a token.
func (b *browserless) signIn(token string) string {
	b.t.Helper()
	_, page := b.get("/signin")
	code, page := b.post("/signin/token", url.Values{"csrf": {testutil.CSRFToken(b.t, page)}, "token": {token}, "next": {"/"}})
	if code != http.StatusOK || !strings.Contains(page, "Signed in as") {
		b.t.Fatalf("sign-in: %d\n%s", code, page)
	}
	return page
}

// approvals lists the Approvals of the namespace.
func (w *world) approvals() []ferryv1.Approval {
	w.t.Helper()
	var list ferryv1.ApprovalList
	if err := w.c.List(context.Background(), &list, client.InNamespace(w.ns)); err != nil {
		w.t.Fatal(err)
	}
	return list.Items
}
