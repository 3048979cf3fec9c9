// Package admission holds Ferry's admission webhooks: the checks that need the identity of the
// person making the request, or a lookup of another object, which CEL rules in the CRDs cannot do.
package admission

import (
	"context"
	"fmt"

	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// ReleaseDefaulter records who created a Release. The self-approval rule of an approval gate
// compares approvers with this name, so it is taken from the authenticated request and never from
// the body a client sent.
type ReleaseDefaulter struct{}

// +kubebuilder:webhook:path=/mutate-ferry-dev-v1alpha1-release,mutating=true,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=releases,verbs=create,versions=v1alpha1,name=releases.ferry.dev,admissionReviewVersions=v1

// Default sets spec.requestedBy to the requesting user on create.
func (d *ReleaseDefaulter) Default(ctx context.Context, r *ferryv1.Release) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return fmt.Errorf("no admission request in context: %w", err)
	}
	if req.UserInfo.Username == "" {
		return fmt.Errorf("the request has no authenticated user")
	}
	r.Spec.RequestedBy = req.UserInfo.Username
	return nil
}

// SetupWebhooks registers Ferry's admission webhooks with the manager's webhook server.
func SetupWebhooks(mgr ctrl.Manager) error {
	if err := ctrl.NewWebhookManagedBy(mgr, &ferryv1.Release{}).
		WithDefaulter(&ReleaseDefaulter{}).
		Complete(); err != nil {
		return err
	}
	approvals := &ApprovalWebhook{Reader: mgr.GetAPIReader()}
	return ctrl.NewWebhookManagedBy(mgr, &ferryv1.Approval{}).
		WithDefaulter(approvals).
		WithValidator(approvals).
		Complete()
}
