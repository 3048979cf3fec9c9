package release

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// The fast tier: the Release controller's steps on controller-runtime's fake client, with the
// indexes the manager registers and a fixed clock. The integration tests (release_*_test.go with
// a hub and simulated clusters) check the same branches end to end.

const (
	unitNS     = "team"
	unitImage  = "registry.example.com/team/shop@sha256:1111111111111111111111111111111111111111111111111111111111111111"
	olderImage = "registry.example.com/team/shop@sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

func unitReconciler(t *testing.T, objs ...client.Object) *Reconciler {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := ferryv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).
		WithStatusSubresource(&ferryv1.Release{}, &ferryv1.Project{}, &ferryv1.Build{}).
		WithIndex(&ferryv1.Release{}, projectIndex, func(o client.Object) []string { return []string{o.(*ferryv1.Release).Spec.Project} }).
		WithIndex(&ferryv1.Approval{}, releaseIndex, func(o client.Object) []string { return []string{o.(*ferryv1.Approval).Spec.Release} }).
		WithIndex(&ferryv1.Build{}, imageDigestIndex, func(o client.Object) []string { return []string{imageDigest(o.(*ferryv1.Build))} }).
		WithIndex(&ferryv1.Release{}, targetIndex, indexLockedTargets).
		Build()
	return &Reconciler{Client: c, APIReader: c, Recorder: events.NewFakeRecorder(100), Namespace: "ferry-system", Now: func() time.Time { return now.Time }}
}

// unitRelease is Release name of project shop, created at minute, entering env prod.
func unitRelease(name string, minute int) *ferryv1.Release {
	return &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: unitNS, Name: name, UID: types.UID("uid-" + name), Generation: 1,
			CreationTimestamp: metav1.NewTime(now.Add(time.Duration(minute) * time.Minute))},
		Spec:   ferryv1.ReleaseSpec{Project: "shop", Image: unitImage},
		Status: ferryv1.ReleaseStatus{Environments: []ferryv1.ReleaseEnvironmentStatus{{Name: "prod", StartTime: &now}}},
	}
}

func unitPlan(deployed ...ferryv1.ProjectEnvironmentStatus) *plan {
	project := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: unitNS, Name: "shop", UID: "shop-uid"}}
	project.Spec.Promotion.Environments = []string{"prod"}
	project.Status.Environments = deployed
	return &plan{project: project, path: []string{"prod"}, image: unitImage}
}

func unitEnv(mutate func(*ferryv1.Environment)) *ferryv1.Environment {
	env := &ferryv1.Environment{ObjectMeta: metav1.ObjectMeta{Name: "prod"},
		Spec: ferryv1.EnvironmentSpec{Clusters: []string{"east"}, NamespaceTemplate: ferryv1.DefaultNamespaceTemplate, Rollout: ferryv1.RolloutStrategy{Type: ferryv1.RollingStrategy}}}
	if mutate != nil {
		mutate(env)
	}
	return env
}

// holding is a Release of project in prod that holds the deploy lock of namespace ns on east.
func holding(name, project, ns string) *ferryv1.Release {
	rel := unitRelease(name, -5)
	rel.Spec.Project = project
	es := &rel.Status.Environments[0]
	es.Clusters = []ferryv1.ClusterRolloutStatus{{Cluster: "east", Namespace: ns}}
	setEnvRollingOut(es, "rolling out", 1, now)
	return rel
}

func approvalBy(user string, decision ferryv1.Decision) *ferryv1.Approval {
	return &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: unitNS, Name: "r1-prod-" + user},
		Spec: ferryv1.ApprovalSpec{Release: "r1", Environment: "prod", Decision: decision, Comment: "looked at it",
			Approver: &ferryv1.Approver{Username: user}, Image: unitImage},
	}
}

func kindOf(s step) string {
	switch s.kind {
	case proceedKind:
		return "proceed"
	case waitKind:
		return "wait " + s.after.String()
	}
	return "stop"
}

