package main

import (
	"fmt"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// waveState is the wave an environment that rolls out in waves is at, "(wave 2/3)", while its
// rollout (or the rollback after a failed wave) runs; "" otherwise.
func waveState(es *ferryv1.ReleaseEnvironmentStatus) string {
	if es.Waves == 0 || es.Wave == 0 || es.CompletionTime != nil {
		return ""
	}
	return fmt.Sprintf("(wave %d/%d)", es.Wave, es.Waves)
}
