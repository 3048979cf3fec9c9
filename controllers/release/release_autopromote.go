package release

import (
	"fmt"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// autoPromotionsTotal counts the gates a Release went through without a decision.
var autoPromotionsTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "ferry_release_auto_promotions_total",
	Help: "Approval gates a Release went through without a decision (Environment spec.autoPromote), by environment.",
}, []string{"environment"})

func init() {
	metrics.Registry.MustRegister(autoPromotionsTotal)
}

// autoPromote opens env's gate without a decision when the Environment allows it and the digest
// passed the verification of the previous environment of the Release's path (the soak, when env
// has one, was waited for before the gate). It reports whether it did.
func (r *Reconciler) autoPromote(rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) bool {
	if !env.Spec.AutoPromote {
		return false
	}
	i := slices.Index(p.path, es.Name)
	if i <= 0 {
		return false
	}
	prevName := p.path[i-1]
	prev := envStatus(rel, prevName)
	if prev == nil || !envSucceeded(prev) || prev.Verification == nil || prev.Verification.CompletionTime == nil ||
		prev.Verification.VerifiedImage != p.image || !meta.IsStatusConditionTrue(prev.Conditions, ferryv1.VerifiedCondition) {
		return false
	}
	rec := &ferryv1.AutoPromotionRecord{PreviousEnvironment: prevName, VerifiedRun: prev.Verification.Run, Time: &now}
	msg := fmt.Sprintf("promoted automatically: %s passed verification in %s (run %d)", rollout.ShortImage(p.image), prevName, rec.VerifiedRun)
	if env.Spec.Soak != nil {
		rec.Soak = env.Spec.Soak.Duration.DeepCopy()
		msg += fmt.Sprintf(" and soaked there for %s", env.Spec.Soak.Duration.Duration)
	}
	first := es.AutoPromotion == nil
	es.Gate, es.AutoPromotion = nil, rec
	setGateOpen(es, ferryv1.AutoPromotedReason, msg, rel.Generation, now)
	if first {
		autoPromotionsTotal.WithLabelValues(es.Name).Inc()
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.AutoPromotedReason, "Gate", "Environment %s: %s", es.Name, msg)
	}
	return true
}
