package release

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/events"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// soakFixture is Release r1 of shop on the path staging → prod: healthy in staging since now,
// about to enter prod, whose Environment requires a soak of 1h; the Project records r1 in staging.
func soakFixture(t *testing.T) (*Reconciler, *ferryv1.Release, *plan, *ferryv1.Environment, *events.FakeRecorder) {
	t.Helper()
	env := unitEnv(func(e *ferryv1.Environment) {
		e.Spec.Soak = &ferryv1.SoakPolicy{Duration: metav1.Duration{Duration: time.Hour}}
	})
	r := unitReconciler(t, env)
	rec := events.NewFakeRecorder(100)
	r.Recorder = rec
	rel := unitRelease("r1", 0)
	staging := ferryv1.ReleaseEnvironmentStatus{Name: "staging", StartTime: &now}
	setEnvSucceeded(&staging, "healthy", 1, now)
	rel.Status.Environments = append([]ferryv1.ReleaseEnvironmentStatus{staging}, rel.Status.Environments...)
	p := unitPlan(ferryv1.ProjectEnvironmentStatus{Name: "staging", Image: unitImage, Release: "r1", DeployedAt: &now})
	p.path = []string{"staging", "prod"}
	return r, rel, p, env, rec
}

// TestSoakUnit: prod waits until the digest has run healthy in staging for an hour, saying when
// the soak ends (with one event), and is let through once it has; the same statuses give the same
// end after a restart; a later rollout in staging rolled back to the digest starts the soak again;
// while staging runs another digest the soak cannot end; the first environment of a path and an
// Environment without soak do not wait.
func TestSoakUnit(t *testing.T) {
	r, rel, p, env, rec := soakFixture(t)
	prod := envStatus(rel, "prod")

	st := r.soak(rel, p, env, prod, nil, at(20*time.Minute))
	if kindOf(st) != "wait 40m0s" || prod.SoakEndsAt == nil || !prod.SoakEndsAt.Equal(&metav1.Time{Time: now.Add(time.Hour)}) {
		t.Fatalf("after 20m: %s, soak ends %v; want wait 40m until +1h", kindOf(st), prod.SoakEndsAt)
	}
	c := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition)
	if c.Reason != ferryv1.SoakingReason || !strings.Contains(c.Message, "must run healthy in staging for 1h0m0s") || !strings.Contains(c.Message, "40m0s left") {
		t.Errorf("Ready = %+v", c)
	}
	// Looked at again (or after a restart, from the same statuses): the same end, no second event.
	rel = persisted(t, rel)
	prod = envStatus(rel, "prod")
	if st := r.soak(rel, p, env, prod, nil, at(50*time.Minute)); kindOf(st) != "wait 10m0s" {
		t.Errorf("after 50m: %s", kindOf(st))
	}
	if evs := drain(rec); strings.Count(evs, "Normal Soaking Environment prod: soaking") != 1 {
		t.Errorf("events = %q, want one Soaking event", evs)
	}
	if st := r.soak(rel, p, env, prod, nil, at(time.Hour)); !st.proceeds() {
		t.Errorf("after 1h: %s, want proceed", kindOf(st))
	}

	// r2 rolled out in staging after r1 and was rolled back to r1's digest at +30m: the soak counts
	// from there.
	r2 := unitRelease("r2", 1)
	back := now.Add(30 * time.Minute)
	r2.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{{Name: "staging", PreviousImage: unitImage}}
	setEnvFailed(&r2.Status.Environments[0], ferryv1.RolledBackReason, "rolled back", 1, metav1.NewTime(back))
	if st := r.soak(rel, p, env, prod, []ferryv1.Release{*r2}, at(time.Hour)); kindOf(st) != "wait 30m0s" {
		t.Errorf("after a rollback to the digest at +30m, at +1h: %s, want wait 30m", kindOf(st))
	}
	if msg := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "rolled back to in staging by Release r2") {
		t.Errorf("message = %q", msg)
	}
	// A rollback of staging to another digest does not touch r1's soak.
	r2.Status.Environments[0].PreviousImage = olderImage
	if st := r.soak(rel, p, env, prod, []ferryv1.Release{*r2}, at(time.Hour)); !st.proceeds() {
		t.Errorf("a rollback to another digest restarted the soak: %s", kindOf(st))
	}

	// staging runs another digest now: the soak cannot end.
	p.project.Status.Environments[0].Image = olderImage
	if st := r.soak(rel, p, env, prod, nil, at(2*time.Hour)); kindOf(st) != "wait 0s" || prod.SoakEndsAt != nil {
		t.Errorf("staging runs another digest: %s, ends %v", kindOf(st), prod.SoakEndsAt)
	}
	if msg := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition).Message; !strings.Contains(msg, "but staging runs registry.example.com/team/shop@sha256:222222222222 now") {
		t.Errorf("message = %q", msg)
	}

	// The first environment of the path has nothing to soak in; no soak, no wait.
	if st := r.soak(rel, p, env, envStatus(rel, "staging"), nil, at(0)); !st.proceeds() {
		t.Errorf("first environment: %s", kindOf(st))
	}
	env.Spec.Soak = nil
	if st := r.soak(rel, p, env, prod, nil, at(0)); !st.proceeds() || prod.SoakEndsAt != nil {
		t.Errorf("no soak: %s", kindOf(st))
	}
}

// TestBeforeRolloutSoaksUnit: the soak is one of the checks before the gate: prod does not start
// (and its gate does not open) while the digest soaks in staging.
func TestBeforeRolloutSoaksUnit(t *testing.T) {
	r, rel, p, env, _ := soakFixture(t)
	env.Spec.Approval = &ferryv1.ApprovalPolicy{Users: []string{"rita"}, MinApprovals: 1}
	prod := envStatus(rel, "prod")
	st, err := r.beforeRollout(context.Background(), rel, p, env, prod, at(20*time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	if kindOf(st) != "wait 40m0s" || prod.Gate != nil || len(prod.Clusters) != 0 {
		t.Errorf("%s, gate %+v, clusters %v; want a wait of 40m before the gate", kindOf(st), prod.Gate, prod.Clusters)
	}
	if c := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition); c.Reason != ferryv1.SoakingReason {
		t.Errorf("Ready = %+v", c)
	}
	st, err = r.beforeRollout(context.Background(), rel, p, env, prod, at(time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if c := meta.FindStatusCondition(prod.Conditions, ferryv1.ReadyCondition); c.Reason != ferryv1.WaitingForApprovalReason || prod.Gate == nil {
		t.Errorf("after the soak: %s, Ready = %+v; want the gate waiting", kindOf(st), c)
	}
}
