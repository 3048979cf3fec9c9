package gitlabreceiver_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestGitLabToBuildAndBack runs the whole GitLab loop against a fake GitLab that sends real
// webhooks: a push, a tag and a merge request reach the receiver, become Builds, and the reporter
// tells GitLab how they went. The manager runs as a ServiceAccount with only the ClusterRole that
// `make manifests` generates, so the RBAC markers are checked too.
func TestGitLabToBuildAndBack(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	cfg := managerIdentity(t, c, hub.Config)

	fake := gitlabsim.New()
	t.Cleanup(fake.Close)
	fake.AddUser("ferry-bot", "glpat-e2e-api-token")
	fake.AddUser("alice", "alice-token")
	gid := fake.AddProject(gitlabsim.Project{PathWithNamespace: "team/shop"})
	// alice may push: her merge requests build without /ok-to-test.
	if err := fake.SetRole(gid, "alice", gitlabsim.DeveloperAccess); err != nil {
		t.Fatal(err)
	}
	c1, _ := fake.AddCommit(gid, gitlabsim.Commit{Message: "initial"})
	c2, _ := fake.AddCommit(gid, gitlabsim.Commit{Message: "add feature", ParentIDs: []string{c1}})
	c3, _ := fake.AddCommit(gid, gitlabsim.Commit{Message: "work on branch", ParentIDs: []string{c2}})
	if err := fake.SetBranch(gid, "main", c1); err != nil {
		t.Fatal(err)
	}

	ns := testutil.Namespace(t, c)
	for name, data := range map[string]string{"shop-webhook": "hook-secret", "shop-gitlab": "glpat-e2e-api-token"} {
		if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Data: map[string][]byte{"token": []byte(data)}}); err != nil {
			t.Fatal(err)
		}
	}
	if err := c.Create(ctx, &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop"},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL: fake.URL, ProjectPath: "team/shop", ProjectID: gid,
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: "shop-webhook"},
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: "shop-gitlab"},
			},
			Repository: ferryv1.Repository{CloneURL: fake.URL + "/team/shop.git"},
			Image:      ferryv1.ImageRepository{Repository: "harbor.example.com/team/shop"},
			Triggers:   ferryv1.Triggers{Branches: []string{"main"}, Tags: []string{"v*"}, MergeRequests: true},
		},
	}); err != nil {
		t.Fatal(err)
	}

	m, err := manager.New(cfg, manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0",
		Controllers: []string{"buildreport"}, ReceiverAddr: "127.0.0.1:0", UIBaseURL: "https://ferry.example.com",
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- m.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	testutil.EventuallyWithin(t, 30*time.Second, "the receiver to listen", func() (bool, error) { return m.Receiver.Addr() != "", nil })
	if err := fake.AddHook(gid, gitlabsim.Hook{
		URL: "http://" + m.Receiver.Addr() + "/hooks/gitlab", Token: "hook-secret",
		PushEvents: true, TagPushEvents: true, MergeRequestsEvents: true,
	}); err != nil {
		t.Fatal(err)
	}

	// A push to main becomes a Build of its head, reported pending.
	d, err := fake.Push(ctx, gid, gitlabsim.PushSpec{Branch: "main", To: c2, User: "alice"})
	if err != nil || len(d) != 1 || d[0].Status != http.StatusCreated {
		t.Fatalf("push delivery: %s %v", describe(d), err)
	}
	push := onlyBuild(t, c, ns, ferryv1.TriggerPush)
	if push.Spec.Revision != c2 || push.Spec.Ref != "refs/heads/main" || push.Spec.Trigger.User != "alice" {
		t.Fatalf("push Build = %+v", push.Spec)
	}
	waitStatus(t, fake, gid, c2, "pending")
	// Resend: nothing new.
	if again := fake.Redeliver(ctx, d[0]); again.Status != http.StatusOK || !bytes.Contains(again.Response, []byte("already received")) {
		t.Fatalf("redelivery: %d %s", again.Status, again.Response)
	}
	// The Build controller's work, played here: running, then an image.
	setBuildConditions(t, c, push, metav1.Condition{Type: ferryv1.PipelineSucceededCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.PipelineRunningReason})
	waitStatus(t, fake, gid, c2, "running")
	setBuildConditions(t, c, push, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason})
	rows := waitStatus(t, fake, gid, c2, "success")
	if rows[0].Ref != "main" || *rows[0].TargetURL != "https://ferry.example.com/builds/"+ns+"/"+push.Name {
		t.Errorf("status = %+v", rows[0])
	}

	// An annotated tag builds the tagged commit, not the tag object.
	if d, err := fake.PushTag(ctx, gid, gitlabsim.TagSpec{Tag: "v1.0.0", SHA: c2, Message: "first release", User: "alice"}); err != nil || d[0].Status != http.StatusCreated {
		t.Fatalf("tag delivery: %s %v", describe(d), err)
	}
	if tag := onlyBuild(t, c, ns, ferryv1.TriggerTag); tag.Spec.Revision != c2 || tag.Spec.Trigger.Tag != "v1.0.0" {
		t.Fatalf("tag Build = %+v", tag.Spec)
	}

	// A merge request into main builds its head and gets one note when it finishes.
	iid, d, err := fake.OpenMergeRequest(ctx, gid, gitlabsim.MergeRequest{SourceBranch: "feature", TargetBranch: "main", SHA: c3, Title: "Feature"}, "alice")
	if err != nil || d[0].Status != http.StatusCreated {
		t.Fatalf("MR delivery: %s %v", describe(d), err)
	}
	mr := onlyBuild(t, c, ns, ferryv1.TriggerMergeRequest)
	if mr.Spec.Revision != c3 || mr.Spec.Ref != fmt.Sprintf("refs/merge-requests/%d/head", iid) {
		t.Fatalf("MR Build = %+v", mr.Spec)
	}
	if rows := waitStatus(t, fake, gid, c3, "pending"); rows[0].Ref != "feature" {
		t.Errorf("MR status ref = %q", rows[0].Ref)
	}
	setBuildConditions(t, c, mr, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.PipelineFailedReason, Message: "step test failed"})
	waitStatus(t, fake, gid, c3, "failed")
	testutil.Eventually(t, "one note on the merge request", func() (bool, error) {
		return len(fake.Notes(gid, iid)) == 1, nil
	})
	if n := fake.Notes(gid, iid)[0]; !strings.Contains(n.Body, "failed") || !strings.Contains(n.Body, "step test failed") {
		t.Errorf("note = %q", n.Body)
	}
	// Closing the MR builds nothing.
	if d, _ := fake.MergeRequestEvent(ctx, gid, iid, "close", "", "alice"); d[0].Status != http.StatusOK || !bytes.Contains(d[0].Response, []byte("ignored")) {
		t.Errorf("close: %d %s", d[0].Status, d[0].Response)
	}
	for _, call := range fake.Calls() {
		if call.User != "ferry-bot" || call.Status >= 300 {
			t.Errorf("GitLab API call %s %s as %q answered %d", call.Method, call.Path, call.User, call.Status)
		}
	}
}

