package gitlabreceiver

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"sigs.k8s.io/controller-runtime/pkg/metrics"
)

var (
	deliveries = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ferry_gitlab_webhook_deliveries_total",
		Help: "GitLab webhook deliveries by event and result (created, duplicate, reused, accepted, ignored, unauthorized, too_large, timeout, bad_request, busy, error).",
	}, []string{"event", "result"})
	latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "ferry_gitlab_webhook_duration_seconds",
		Help:    "Time from a GitLab webhook delivery to Ferry's answer, by result.",
		Buckets: []float64{.002, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
	}, []string{"result"})
)

func init() {
	metrics.Registry.MustRegister(deliveries, latency)
}

// eventLabel keeps the event label's values to GitLab's known few.
func eventLabel(header string) string {
	for _, known := range []string{pushHook, tagPushHook, mergeRequestHook, systemHook, "Note Hook", "Pipeline Hook", "Job Hook", "Release Hook", "Issue Hook"} {
		if strings.EqualFold(header, known) {
			return known
		}
	}
	return "other"
}

func observe(header, result string, d time.Duration) {
	deliveries.WithLabelValues(eventLabel(header), result).Inc()
	latency.WithLabelValues(result).Observe(d.Seconds())
}
