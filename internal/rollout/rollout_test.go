package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	appsv1ac "k8s.io/client-go/applyconfigurations/apps/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

const (
	oldImage = "harbor.example.com/team/app@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	newImage = "harbor.example.com/team/app@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func TestNamespaceFor(t *testing.T) {
	cases := []struct {
		template, want, wantErr string
	}{
		{template: "", want: "shop-prod"},
		{template: "{project}-{environment}", want: "shop-prod"},
		{template: "team-{project}", want: "team-shop"},
		{template: "{environment}", want: "prod"},
		{template: "{namespace}-{project}-{environment}", want: "team-a-shop-prod"},
		{template: "{namespace}", want: "team-a"},
		{template: "-{project}", wantErr: "not a valid namespace name"},
		{template: strings.Repeat("x", 60) + "{project}", wantErr: "at most 63"},
		{template: strings.Repeat("x", 58) + "{namespace}", wantErr: "at most 63"},
	}
	for _, tc := range cases {
		got, err := NamespaceFor(tc.template, types.NamespacedName{Namespace: "team-a", Name: "shop"}, "prod")
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("NamespaceFor(%q) error = %v, want %q", tc.template, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("NamespaceFor(%q) = %q, %v; want %q", tc.template, got, err, tc.want)
		}
	}
}

func TestPinnedImage(t *testing.T) {
	digest := "@sha256:" + strings.Repeat("a", 64)
	cases := []struct{ in, want, wantErr string }{
		{in: "harbor.example.com/team/app" + digest, want: "harbor.example.com/team/app" + digest},
		{in: "harbor.example.com/team/app:v1.2" + digest, want: "harbor.example.com/team/app" + digest},
		{in: "localhost:5000/app" + digest, want: "localhost:5000/app" + digest},
		{in: "localhost:5000/app:main" + digest, want: "localhost:5000/app" + digest},
		{in: "harbor.example.com/team/app:v1.2", wantErr: "not pinned by digest"},
		{in: "app@sha256:abc", wantErr: "not pinned by digest"},
	}
	for _, tc := range cases {
		got, err := PinnedImage(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("PinnedImage(%q) error = %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("PinnedImage(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestCanaryReplicas(t *testing.T) {
	cases := []struct{ replicas, k, n, want int32 }{
		{4, 1, 2, 2}, {4, 1, 3, 2}, {4, 2, 3, 3}, {1, 1, 3, 1}, {10, 1, 10, 1}, {10, 9, 10, 9}, {3, 1, 2, 2},
	}
	for _, tc := range cases {
		if got := canaryReplicas(tc.replicas, tc.k, tc.n); got != tc.want {
			t.Errorf("canaryReplicas(%d, %d, %d) = %d, want %d", tc.replicas, tc.k, tc.n, got, tc.want)
		}
	}
}

func TestStrategyOf(t *testing.T) {
	env := func(r ferryv1.RolloutStrategy) *ferryv1.Environment {
		return &ferryv1.Environment{Spec: ferryv1.EnvironmentSpec{Rollout: r}}
	}
	cases := []struct {
		name string
		in   ferryv1.RolloutStrategy
		want Strategy
	}{
		{"empty", ferryv1.RolloutStrategy{}, Strategy{Type: ferryv1.RollingStrategy, Between: ferryv1.BatchGateNone, ProgressDeadline: DefaultProgressDeadline}},
		{"deadline", ferryv1.RolloutStrategy{ProgressDeadline: &metav1.Duration{Duration: time.Minute}}, Strategy{Type: ferryv1.RollingStrategy, Between: ferryv1.BatchGateNone, ProgressDeadline: time.Minute}},
		{"batch pause", ferryv1.RolloutStrategy{Type: ferryv1.BatchStrategy, Batch: &ferryv1.BatchRollout{Batches: 3, Between: ferryv1.BatchGatePause, Pause: &metav1.Duration{Duration: time.Second}}},
			Strategy{Type: ferryv1.BatchStrategy, Batches: 3, Between: ferryv1.BatchGatePause, Pause: time.Second, ProgressDeadline: DefaultProgressDeadline}},
		{"batch without batches", ferryv1.RolloutStrategy{Type: ferryv1.BatchStrategy}, Strategy{Type: ferryv1.RollingStrategy, Between: ferryv1.BatchGateNone, ProgressDeadline: DefaultProgressDeadline}},
	}
	for _, tc := range cases {
		if got := StrategyOf(env(tc.in)); got != tc.want {
			t.Errorf("%s: StrategyOf = %+v, want %+v", tc.name, got, tc.want)
		}
	}
}

// cluster is a fake target cluster whose Deployments become healthy only when the test says so.
type cluster struct {
	t testing.TB
	client.Client
	// writes counts server-side applies; mutations counts every write (create, update, patch,
	// delete, apply).
	writes, mutations int
}

func newCluster(t testing.TB, objs ...client.Object) *cluster {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		t.Fatal(err)
	}
	c := &cluster{t: t}
	c.Client = fake.NewClientBuilder().WithScheme(s).WithObjects(objs...).
		WithStatusSubresource(&appsv1.Deployment{}).
		WithInterceptorFuncs(interceptor.Funcs{
			Create: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.CreateOption) error {
				c.mutations++
				return cl.Create(ctx, obj, opts...)
			},
			Update: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.UpdateOption) error {
				c.mutations++
				return cl.Update(ctx, obj, opts...)
			},
			Patch: func(ctx context.Context, cl client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
				c.mutations++
				return cl.Patch(ctx, obj, patch, opts...)
			},
			Delete: func(ctx context.Context, cl client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
				c.mutations++
				return cl.Delete(ctx, obj, opts...)
			},
			Apply: func(ctx context.Context, cl client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
				c.mutations++
				c.writes++
				if err := cl.Apply(ctx, obj, opts...); err != nil {
					return err
				}
				// Like a Deployment controller that has not caught up: nothing is available yet.
				if d, ok := obj.(*appsv1ac.DeploymentApplyConfiguration); ok {
					live := &appsv1.Deployment{}
					if err := cl.Get(ctx, client.ObjectKey{Namespace: *d.Namespace, Name: *d.Name}, live); err != nil {
						return err
					}
					live.Status = appsv1.DeploymentStatus{}
					return cl.Status().Update(ctx, live)
				}
				return nil
			},
		}).Build()
	return c
}

func (c *cluster) deployment(name string) *appsv1.Deployment {
	c.t.Helper()
	d := &appsv1.Deployment{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: "shop-prod", Name: name}, d); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		c.t.Fatal(err)
	}
	return d
}

// settle makes a Deployment report all its replicas updated and available.
func (c *cluster) settle(name string) {
	c.t.Helper()
	d := c.deployment(name)
	n := *d.Spec.Replicas
	d.Status = appsv1.DeploymentStatus{ObservedGeneration: d.Generation, Replicas: n, UpdatedReplicas: n, ReadyReplicas: n, AvailableReplicas: n}
	if err := c.Status().Update(context.Background(), d); err != nil {
		c.t.Fatal(err)
	}
}

// teamA owns the test workloads' namespace.
var teamA = Owner{Namespace: "team-a", Name: "shop", UID: "0b9c6a56-0000-4000-8000-00000000000a"}

func workload(image string, replicas int32, release string) *Workload {
	return &Workload{
		Project: "shop", Environment: "prod", Release: release, Namespace: "shop-prod", Image: image, Owner: teamA,
		Deploy: ferryv1.DeploySpec{
			Replicas:       ptr.To(replicas),
			Ports:          []int32{8080},
			HealthCheck:    &ferryv1.HealthCheck{Path: "/healthz", Port: 8080},
			PodAnnotations: map[string]string{"prometheus.io/scrape": "true"},
		},
	}
}

func cond(st *ferryv1.ClusterRolloutStatus) metav1.Condition {
	if c := meta.FindStatusCondition(st.Conditions, ferryv1.RolledOutCondition); c != nil {
		return *c
	}
	return metav1.Condition{}
}

func step(t *testing.T, c client.Client, in Input, st *ferryv1.ClusterRolloutStatus) Result {
	t.Helper()
	res, err := Step(context.Background(), c, in, st)
	if err != nil {
		t.Fatal(err)
	}
	return res
}

func TestRollingRollout(t *testing.T) {
	c := newCluster(t)
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	in := Input{Cluster: "a", Workload: workload(newImage, 2, "r2"), Strategy: Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute}, Now: start}
	st := &ferryv1.ClusterRolloutStatus{Cluster: "a"}

	res := step(t, c, in, st)
	// Namespace (created with its owner, then applied), ServiceAccount, Service, Deployment.
	if res.Writes != 5 || c.writes != 3 {
		t.Errorf("first step wrote %d objects (%d applies), want 5 (3 applies)", res.Writes, c.writes)
	}
	if got := cond(st); got.Status != metav1.ConditionUnknown || got.Reason != ferryv1.RollingOutReason {
		t.Errorf("condition = %+v, want Unknown/RollingOut", got)
	}
	d := c.deployment("shop")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != newImage {
		t.Errorf("image = %s", img)
	}
	if d.Spec.Template.Annotations["prometheus.io/scrape"] != "true" || d.Spec.Template.Spec.Containers[0].ReadinessProbe.HTTPGet.Path != "/healthz" {
		t.Errorf("template = %+v", d.Spec.Template)
	}
	ns := &corev1.Namespace{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: "shop-prod"}, ns); err != nil {
		t.Fatal(err)
	}
	if ns.Labels[ferryv1.ProjectLabel] != "shop" || ns.Labels[ferryv1.EnvironmentLabel] != "prod" ||
		ns.Labels[ferryv1.ProjectUIDLabel] != string(teamA.UID) || ns.Labels[ferryv1.ProjectNamespaceLabel] != "team-a" ||
		ns.Annotations[ferryv1.OwnerAnnotation] != "team-a/shop" {
		t.Errorf("namespace labels = %v, annotations %v", ns.Labels, ns.Annotations)
	}

	// Nothing changed: nothing is written again.
	in.Now = start.Add(10 * time.Second)
	if res := step(t, c, in, st); res.Writes != 0 {
		t.Errorf("second step wrote %d objects, want 0", res.Writes)
	}
	c.settle("shop")
	in.Now = start.Add(20 * time.Second)
	step(t, c, in, st)
	if got := cond(st); got.Status != metav1.ConditionTrue || got.Reason != ferryv1.HealthyReason || st.CompletionTime == nil {
		t.Errorf("condition = %+v, completion %v; want True/Healthy", got, st.CompletionTime)
	}
	if st.Replicas != 2 || st.UpdatedReplicas != 2 || st.AvailableReplicas != 2 || st.Image != newImage {
		t.Errorf("status = %+v", st)
	}
	// A cluster that succeeded is never written to again.
	in.Now = start.Add(time.Hour)
	if res := step(t, c, in, st); res.Writes != 0 || !Succeeded(st) {
		t.Errorf("step after success wrote %d objects", res.Writes)
	}
}

