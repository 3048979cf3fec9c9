package main

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// waveState is the wave an environment that rolls out in waves is at, "(wave 2/3)", while its
// rollout (or the rollback after a failed wave) runs — "(verifying wave 2/3)" while the checks of
// that healthy wave run and the next wave waits for them; "" otherwise.
func waveState(es *ferryv1.ReleaseEnvironmentStatus) string {
	if es.Waves == 0 || es.Wave == 0 || es.CompletionTime != nil {
		return ""
	}
	if verifyingWave(es) {
		return fmt.Sprintf("(verifying wave %d/%d)", es.Wave, es.Waves)
	}
	return fmt.Sprintf("(wave %d/%d)", es.Wave, es.Waves)
}

// verifyingWave reports whether the checks of the environment's current wave run: every cluster
// up to that wave is healthy and the running verification has not passed the wave yet.
func verifyingWave(es *ferryv1.ReleaseEnvironmentStatus) bool {
	v := es.Verification
	if v == nil || v.CompletionTime != nil || v.VerifiedWave >= es.Wave {
		return false
	}
	for _, st := range es.Clusters {
		if st.Wave <= es.Wave && !meta.IsStatusConditionTrue(st.Conditions, ferryv1.RolledOutCondition) {
			return false
		}
	}
	return true
}
