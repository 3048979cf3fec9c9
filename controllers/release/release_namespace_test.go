package release_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// teamNamespace creates a short hub namespace for a team's Projects (short, so that templates with
// {namespace} stay within 63 characters).
func teamNamespace(t *testing.T, c client.Client, team string) string {
	t.Helper()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{GenerateName: team + "-"}}
	if err := c.Create(context.Background(), ns); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), ns) })
	return ns.Name
}

// releaseOf creates a Project's Build of the seed's image and a Release of it, limited to envs
// when some are named.
func releaseOf(t *testing.T, ns, project, name, seed string, deploy *ferryv1.DeploySpec, envs ...string) *ferryv1.Release {
	t.Helper()
	c := testutil.CurrentHub(t).Client
	b := releasetest.CreateBuild(t, c, ns, name, project, "refs/heads/main", releasetest.Image(seed), "dave", deploy)
	rel := releasetest.Release(ns, name, project, b)
	rel.Spec.Environments = envs
	if err := c.Create(context.Background(), rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

// createProject creates a Project whose promotion path is path.
func createProject(t *testing.T, ns, name string, path ...string) *ferryv1.Project {
	t.Helper()
	p := releasetest.Project(ns, name, path...)
	if err := testutil.CurrentHub(t).Client.Create(context.Background(), p); err != nil {
		t.Fatal(err)
	}
	return p
}

// readyMessage is the message of a Release's Ready condition.
func readyMessage(rel *ferryv1.Release) string {
	if c := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition); c != nil {
		return c.Message
	}
	return ""
}

// namespace reads a namespace of a target cluster.
func (tg *target) namespace(t testing.TB, name string) *corev1.Namespace {
	t.Helper()
	ns := &corev1.Namespace{}
	if err := tg.client.Get(context.Background(), client.ObjectKey{Name: name}, ns); err != nil {
		t.Fatal(err)
	}
	return ns
}

// TestProjectCannotOverwriteAnotherTeamsNamespace: team A's Project "billing" and team B's
// Project "billing" deploy into the same environment, whose template gives both the namespace
// billing-<env>. Team B was there first: team A's Release is refused with a message naming the
// namespace, its owner and what to do, and nothing of team B's changes. With "{namespace}" in the
// template both deploy, side by side.
func TestProjectCannotOverwriteAnotherTeamsNamespace(t *testing.T) {
	tg := startTargets(t)
	east := tg["east"]
	c := testutil.CurrentHub(t).Client
	startManager(t)
	teamA, teamB := teamNamespace(t, c, "team-a"), teamNamespace(t, c, "team-b")
	shared := releasetest.Environment(releasetest.Unique("own"), nil, "east")
	// Even an Environment that adopts existing namespaces does not hand over another Project's.
	shared.Spec.ExistingNamespaces = ferryv1.AdoptExistingNamespaces
	releasetest.CreateCleanly(t, c, shared)
	apart := releasetest.Environment(releasetest.Unique("apart"), nil, "east")
	apart.Spec.NamespaceTemplate = "{namespace}-{project}-{environment}"
	releasetest.CreateCleanly(t, c, apart)
	target := "billing-" + shared.Name
	dumpOnFailure(t, target, "east")

	projectB := createProject(t, teamB, "billing", shared.Name, apart.Name)
	releaseOf(t, teamB, "billing", "b1", "team-b-v1", releasetest.Deploy(1, nil), shared.Name)
	waitRelease(t, c, teamB, "b1", metav1.ConditionTrue, ferryv1.SucceededReason)
	theirs := east.waitAvailable(t, target, "billing", releasetest.Image("team-b-v1"), 1)
	owner := east.namespace(t, target)
	if owner.Labels[ferryv1.ProjectUIDLabel] != string(projectB.UID) || owner.Annotations[ferryv1.OwnerAnnotation] != teamB+"/billing" ||
		owner.Labels[ferryv1.ProjectNamespaceLabel] != teamB {
		t.Fatalf("team B's namespace records %v %v, want Project %s/billing (UID %s)", owner.Labels, owner.Annotations, teamB, projectB.UID)
	}
	applied := east.applies(t, "deployments", target, "billing")

	// Team A's Project of the same name.
	createProject(t, teamA, "billing", shared.Name, apart.Name)
	releaseOf(t, teamA, "billing", "a1", "team-a-v1", releasetest.Deploy(3, nil), shared.Name)
	rel := waitRelease(t, c, teamA, "a1", metav1.ConditionFalse, ferryv1.NamespaceNotOwnedReason)
	msg := readyMessage(rel)
	for _, want := range []string{"namespace " + target + " on cluster east belongs to Project " + teamB + "/billing", "does not deploy Project " + teamA + "/billing",
		"{namespace}-{project}-{environment}", "nothing was written"} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if !meta.IsStatusConditionTrue(rel.Status.Conditions, ferryv1.StalledCondition) || rel.Status.CompletionTime == nil {
		t.Errorf("conditions %+v: want Stalled and finished", rel.Status.Conditions)
	}
	if cs, cond := clusterCondition(rel, shared.Name, "east"); cond == nil || cond.Reason != ferryv1.NamespaceNotOwnedReason || cs.StartTime != nil {
		t.Errorf("cluster east: %+v", cs)
	}
	// Nothing of team B's changed: the Deployment, its generation, the namespace's owner.
	if d := east.deployment(t, target, "billing"); d.Generation != theirs.Generation || d.Spec.Template.Spec.Containers[0].Image != releasetest.Image("team-b-v1") || *d.Spec.Replicas != 1 {
		t.Errorf("team B's Deployment changed: generation %d→%d, image %s", theirs.Generation, d.Generation, d.Spec.Template.Spec.Containers[0].Image)
	}
	if got := east.applies(t, "deployments", target, "billing"); got != applied {
		t.Errorf("%d applies of team B's Deployment by team A's Release", got-applied)
	}
	if got := east.namespace(t, target); got.Labels[ferryv1.ProjectUIDLabel] != string(projectB.UID) || got.Annotations[ferryv1.OwnerAnnotation] != teamB+"/billing" {
		t.Errorf("the namespace's owner changed: %v %v", got.Labels, got.Annotations)
	}
	testutil.Eventually(t, "a NamespaceNotOwned event", func() (bool, error) {
		reasons := strings.Join(eventReasons(t, c, teamA, "a1"), ",")
		return strings.Contains(reasons, ferryv1.NamespaceNotOwnedReason), fmt.Errorf("events %s", reasons)
	})

	// Where the template keeps teams apart, both deploy.
	releaseOf(t, teamB, "billing", "b2", "team-b-v2", releasetest.Deploy(1, nil))
	releaseOf(t, teamA, "billing", "a2", "team-a-v2", releasetest.Deploy(1, nil), apart.Name)
	waitRelease(t, c, teamB, "b2", metav1.ConditionTrue, ferryv1.SucceededReason)
	waitRelease(t, c, teamA, "a2", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, teamA+"-billing-"+apart.Name, "billing", releasetest.Image("team-a-v2"), 1)
	east.waitAvailable(t, teamB+"-billing-"+apart.Name, "billing", releasetest.Image("team-b-v2"), 1)
}

// TestReservedNamespacesAreRefused: a Project named kube-system, or named like Ferry's own
// namespace, with the template "{project}" is refused before any cluster is touched; so is a
// name that gives no valid namespace.
func TestReservedNamespacesAreRefused(t *testing.T) {
	tg := startTargets(t)
	east := tg["east"]
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("bare"), nil, "east")
	env.Spec.NamespaceTemplate = "{project}"
	env.Spec.ExistingNamespaces = ferryv1.AdoptExistingNamespaces
	releasetest.CreateCleanly(t, c, env)
	before := east.namespace(t, "kube-system")

	for _, project := range []string{"kube-system", "default", "kube-node-lease", "kube-ferry", testutil.FerryNamespace} {
		createProject(t, ns, project, env.Name)
		releaseOf(t, ns, project, project+"-1", project, releasetest.Deploy(1, nil))
	}
	for _, project := range []string{"kube-system", "default", "kube-node-lease", "kube-ferry", testutil.FerryNamespace} {
		rel := waitRelease(t, c, ns, project+"-1", metav1.ConditionFalse, ferryv1.NamespaceReservedReason)
		if msg := readyMessage(rel); !strings.Contains(msg, "namespace "+project+" is") || !strings.Contains(msg, "change the namespaceTemplate of environment "+env.Name) {
			t.Errorf("%s: Ready message %q", project, msg)
		}
		if es := envOf(rel, env.Name); len(es.Clusters) != 0 {
			t.Errorf("%s: the rollout started on %+v", project, es.Clusters)
		}
		if d := east.deployment(t, project, project); d != nil {
			t.Errorf("Deployment %s/%s was created", project, project)
		}
	}
	after := east.namespace(t, "kube-system")
	if after.ResourceVersion != before.ResourceVersion || after.Labels[ferryv1.ProjectUIDLabel] != "" {
		t.Errorf("kube-system changed: %v", after.Labels)
	}
	if err := east.client.Get(context.Background(), client.ObjectKey{Name: testutil.FerryNamespace}, &corev1.Namespace{}); !apierrors.IsNotFound(err) {
		t.Errorf("Ferry's namespace was created on the target cluster: %v", err)
	}
}