func TestRollingRolloutFailsAndRollsBack(t *testing.T) {
	c := newCluster(t)
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	prev := workload(oldImage, 2, "r1")
	strategy := Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute}
	// r1 runs.
	st1 := &ferryv1.ClusterRolloutStatus{}
	step(t, c, Input{Workload: prev, Strategy: strategy, Now: start}, st1)
	c.settle("shop")
	step(t, c, Input{Workload: prev, Strategy: strategy, Now: start}, st1)
	if !Succeeded(st1) {
		t.Fatalf("r1 did not succeed: %+v", cond(st1))
	}

	// r2 never becomes healthy.
	broken := workload(newImage, 2, "r2")
	broken.Deploy.PodAnnotations = map[string]string{"sim.ferry.dev/unready": "true"}
	st := &ferryv1.ClusterRolloutStatus{}
	in := Input{Workload: broken, Previous: prev, Strategy: strategy, Now: start.Add(time.Minute)}
	step(t, c, in, st)
	in.Now = start.Add(time.Minute + 30*time.Second)
	step(t, c, in, st)
	if Failed(st) {
		t.Fatalf("failed before the deadline: %+v", cond(st))
	}
	in.Now = start.Add(2*time.Minute + time.Second)
	step(t, c, in, st)
	if got := cond(st); !Failed(st) || !strings.Contains(got.Message, "progress deadline") {
		t.Fatalf("condition = %+v, want RolloutFailed after the deadline", got)
	}

	// Roll back: the previous image and settings come back.
	st.BatchStartTime = nil
	in.Rollback = true
	step(t, c, in, st)
	d := c.deployment("shop")
	if img := d.Spec.Template.Spec.Containers[0].Image; img != oldImage {
		t.Fatalf("image after rollback = %s, want %s", img, oldImage)
	}
	if _, ok := d.Spec.Template.Annotations["sim.ferry.dev/unready"]; ok {
		t.Errorf("the broken release's pod annotations survived the rollback: %v", d.Spec.Template.Annotations)
	}
	if got := cond(st); got.Reason != ferryv1.RollingBackReason {
		t.Errorf("condition = %+v, want RollingBack", got)
	}
	c.settle("shop")
	step(t, c, in, st)
	if got := cond(st); got.Reason != ferryv1.RolledBackReason || st.CompletionTime == nil || st.Image != oldImage {
		t.Errorf("condition = %+v, image %s; want RolledBack with completion", got, st.Image)
	}
}

