package release

import (
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Results of a Release or of an environment's rollout, the label values of the metrics.
const (
	resultSucceeded     = "succeeded"
	resultRolledBack    = "rolled_back"
	resultRolloutFailed = "rollout_failed"
	resultRejected      = "rejected"
	resultSuperseded    = "superseded"
	resultNewerImage    = "newer_image_deployed"
	resultFailed        = "failed"
)

var (
	releasesTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_releases_total",
		Help: "Releases that finished, by result: succeeded, rolled_back, rollout_failed, rejected, superseded, newer_image_deployed, failed.",
	}, []string{"result"})

	approvalWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_release_approval_wait_seconds",
		Help:    "Time an environment's approval gate waited until it was approved, rejected or expired.",
		Buckets: []float64{10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 72 * 3600, 7 * 24 * 3600},
	}, []string{"environment", "decision"})

	windowWait = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_release_window_wait_seconds",
		Help:    "Time an environment's rollout waited for its deploy windows or a freeze before it could start, by what let it go: opened, break_glass.",
		Buckets: []float64{10, 60, 300, 900, 3600, 4 * 3600, 12 * 3600, 24 * 3600, 72 * 3600, 7 * 24 * 3600},
	}, []string{"environment", "by"})

	breakGlassTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_release_break_glass_total",
		Help: "Break-glass Approvals that let a Release's rollout through a freeze or a closed deploy window, by environment.",
	}, []string{"environment"})

	rolloutDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_release_rollout_duration_seconds",
		Help:    "Time from the start of a rollout in an environment to all its clusters healthy, or rolled back.",
		Buckets: prometheus.ExponentialBuckets(1, 2, 12),
	}, []string{"environment", "result"})
)

func init() {
	metrics.Registry.MustRegister(releasesTotal, approvalWait, windowWait, breakGlassTotal, rolloutDuration)
}

func readyCondition(rel *ferryv1.Release) *metav1.Condition {
	if c := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition); c != nil {
		return c
	}
	return &metav1.Condition{Reason: ferryv1.FailedReason}
}

// resultOf maps a Ready (or RolledOut) condition of a finished Release or environment to a result.
func resultOf(c *metav1.Condition) string {
	switch c.Reason {
	case ferryv1.SucceededReason, ferryv1.HealthyReason:
		return resultSucceeded
	case ferryv1.RolledBackReason:
		return resultRolledBack
	case ferryv1.RolloutFailedReason:
		return resultRolloutFailed
	case ferryv1.RejectedReason:
		return resultRejected
	case ferryv1.SupersededReason:
		return resultSuperseded
	case ferryv1.NewerImageDeployedReason:
		return resultNewerImage
	}
	return resultFailed
}
