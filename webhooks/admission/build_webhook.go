package admission

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// BuildCreators are the Kubernetes users whose Builds keep the trigger they carry: Ferry's GitLab
// receiver, which runs as the manager. The manager fills it once it knows its own identity, before
// its webhook server serves.
type BuildCreators struct {
	mu    sync.RWMutex
	users []string
}

// Set replaces the users.
func (c *BuildCreators) Set(users []string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.users = slices.Clone(users)
}

// Users are the users, in the order they were set.
func (c *BuildCreators) Users() []string {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Clone(c.users)
}

// Has reports whether user is one of them.
func (c *BuildCreators) Has(user string) bool {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return slices.Contains(c.users, user)
}

// BuildWebhook decides whose word a Build's trigger is. spec.trigger says who caused a Build and
// from which GitLab event, and approval gates compare approvers with it; the ref says whether a
// Build is released automatically. Only Ferry's receiver checks a GitLab delivery's token before
// it writes them, so a Build created by anyone else is Manual, by its creator as the API server
// authenticated them, and a Manual Build is never released automatically.
type BuildWebhook struct {
	// Creators are the users whose Builds keep their trigger.
	Creators *BuildCreators
}

// +kubebuilder:webhook:path=/mutate-ferry-dev-v1alpha1-build,mutating=true,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=builds,verbs=create,versions=v1alpha1,name=builds.ferry.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-ferry-dev-v1alpha1-build,mutating=false,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=builds,verbs=create,versions=v1alpha1,name=vbuilds.ferry.dev,admissionReviewVersions=v1

// Default makes a Build created by anyone but Ferry's receiver Manual, by the requesting user, and
// labels it so. A trigger that names another kind, another user or a GitLab delivery is refused
// rather than rewritten: a client that believed it recorded a push must learn that it did not.
func (w *BuildWebhook) Default(ctx context.Context, b *ferryv1.Build) error {
	user, trusted, err := w.creator(ctx)
	if err != nil || trusted {
		return err
	}
	if err := checkManualTrigger(b, user); err != nil {
		return err
	}
	b.Spec.Trigger.Kind = ferryv1.TriggerManual
	b.Spec.Trigger.User = user
	if b.Labels == nil {
		b.Labels = map[string]string{}
	}
	b.Labels[ferryv1.TriggerKindLabel] = string(ferryv1.TriggerManual)
	return nil
}

// ValidateCreate refuses a Build whose trigger its creator may not write: the last word after
// every mutating webhook.
func (w *BuildWebhook) ValidateCreate(ctx context.Context, b *ferryv1.Build) (admission.Warnings, error) {
	user, trusted, err := w.creator(ctx)
	if err != nil || trusted {
		return nil, err
	}
	if err := checkManualTrigger(b, user); err != nil {
		return nil, err
	}
	if b.Spec.Trigger.Kind != ferryv1.TriggerManual || b.Spec.Trigger.User != user {
		return nil, fmt.Errorf("a Build created by %q must have spec.trigger {kind: Manual, user: %s}", user, user)
	}
	return nil, nil
}

// ValidateUpdate allows updates: spec.trigger is immutable (a CEL rule of the CRD).
func (w *BuildWebhook) ValidateUpdate(context.Context, *ferryv1.Build, *ferryv1.Build) (admission.Warnings, error) {
	return nil, nil
}

// ValidateDelete allows deletion.
func (w *BuildWebhook) ValidateDelete(context.Context, *ferryv1.Build) (admission.Warnings, error) {
	return nil, nil
}

// creator is the requesting user and whether their Builds keep their trigger.
func (w *BuildWebhook) creator(ctx context.Context) (string, bool, error) {
	user, err := requestUser(ctx)
	if err != nil {
		return "", false, err
	}
	return user.Username, w.Creators != nil && w.Creators.Has(user.Username), nil
}

// checkManualTrigger refuses a trigger that says more than "user made this Build by hand".
func checkManualTrigger(b *ferryv1.Build, user string) error {
	t := b.Spec.Trigger
	var wrong []string
	if t.Kind != "" && t.Kind != ferryv1.TriggerManual {
		wrong = append(wrong, fmt.Sprintf("kind %s", t.Kind))
	}
	if t.User != "" && t.User != user {
		wrong = append(wrong, fmt.Sprintf("user %q", t.User))
	}
	if t.DeliveryID != "" {
		wrong = append(wrong, "a deliveryID")
	}
	if t.UserID != 0 || t.UserEmail != "" {
		wrong = append(wrong, "a GitLab user ID or e-mail address")
	}
	if t.MergeRequestIID != 0 || t.Tag != "" {
		wrong = append(wrong, "a merge request or tag")
	}
	if len(wrong) == 0 {
		return nil
	}
	return fmt.Errorf("spec.trigger names %s, but only Ferry's GitLab receiver records what a GitLab event triggered: a Build created by %q is Manual, by %s, and is never released automatically; leave spec.trigger empty",
		strings.Join(wrong, ", "), user, user)
}
