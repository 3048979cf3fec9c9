package release

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/event"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// rollingTo is a Release of project in hub namespace ns rolling out in env to namespace target
// on clusters.
func rollingTo(ns, name, project, env, target string, clusters ...string) ferryv1.Release {
	r := ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + ns + "-" + name)}, Spec: ferryv1.ReleaseSpec{Project: project}}
	es := ferryv1.ReleaseEnvironmentStatus{Name: env, StartTime: &now}
	for _, c := range clusters {
		es.Clusters = append(es.Clusters, ferryv1.ClusterRolloutStatus{Cluster: c, Namespace: target})
	}
	setEnvRollingOut(&es, "", 1, now)
	r.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{es}
	return r
}

// TestDeployLockPerTarget: the lock is held per namespace and cluster, across projects, hub
// namespaces and environments, and let go when the rollout ends.
func TestDeployLockPerTarget(t *testing.T) {
	me := &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: "a2", UID: "a2"}, Spec: ferryv1.ReleaseSpec{Project: "billing"}}
	mine := targetsOf([]string{"east", "west"}, "billing-prod")
	finished := rollingTo("team-b", "b0", "billing", "prod", "billing-prod", "west")
	setEnvSucceeded(&finished.Status.Environments[0], "", 1, now)
	cases := []struct {
		name   string
		others []ferryv1.Release
		want   string
	}{
		{name: "nobody"},
		{name: "another team, same namespace, one common cluster",
			others: []ferryv1.Release{rollingTo("team-b", "b1", "billing", "live", "billing-prod", "west", "north")},
			want:   "release team-b/b1 (project billing) is rolling out to namespace billing-prod on cluster west"},
		{name: "same namespace name on other clusters", others: []ferryv1.Release{rollingTo("team-b", "b1", "billing", "prod", "billing-prod", "north")}},
		{name: "same clusters, other namespace", others: []ferryv1.Release{rollingTo("team-b", "b1", "billing", "prod", "team-b-billing-prod", "east", "west")}},
		{name: "same hub namespace, another project", others: []ferryv1.Release{rollingTo("team-a", "s1", "shop", "prod", "billing-prod", "east")},
			want: "release s1 (project shop) is rolling out to namespace billing-prod on cluster east"},
		{name: "a finished rollout holds nothing", others: []ferryv1.Release{finished}},
		{name: "itself", others: []ferryv1.Release{rollingTo("team-a", "a2", "billing", "prod", "billing-prod", "east")}},
	}
	for _, tc := range cases {
		if tc.name == "itself" {
			tc.others[0].UID = me.UID
		}
		if got := holderOf(tc.others, me, mine); got != tc.want {
			t.Errorf("%s: holder %q, want %q", tc.name, got, tc.want)
		}
	}
	rel := rollingTo("team-b", "b1", "billing", "live", "billing-prod", "west", "north")
	if got := strings.Join(indexLockedTargets(&rel), ","); got != "west/billing-prod,north/billing-prod" {
		t.Errorf("index = %s", got)
	}
	if got := indexLockedTargets(&finished); len(got) != 0 {
		t.Errorf("index of a finished Release = %v", got)
	}
}

func TestTryLock(t *testing.T) {
	var k keyedMutex
	unlock, ok := k.tryLock("target east/a", "target west/a")
	if !ok {
		t.Fatal("first tryLock failed")
	}
	if _, ok := k.tryLock("target north/a", "target west/a"); ok {
		t.Fatal("a held key was taken twice")
	}
	// All or none: north was not kept by the failed attempt.
	u2, ok := k.tryLock("target north/a")
	if !ok {
		t.Fatal("a failed tryLock kept a key")
	}
	u2()
	unlock()
	if u3, ok := k.tryLock("target west/a", "target west/a"); !ok {
		t.Error("keys free again could not be taken")
	} else {
		u3()
	}
}