// managerIdentity binds the generated ClusterRole to a ServiceAccount user and returns a config
// that acts as it.
func managerIdentity(t *testing.T, c client.Client, base *rest.Config) *rest.Config {
	t.Helper()
	ctx := context.Background()
	raw, err := os.ReadFile("../../config/rbac/role.yaml")
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.Unmarshal(bytes.Split(raw, []byte("\n---\n"))[0], role); err != nil || role.Kind != "ClusterRole" {
		t.Fatalf("config/rbac/role.yaml does not start with the ClusterRole: %v", err)
	}
	name := "ferry-gitlab-e2e-" + randomHex(4)
	role.ObjectMeta = metav1.ObjectMeta{Name: name}
	user := "system:serviceaccount:ferry-system:" + name
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: user}},
	}
	for _, o := range []client.Object{role, binding} {
		if err := c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Delete(ctx, o) })
	}
	cfg := rest.CopyConfig(base)
	cfg.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: []string{"system:serviceaccounts", "system:authenticated"}}
	return cfg
}

func onlyBuild(t *testing.T, c client.Client, ns string, kind ferryv1.TriggerKind) *ferryv1.Build {
	t.Helper()
	var list ferryv1.BuildList
	if err := c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{ferryv1.TriggerKindLabel: string(kind)}); err != nil {
		t.Fatal(err)
	}
	if len(list.Items) != 1 {
		t.Fatalf("%d %s Builds, want 1", len(list.Items), kind)
	}
	return &list.Items[0]
}

func waitStatus(t *testing.T, fake *gitlabsim.Server, gid int64, sha, state string) []gitlabsim.CommitStatus {
	t.Helper()
	var rows []gitlabsim.CommitStatus
	testutil.Eventually(t, "commit status "+state+" on "+sha[:8], func() (bool, error) {
		rows = fake.Statuses(gid, sha)
		return len(rows) > 0 && rows[len(rows)-1].Status == state && rows[len(rows)-1].Name == "ferry", fmt.Errorf("%+v", rows)
	})
	return rows
}

func setBuildConditions(t *testing.T, c client.Client, b *ferryv1.Build, conds ...metav1.Condition) {
	t.Helper()
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur := &ferryv1.Build{}
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return err
		}
		for _, cond := range conds {
			meta.SetStatusCondition(&cur.Status.Conditions, cond)
		}
		return c.Status().Update(context.Background(), cur)
	})
	if err != nil {
		t.Fatal(err)
	}
}

func describe(ds []gitlabsim.Delivery) string {
	var out []string
	for _, d := range ds {
		out = append(out, fmt.Sprintf("%s → %d %s (err %v)", d.Event, d.Status, d.Response, d.Err))
	}
	return strings.Join(out, "; ")
}
