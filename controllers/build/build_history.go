package build

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/patch"
)

// DefaultBuildHistoryLimit is how many finished Builds a Project keeps when it does not say.
const DefaultBuildHistoryLimit = 20

// newer orders Builds by creation, then by name, so that every replica agrees which is newest.
func newer(a, b *ferryv1.Build) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return b.CreationTimestamp.Before(&a.CreationTimestamp)
	}
	return a.Name > b.Name
}

// recordLastBuild sets the Project's status.lastBuild to this Build when it is the Project's newest.
// Only the newest Build writes, with the Project's resourceVersion as a precondition (re-reading the
// Project on a conflict), so Builds reconciled in any order never leave an older one recorded. The
// patch carries only that field: the Release controller writes status.environments.
func (r *Reconciler) recordLastBuild(ctx context.Context, p *ferryv1.Project, b *ferryv1.Build) error {
	builds, err := r.buildsOf(ctx, b.Namespace, client.MatchingFields{projectIndex: p.Name}, client.UnsafeDisableDeepCopy)
	if err != nil {
		return err
	}
	for i := range builds {
		if newer(&builds[i], b) {
			return nil
		}
	}
	for attempt := 0; ; attempt++ {
		if recordedIsNewer, err := r.lastBuildIsNewer(ctx, p, b); err != nil || recordedIsNewer {
			return err
		}
		proj := p.DeepCopy()
		patcher := patch.NewStatusPatcher(proj, patch.WithOptimisticLock())
		proj.Status.LastBuild = &ferryv1.BuildReference{Name: b.Name, Revision: b.Spec.Revision, Ref: b.Spec.Ref}
		err := patcher.Patch(ctx, r.Client, proj)
		if errors.Is(err, patch.ErrConflict) && attempt < 5 {
			p = &ferryv1.Project{}
			if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, p); err != nil {
				return client.IgnoreNotFound(err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("failed to record the last Build of Project %s: %w", p.Name, err)
		}
		return nil
	}
}

// lastBuildIsNewer reports whether the Project already records this Build or a newer one.
func (r *Reconciler) lastBuildIsNewer(ctx context.Context, p *ferryv1.Project, b *ferryv1.Build) (bool, error) {
	last := p.Status.LastBuild
	if last == nil {
		return false, nil
	}
	if last.Name == b.Name {
		return true, nil
	}
	recorded := &ferryv1.Build{}
	key := types.NamespacedName{Namespace: b.Namespace, Name: last.Name}
	err := r.Get(ctx, key, recorded)
	if apierrors.IsNotFound(err) {
		// Not in the cache yet (just created) or deleted: ask the API server.
		err = r.APIReader.Get(ctx, key, recorded)
	}
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return newer(recorded, b), nil
}

// supersedeOlder cancels the Project's older unfinished Builds of the same ref, when the Project
// asks for it. Creation times have a resolution of one second: Builds created in the same second
// do not supersede each other, so that the newest is never the one cancelled. A Build that has not
// tried to start and already has a newer one cancels itself instead (self is then true; the
// change of its spec brings it back to finish as cancelled): in a burst of pushes the superseded
// Builds never read their pipeline file or create a run, and each costs one patch of its own.
func (r *Reconciler) supersedeOlder(ctx context.Context, p *ferryv1.Project, b *ferryv1.Build) (self bool, err error) {
	if !p.Spec.Triggers.Supersede || b.Spec.Cancelled {
		return false, nil
	}
	builds, err := r.buildsOf(ctx, b.Namespace, client.MatchingFields{projectRefIndex: p.Name + "\x00" + b.Spec.Ref}, client.UnsafeDisableDeepCopy)
	if err != nil {
		return false, err
	}
	if b.Status.Executor == "" {
		var newest *ferryv1.Build
		for i := range builds {
			// A newer Build someone cancelled supersedes nothing; one a still newer Build
			// superseded leaves that one to be found.
			if o := &builds[i]; !o.Spec.Cancelled && b.CreationTimestamp.Before(&o.CreationTimestamp) && (newest == nil || newer(o, newest)) {
				newest = o
			}
		}
		if newest != nil {
			return true, r.cancelSuperseded(ctx, b, newest.Name)
		}
	}
	for i := range builds {
		if o := &builds[i]; o.Name == b.Name || o.Spec.Cancelled || isFinished(o) || !o.CreationTimestamp.Before(&b.CreationTimestamp) {
			continue
		}
		if err := r.cancelSuperseded(ctx, &builds[i], b.Name); err != nil {
			return false, err
		}
	}
	return false, nil
}

// cancelSuperseded cancels a Build that the Build newer superseded, in its spec as a person would.
// old is read, never changed (it may be the cache's object). A Build this manager already asked
// to cancel is not asked again while the cache has not seen it: in a burst, every newer Build and
// the superseded one itself would otherwise each send the same patch.
func (r *Reconciler) cancelSuperseded(ctx context.Context, old *ferryv1.Build, newer string) error {
	if !r.cancelled.claim(old.UID, r.now().Time) {
		return nil
	}
	body, err := json.Marshal(map[string]any{"spec": map[string]any{"cancelled": true, "cancelReason": SupersededPrefix + newer}})
	if err != nil {
		return err
	}
	target := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}}
	if err := r.Patch(ctx, target, client.RawPatch(types.MergePatchType, body)); client.IgnoreNotFound(err) != nil {
		r.cancelled.release(old.UID)
		return fmt.Errorf("failed to cancel superseded Build %s: %w", old.Name, err)
	}
	ctrl.LoggerFrom(ctx).Info("Cancelled a superseded Build", "superseded", old.Name, "by", newer)
	return nil
}

