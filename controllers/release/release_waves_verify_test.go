package release

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/rollout"
)

// waveVerifyFixture is a Release rolling out in prod in two waves, [east] then [west], with one
// HTTP check repeated twice 10s apart: east (wave 1) is healthy, west (wave 2) not started. Each
// cluster's checks reach its own member. The cluster cache knows no Cluster object, so a rollout
// step on a cluster leaves a ClusterUnreachable mark and writes nothing: the mark shows when a wave
// was started.
func waveVerifyFixture(t *testing.T, members map[string]*member) (*Reconciler, *ferryv1.Release, *plan, *ferryv1.Environment, *events.FakeRecorder) {
	t.Helper()
	check := ferryv1.VerificationCheck{Name: "smoke", HTTP: &ferryv1.HTTPCheck{Path: "/healthz", ExpectStatus: 200, Times: 2, Interval: &metav1.Duration{Duration: 10 * time.Second}}}
	env := unitEnv(func(e *ferryv1.Environment) {
		e.Spec.Clusters = []string{"east", "west"}
		e.Spec.Rollout.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east"}}, {Clusters: []string{"west"}}}
		e.Spec.Verification = []ferryv1.VerificationCheck{check}
	})
	r := unitReconciler(t, env)
	r.Clusters = &clusters.Cache{Reader: r.Client}
	rec := events.NewFakeRecorder(100)
	r.Recorder = rec
	r.VerifyTargets = func(_ context.Context, cluster string) (client.Client, *rest.Config, error) {
		return members[cluster].client, members[cluster].cfg, nil
	}
	rel := unitRelease("r1", 0)
	es := &rel.Status.Environments[0]
	done := now
	east := ferryv1.ClusterRolloutStatus{Cluster: "east", Namespace: "shop-prod", Wave: 1, Image: unitImage, StartTime: &done, CompletionTime: &done}
	rollout.SetClusterCondition(&east, metav1.ConditionTrue, ferryv1.HealthyReason, "healthy", now)
	es.Clusters = []ferryv1.ClusterRolloutStatus{east, {Cluster: "west", Namespace: "shop-prod", Wave: 2}}
	es.Waves, es.Wave = 2, 1
	setEnvRollingOut(es, "rolling out", 1, now)
	p := unitPlan()
	p.deploy.Ports = []int32{8080}
	return r, rel, p, env, rec
}

// advance is one pass of the forward rollout over the waves, as rollOut makes it.
func advance(r *Reconciler, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, when metav1.Time) time.Duration {
	es := &rel.Status.Environments[0]
	return r.advanceWaves(context.Background(), rel, p, es, rollout.Input{Now: when.Time}, checksOf(env, p), map[string]bool{}, when)
}

// westStarted reports whether a rollout step reached west (see waveVerifyFixture).
func westStarted(es *ferryv1.ReleaseEnvironmentStatus) bool {
	for _, st := range es.Clusters {
		if st.Cluster == "west" {
			return len(st.Conditions) > 0 || st.StartTime != nil
		}
	}
	return false
}

// readyMessage is the environment's Ready message, which the Release's Ready summarises.
func readyMessage(es *ferryv1.ReleaseEnvironmentStatus) string {
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); c != nil {
		return c.Message
	}
	return ""
}