func TestBatchRolloutWithApprovals(t *testing.T) {
	c := newCluster(t)
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	strategy := Strategy{Type: ferryv1.BatchStrategy, Batches: 3, Between: ferryv1.BatchGateApproval, ProgressDeadline: time.Minute}
	prev := workload(oldImage, 4, "r1")

	// With nothing running there is nothing to canary against: the first release goes straight in.
	st1 := &ferryv1.ClusterRolloutStatus{}
	step(t, c, Input{Workload: prev, Strategy: strategy, Now: start}, st1)
	if st1.Batch != 3 || st1.Batches != 3 || c.deployment("shop-canary") != nil {
		t.Fatalf("first release: batch %d/%d, canary %v", st1.Batch, st1.Batches, c.deployment("shop-canary"))
	}
	c.settle("shop")
	step(t, c, Input{Workload: prev, Strategy: strategy, Now: start}, st1)

	approved := map[int32]bool{}
	in := Input{Workload: workload(newImage, 4, "r2"), Previous: prev, Strategy: strategy, Now: start,
		BatchGate: func(b int32) GateAnswer { return GateAnswer{Approved: approved[b]} }}
	st := &ferryv1.ClusterRolloutStatus{}
	step(t, c, in, st)
	canary := c.deployment("shop-canary")
	if st.Batch != 1 || canary == nil || *canary.Spec.Replicas != 2 || canary.Spec.Template.Spec.Containers[0].Image != newImage {
		t.Fatalf("batch 1: status %+v canary %+v", st, canary)
	}
	if stable := c.deployment("shop"); stable.Spec.Template.Spec.Containers[0].Image != oldImage || *stable.Spec.Replicas != 4 {
		t.Errorf("the stable Deployment changed during batch 1")
	}
	c.settle("shop-canary")
	step(t, c, in, st)
	if got := cond(st); got.Reason != ferryv1.WaitingForApprovalReason || !strings.Contains(got.Message, "batch 2") {
		t.Fatalf("condition = %+v, want WaitingForApproval for batch 2", got)
	}
	// Waiting writes nothing.
	writes := c.writes
	step(t, c, in, st)
	if c.writes != writes {
		t.Errorf("waiting for an approval applied %d times", c.writes-writes)
	}

	approved[2] = true
	step(t, c, in, st)
	if canary := c.deployment("shop-canary"); st.Batch != 2 || *canary.Spec.Replicas != 3 {
		t.Fatalf("batch 2: status %+v canary replicas %d", st, *canary.Spec.Replicas)
	}
	c.settle("shop-canary")
	approved[3] = true
	step(t, c, in, st)
	if st.Batch != 3 || c.deployment("shop").Spec.Template.Spec.Containers[0].Image != newImage {
		t.Fatalf("batch 3: status %+v", st)
	}
	c.settle("shop")
	step(t, c, in, st)
	if !Succeeded(st) || c.deployment("shop-canary") != nil {
		t.Errorf("after the last batch: condition %+v, canary %v", cond(st), c.deployment("shop-canary"))
	}
}

