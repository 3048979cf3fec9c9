package cluster

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/conditions"
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
	if r.err != nil {
		conditions.Set(&c.Status.Conditions, ferryv1.ReadyCondition, metav1.ConditionFalse, clusters.ReasonOf(r.err), r.err.Error(), c.Generation, r.time)
		return
	}
	c.Status.ServerVersion = r.version
	conditions.Set(&c.Status.Conditions, ferryv1.ReadyCondition, metav1.ConditionTrue, ferryv1.ClusterReachableReason,
		"API server at "+r.host+" answered, version "+r.version, c.Generation, r.time)
}