// TestExistingNamespaceNeedsAdoption: a namespace that exists on the cluster and was not created
// by Ferry is refused, untouched; once the Environment adopts existing namespaces, the next
// Release records its Project as the owner and deploys.
func TestExistingNamespaceNeedsAdoption(t *testing.T) {
	tg := startTargets(t)
	east := tg["east"]
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := releasetest.Environment(releasetest.Unique("brown"), nil, "east")
	releasetest.CreateCleanly(t, c, env)
	target := "legacy-" + env.Name
	dumpOnFailure(t, target, "east")
	handMade := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: target, Labels: map[string]string{"team": "ops"}}}
	if err := east.client.Create(ctx, handMade); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = east.client.Delete(context.Background(), handMade) })
	project := createProject(t, ns, "legacy", env.Name)

	releaseOf(t, ns, "legacy", "r1", "legacy-v1", releasetest.Deploy(1, nil))
	rel := waitRelease(t, c, ns, "r1", metav1.ConditionFalse, ferryv1.NamespaceNotOwnedReason)
	if msg := readyMessage(rel); !strings.Contains(msg, "namespace "+target+" on cluster east exists and no Project owns it (it was not created by Ferry)") ||
		!strings.Contains(msg, "spec.existingNamespaces: Adopt on environment "+env.Name) {
		t.Errorf("Ready message %q", msg)
	}
	got := east.namespace(t, target)
	if got.ResourceVersion != handMade.ResourceVersion {
		t.Errorf("the namespace was written: %v %v", got.Labels, got.Annotations)
	}
	if d := east.deployment(t, target, "legacy"); d != nil {
		t.Error("a Deployment was created in a namespace Ferry did not own")
	}

	// The platform team lets the environment adopt.
	if err := c.Get(ctx, client.ObjectKeyFromObject(env), env); err != nil {
		t.Fatal(err)
	}
	env.Spec.ExistingNamespaces = ferryv1.AdoptExistingNamespaces
	if err := c.Update(ctx, env); err != nil {
		t.Fatal(err)
	}
	releaseOf(t, ns, "legacy", "r2", "legacy-v2", releasetest.Deploy(1, nil))
	waitRelease(t, c, ns, "r2", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, target, "legacy", releasetest.Image("legacy-v2"), 1)
	got = east.namespace(t, target)
	if got.Labels[ferryv1.ProjectUIDLabel] != string(project.UID) || got.Annotations[ferryv1.OwnerAnnotation] != ns+"/legacy" || got.Labels["team"] != "ops" {
		t.Errorf("adopted namespace: labels %v annotations %v", got.Labels, got.Annotations)
	}
}