// TestGateUnit: no gate proceeds; a gate waits for approvals (until it expires, when it has an
// expiry), proceeds once approved, stops when rejected, and stalls once expired.
func TestGateUnit(t *testing.T) {
	gate := &ferryv1.ApprovalPolicy{Users: []string{"bob", "carol"}, MinApprovals: 1}
	expiring := gate.DeepCopy()
	expiring.Expiry = &metav1.Duration{Duration: time.Hour}
	for _, tc := range []struct {
		name      string
		policy    *ferryv1.ApprovalPolicy
		gate      *ferryv1.GateStatus
		approvals []client.Object
		want      string
		approved  string
		ready     string
		completed bool
	}{
		{name: "no gate", want: "proceed", approved: "True/NoGate"},
		{name: "waiting", policy: gate, want: "wait 0s", approved: "Unknown/WaitingForApproval", ready: "Unknown/WaitingForApproval"},
		{name: "waiting until the gate expires", policy: expiring, want: "wait 1h0m1s", approved: "Unknown/WaitingForApproval", ready: "Unknown/WaitingForApproval"},
		{name: "approved", policy: gate, approvals: []client.Object{approvalBy("bob", ferryv1.DecisionApprove)}, want: "proceed", approved: "True/Approved"},
		{name: "an approval of someone not eligible", policy: gate, approvals: []client.Object{approvalBy("mallory", ferryv1.DecisionApprove)}, want: "wait 0s", approved: "Unknown/WaitingForApproval", ready: "Unknown/WaitingForApproval"},
		{name: "rejected", policy: gate, approvals: []client.Object{approvalBy("carol", ferryv1.DecisionReject)}, want: "stop", approved: "False/Rejected", ready: "False/Rejected", completed: true},
		{name: "expired", policy: expiring, gate: &ferryv1.GateStatus{WaitingSince: ptrTime(now.Add(-2 * time.Hour)), ExpiresAt: ptrTime(now.Add(-time.Hour))},
			want: "stop", approved: "False/Expired", ready: "False/Expired"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := unitReconciler(t, tc.approvals...)
			rel := unitRelease("r1", 0)
			es := &rel.Status.Environments[0]
			es.Gate = tc.gate
			st, err := r.gate(context.Background(), rel, unitPlan(), unitEnv(func(e *ferryv1.Environment) { e.Spec.Approval = tc.policy }), es, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := kindOf(st); got != tc.want {
				t.Errorf("step %s, want %s", got, tc.want)
			}
			if got := cond(es.Conditions, ferryv1.ApprovedCondition); got != tc.approved {
				t.Errorf("Approved %s, want %s", got, tc.approved)
			}
			if got := cond(es.Conditions, ferryv1.ReadyCondition); got != orNone(tc.ready) {
				t.Errorf("Ready %s, want %s", got, tc.ready)
			}
			if (es.CompletionTime != nil) != tc.completed {
				t.Errorf("completion %v", es.CompletionTime)
			}
		})
	}
}

// TestMustStopUnit: a newer Release that reached the environment supersedes this one; an image
// built after this Release's stops it unless it is a rollback; otherwise the Release goes on.
func TestMustStopUnit(t *testing.T) {
	newerBuilt := metav1.NewTime(now.Add(time.Hour))
	runsNewer := ferryv1.ProjectEnvironmentStatus{Name: "prod", Image: olderImage, Release: "r0", BuiltAt: &newerBuilt}
	build := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: unitNS, Name: "b1", CreationTimestamp: now}, Spec: ferryv1.BuildSpec{Project: "shop"},
		Status: ferryv1.BuildStatus{Image: unitImage}}
	for _, tc := range []struct {
		name     string
		siblings []ferryv1.Release
		deployed []ferryv1.ProjectEnvironmentStatus
		rollback bool
		want     string
		ready    string
	}{
		{name: "alone", want: "proceed"},
		{name: "an older Release reached the environment", siblings: []ferryv1.Release{*unitRelease("r0", -1)}, want: "proceed"},
		{name: "a newer Release reached the environment", siblings: []ferryv1.Release{*unitRelease("r2", 1)}, want: "stop", ready: "False/Superseded"},
		{name: "a newer Release has not reached it", siblings: []ferryv1.Release{func() ferryv1.Release {
			r := unitRelease("r2", 1)
			r.Status.Environments = nil
			return *r
		}()}, want: "proceed"},
		{name: "the environment runs a newer image", deployed: []ferryv1.ProjectEnvironmentStatus{runsNewer}, want: "stop", ready: "False/NewerImageDeployed"},
		{name: "a rollback may replace a newer image", deployed: []ferryv1.ProjectEnvironmentStatus{runsNewer}, rollback: true, want: "proceed"},
		{name: "the environment runs this image", deployed: []ferryv1.ProjectEnvironmentStatus{{Name: "prod", Image: unitImage}}, want: "proceed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := unitReconciler(t, build)
			rel := unitRelease("r1", 0)
			rel.Spec.Rollback = tc.rollback
			es := &rel.Status.Environments[0]
			st, err := r.mustStop(context.Background(), rel, unitPlan(tc.deployed...), tc.siblings, es, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := kindOf(st); got != tc.want {
				t.Errorf("step %s, want %s", got, tc.want)
			}
			if got := cond(es.Conditions, ferryv1.ReadyCondition); got != orNone(tc.ready) {
				t.Errorf("Ready %s, want %s", got, tc.ready)
			}
			if (es.CompletionTime != nil) != (tc.want == "stop") {
				t.Errorf("completion %v", es.CompletionTime)
			}
		})
	}
}

