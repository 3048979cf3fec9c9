// Package conditions is the one way Ferry's controllers set a condition: every message goes
// through text.Message, every condition records the generation it observed and the controller's
// clock as its transition time. Messages start with a lower-case letter, as Kubernetes' own do,
// unless they start with a proper name (a kind, an acronym).
package conditions

import (
	"fmt"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/text"
)

// Set sets the condition typ on conds. The transition time is now when the status changes, and
// stays as it was otherwise; the message is shortened to text.MaxMessage characters.
func Set(conds *[]metav1.Condition, typ string, status metav1.ConditionStatus, reason, message string, generation int64, now metav1.Time) {
	meta.SetStatusCondition(conds, metav1.Condition{
		Type:               typ,
		Status:             status,
		Reason:             reason,
		Message:            text.Message(message),
		ObservedGeneration: generation,
		LastTransitionTime: now,
	})
}

// MarkStalled records a problem only a person can fix (kstatus): Ready=False, Reconciling=False
// and Stalled=True, all with the same reason and message. Fixing it resumes the object.
func MarkStalled(conds *[]metav1.Condition, reason, message string, generation int64, now metav1.Time) {
	Set(conds, ferryv1.ReadyCondition, metav1.ConditionFalse, reason, message, generation, now)
	Set(conds, ferryv1.ReconcilingCondition, metav1.ConditionFalse, reason, message, generation, now)
	Set(conds, ferryv1.StalledCondition, metav1.ConditionTrue, reason, message, generation, now)
}

// ProjectNotFound is the message of a Build or Release whose Project does not exist (reason
// ProjectNotFound).
func ProjectNotFound(namespace, project string) string {
	return fmt.Sprintf("project %s not found in namespace %s", project, namespace)
}
