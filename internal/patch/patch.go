// Package patch writes a reconciler's status changes back with one merge patch, computed against the
// object as it was read, so that a Reconcile can set conditions anywhere and persist them once in a
// deferred call.
package patch

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// StatusPatcher remembers an object as it was read.
type StatusPatcher struct {
	before client.Object
}

// NewStatusPatcher snapshots obj; call Patch with the same object after changing its status.
func NewStatusPatcher(obj client.Object) *StatusPatcher {
	return &StatusPatcher{before: obj.DeepCopyObject().(client.Object)}
}

// Patch sends the difference between the snapshot and obj to the status subresource. Nothing is
// sent when nothing changed. An object deleted in the meantime is not an error.
func (p *StatusPatcher) Patch(ctx context.Context, c client.Client, obj client.Object) error {
	if equality.Semantic.DeepEqual(p.before, obj) {
		return nil
	}
	if err := c.Status().Patch(ctx, obj, client.MergeFrom(p.before)); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		return fmt.Errorf("failed to patch status of %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	p.before = obj.DeepCopyObject().(client.Object)
	return nil
}
