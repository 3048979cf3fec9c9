package cluster

import (
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
)

// probeResult is what one probe of a cluster found.
type probeResult struct {
	host    string
	version string
	err     error
	time    metav1.Time
}

// setStatus records a probe in the Cluster's status: Ready=True with the server version, or
// Ready=False with the reason and message of the failure. Reconciling and Stalled are not kept: a
// probe is quick, and a failure always retries.
func setStatus(c *ferryv1.Cluster, r probeResult) {
	c.Status.ObservedGeneration = c.Generation
	c.Status.LastProbeTime = &r.time
	cond := metav1.Condition{Type: ferryv1.ReadyCondition, ObservedGeneration: c.Generation}
	if r.err != nil {
		cond.Status = metav1.ConditionFalse
		cond.Reason = clusters.ReasonOf(r.err)
		cond.Message = r.err.Error()
	} else {
		c.Status.ServerVersion = r.version
		cond.Status = metav1.ConditionTrue
		cond.Reason = ferryv1.ClusterReachableReason
		cond.Message = "API server at " + r.host + " answered, version " + r.version
	}
	meta.SetStatusCondition(&c.Status.Conditions, cond)
}