// TestWaveVerifiedBeforeTheNextUnit: with waves [east], [west] and a check, wave 2 is not touched
// while wave 1's checks run — the status says `verifying wave 1/2` — and starts in the Reconcile
// where they passed. A manager restart in the middle of wave 1's checks and another in the middle
// of wave 2's go on from the try they reached: no try is sent twice, and wave 1's pass is kept
// (east is not checked again for wave 2). The last wave's pass verifies the digest.
func TestWaveVerifiedBeforeTheNextUnit(t *testing.T) {
	members := map[string]*member{"east": newMember(t), "west": newMember(t)}
	r, rel, p, env, rec := waveVerifyFixture(t, members)
	es := &rel.Status.Environments[0]

	if after := advance(r, rel, p, env, at(0)); after != 10*time.Second {
		t.Fatalf("first look: wait %s, want 10s for east's second try", after)
	}
	if westStarted(es) || members["west"].requests() != 0 || members["east"].requests() != 1 {
		t.Fatalf("wave 2 touched while wave 1 verifies: west %+v, requests east %d west %d", es.Clusters[1], members["east"].requests(), members["west"].requests())
	}
	if msg := readyMessage(es); es.Wave != 1 || !strings.Contains(msg, "verifying wave 1/2: 0 of 1 checks passed") || !strings.Contains(msg, "wave 1 of 2 (east)") {
		t.Errorf("wave %d, message %q; want wave 1 verifying", es.Wave, msg)
	}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition); c == nil || c.Status != metav1.ConditionUnknown {
		t.Errorf("Verified = %+v, want Unknown while wave 1 verifies", c)
	}

	// The manager restarts in the middle of wave 1's checks.
	rel = persisted(t, rel)
	es = &rel.Status.Environments[0]
	r2, _, _, _, _ := waveVerifyFixture(t, members)
	r2.Recorder = rec
	if after := advance(r2, rel, p, env, at(5*time.Second)); after != 5*time.Second || members["east"].requests() != 1 || westStarted(es) {
		t.Fatalf("early look after the restart: wait %s, %d requests to east, west started %v; want wait 5s, 1 request, not started", after, members["east"].requests(), westStarted(es))
	}
	if after := advance(r2, rel, p, env, at(10*time.Second)); after != 0 {
		t.Fatalf("wave 1 passed: wait %s, want 0", after)
	}
	if members["east"].requests() != 2 || es.Verification.VerifiedWave != 1 || es.Wave != 2 || !westStarted(es) {
		t.Fatalf("after wave 1 passed: east %d requests, verified wave %d, wave %d, west started %v; want 2, 1, 2, true",
			members["east"].requests(), es.Verification.VerifiedWave, es.Wave, westStarted(es))
	}
	if es.Verification.CompletionTime != nil || es.Verification.VerifiedImage != "" {
		t.Errorf("the run finished after wave 1: %+v", es.Verification)
	}
	if evs := drain(rec); !strings.Contains(evs, "Normal Verified Environment prod: wave 1 of 2 (east) passed 1 check; wave 2 starts") {
		t.Errorf("events = %q", evs)
	}

	// West becomes healthy: wave 2's checks run, on west only.
	west := &es.Clusters[1]
	done := at(15 * time.Second)
	west.StartTime, west.CompletionTime, west.Image = &done, &done, unitImage
	rollout.SetClusterCondition(west, metav1.ConditionTrue, ferryv1.HealthyReason, "healthy", done)
	if st, failed := r2.verifyAfterRollout(context.Background(), rel, p, env, es, at(20*time.Second)); failed || kindOf(st) != "wait 10s" {
		t.Fatalf("wave 2's first try: %s failed=%v", kindOf(st), failed)
	}
	if msg := readyMessage(es); !strings.Contains(msg, "verifying wave 2/2: 0 of 1 checks passed") {
		t.Errorf("message %q, want wave 2 verifying", msg)
	}

	// The manager restarts in the middle of wave 2's checks.
	rel = persisted(t, rel)
	es = &rel.Status.Environments[0]
	r3, _, _, _, _ := waveVerifyFixture(t, members)
	r3.Recorder = rec
	if st, failed := r3.verifyAfterRollout(context.Background(), rel, p, env, es, at(30*time.Second)); failed || !st.proceeds() {
		t.Fatalf("wave 2's second try: %s failed=%v, want proceed", kindOf(st), failed)
	}
	if e, w := members["east"].requests(), members["west"].requests(); e != 2 || w != 2 {
		t.Errorf("requests east %d, west %d; want 2 each (no try twice, wave 1 not checked again)", e, w)
	}
	v := es.Verification
	if v.Run != 1 || v.VerifiedImage != unitImage || v.VerifiedWave != 2 || v.CompletionTime == nil {
		t.Errorf("verification = %+v, want run 1 passed on both waves", v)
	}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "passed 1 check on east, west") {
		t.Errorf("Verified = %+v", c)
	}

	// A re-verification checks every cluster, whatever its wave.
	setEnvSucceeded(es, "healthy", 1, at(time.Minute))
	r3.startRun(rel, es, unitImage, "re-verification requested", at(time.Minute))
	for _, when := range []time.Duration{time.Minute, time.Minute + 10*time.Second} {
		if _, err := r3.reverify(context.Background(), rel, p, at(when)); err != nil {
			t.Fatal(err)
		}
	}
	if e, w := members["east"].requests(), members["west"].requests(); e != 4 || w != 4 || es.Verification.VerifiedImage != unitImage {
		t.Errorf("re-verification: requests east %d, west %d, verification %+v; want 4 each and passed", e, w, es.Verification)
	}
}

