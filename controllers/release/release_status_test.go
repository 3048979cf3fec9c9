package release

import (
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

var now = metav1.NewTime(time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC))

func cond(conds []metav1.Condition, t string) string {
	c := meta.FindStatusCondition(conds, t)
	if c == nil {
		return "-"
	}
	return string(c.Status) + "/" + c.Reason
}

func TestEnvironmentSetters(t *testing.T) {
	cases := []struct {
		name                        string
		set                         func(es *ferryv1.ReleaseEnvironmentStatus)
		ready, approved, rolledOut  string
		completed, locks, succeeded bool
		started, back               bool
	}{
		{name: "waiting for the lock", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setEnvWaiting(es, ferryv1.EnvironmentLockedReason, "locked", 1, now)
		}, ready: "Unknown/EnvironmentLocked", approved: "-", rolledOut: "-"},
		{name: "gate waiting", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateWaiting(es, "0 of 2", 1, now)
		}, ready: "Unknown/WaitingForApproval", approved: "Unknown/WaitingForApproval", rolledOut: "-"},
		{name: "rejected", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateClosed(es, ferryv1.RejectedReason, "rejected by carol", 1, now)
		}, ready: "False/Rejected", approved: "False/Rejected", rolledOut: "-", completed: true},
		{name: "expired is not the end", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateClosed(es, ferryv1.ExpiredReason, "expired", 1, now)
		}, ready: "False/Expired", approved: "False/Expired", rolledOut: "-"},
		{name: "rolling out", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateOpen(es, ferryv1.ApprovedReason, "approved by bob", 1, now)
			setEnvRollingOut(es, "a: RollingOut", 1, now)
		}, ready: "Unknown/RollingOut", approved: "True/Approved", rolledOut: "Unknown/RollingOut", locks: true, started: true},
		{name: "rolling back", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setEnvRollingOut(es, "a", 1, now)
			setEnvRollingBack(es, "cluster a: deadline", 1, now)
		}, ready: "False/RollingBack", approved: "-", rolledOut: "False/RollingBack", locks: true, started: true, back: true},
		{name: "rolled back", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setEnvRollingBack(es, "cluster a: deadline", 1, now)
			setEnvFailed(es, ferryv1.RolledBackReason, "cluster a: deadline; rolled back", 1, now)
		}, ready: "False/RolledBack", approved: "-", rolledOut: "False/RolledBack", completed: true, started: true},
		{name: "succeeded", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateOpen(es, ferryv1.NoGateReason, "no gate", 1, now)
			setEnvRollingOut(es, "a", 1, now)
			setEnvSucceeded(es, "healthy", 1, now)
		}, ready: "True/Succeeded", approved: "True/NoGate", rolledOut: "True/Healthy", completed: true, succeeded: true, started: true},
		{name: "superseded", set: func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateWaiting(es, "0 of 1", 1, now)
			setEnvStopped(es, ferryv1.SupersededReason, "superseded by r2", 1, now)
		}, ready: "False/Superseded", approved: "Unknown/WaitingForApproval", rolledOut: "-", completed: true},
	}
	for _, tc := range cases {
		es := &ferryv1.ReleaseEnvironmentStatus{Name: "prod"}
		tc.set(es)
		got := []string{cond(es.Conditions, ferryv1.ReadyCondition), cond(es.Conditions, ferryv1.ApprovedCondition), cond(es.Conditions, ferryv1.RolledOutCondition)}
		want := []string{tc.ready, tc.approved, tc.rolledOut}
		if strings.Join(got, " ") != strings.Join(want, " ") {
			t.Errorf("%s: Ready Approved RolledOut = %v, want %v", tc.name, got, want)
		}
		if (es.CompletionTime != nil) != tc.completed || holdsLock(es) != tc.locks || envSucceeded(es) != tc.succeeded || rolloutStarted(es) != tc.started || rollingBack(es) != tc.back {
			t.Errorf("%s: completed %v locks %v succeeded %v started %v back %v", tc.name, es.CompletionTime != nil, holdsLock(es), envSucceeded(es), rolloutStarted(es), rollingBack(es))
		}
	}
}