func TestBecameReady(t *testing.T) {
	cluster := func(status metav1.ConditionStatus) *ferryv1.Cluster {
		return &ferryv1.Cluster{Status: ferryv1.ClusterStatus{Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: status, Reason: "x"}}}}
	}
	p := becameReady()
	if !p.Update(event.UpdateEvent{ObjectOld: cluster(metav1.ConditionFalse), ObjectNew: cluster(metav1.ConditionTrue)}) {
		t.Error("a Cluster that became Ready was not let through")
	}
	if p.Update(event.UpdateEvent{ObjectOld: cluster(metav1.ConditionTrue), ObjectNew: cluster(metav1.ConditionTrue)}) {
		t.Error("a Cluster that stayed Ready was let through")
	}
	if p.Update(event.UpdateEvent{ObjectOld: cluster(metav1.ConditionTrue), ObjectNew: cluster(metav1.ConditionFalse)}) {
		t.Error("a Cluster that went down was let through")
	}
}

// TestRefusedNamespaceStopsTheEnvironment: a refusal before anything was written stops the
// environment with the refusal's reason, naming the cluster; a refused cluster is never rolled
// back (nothing was written there), the others are.
func TestRefusedNamespaceStopsTheEnvironment(t *testing.T) {
	r := &Reconciler{Recorder: events.NewFakeRecorder(10)}
	rel := rollingTo("team-a", "a1", "billing", "prod", "billing-prod", "east", "west")
	es := &rel.Status.Environments[0]
	rollout.SetClusterCondition(&es.Clusters[1], metav1.ConditionFalse, ferryv1.NamespaceNotOwnedReason, "namespace billing-prod on cluster west belongs to Project team-b/billing", now)
	if failed := firstFailed(es); failed == nil || !rollout.Refused(failed) || anyStarted(es) {
		t.Fatalf("firstFailed = %+v, anyStarted %v", failed, anyStarted(es))
	}
	r.refuseEnvironment(&rel, es, now)
	if got := cond(es.Conditions, ferryv1.ReadyCondition); got != "False/"+ferryv1.NamespaceNotOwnedReason || es.CompletionTime == nil {
		t.Errorf("environment Ready = %s, completion %v", got, es.CompletionTime)
	}
	if msg := envReadyMessage(es); !strings.Contains(msg, "cluster west: namespace billing-prod on cluster west belongs to Project team-b/billing") || !strings.Contains(msg, "nothing was written") {
		t.Errorf("message %q", msg)
	}

	// Refused on west after east had started: east is rolled back, west is left alone.
	rel = rollingTo("team-a", "a1", "billing", "prod", "billing-prod", "east", "west")
	es = &rel.Status.Environments[0]
	es.Clusters[0].StartTime = &now
	rollout.SetClusterCondition(&es.Clusters[1], metav1.ConditionFalse, ferryv1.NamespaceNotOwnedReason, "belongs to Project team-b/billing", now)
	r.startRollback(&rel, es, firstFailed(es), nil, now)
	if c := clusterRolledOut(&es.Clusters[0]); c.Reason != ferryv1.RollingBackReason || es.Clusters[0].CompletionTime != nil {
		t.Errorf("east: %+v", c)
	}
	if c := clusterRolledOut(&es.Clusters[1]); c.Reason != ferryv1.NamespaceNotOwnedReason || es.Clusters[1].CompletionTime == nil {
		t.Errorf("west: %+v", c)
	}
}

func envReadyMessage(es *ferryv1.ReleaseEnvironmentStatus) string {
	for _, c := range es.Conditions {
		if c.Type == ferryv1.ReadyCondition {
			return c.Message
		}
	}
	return ""
}

func TestLeftObjects(t *testing.T) {
	in := rollout.Input{
		Workload: &rollout.Workload{Project: "shop", Image: "r/app@sha256:" + strings.Repeat("2", 64)},
		Previous: &rollout.Workload{Project: "shop", Image: "r/app@sha256:" + strings.Repeat("1", 64)},
		Strategy: rollout.Strategy{Type: ferryv1.BatchStrategy},
	}
	if got := leftObjects(in); got != "Deployment shop and Deployment shop-canary (perhaps with r/app@sha256:222222222222, not r/app@sha256:111111111111 as before)" {
		t.Errorf("leftObjects = %q", got)
	}
}
