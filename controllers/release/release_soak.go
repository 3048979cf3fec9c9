package release

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
)

// soak holds the Release before env until its digest has run healthy in the previous environment
// of its path for the Environment's soak duration. The soak starts when the digest's rollout there
// became healthy, or when a later rollout there was rolled back to it (the pods were replaced);
// it cannot end while the previous environment runs another digest. Everything it counts from is
// in statuses, so a restarted manager arrives at the same end.
func (r *Reconciler) soak(rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, siblings []ferryv1.Release, now metav1.Time) step {
	i := slices.Index(p.path, es.Name)
	if env.Spec.Soak == nil || i <= 0 {
		es.SoakEndsAt = nil
		return proceed()
	}
	prevName := p.path[i-1]
	prev := envStatus(rel, prevName)
	if prev == nil || !envSucceeded(prev) || prev.CompletionTime == nil {
		// promote does not come here before the previous environment succeeded.
		return wait(0)
	}
	d := env.Spec.Soak.Duration.Duration
	short := rollout.ShortImage(p.image)
	if cur := deployedIn(p.project, prevName); cur == nil || cur.Image != rel.Spec.Image {
		runs := "nothing"
		if cur != nil {
			runs = rollout.ShortImage(cur.Image)
		}
		es.SoakEndsAt = nil
		setEnvWaiting(es, ferryv1.SoakingReason, fmt.Sprintf("%s must run healthy in %s for %s before %s, but %s runs %s now", short, prevName, d, es.Name, prevName, runs), rel.Generation, now)
		return wait(0)
	}
	start, why := prev.CompletionTime.Time, "healthy in "+prevName
	for j := range siblings {
		ses := envStatus(&siblings[j], prevName)
		if ses == nil || ses.CompletionTime == nil || !ses.CompletionTime.After(start) || ses.PreviousImage != rel.Spec.Image {
			continue
		}
		if c := meta.FindStatusCondition(ses.Conditions, ferryv1.ReadyCondition); c != nil && c.Reason == ferryv1.RolledBackReason {
			start, why = ses.CompletionTime.Time, "rolled back to in "+prevName+" by Release "+siblings[j].Name
		}
	}
	ends := metav1.NewTime(start.Add(d))
	first := es.SoakEndsAt == nil
	es.SoakEndsAt = &ends
	if !now.Before(&ends) {
		return proceed()
	}
	left := ends.Sub(now.Time).Round(time.Second)
	msg := fmt.Sprintf("soaking: %s must run healthy in %s for %s (%s %s); %s left, until %s", short, prevName, d, why, start.UTC().Format(time.RFC3339), left, ends.UTC().Format(time.RFC3339))
	setEnvWaiting(es, ferryv1.SoakingReason, msg, rel.Generation, now)
	if first {
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.SoakingReason, "Soak", "Environment %s: %s", es.Name, msg)
	}
	return wait(left)
}