// pruneBatch is the most Builds one reconcile deletes: a burst's long history is pruned by the
// reconciles of the Builds that finish after it, and by the pruning Build's own requeue, so that
// no reconcile holds a worker for thousands of deletes.
const pruneBatch = 20

// pruneRetry is how soon a Build whose prune left Builds beyond the limit prunes again.
const pruneRetry = time.Second

// pruneHistory keeps the Project's newest finished Builds up to its buildHistoryLimit and deletes
// at most pruneBatch of the others with their PipelineRuns; more reports that some are left. The
// PipelineRun is deleted first, explicitly: its owner reference would take it too, but only where
// a garbage collector runs. Builds this manager already deleted are skipped while the cache has
// not seen them go, and each is claimed before its deletion, so workers pruning at once do not
// delete the same Builds twice.
func (r *Reconciler) pruneHistory(ctx context.Context, b *ferryv1.Build) (more bool, err error) {
	p := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: b.Namespace, Name: b.Spec.Project}, p); err != nil {
		return false, client.IgnoreNotFound(err)
	}
	limit := int(p.Spec.BuildHistoryLimit)
	if limit <= 0 {
		limit = DefaultBuildHistoryLimit
	}
	builds, err := r.buildsOf(ctx, b.Namespace, client.MatchingFields{projectIndex: p.Name}, client.UnsafeDisableDeepCopy)
	if err != nil {
		return false, err
	}
	var finished []*ferryv1.Build
	for i := range builds {
		if builds[i].UID == b.UID {
			// The cache may not have this reconcile's status yet.
			builds[i] = *b
		}
		if isFinished(&builds[i]) && builds[i].DeletionTimestamp.IsZero() {
			finished = append(finished, &builds[i])
		}
	}
	if len(finished) <= limit {
		return false, nil
	}
	sort.Slice(finished, func(i, j int) bool {
		ci, cj := finished[i].Status.CompletionTime, finished[j].Status.CompletionTime
		if !ci.Equal(cj) {
			return cj.Before(ci)
		}
		return newer(finished[i], finished[j])
	})
	deleted := 0
	excess := finished[limit:]
	for i := len(excess) - 1; i >= 0; i-- { // the oldest first
		old := excess[i]
		if r.pruned.has(old.UID) {
			continue
		}
		if deleted == pruneBatch {
			return true, nil
		}
		if !r.pruned.claim(old.UID, r.now().Time) {
			continue // another worker deletes it
		}
		if err := r.deleteBuild(ctx, old, limit); err != nil {
			r.pruned.release(old.UID)
			return false, err
		}
		deleted++
	}
	return false, nil
}

// deleteBuild deletes a Build beyond the history limit and its PipelineRun. old is the cache's
// object: it is read, never changed.
func (r *Reconciler) deleteBuild(ctx context.Context, old *ferryv1.Build, limit int) error {
	if ref := old.Status.PipelineRunRef; ref != nil {
		pr := &pipelinev1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: ref.Name}}
		if err := r.Delete(ctx, pr, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil && !apierrors.IsForbidden(err) {
			return fmt.Errorf("failed to delete PipelineRun %s of Build %s: %w", ref.Name, old.Name, err)
		}
	}
	gone := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: old.Namespace, Name: old.Name}}
	if err := r.Delete(ctx, gone, client.PropagationPolicy(metav1.DeletePropagationBackground), client.Preconditions{UID: &old.UID}); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to delete Build %s: %w", old.Name, err)
	}
	if f, ok := r.Executor.(ForgettingExecutor); ok {
		if err := f.Forget(ctx, client.ObjectKeyFromObject(gone)); err != nil {
			ctrl.LoggerFrom(ctx).Error(err, "Failed to remove what the executor kept of a deleted Build", "deleted", old.Name)
		}
	}
	ctrl.LoggerFrom(ctx).Info("Deleted a Build beyond the Project's history limit", "deleted", old.Name, "limit", limit)
	return nil
}

// claims remembers, for a while, the Builds on which this manager already acted (deleted, asked
// to cancel): long enough for its cache to see the change, short enough to stay small. Workers
// reconciling at once claim a Build before acting, so only one of them sends the request.
type claims struct {
	mu   sync.Mutex
	uids map[types.UID]time.Time
}

// claimMemory is how long a claim is kept.
const claimMemory = time.Minute

// claim marks uid as acted on and reports whether this caller is the one to act: false when a
// claim younger than claimMemory exists.
func (s *claims) claim(uid types.UID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.uids == nil {
		s.uids = map[types.UID]time.Time{}
	}
	if at, ok := s.uids[uid]; ok && now.Sub(at) <= claimMemory {
		return false
	}
	if len(s.uids) >= 1024 {
		for u, at := range s.uids {
			if now.Sub(at) > claimMemory {
				delete(s.uids, u)
			}
		}
	}
	s.uids[uid] = now
	return true
}

// release forgets a claim whose action failed, so that it is tried again.
func (s *claims) release(uid types.UID) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.uids, uid)
}

func (s *claims) has(uid types.UID) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.uids[uid]
	return ok
}

// buildsOf lists Builds from the cache. With client.UnsafeDisableDeepCopy the items are the
// cache's own: read them, never change them.
func (r *Reconciler) buildsOf(ctx context.Context, namespace string, opts ...client.ListOption) ([]ferryv1.Build, error) {
	list := &ferryv1.BuildList{}
	if err := r.List(ctx, list, append([]client.ListOption{client.InNamespace(namespace)}, opts...)...); err != nil {
		return nil, fmt.Errorf("failed to list Builds: %w", err)
	}
	return list.Items, nil
}