func TestSummarize(t *testing.T) {
	path := []string{"dev", "prod"}
	release := func(prod func(es *ferryv1.ReleaseEnvironmentStatus)) *ferryv1.Release {
		rel := &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Generation: 2}}
		ensureEnvironments(rel, path, now)
		setEnvSucceeded(envStatus(rel, "dev"), "healthy", 2, now)
		if prod != nil {
			prod(envStatus(rel, "prod"))
		}
		return rel
	}
	cases := []struct {
		name                      string
		rel                       *ferryv1.Release
		ready, reconciling, stall string
		message                   string
		done                      bool
	}{
		{name: "next environment not started", rel: release(nil), ready: "Unknown/WaitingForPreviousEnvironment", reconciling: "True/WaitingForPreviousEnvironment", stall: "-", message: "prod: waiting for environment dev"},
		{name: "waiting for approval", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) { setGateWaiting(es, "1 of 2 approvals (bob)", 2, now) }),
			ready: "Unknown/WaitingForApproval", reconciling: "True/WaitingForApproval", stall: "-", message: "prod: 1 of 2 approvals (bob)"},
		{name: "expired: stalled, not finished", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateClosed(es, ferryv1.ExpiredReason, "expired", 2, now)
		}),
			ready: "False/Expired", reconciling: "False/Expired", stall: "True/Expired", message: "prod: expired"},
		{name: "rejected: stalled and finished", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) {
			setGateClosed(es, ferryv1.RejectedReason, "rejected by carol: no", 2, now)
		}),
			ready: "False/Rejected", reconciling: "False/Rejected", stall: "True/Rejected", message: "prod: rejected by carol: no", done: true},
		{name: "superseded: finished, not stalled", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) {
			setEnvStopped(es, ferryv1.SupersededReason, "superseded by r2", 2, now)
		}),
			ready: "False/Superseded", reconciling: "False/Superseded", stall: "False/Superseded", message: "prod: superseded by r2", done: true},
		{name: "rolling back is not the end yet", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) { setEnvRollingBack(es, "cluster a: deadline", 2, now) }),
			ready: "False/RollingBack", reconciling: "True/RollingBack", stall: "-", message: "prod: cluster a: deadline"},
		{name: "everywhere", rel: release(func(es *ferryv1.ReleaseEnvironmentStatus) { setEnvSucceeded(es, "healthy", 2, now) }),
			ready: "True/Succeeded", reconciling: "False/Succeeded", stall: "-", message: "rolled out to dev, prod", done: true},
	}
	for _, tc := range cases {
		summarize(tc.rel, path, now)
		conds := tc.rel.Status.Conditions
		got := []string{cond(conds, ferryv1.ReadyCondition), cond(conds, ferryv1.ReconcilingCondition), cond(conds, ferryv1.StalledCondition)}
		if strings.Join(got, " ") != strings.Join([]string{tc.ready, tc.reconciling, tc.stall}, " ") {
			t.Errorf("%s: Ready Reconciling Stalled = %v", tc.name, got)
		}
		if msg := meta.FindStatusCondition(conds, ferryv1.ReadyCondition).Message; msg != tc.message {
			t.Errorf("%s: message %q, want %q", tc.name, msg, tc.message)
		}
		if (tc.rel.Status.CompletionTime != nil) != tc.done {
			t.Errorf("%s: completion %v", tc.name, tc.rel.Status.CompletionTime)
		}
		if meta.FindStatusCondition(conds, ferryv1.ReadyCondition).ObservedGeneration != 2 {
			t.Errorf("%s: observedGeneration not set", tc.name)
		}
	}
}