func TestBatchPauseAndRejection(t *testing.T) {
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	prev := workload(oldImage, 2, "r1")
	running := func(t *testing.T) *cluster {
		c := newCluster(t)
		step(t, c, Input{Workload: prev, Strategy: Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute}, Now: start}, &ferryv1.ClusterRolloutStatus{})
		c.settle("shop")
		return c
	}

	t.Run("pause", func(t *testing.T) {
		c := running(t)
		in := Input{Workload: workload(newImage, 2, "r2"), Previous: prev, Now: start,
			Strategy: Strategy{Type: ferryv1.BatchStrategy, Batches: 2, Between: ferryv1.BatchGatePause, Pause: 30 * time.Second, ProgressDeadline: time.Minute}}
		st := &ferryv1.ClusterRolloutStatus{}
		step(t, c, in, st)
		c.settle("shop-canary")
		in.Now = start.Add(5 * time.Second)
		step(t, c, in, st)
		if got := cond(st); got.Reason != ferryv1.PausedReason || st.Batch != 1 {
			t.Fatalf("condition = %+v, batch %d; want Paused in batch 1", got, st.Batch)
		}
		// The canary loses a pod during the pause: the pause starts again once it recovers.
		d := c.deployment("shop-canary")
		d.Status.AvailableReplicas = 0
		if err := c.Status().Update(context.Background(), d); err != nil {
			t.Fatal(err)
		}
		in.Now = start.Add(10 * time.Second)
		step(t, c, in, st)
		if got := cond(st); got.Reason != ferryv1.RollingOutReason || !strings.Contains(got.Message, "was healthy and is not any more") || st.BatchHealthyTime != nil {
			t.Fatalf("condition = %+v, want RollingOut after losing health", got)
		}
		c.settle("shop-canary")
		in.Now = start.Add(20 * time.Second)
		step(t, c, in, st)
		in.Now = start.Add(36 * time.Second)
		step(t, c, in, st)
		if st.Batch != 1 {
			t.Fatalf("batch = %d 16s after recovering, want 1 (the pause started again)", st.Batch)
		}
		in.Now = start.Add(51 * time.Second)
		step(t, c, in, st)
		if st.Batch != 2 {
			t.Fatalf("batch = %d after the pause, want 2", st.Batch)
		}
	})

	t.Run("rejected", func(t *testing.T) {
		c := running(t)
		in := Input{Workload: workload(newImage, 2, "r2"), Previous: prev, Now: start,
			Strategy:  Strategy{Type: ferryv1.BatchStrategy, Batches: 2, Between: ferryv1.BatchGateApproval, ProgressDeadline: time.Minute},
			BatchGate: func(int32) GateAnswer { return GateAnswer{Rejected: "carol: error rate is up"} }}
		st := &ferryv1.ClusterRolloutStatus{}
		step(t, c, in, st)
		c.settle("shop-canary")
		step(t, c, in, st)
		if got := cond(st); !Failed(st) || got.Reason != ferryv1.RejectedReason || !strings.Contains(got.Message, "error rate is up") {
			t.Fatalf("condition = %+v, want Rejected", got)
		}
		// Rolling back a canary batch only removes the canary: the stable one never changed.
		in.Rollback = true
		st.BatchStartTime = nil
		writes := c.writes
		step(t, c, in, st)
		if c.deployment("shop-canary") != nil || c.writes != writes {
			t.Errorf("rollback left the canary or applied the unchanged stable Deployment (%d applies)", c.writes-writes)
		}
		if got := cond(st); got.Reason != ferryv1.RolledBackReason {
			t.Errorf("condition = %+v, want RolledBack", got)
		}
	})
}