// TestCollidingTemplatesSerialize: two Projects of different teams whose Environments' templates
// give the same namespace on the same cluster never roll out at once: the second waits for the
// deploy lock of that namespace, and once it is free, is refused, because the namespace belongs to
// the first.
func TestCollidingTemplatesSerialize(t *testing.T) {
	tg := startTargets(t)
	east := tg["east"]
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	startManager(t)
	teamA, teamB := teamNamespace(t, c, "team-a"), teamNamespace(t, c, "team-b")
	target := releasetest.Unique("shared")
	envA := releasetest.Environment(releasetest.Unique("ea"), nil, "east")
	envB := releasetest.Environment(releasetest.Unique("eb"), nil, "east")
	for _, env := range []*ferryv1.Environment{envA, envB} {
		env.Spec.NamespaceTemplate = target
		env.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 10 * time.Minute}
		env.Spec.AllowedPodAnnotations = []string{"sim.ferry.dev/*"}
		releasetest.CreateCleanly(t, c, env)
	}
	dumpOnFailure(t, target, "east")
	createProject(t, teamA, "alpha", envA.Name)
	createProject(t, teamB, "beta", envB.Name)

	// alpha's pods never become ready: it keeps rolling out, and holds the lock.
	a1 := releaseOf(t, teamA, "alpha", "a1", "alpha-v1", releasetest.UnreadyDeploy(1))
	waitCluster(t, teamA, "a1", envA.Name, "east", ferryv1.RollingOutReason)
	releaseOf(t, teamB, "beta", "b1", "beta-v1", releasetest.Deploy(1, nil))
	rel := waitEnv(t, c, teamB, "b1", envB.Name, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.EnvironmentLockedReason)
	if msg := envCondition(rel, envB.Name, ferryv1.ReadyCondition).Message; msg != "release "+teamA+"/a1 (project alpha) is rolling out to namespace "+target+" on cluster east" {
		t.Errorf("b1 waits with %q", msg)
	}
	if d := east.deployment(t, target, "beta"); d != nil {
		t.Fatal("beta wrote into the namespace while alpha rolled out")
	}

	// alpha's Release goes (its rollout is taken back: there was nothing before, so its
	// Deployment stays); the lock is free, and beta is refused: the namespace is alpha's.
	if err := c.Delete(ctx, a1); err != nil {
		t.Fatal(err)
	}
	rel = waitRelease(t, c, teamB, "b1", metav1.ConditionFalse, ferryv1.NamespaceNotOwnedReason)
	if msg := readyMessage(rel); !strings.Contains(msg, "belongs to Project "+teamA+"/alpha") {
		t.Errorf("b1 Ready message %q", msg)
	}
	if d := east.deployment(t, target, "beta"); d != nil {
		t.Error("beta wrote into alpha's namespace")
	}
	if d := east.deployment(t, target, "alpha"); d == nil {
		t.Error("alpha's Deployment is gone")
	}
}

