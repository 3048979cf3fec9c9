package release

import (
	"fmt"
	"slices"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// planWaves numbers the environment's clusters by the wave (1-based) they roll out in, from
// spec.rollout.waves or maxClustersAtOnce, and returns how many waves there are. Without either,
// every cluster rolls out at once: no numbers, zero waves. The numbers are fixed in the Release's
// status when the rollout starts, so a change of the Environment during a rollout (or a manager
// restart) does not move a cluster from one wave to another.
func planWaves(env *ferryv1.Environment) (map[string]int32, int32) {
	ro := env.Spec.Rollout
	raw := map[string]int{}
	switch {
	case len(ro.Waves) > 0:
		for i, w := range ro.Waves {
			for _, c := range w.Clusters {
				if _, ok := raw[c]; !ok {
					raw[c] = i
				}
			}
		}
		// Admission puts every cluster in exactly one wave; an Environment stored before that
		// rule rolls a forgotten cluster out last rather than never.
		for _, c := range env.Spec.Clusters {
			if _, ok := raw[c]; !ok {
				raw[c] = len(ro.Waves)
			}
		}
	case ro.MaxClustersAtOnce != nil && *ro.MaxClustersAtOnce > 0:
		n := int(*ro.MaxClustersAtOnce)
		for i, c := range env.Spec.Clusters {
			raw[c] = i / n
		}
	default:
		return nil, 0
	}
	// Only the environment's clusters count, and waves left empty by that are skipped.
	var used []int
	for _, c := range env.Spec.Clusters {
		if !slices.Contains(used, raw[c]) {
			used = append(used, raw[c])
		}
	}
	slices.Sort(used)
	waves := map[string]int32{}
	for _, c := range env.Spec.Clusters {
		waves[c] = int32(slices.Index(used, raw[c]) + 1) //nolint:gosec // G115: an Environment has at most 50 clusters
	}
	return waves, int32(len(used)) //nolint:gosec // G115: an Environment has at most 50 clusters
}

// currentWave is the first wave with a cluster that is not healthy yet (the last wave once every
// cluster is): the clusters of this wave and of the waves before it may be written to, the
// clusters of later waves not yet. Zero when the environment does not roll out in waves.
func currentWave(es *ferryv1.ReleaseEnvironmentStatus) int32 {
	if es.Waves == 0 {
		return 0
	}
	wave := es.Waves
	for i := range es.Clusters {
		st := &es.Clusters[i]
		if st.Wave > 0 && st.Wave < wave && !rollout.Succeeded(st) {
			wave = st.Wave
		}
	}
	return wave
}

// openWave is the wave a forward rollout may write to now: the current wave, held at the wave
// after the last verified one when the environment verifies between waves (gated), so that a
// healthy wave holds the next one until its checks passed.
func openWave(es *ferryv1.ReleaseEnvironmentStatus, gated bool) int32 {
	wave := currentWave(es)
	if gated && wave > 0 {
		wave = min(wave, verifiedWave(es)+1)
	}
	return wave
}

// verifiesBetweenWaves reports whether the environment's rollout verifies each wave before the
// next one starts: it rolls out in more than one wave and declares checks.
func verifiesBetweenWaves(es *ferryv1.ReleaseEnvironmentStatus, checks []declaredCheck) bool {
	return es.Waves > 1 && len(checks) > 0
}

// verifiedWave is the last wave whose clusters passed the checks of the running verification.
func verifiedWave(es *ferryv1.ReleaseEnvironmentStatus) int32 {
	if es.Verification == nil {
		return 0
	}
	return es.Verification.VerifiedWave
}

// waveHealthy reports whether every cluster of the wave (and of the waves before it) is healthy.
func waveHealthy(es *ferryv1.ReleaseEnvironmentStatus, wave int32) bool {
	for i := range es.Clusters {
		if st := &es.Clusters[i]; st.Wave <= wave && !rollout.Succeeded(st) {
			return false
		}
	}
	return true
}

// inWave reports whether a forward rollout may write to the cluster: it is in the current wave
// or an earlier one.
func inWave(st *ferryv1.ClusterRolloutStatus, wave int32) bool {
	return wave == 0 || st.Wave <= wave
}

// waveClusters names the clusters of one wave.
func waveClusters(es *ferryv1.ReleaseEnvironmentStatus, wave int32) string {
	var names []string
	for _, st := range es.Clusters {
		if st.Wave == wave {
			names = append(names, st.Cluster)
		}
	}
	return strings.Join(names, ", ")
}

// waveNote prefixes a rolling-out message with the wave, when the environment rolls out in waves.
func waveNote(es *ferryv1.ReleaseEnvironmentStatus) string {
	if es.Waves == 0 {
		return ""
	}
	return fmt.Sprintf("wave %d of %d (%s): ", es.Wave, es.Waves, waveClusters(es, es.Wave))
}