// TestWaveVerificationFailureRollsBackUnit: a check that fails on wave 1 fails east's rollout with
// the check's message, finishes the run unverified, and never touches wave 2; the rollback that
// follows (as rollOut starts it) rolls east back and marks west WaveNotStarted.
func TestWaveVerificationFailureRollsBackUnit(t *testing.T) {
	members := map[string]*member{"east": newMember(t), "west": newMember(t)}
	members["east"].answer(http.StatusInternalServerError, "broken")
	r, rel, p, env, rec := waveVerifyFixture(t, members)
	es := &rel.Status.Environments[0]

	if after := advance(r, rel, p, env, at(0)); after != 0 {
		t.Fatalf("wait %s after a failed check, want 0", after)
	}
	failed := firstFailed(es)
	if failed == nil || failed.Cluster != "east" || !strings.Contains(clusterRolledOut(failed).Message, "verification check smoke (environment) failed: try 1 of 2: GET /healthz: 500") {
		t.Fatalf("failed cluster = %+v, want east failed by the check", failed)
	}
	if westStarted(es) || members["west"].requests() != 0 || es.Wave != 1 {
		t.Errorf("wave 2 touched after wave 1 failed its check: %+v, %d requests, wave %d", es.Clusters[1], members["west"].requests(), es.Wave)
	}
	if v := es.Verification; v.CompletionTime == nil || v.VerifiedImage != "" || v.VerifiedWave != 0 {
		t.Errorf("verification = %+v, want finished, unverified", v)
	}
	if evs := drain(rec); !strings.Contains(evs, "Warning VerificationFailed Environment prod: verification check smoke") {
		t.Errorf("events = %q", evs)
	}

	prev := &rollout.Workload{Image: olderImage}
	r.startRollback(rel, es, failed, prev, at(time.Second))
	if c := clusterRolledOut(&es.Clusters[0]); c.Reason != ferryv1.RollingBackReason {
		t.Errorf("east = %+v, want rolling back", c)
	}
	if c := clusterRolledOut(&es.Clusters[1]); c.Reason != ferryv1.WaveNotStartedReason || !strings.Contains(c.Message, "cluster east of wave 1 failed") || es.Clusters[1].StartTime != nil {
		t.Errorf("west = %+v, want WaveNotStarted", es.Clusters[1])
	}
}

// TestWavesWithoutChecksUnit: without checks, a healthy wave lets the next one start at once, as
// before verification between waves existed.
func TestWavesWithoutChecksUnit(t *testing.T) {
	members := map[string]*member{"east": newMember(t), "west": newMember(t)}
	r, rel, p, env, _ := waveVerifyFixture(t, members)
	env.Spec.Verification = nil
	es := &rel.Status.Environments[0]
	if after := advance(r, rel, p, env, at(0)); after != 0 || !westStarted(es) || es.Wave != 2 || es.Verification != nil {
		t.Errorf("wait %s, west started %v, wave %d, verification %+v; want wave 2 started without a verification", after, westStarted(es), es.Wave, es.Verification)
	}
	if members["east"].requests()+members["west"].requests() != 0 {
		t.Error("a check ran without being declared")
	}
}
