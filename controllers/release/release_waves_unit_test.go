package release

import (
	"maps"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func TestPlanWaves(t *testing.T) {
	env := func(r ferryv1.RolloutStrategy, clusters ...string) *ferryv1.Environment {
		return &ferryv1.Environment{Spec: ferryv1.EnvironmentSpec{Clusters: clusters, Rollout: r}}
	}
	cases := []struct {
		name  string
		env   *ferryv1.Environment
		want  map[string]int32
		count int32
	}{
		{"all at once", env(ferryv1.RolloutStrategy{}, "a", "b"), nil, 0},
		{"explicit", env(ferryv1.RolloutStrategy{Waves: []ferryv1.RolloutWave{{Clusters: []string{"c"}}, {Clusters: []string{"a", "b"}}}}, "a", "b", "c"),
			map[string]int32{"c": 1, "a": 2, "b": 2}, 2},
		// An Environment stored before admission checked waves: a forgotten cluster goes last, a
		// wave of clusters the environment does not have is skipped.
		{"unchecked", env(ferryv1.RolloutStrategy{Waves: []ferryv1.RolloutWave{{Clusters: []string{"gone"}}, {Clusters: []string{"a"}}}}, "a", "b"),
			map[string]int32{"a": 1, "b": 2}, 2},
		{"two at once", env(ferryv1.RolloutStrategy{MaxClustersAtOnce: ptr.To[int32](2)}, "a", "b", "c", "d", "e"),
			map[string]int32{"a": 1, "b": 1, "c": 2, "d": 2, "e": 3}, 3},
		{"more than clusters", env(ferryv1.RolloutStrategy{MaxClustersAtOnce: ptr.To[int32](5)}, "a", "b"),
			map[string]int32{"a": 1, "b": 1}, 1},
	}
	for _, tc := range cases {
		got, count := planWaves(tc.env)
		if !maps.Equal(got, tc.want) || count != tc.count {
			t.Errorf("%s: waves %v of %d, want %v of %d", tc.name, got, count, tc.want, tc.count)
		}
	}
}

func TestCurrentWave(t *testing.T) {
	healthy := []metav1.Condition{{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionTrue, Reason: ferryv1.HealthyReason}}
	rolling := []metav1.Condition{{Type: ferryv1.RolledOutCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.RollingOutReason}}
	es := &ferryv1.ReleaseEnvironmentStatus{Waves: 3, Clusters: []ferryv1.ClusterRolloutStatus{
		{Cluster: "a", Wave: 1, Conditions: healthy},
		{Cluster: "b", Wave: 2, Conditions: rolling},
		{Cluster: "c", Wave: 2, Conditions: healthy},
		{Cluster: "d", Wave: 3},
	}}
	if w := currentWave(es); w != 2 {
		t.Errorf("current wave %d, want 2", w)
	}
	if !inWave(&es.Clusters[0], 2) || !inWave(&es.Clusters[1], 2) || inWave(&es.Clusters[3], 2) {
		t.Error("inWave lets the wrong clusters roll out in wave 2")
	}
	es.Clusters[1].Conditions = healthy
	es.Clusters[3].Conditions = healthy
	if w := currentWave(es); w != 3 {
		t.Errorf("current wave %d once every cluster is healthy, want the last, 3", w)
	}
	if w := currentWave(&ferryv1.ReleaseEnvironmentStatus{Clusters: es.Clusters}); w != 0 || !inWave(&es.Clusters[3], 0) {
		t.Error("without waves every cluster must roll out at once")
	}
}