func TestSupersessionAndLock(t *testing.T) {
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	rel := func(name string, created time.Duration, prod func(*ferryv1.ReleaseEnvironmentStatus)) ferryv1.Release {
		r := ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(created))}}
		if prod != nil {
			es := ferryv1.ReleaseEnvironmentStatus{Name: "prod"}
			prod(&es)
			r.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
		}
		return r
	}
	reached := func(es *ferryv1.ReleaseEnvironmentStatus) { es.StartTime = &now }
	rolling := func(es *ferryv1.ReleaseEnvironmentStatus) { es.StartTime = &now; setEnvRollingOut(es, "", 1, now) }
	me := rel("r2", time.Minute, nil)
	cases := []struct {
		name               string
		siblings           []ferryv1.Release
		superseded, holder string
	}{
		{name: "alone"},
		{name: "an older one reached prod", siblings: []ferryv1.Release{rel("r1", 0, reached)}},
		{name: "a newer one reached prod", siblings: []ferryv1.Release{rel("r3", 2*time.Minute, reached)}, superseded: "r3"},
		{name: "a newer one has not reached prod", siblings: []ferryv1.Release{rel("r3", 2*time.Minute, nil)}},
		{name: "same second, later name", siblings: []ferryv1.Release{rel("r9", time.Minute, reached)}, superseded: "r9"},
		{name: "same second, earlier name", siblings: []ferryv1.Release{rel("r1", time.Minute, reached)}},
		{name: "an older one rolling out holds the lock", siblings: []ferryv1.Release{rel("r1", 0, rolling)}, holder: "r1"},
		{name: "a finished one holds nothing", siblings: []ferryv1.Release{rel("r1", 0, func(es *ferryv1.ReleaseEnvironmentStatus) {
			setEnvRollingOut(es, "", 1, now)
			setEnvSucceeded(es, "", 1, now)
		})}},
	}
	for _, tc := range cases {
		if got := supersededBy(tc.siblings, &me, "prod"); got != tc.superseded {
			t.Errorf("%s: supersededBy = %q, want %q", tc.name, got, tc.superseded)
		}
		if got := lockHolder(tc.siblings, &me, "prod"); got != tc.holder {
			t.Errorf("%s: lockHolder = %q, want %q", tc.name, got, tc.holder)
		}
	}
}

func TestMatchesAutoRelease(t *testing.T) {
	policy := &ferryv1.AutoRelease{Branches: []string{"main", "release/*"}, Tags: []string{"v*"}}
	cases := map[string]bool{
		"refs/heads/main":            true,
		"refs/heads/release/1.2":     true,
		"refs/heads/release/1/2":     false,
		"refs/heads/feature/x":       false,
		"refs/tags/v1.2.0":           true,
		"refs/tags/nightly":          false,
		"refs/merge-requests/7/head": false,
	}
	for ref, want := range cases {
		if got := MatchesAutoRelease(policy, ref); got != want {
			t.Errorf("MatchesAutoRelease(%s) = %v, want %v", ref, got, want)
		}
	}
	if MatchesAutoRelease(nil, "refs/heads/main") {
		t.Error("no policy released a Build")
	}
}

// TestReleasable: only a push or tag push that the receiver recorded is released automatically;
// a Manual Build's ref is whatever its creator wrote.
func TestReleasable(t *testing.T) {
	build := func(kind ferryv1.TriggerKind) *ferryv1.Build {
		b := &ferryv1.Build{Spec: ferryv1.BuildSpec{Ref: "refs/heads/main", Trigger: ferryv1.BuildTrigger{Kind: kind, User: "alice"}}, Status: ferryv1.BuildStatus{Image: "r@sha256:" + strings.Repeat("a", 64)}}
		meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason})
		return b
	}
	for kind, want := range map[ferryv1.TriggerKind]bool{ferryv1.TriggerPush: true, ferryv1.TriggerTag: true, ferryv1.TriggerManual: false, ferryv1.TriggerMergeRequest: false, "": false} {
		if got := releasable(build(kind)); got != want {
			t.Errorf("releasable(%q Build) = %v, want %v", kind, got, want)
		}
	}
	released := build(ferryv1.TriggerPush)
	released.Annotations = map[string]string{ferryv1.ReleasedAnnotation: "r1"}
	if releasable(released) {
		t.Error("a Build released before is released again")
	}
}

func TestResultOf(t *testing.T) {
	cases := map[string]string{
		ferryv1.SucceededReason: resultSucceeded, ferryv1.RolledBackReason: resultRolledBack, ferryv1.RolloutFailedReason: resultRolloutFailed,
		ferryv1.RejectedReason: resultRejected, ferryv1.SupersededReason: resultSuperseded, ferryv1.NewerImageDeployedReason: resultNewerImage,
		ferryv1.FailedReason: resultFailed,
	}
	for reason, want := range cases {
		if got := resultOf(&metav1.Condition{Reason: reason}); got != want {
			t.Errorf("resultOf(%s) = %s, want %s", reason, got, want)
		}
	}
}

func TestClusterError(t *testing.T) {
	err := clusterError(errorString(`Get "https://user:hunter2@10.0.0.1:6443/apis": dial tcp: connection refused`))
	if strings.Contains(err, "hunter2") || !strings.Contains(err, "https://10.0.0.1:6443") {
		t.Errorf("clusterError = %q", err)
	}
}

type errorString string

func (e errorString) Error() string { return string(e) }