// TestBeforeRolloutUnit: the deploy lock (a locked Environment, another Release of the project
// in the environment, another project's Release in the same namespace), supersession and the
// gate keep a Release from starting; otherwise it takes the lock and starts on every cluster.
func TestBeforeRolloutUnit(t *testing.T) {
	for _, tc := range []struct {
		name    string
		env     func(*ferryv1.Environment)
		objs    []client.Object
		want    string
		ready   string
		message string
	}{
		{name: "starts", want: "proceed", ready: "Unknown/RollingOut", message: "rolling out registry.example.com/team/shop@sha256:111111111111 to namespace shop-prod on east"},
		{name: "a locked Environment", env: func(e *ferryv1.Environment) { e.Spec.Locked, e.Spec.LockReason = true, "freeze" },
			want: "wait 0s", ready: "Unknown/EnvironmentLocked", message: "environment prod is locked: freeze"},
		{name: "another Release of the project rolls out", objs: []client.Object{holding("r0", "shop", "shop-prod")},
			want: "wait 0s", ready: "Unknown/EnvironmentLocked", message: "release r0 is rolling out in environment prod"},
		{name: "another project's Release holds the namespace", env: func(e *ferryv1.Environment) { e.Spec.NamespaceTemplate = "shared" },
			objs: []client.Object{holding("other-1", "other", "shared")},
			want: "wait 0s", ready: "Unknown/EnvironmentLocked", message: "release other-1 (project other) is rolling out to namespace shared on cluster east"},
		{name: "superseded", objs: []client.Object{unitRelease("r2", 1)}, want: "stop", ready: "False/Superseded"},
		{name: "a reserved namespace", env: func(e *ferryv1.Environment) { e.Spec.NamespaceTemplate = "ferry-system" }, want: "stop", ready: "False/NamespaceReserved"},
		{name: "the gate waits", env: func(e *ferryv1.Environment) {
			e.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"bob"}, MinApprovals: 1}
		},
			want: "wait 0s", ready: "Unknown/WaitingForApproval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := unitReconciler(t, tc.objs...)
			rel := unitRelease("r1", 0)
			es := &rel.Status.Environments[0]
			p := unitPlan()
			defer p.releaseLocks()
			st, err := r.beforeRollout(context.Background(), rel, p, unitEnv(tc.env), es, now)
			if err != nil {
				t.Fatal(err)
			}
			if got := kindOf(st); got != tc.want {
				t.Errorf("step %s, want %s", got, tc.want)
			}
			ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
			if got := cond(es.Conditions, ferryv1.ReadyCondition); got != tc.ready || (tc.message != "" && !strings.HasPrefix(ready.Message, tc.message)) {
				t.Errorf("Ready %s (%+v), want %s: %s", got, ready, tc.ready, tc.message)
			}
			started := len(es.Clusters) == 1 && es.Clusters[0].Namespace == "shop-prod"
			if started != (tc.want == "proceed") || (started && len(p.unlock) == 0) {
				t.Errorf("clusters %+v, %d locks held", es.Clusters, len(p.unlock))
			}
		})
	}
}

func ptrTime(t time.Time) *metav1.Time {
	m := metav1.NewTime(t)
	return &m
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
