package release_test

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// pullToken is the credential in the Project's pull Secret: it must reach the target namespaces
// and nothing else.
const pullToken = "cm9ib3QkdGVhbStwdWxsOnMzY3IzdC1wdWxsLXRva2Vu"

func TestMain(m *testing.M) {
	ctrl.SetLogger(logr.Discard())
	code := testutil.RunWithHub(m, controlplane.APIServerOptions{FerryWebhooks: true})
	stopTargets()
	os.Exit(code)
}

func startManager(t testing.TB) *manager.Manager {
	t.Helper()
	return testutil.StartManager(t, manager.Options{Controllers: []string{"release"}})
}

// TestPromotionThroughGates: a successful Build of main is released automatically and goes
// dev (no gate, cluster east) → staging (one approval, cluster west) → prod (two approvals from
// release-managers, self-approval forbidden, clusters west and north). Each Deployment becomes
// available with the exact digest, in the environment's namespace, on that environment's clusters
// only; the Project records what runs where.
func TestPromotionThroughGates(t *testing.T) {
	tg := startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	dev, staging, prod := releasetest.Unique("dev"), releasetest.Unique("stg"), releasetest.Unique("prd")
	devEnv := releasetest.Environment(dev, nil, "east")
	devEnv.Spec.AllowedPodAnnotations = []string{"prometheus.io/*"}
	releasetest.CreateCleanly(t, c, devEnv)
	releasetest.CreateCleanly(t, c, releasetest.Environment(staging, releasetest.Gate(1, nil, []string{"release-managers"}), "west"))
	releasetest.CreateCleanly(t, c, releasetest.Environment(prod, releasetest.Gate(2, nil, []string{"release-managers"}), "west", "north"))
	project := releasetest.Project(ns, "shop", dev, staging, prod)
	project.Spec.Promotion.AutoRelease = &ferryv1.AutoRelease{Branches: []string{"main"}}
	project.Spec.Image.PullSecretRef = &ferryv1.LocalObjectReference{Name: "harbor-pull"}
	if err := c.Create(ctx, project); err != nil {
		t.Fatal(err)
	}
	pull := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "harbor-pull"},
		Type:       corev1.SecretTypeDockerConfigJson,
		Data:       map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{"harbor.example.com":{"auth":"` + pullToken + `"}}}`)},
	}
	if err := c.Create(ctx, pull); err != nil {
		t.Fatal(err)
	}
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})
	dumpOnFailure(t, "shop-"+prod, "west", "north")
	succeededBefore := metricValue(t, "ferry_releases_total", map[string]string{"result": "succeeded"})

	// A Build of a branch the policy does not name is not released.
	releasetest.CreateBuild(t, c, ns, "shop-feature-1", "shop", "refs/heads/feature/x", releasetest.Image("feature"), "dave", releasetest.Deploy(1, nil))
	image := releasetest.Image("v1")
	built := releasetest.CreateBuild(t, c, ns, "shop-main-1", "shop", "refs/heads/main", image, "dave", releasetest.Deploy(2, map[string]string{"prometheus.io/scrape": "true"}))

	// dev has no gate.
	rel := waitEnv(t, c, ns, "shop-main-1", dev, ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason)
	if rel.Spec.Image != image || rel.Spec.Build != "shop-main-1" || rel.Spec.Deploy == nil || *rel.Spec.Deploy.Replicas != 2 {
		t.Errorf("auto-release spec = %+v", rel.Spec)
	}
	if c := envCondition(rel, dev, ferryv1.ApprovedCondition); c == nil || c.Reason != ferryv1.NoGateReason {
		t.Errorf("dev Approved = %+v, want NoGate", c)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop-feature-1"}, &ferryv1.Release{}); !apierrors.IsNotFound(err) {
		t.Errorf("a feature-branch Build was released: %v", err)
	}
	devNS := "shop-" + dev
	d := tg["east"].waitAvailable(t, devNS, "shop", image, 2)
	if d.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || d.Spec.Template.Spec.Containers[0].ReadinessProbe == nil {
		t.Errorf("the Deployment does not carry the deploy settings: %+v", d.Spec.Template)
	}
	if d.Labels[ferryv1.ReleaseLabel] != "shop-main-1" || d.ManagedFields[0].Manager != ferryv1.FieldManager {
		t.Errorf("labels %v, managers %+v", d.Labels, d.ManagedFields)
	}
	nsObj := &corev1.Namespace{}
	if err := tg["east"].client.Get(ctx, client.ObjectKey{Name: devNS}, nsObj); err != nil {
		t.Fatal(err)
	}
	if nsObj.Labels[ferryv1.ProjectLabel] != "shop" || nsObj.Labels[ferryv1.EnvironmentLabel] != dev {
		t.Errorf("namespace labels = %v", nsObj.Labels)
	}
	// The Project's pull Secret is copied into the namespace and used by the pods.
	copied := &corev1.Secret{}
	if err := tg["east"].client.Get(ctx, client.ObjectKey{Namespace: devNS, Name: "harbor-pull"}, copied); err != nil {
		t.Fatal(err)
	}
	if copied.Type != corev1.SecretTypeDockerConfigJson || string(copied.Data[corev1.DockerConfigJsonKey]) != string(pull.Data[corev1.DockerConfigJsonKey]) {
		t.Errorf("copied pull Secret = %s %q", copied.Type, copied.Data)
	}
	if ps := d.Spec.Template.Spec.ImagePullSecrets; len(ps) != 1 || ps[0].Name != "harbor-pull" {
		t.Errorf("imagePullSecrets = %v", ps)
	}
	svc := &corev1.Service{}
	if err := tg["east"].client.Get(ctx, client.ObjectKey{Namespace: devNS, Name: "shop"}, svc); err != nil || svc.Spec.Ports[0].Port != 8080 {
		t.Errorf("Service: %v %+v", err, svc.Spec)
	}

	// staging waits for one approval.
	rel = waitEnv(t, c, ns, "shop-main-1", staging, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	if g := envOf(rel, staging).Gate; g == nil || g.RequiredApprovals != 1 || g.WaitingSince == nil {
		t.Errorf("staging gate = %+v", g)
	}
	if ready := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition); ready.Reason != ferryv1.WaitingForApprovalReason || !strings.HasPrefix(ready.Message, staging+": 0 of 1 approvals") {
		t.Errorf("release Ready = %+v", ready)
	}
	if got := tg["west"].deployment(t, "shop-"+staging, "shop"); got != nil {
		t.Fatalf("staging rolled out before its approval")
	}
	bob := hub.UserClient(t, "bob", "release-managers")
	approve(t, bob, ns, "shop-main-1", staging, 0)
	waitEnv(t, c, ns, "shop-main-1", staging, ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.SucceededReason)
	tg["west"].waitAvailable(t, "shop-"+staging, "shop", image, 2)

	// prod: two approvals from release-managers; the Build's trigger user may not approve.
	waitEnv(t, c, ns, "shop-main-1", prod, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	dave := hub.UserClient(t, "dave", "release-managers")
	err := dave.Create(ctx, releasetest.Approval(ns, "shop-main-1", prod, ferryv1.DecisionApprove, ""))
	if err == nil || !strings.Contains(err.Error(), "triggered the Build of this Release") {
		t.Errorf("self-approval by dave: %v", err)
	}
	approve(t, bob, ns, "shop-main-1", prod, 0)
	rel = waitEnv(t, c, ns, "shop-main-1", prod, ferryv1.ApprovedCondition, metav1.ConditionUnknown, ferryv1.WaitingForApprovalReason)
	testutil.Eventually(t, "bob's approval counted", func() (bool, error) {
		rel = getRelease(t, c, ns, "shop-main-1")
		g := envOf(rel, prod).Gate
		return g != nil && len(g.Approvals) == 1 && g.Approvals[0].User == "bob", fmt.Errorf("gate %+v", g)
	})
	carol := hub.UserClient(t, "carol", "release-managers")
	approve(t, carol, ns, "shop-main-1", prod, 0)
	rel = waitRelease(t, c, ns, "shop-main-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	// Decisions made within the same second are ordered by name: either order is right.
	if c := envCondition(rel, prod, ferryv1.ApprovedCondition); c.Reason != ferryv1.ApprovedReason || (c.Message != "approved by bob, carol" && c.Message != "approved by carol, bob") {
		t.Errorf("prod Approved = %+v", c)
	}
	if rel.Status.CompletionTime == nil {
		t.Error("no completion time")
	}
	for _, name := range []string{"west", "north"} {
		tg[name].waitAvailable(t, "shop-"+prod, "shop", image, 2)
	}
	// The right clusters only.
	if err := tg["east"].client.Get(ctx, client.ObjectKey{Name: "shop-" + prod}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("prod's namespace exists on east, which is not one of prod's clusters: %v", err)
	}
	if err := tg["north"].client.Get(ctx, client.ObjectKey{Name: devNS}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("dev's namespace exists on north: %v", err)
	}

	// The Project records what runs in each environment.
	got := &ferryv1.Project{}
	if err := c.Get(ctx, client.ObjectKeyFromObject(project), got); err != nil {
		t.Fatal(err)
	}
	for _, env := range []string{dev, staging, prod} {
		var rec *ferryv1.ProjectEnvironmentStatus
		for i := range got.Status.Environments {
			if got.Status.Environments[i].Name == env {
				rec = &got.Status.Environments[i]
			}
		}
		if rec == nil || rec.Image != image || rec.Release != "shop-main-1" || rec.Revision != releasetest.Revision("shop-main-1") || rec.DeployedAt == nil {
			t.Errorf("project status for %s = %+v", env, rec)
		}
		// The image's age stays with it after its Build is gone.
		if rec != nil && (rec.BuiltAt == nil || !rec.BuiltAt.Equal(&built.CreationTimestamp)) {
			t.Errorf("project status for %s: builtAt %v, want the Build's creation %v", env, rec.BuiltAt, built.CreationTimestamp)
		}
	}
	if v := metricValue(t, "ferry_releases_total", map[string]string{"result": "succeeded"}); v != succeededBefore+1 {
		t.Errorf("ferry_releases_total{result=succeeded} = %v, want %v", v, succeededBefore+1)
	}
	if v := metricValue(t, "ferry_release_approval_wait_seconds", map[string]string{"environment": prod, "decision": "approved"}); v != 1 {
		t.Errorf("approval wait observations for %s = %v, want 1", prod, v)
	}
	if v := metricValue(t, "ferry_release_rollout_duration_seconds", map[string]string{"environment": prod, "result": "succeeded"}); v != 1 {
		t.Errorf("rollout duration observations for %s = %v, want 1", prod, v)
	}
	testutil.Eventually(t, "events of the release", func() (bool, error) {
		reasons := strings.Join(eventReasons(t, c, ns, "shop-main-1"), ",")
		for _, want := range []string{ferryv1.WaitingForApprovalReason, ferryv1.ApprovedReason, ferryv1.RollingOutReason, ferryv1.SucceededReason} {
			if !strings.Contains(reasons, want) {
				return false, fmt.Errorf("events %s, missing %s", reasons, want)
			}
		}
		return true, nil
	})
	// The pull Secret's content is in no status and no event.
	if s := fmt.Sprintf("%+v", rel.Status); strings.Contains(s, pullToken) {
		t.Error("the release status contains the pull Secret")
	}
	events := &corev1.EventList{}
	if err := c.List(ctx, events, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	for _, e := range events.Items {
		if strings.Contains(e.Message, pullToken) {
			t.Errorf("event %s contains the pull Secret", e.Name)
		}
	}
	// The Build records that it was released, and the finalizer is in place.
	b := &ferryv1.Build{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "shop-main-1"}, b); err != nil || b.Annotations[ferryv1.ReleasedAnnotation] != "shop-main-1" {
		t.Errorf("build annotations = %v (%v)", b.Annotations, err)
	}
	if !strings.Contains(strings.Join(rel.Finalizers, ","), ferryv1.ReleaseFinalizer) {
		t.Errorf("finalizers = %v", rel.Finalizers)
	}
}
