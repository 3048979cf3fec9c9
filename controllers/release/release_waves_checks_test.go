package release_test

import (
	"context"
	"strings"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// checkedWavesEnvironment is an Environment rolling out in waves [east], [west] with a Job check
// (kwok completes a Job's pod on the simulated clusters: the check passes unless the cluster
// refuses the Job).
func checkedWavesEnvironment(t *testing.T, ns string) (*ferryv1.Environment, string) {
	t.Helper()
	c := testutil.CurrentHub(t).Client
	env := releasetest.Environment(releasetest.Unique("wavecheck"), nil, "east", "west")
	env.Spec.Rollout.Waves = []ferryv1.RolloutWave{{Clusters: []string{"east"}}, {Clusters: []string{"west"}}}
	env.Spec.Verification = []ferryv1.VerificationCheck{{Name: "e2e", Job: &ferryv1.JobCheck{
		Image: "registry.example.com/team/e2e@sha256:" + strings.Repeat("3", 64), Timeout: &metav1.Duration{Duration: 2 * time.Minute}}}}
	releasetest.CreateCleanly(t, c, env)
	if err := c.Create(context.Background(), releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east", "west")
	return env, target
}

func checkOn(v *ferryv1.VerificationStatus, cluster string) *ferryv1.VerificationCheckStatus {
	for i := range v.Checks {
		if v.Checks[i].Cluster == cluster {
			return &v.Checks[i]
		}
	}
	return nil
}

// TestWavesVerifiedInOrder: with waves [east], [west] and a Job check, west's rollout starts only
// after the check's Job on east completed (status times, to the second), each cluster runs its own
// Job, and the digest is verified once both waves passed.
func TestWavesVerifiedInOrder(t *testing.T) {
	tg := startTargets(t)
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env, target := checkedWavesEnvironment(t, ns)

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(2, nil), nil)
	rel := waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	es := envOf(rel, env.Name)
	v := es.Verification
	if v == nil || v.Run != 1 || v.VerifiedWave != 2 || v.VerifiedImage != rel.Spec.Image || !meta.IsStatusConditionTrue(es.Conditions, ferryv1.VerifiedCondition) {
		t.Fatalf("verification = %+v, want run 1 passed on both waves", v)
	}
	east, west := checkOn(v, "east"), checkOn(v, "west")
	if east == nil || west == nil || east.Result != ferryv1.VerificationPassed || west.Result != ferryv1.VerificationPassed {
		t.Fatalf("checks = %+v, want the check passed on east and on west", v.Checks)
	}
	job := &batchv1.Job{}
	if err := tg["east"].client.Get(context.Background(), types.NamespacedName{Namespace: target, Name: east.Job}, job); err != nil {
		t.Fatal(err)
	}
	st, _ := clusterCondition(rel, env.Name, "west")
	if job.Status.CompletionTime == nil || st.StartTime == nil || st.StartTime.Before(job.Status.CompletionTime) {
		t.Errorf("west started at %v, before east's check Job %s completed at %v", st.StartTime, east.Job, job.Status.CompletionTime)
	}
	if err := tg["west"].client.Get(context.Background(), types.NamespacedName{Namespace: target, Name: west.Job}, &batchv1.Job{}); err != nil {
		t.Errorf("west's check Job: %v", err)
	}
}

// TestWaveCheckFailureRollsBack: east refuses the check's Job (a quota of zero Jobs), so wave 1's
// verification fails: east rolls back to the previous digest, west (wave 2) is never written to
// and stays WaveNotStarted, and the Release names the failed check.
func TestWaveCheckFailureRollsBack(t *testing.T) {
	tg := startTargets(t)
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	env, target := checkedWavesEnvironment(t, ns)

	createRelease(t, ns, "good", "v1", releasetest.Deploy(2, nil), nil)
	waitRelease(t, c, ns, "good", metav1.ConditionTrue, ferryv1.SucceededReason)
	quota := &corev1.ResourceQuota{
		ObjectMeta: metav1.ObjectMeta{Namespace: target, Name: "no-jobs"},
		Spec:       corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{"count/jobs.batch": resource.MustParse("0")}},
	}
	if err := tg["east"].client.Create(context.Background(), quota); err != nil {
		t.Fatal(err)
	}
	westApplies := tg["west"].applies(t, "deployments", target, "shop")

	createRelease(t, ns, "next", "v2", releasetest.Deploy(2, nil), nil)
	rel := waitRelease(t, c, ns, "next", metav1.ConditionFalse, ferryv1.RolledBackReason)
	msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message
	if !strings.Contains(msg, "cluster east:") || !strings.Contains(msg, "verification check e2e (environment) failed: the cluster refused the Job") {
		t.Errorf("Ready message %q does not name the failed check on east", msg)
	}
	st, cond := clusterCondition(rel, env.Name, "east")
	if cond.Reason != ferryv1.RolledBackReason || st.Image != releasetest.Image("v1") {
		t.Errorf("east: %+v image %s; want rolled back to v1", cond, st.Image)
	}
	tg["east"].waitAvailable(t, target, "shop", releasetest.Image("v1"), 2)
	st, cond = clusterCondition(rel, env.Name, "west")
	if cond.Reason != ferryv1.WaveNotStartedReason || st.StartTime != nil || !strings.Contains(cond.Message, "cluster east of wave 1 failed") {
		t.Errorf("west: %+v %+v; want WaveNotStarted naming east", cond, st)
	}
	if n := tg["west"].applies(t, "deployments", target, "shop"); n != westApplies {
		t.Errorf("west (wave 2) received %d applies", n-westApplies)
	}
	if v := envOf(rel, env.Name).Verification; v == nil || v.VerifiedImage != "" || v.VerifiedWave != 0 {
		t.Errorf("verification = %+v, want failed on wave 1", v)
	}
}
