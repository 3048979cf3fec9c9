// Package patch writes a reconciler's status changes back with one merge patch, computed against the
// object as it was read, so that a Reconcile can set conditions anywhere and persist them once in a
// deferred call. With WithOptimisticLock the patch applies only to the object as it was read.
package patch

import (
	"context"
	"errors"
	"fmt"

	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// ErrConflict is returned (wrapped) by a patch with an optimistic lock when the object changed
// since it was read: nothing was written, and the caller reads it again or retries later.
var ErrConflict = errors.New("the object changed since it was read")

// Option changes how a StatusPatcher writes.
type Option func(*StatusPatcher)

// WithOptimisticLock sends the resourceVersion the object was read at, so that a status derived
// from a stale read (a cache behind the API server, two writers of one object) never replaces a
// newer one. A conflict is reported as ErrConflict.
func WithOptimisticLock() Option {
	return func(p *StatusPatcher) { p.optimisticLock = true }
}

// StatusPatcher remembers an object as it was read.
type StatusPatcher struct {
	before         client.Object
	optimisticLock bool
}

// NewStatusPatcher snapshots obj; call Patch with the same object after changing its status.
func NewStatusPatcher(obj client.Object, opts ...Option) *StatusPatcher {
	p := &StatusPatcher{before: obj.DeepCopyObject().(client.Object)}
	for _, o := range opts {
		o(p)
	}
	return p
}

// Patch sends the difference between the snapshot and obj to the status subresource. Nothing is
// sent when nothing changed. An object deleted in the meantime is not an error. With an
// optimistic lock, an object changed in the meantime is ErrConflict.
func (p *StatusPatcher) Patch(ctx context.Context, c client.Client, obj client.Object) error {
	if equality.Semantic.DeepEqual(p.before, obj) {
		return nil
	}
	from := client.MergeFrom(p.before)
	if p.optimisticLock {
		from = client.MergeFromWithOptions(p.before, client.MergeFromWithOptimisticLock{})
	}
	if err := c.Status().Patch(ctx, obj, from); err != nil {
		switch {
		case apierrors.IsNotFound(err):
			return nil
		case p.optimisticLock && apierrors.IsConflict(err):
			return fmt.Errorf("failed to patch status of %s: %w: %w", client.ObjectKeyFromObject(obj), ErrConflict, err)
		}
		return fmt.Errorf("failed to patch status of %s: %w", client.ObjectKeyFromObject(obj), err)
	}
	p.before = obj.DeepCopyObject().(client.Object)
	return nil
}