// TestPodAnnotationsNeedThePlatformsAllowance: the repository asks for a metrics annotation and
// for service-mesh bypasses. dev allows no pod annotation: none is applied. staging allows
// prometheus.io/*: only that one is. Each environment says which were dropped.
func TestPodAnnotationsNeedThePlatformsAllowance(t *testing.T) {
	tg := startTargets(t)
	east := tg["east"]
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	dev := releasetest.Environment(releasetest.Unique("pdev"), nil, "east")
	releasetest.CreateCleanly(t, c, dev)
	staging := releasetest.Environment(releasetest.Unique("pstg"), nil, "east")
	staging.Spec.AllowedPodAnnotations = []string{"prometheus.io/*"}
	releasetest.CreateCleanly(t, c, staging)
	createProject(t, ns, "shop", dev.Name, staging.Name)
	asked := map[string]string{
		"prometheus.io/scrape":                             "true",
		"sidecar.istio.io/inject":                          "false",
		"traffic.sidecar.istio.io/excludeOutboundIPRanges": "0.0.0.0/0",
	}
	releaseOf(t, ns, "shop", "r1", "annotated", releasetest.Deploy(1, asked))
	rel := waitRelease(t, c, ns, "r1", metav1.ConditionTrue, ferryv1.SucceededReason)

	d := east.waitAvailable(t, "shop-"+dev.Name, "shop", releasetest.Image("annotated"), 1)
	if len(d.Spec.Template.Annotations) != 0 {
		t.Errorf("dev applied pod annotations %v", d.Spec.Template.Annotations)
	}
	d = east.waitAvailable(t, "shop-"+staging.Name, "shop", releasetest.Image("annotated"), 1)
	if got := d.Spec.Template.Annotations; len(got) != 1 || got["prometheus.io/scrape"] != "true" {
		t.Errorf("staging applied pod annotations %v, want prometheus.io/scrape only", got)
	}
	devMsg := envCondition(rel, dev.Name, ferryv1.ReadyCondition).Message
	if !strings.Contains(devMsg, "were not applied: prometheus.io/scrape, sidecar.istio.io/inject, traffic.sidecar.istio.io/excludeOutboundIPRanges") {
		t.Errorf("dev message %q", devMsg)
	}
	stgMsg := envCondition(rel, staging.Name, ferryv1.ReadyCondition).Message
	if !strings.Contains(stgMsg, "were not applied: sidecar.istio.io/inject, traffic.sidecar.istio.io/excludeOutboundIPRanges") || strings.Contains(stgMsg, "prometheus") {
		t.Errorf("staging message %q", stgMsg)
	}
	testutil.Eventually(t, "PodAnnotationsDropped events", func() (bool, error) {
		reasons := strings.Join(eventReasons(t, c, ns, "r1"), ",")
		return strings.Count(reasons, ferryv1.PodAnnotationsDroppedReason) == 2, fmt.Errorf("events %s", reasons)
	})
}
