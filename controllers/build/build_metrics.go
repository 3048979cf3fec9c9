package build

import (
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/text"
)

// Prometheus metrics on controller-runtime's registry (served at the manager's /metrics).
var (
	buildsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_builds_total",
		Help: "Finished Builds by result: the Ready condition's reason (Succeeded, PipelineFailed, PipelineTimeout, ResultsMissing, InvalidPipelineFile, SourceUnavailable, Cancelled, Superseded).",
	}, []string{"result"})
	buildDuration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_build_duration_seconds",
		Help:    "How long finished Builds ran, from the start of the pipeline (or the Build's creation when it never started) to completion.",
		Buckets: []float64{5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200},
	}, []string{"result"})
	buildQueueTime = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "ferry_build_queue_seconds",
		Help:    "How long Builds waited from creation until their pipeline started.",
		Buckets: []float64{0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600},
	})
)

func init() {
	metrics.Registry.MustRegister(buildsTotal, buildDuration, buildQueueTime)
}

// recordTransition emits an event when the Build's Ready condition changed (its reason is the
// event's reason) and observes the metrics when the Build started or finished. It runs after the
// status was written, so a retried reconcile does not count twice.
func (r *Reconciler) recordTransition(before, after *ferryv1.Build) {
	old := meta.FindStatusCondition(before.Status.Conditions, ferryv1.ReadyCondition)
	cur := meta.FindStatusCondition(after.Status.Conditions, ferryv1.ReadyCondition)
	if cur != nil && (old == nil || old.Status != cur.Status || old.Reason != cur.Reason) && r.Recorder != nil {
		eventType := corev1.EventTypeNormal
		if cur.Status == metav1.ConditionFalse {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(after, nil, eventType, cur.Reason, "Build", "%s", text.Message(cur.Message))
	}
	if before.Status.StartTime == nil && after.Status.StartTime != nil {
		buildQueueTime.Observe(after.Status.StartTime.Sub(after.CreationTimestamp.Time).Seconds())
	}
	if !isFinished(before) && isFinished(after) && cur != nil {
		start := after.CreationTimestamp
		if after.Status.StartTime != nil {
			start = *after.Status.StartTime
		}
		buildsTotal.WithLabelValues(cur.Reason).Inc()
		buildDuration.WithLabelValues(cur.Reason).Observe(after.Status.CompletionTime.Sub(start.Time).Seconds())
	}
}