func TestNothingToRollBackTo(t *testing.T) {
	c := newCluster(t)
	st := &ferryv1.ClusterRolloutStatus{}
	in := Input{Workload: workload(newImage, 1, "r1"), Rollback: true, Strategy: Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute}, Now: time.Now()}
	step(t, c, in, st)
	if got := cond(st); got.Reason != ferryv1.RolloutFailedReason || !strings.Contains(got.Message, "no previous image") || st.CompletionTime == nil {
		t.Errorf("condition = %+v", got)
	}
}

func TestInvalidWorkloadFailsTheRollout(t *testing.T) {
	c := newCluster(t)
	invalid := apierrors.NewInvalid(schema.GroupKind{Group: "apps", Kind: "Deployment"}, "shop", nil)
	c.Client = interceptor.NewClient(c.Client.(client.WithWatch), interceptor.Funcs{
		Apply: func(ctx context.Context, cl client.WithWatch, obj runtime.ApplyConfiguration, opts ...client.ApplyOption) error {
			if _, ok := obj.(interface{ GetKind() *string }); ok && *obj.(interface{ GetKind() *string }).GetKind() == "Deployment" {
				return invalid
			}
			return cl.Apply(ctx, obj, opts...)
		},
	})
	st := &ferryv1.ClusterRolloutStatus{}
	in := Input{Workload: workload(newImage, 1, "r1"), Strategy: Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute}, Now: time.Now()}
	step(t, c, in, st)
	if got := cond(st); !Failed(st) || !strings.Contains(got.Message, "refused the workload") {
		t.Errorf("condition = %+v, want RolloutFailed", got)
	}
}
