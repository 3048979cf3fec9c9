package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// cliEnv is an API server with Ferry's admission webhooks served by a manager that runs no
// controller, and kubeconfigs of a few users: the release manager's commands against the real
// webhook, statuses set by hand.
type cliEnv struct {
	t      *testing.T
	admin  client.Client
	ns     string
	config map[string]string
}

func startCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	ctx := t.Context()
	api, err := controlplane.StartAPIServer(ctx, controlplane.APIServerOptions{Name: "cli", FerryCRDs: true, FerryWebhooks: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Stop() })
	host, port, dir := api.WebhookOptions()
	m, err := manager.New(api.Config, manager.Options{
		Namespace: testutil.FerryNamespace, MetricsAddr: "0", ProbeAddr: "0", Controllers: []string{"-cluster"},
		WebhookHost: host, WebhookPort: port, WebhookCertDir: dir,
	})
	if err != nil {
		t.Fatal(err)
	}
	mctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Start(mctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
	testutil.EventuallyWithin(t, 30*time.Second, "the webhook server", func() (bool, error) {
		err := m.GetWebhookServer().StartedChecker()(nil)
		return err == nil, err
	})
	admin, err := client.New(api.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	e := &cliEnv{t: t, admin: admin, ns: testutil.Namespace(t, admin), config: map[string]string{}}
	users := map[string][]string{"ann": {"developers"}, "bob": {"release-managers"}, "carol": {"release-managers"}, "eve": {"developers"}, "zoe": {"release-managers-elsewhere"}}
	for name, groups := range users {
		path := filepath.Join(t.TempDir(), name+".kubeconfig")
		if err := api.UserKubeconfig(path, name, groups...); err != nil {
			t.Fatal(err)
		}
		e.config[name] = path
	}
	releasetest.BindReleaseManagers(t, admin, e.ns, []string{"ann", "eve"}, []string{"release-managers"})
	return e
}

// ferry runs the CLI as user and returns its output and error.
func (e *cliEnv) ferry(user string, args ...string) (string, error) {
	e.t.Helper()
	cmd := newRootCommand()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(append(args, "--kubeconfig", e.config[user], "-n", e.ns))
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func (e *cliEnv) mustFerry(user string, args ...string) string {
	e.t.Helper()
	out, err := e.ferry(user, args...)
	if err != nil {
		e.t.Fatalf("ferry %s as %s: %v\n%s", strings.Join(args, " "), user, err, out)
	}
	return out
}

var createdRE = regexp.MustCompile(`^release/(\S+) created`)

// TestReleaseManagerCommands: release create, approve, reject, re-request, get and rollback, as
// release managers and developers, against the real admission webhook.
func TestReleaseManagerCommands(t *testing.T) {
	e := startCLIEnv(t)
	ctx := context.Background()
	c := e.admin
	releasetest.CreateCleanly(t, c, releasetest.Environment("dev", nil, "east"))
	releasetest.CreateCleanly(t, c, releasetest.Environment("prod", releasetest.Gate(2, nil, []string{"release-managers"}), "east"))
	if err := c.Create(ctx, releasetest.Project(e.ns, "shop", "dev", "prod")); err != nil {
		t.Fatal(err)
	}
	releasetest.CreateBuild(t, c, e.ns, "b1", "shop", "refs/heads/main", releasetest.Image("v1"), "dave", releasetest.Deploy(3, map[string]string{"team": "shop"}))
	releasetest.CreateBuild(t, c, e.ns, "b2", "shop", "refs/heads/main", releasetest.Image("v2"), "dave", releasetest.Deploy(2, nil))
	running := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: e.ns, Name: "b3"},
		Spec:       ferryv1.BuildSpec{Project: "shop", Revision: releasetest.Revision("b3"), Ref: "refs/heads/main"},
	}
	if err := c.Create(ctx, running); err != nil {
		t.Fatal(err)
	}

	// release create
	out := e.mustFerry("ann", "release", "create", "shop", "--build", "b2")
	m := createdRE.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("release create printed %q", out)
	}
	name := m[1]
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: name}, rel); err != nil {
		t.Fatal(err)
	}
	if rel.Spec.Image != releasetest.Image("v2") || rel.Spec.Build != "b2" || rel.Spec.RequestedBy != "ann" || rel.Spec.Deploy == nil || *rel.Spec.Deploy.Replicas != 2 {
		t.Errorf("created release spec = %+v", rel.Spec)
	}
	if _, err := e.ferry("ann", "release", "create", "shop", "--build", "b3"); err == nil || !strings.Contains(err.Error(), "build b3 has not finished") {
		t.Errorf("release of an unfinished Build: %v", err)
	}

	// approve and reject: the webhook's refusals reach the user verbatim.
	_, err := e.ferry("eve", "approve", name, "--env", "prod")
	if err == nil || !strings.Contains(err.Error(), `admission webhook "vapprovals.ferry.dev" denied the request: user "eve" (groups developers) is not eligible to decide for environment prod`) {
		t.Errorf("approval by eve: %v", err)
	}
	_, err = e.ferry("ann", "approve", name, "--env", "prod")
	if err == nil || !strings.Contains(err.Error(), `is not eligible`) {
		t.Errorf("approval by ann (not a release manager): %v", err)
	}
	out = e.mustFerry("bob", "approve", name, "--env", "prod", "-m", "load test passed")
	if !strings.Contains(out, "release "+name+" approved for environment prod by bob") {
		t.Errorf("approve printed %q", out)
	}
	if _, err := e.ferry("bob", "approve", name, "--env", "prod"); err == nil || !strings.Contains(err.Error(), "already decided") {
		t.Errorf("second approval by bob: %v", err)
	}
	if _, err := e.ferry("carol", "reject", name, "--env", "prod"); err == nil || !strings.Contains(err.Error(), "needs a message") {
		t.Errorf("rejection without a message: %v", err)
	}
	out = e.mustFerry("carol", "reject", name, "--env", "prod", "-m", "error budget exhausted")
	if !strings.Contains(out, "rejected for environment prod by carol") {
		t.Errorf("reject printed %q", out)
	}

	// get approvals: a table, JSON and YAML.
	out = e.mustFerry("bob", "get", "approvals")
	for _, want := range []string{"NAME", "RELEASE", "DECISION", "APPROVER", "bob", "Approve", "carol", "Reject", "error budget exhausted"} {
		if !strings.Contains(out, want) {
			t.Errorf("get approvals table lacks %q:\n%s", want, out)
		}
	}
	list := &ferryv1.ApprovalList{}
	if err := json.Unmarshal([]byte(e.mustFerry("bob", "get", "approvals", "-o", "json")), list); err != nil || len(list.Items) != 2 || list.Kind != "ApprovalList" {
		t.Errorf("get approvals -o json: %v, %d items, kind %q", err, len(list.Items), list.Kind)
	}
	for _, a := range list.Items {
		if a.Spec.Image != releasetest.Image("v2") || len(a.ManagedFields) > 0 || a.Kind != "Approval" {
			t.Errorf("approval %s: image %s, managed fields %d, kind %q", a.Name, a.Spec.Image, len(a.ManagedFields), a.Kind)
		}
	}
	one := &ferryv1.Approval{}
	if err := yaml.Unmarshal([]byte(e.mustFerry("bob", "get", "approval", list.Items[0].Name, "-o", "yaml")), one); err != nil || one.Name != list.Items[0].Name {
		t.Errorf("get approval NAME -o yaml: %v %q", err, one.Name)
	}

	// get releases and builds show where things stand.
	now := metav1.Now()
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "dev", Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "ok", LastTransitionTime: now}}},
		{Name: "prod", PreviousImage: releasetest.Image("v1"), Gate: &ferryv1.GateStatus{RequiredApprovals: 2, Approvals: []ferryv1.ApprovalRecord{{Approval: "a", User: "bob", Decision: ferryv1.DecisionApprove}}},
			Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.WaitingForApprovalReason, Message: "1 of 2", LastTransitionTime: now}}},
	}
	meta.SetStatusCondition(&rel.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.WaitingForApprovalReason, Message: "prod: 1 of 2"})
	if err := c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
	out = e.mustFerry("bob", "get", "releases")
	for _, want := range []string{name, "shop", "sha256:" + strings.TrimPrefix(releasetest.Image("v2"), releasetest.Repository+"@sha256:")[:12], "WaitingForApproval", "dev:ok prod:waiting(1/2)"} {
		if !strings.Contains(out, want) {
			t.Errorf("get releases lacks %q:\n%s", want, out)
		}
	}
	out = e.mustFerry("bob", "get", "builds")
	for _, want := range []string{"b1", "b2", "b3", "refs/heads/main", "Succeeded", "<none>"} {
		if !strings.Contains(out, want) {
			t.Errorf("get builds lacks %q:\n%s", want, out)
		}
	}
	if _, err := e.ferry("bob", "get", "pods"); err == nil || !strings.Contains(err.Error(), "builds, releases or approvals") {
		t.Errorf("get pods: %v", err)
	}
	if _, err := e.ferry("bob", "get", "releases", "-o", "xml"); err == nil || !strings.Contains(err.Error(), "unknown output format") {
		t.Errorf("-o xml: %v", err)
	}

	// re-request an expired gate.
	out = e.mustFerry("bob", "approve", name, "--env", "prod", "--rerequest")
	if !strings.Contains(out, "re-requested") {
		t.Errorf("--rerequest printed %q", out)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil || rel.Annotations[ferryv1.ReRequestAnnotation] != "prod" {
		t.Errorf("annotations after --rerequest: %v (%v)", rel.Annotations, err)
	}

	// rollback: the default target is the environment's previous digest, with the settings of the
	// Release (or Build) that made it.
	if _, err := e.ferry("bob", "rollback", "shop", "--env", "prod"); err == nil || !strings.Contains(err.Error(), "nothing deployed in environment prod") {
		t.Errorf("rollback with nothing deployed: %v", err)
	}
	p := &ferryv1.Project{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: "shop"}, p); err != nil {
		t.Fatal(err)
	}
	p.Status.Environments = []ferryv1.ProjectEnvironmentStatus{{Name: "prod", Image: releasetest.Image("v2"), Release: name}}
	if err := c.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	out = e.mustFerry("bob", "rollback", "shop", "--env", "prod")
	m = regexp.MustCompile(`^release/(\S+) created: rolls environment prod back`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("rollback printed %q", out)
	}
	rb := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: m[1]}, rb); err != nil {
		t.Fatal(err)
	}
	if !rb.Spec.Rollback || rb.Spec.Image != releasetest.Image("v1") || strings.Join(rb.Spec.Environments, ",") != "prod" || rb.Spec.Build != "b1" ||
		rb.Spec.Deploy == nil || *rb.Spec.Deploy.Replicas != 3 || rb.Spec.RequestedBy != "bob" {
		t.Errorf("rollback release spec = %+v", rb.Spec)
	}
	if _, err := e.ferry("bob", "rollback", "shop", "--env", "prod", "--to", "sha256:"+strings.Repeat("0", 64)); err == nil || !strings.Contains(err.Error(), "records deploy settings") {
		t.Errorf("rollback to an unknown digest: %v", err)
	}
	if _, err := e.ferry("bob", "rollback", "shop", "--env", "prod", "--to", "latest"); err == nil || !strings.Contains(err.Error(), "neither a digest") {
		t.Errorf("rollback to a tag: %v", err)
	}
	digest := strings.TrimPrefix(releasetest.Image("v1"), releasetest.Repository+"@")
	if out := e.mustFerry("bob", "rollback", "shop", "--env", "prod", "--to", digest); !strings.Contains(out, "created") {
		t.Errorf("rollback --to %s printed %q", digest, out)
	}
	// Without the release-manager role, RBAC refuses before the webhook is asked.
	if _, err := e.ferry("zoe", "approve", name, "--env", "prod"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("approval by zoe, who has no role: %v", err)
	}
}
