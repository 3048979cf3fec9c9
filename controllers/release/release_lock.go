package release

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/workqueue"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/event"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// The deploy lock is per target: one namespace on one cluster. Two Releases that would write into
// the same namespace of the same cluster — of any Projects, in any environments — never roll out
// at once. A Release holds the lock of every target of the environment it is writing into (see
// holdsLock); it takes the lock when its rollout starts, by recording the targets in its status.

// targetIndex indexes Releases by the targets ("cluster/namespace") they hold the lock of.
const targetIndex = "status.lockedTargets"

// target names one namespace on one cluster.
type target struct{ cluster, namespace string }

func (t target) key() string { return t.cluster + "/" + t.namespace }

// targetsOf are the targets of an environment whose clusters deploy into namespace.
func targetsOf(clusters []string, namespace string) []target {
	out := make([]target, 0, len(clusters))
	for _, c := range clusters {
		out = append(out, target{cluster: c, namespace: namespace})
	}
	return out
}

// lockedTargets are the targets a Release holds the deploy lock of.
func lockedTargets(rel *ferryv1.Release) []target {
	var out []target
	for i := range rel.Status.Environments {
		es := &rel.Status.Environments[i]
		if !holdsLock(es) {
			continue
		}
		for _, c := range es.Clusters {
			out = append(out, target{cluster: c.Cluster, namespace: c.Namespace})
		}
	}
	return out
}

// indexLockedTargets is the targetIndex of a Release.
func indexLockedTargets(o client.Object) []string {
	var keys []string
	for _, t := range lockedTargets(o.(*ferryv1.Release)) {
		keys = append(keys, t.key())
	}
	return keys
}

// targetHolder names another Release that holds the deploy lock of one of targets, and where;
// "" when none does. It reads the cache or the API server: the lock is taken on what the API
// server says.
func (r *Reconciler) targetHolder(ctx context.Context, rel *ferryv1.Release, targets []target, from readFrom) (string, error) {
	var candidates []ferryv1.Release
	if from == fromAPIServer {
		list := &ferryv1.ReleaseList{}
		if err := r.APIReader.List(ctx, list); err != nil {
			return "", fmt.Errorf("failed to list Releases: %w", err)
		}
		candidates = list.Items
	} else {
		for _, t := range targets {
			list := &ferryv1.ReleaseList{}
			if err := r.List(ctx, list, client.MatchingFields{targetIndex: t.key()}); err != nil {
				return "", fmt.Errorf("failed to list the Releases rolling out to namespace %s on cluster %s: %w", t.namespace, t.cluster, err)
			}
			candidates = append(candidates, list.Items...)
		}
	}
	return holderOf(candidates, rel, targets), nil
}

// waitForTargets makes the environment wait while another Release holds the deploy lock of one of
// targets (see targetHolder); otherwise it proceeds.
func (r *Reconciler) waitForTargets(ctx context.Context, rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, targets []target, from readFrom, now metav1.Time) (step, error) {
	holder, err := r.targetHolder(ctx, rel, targets, from)
	if err != nil {
		return step{}, err
	}
	if holder == "" {
		return proceed(), nil
	}
	setEnvWaiting(es, ferryv1.EnvironmentLockedReason, holder, rel.Generation, now)
	return wait(0), nil
}

// holderOf names the first Release among candidates, other than rel, that holds the lock of one of
// targets, with the target.
func holderOf(candidates []ferryv1.Release, rel *ferryv1.Release, targets []target) string {
	for i := range candidates {
		o := &candidates[i]
		if o.UID == rel.UID && o.Namespace == rel.Namespace && o.Name == rel.Name {
			continue
		}
		for _, t := range lockedTargets(o) {
			if !slices.Contains(targets, t) {
				continue
			}
			name := o.Name
			if o.Namespace != rel.Namespace {
				name = o.Namespace + "/" + o.Name
			}
			return fmt.Sprintf("release %s (project %s) is rolling out to namespace %s on cluster %s", name, o.Spec.Project, t.namespace, t.cluster)
		}
	}
	return ""
}

// takeTargets takes the mutexes of targets for this Reconcile, all or none, without waiting: a
// Reconcile of another Release that is taking the lock of one of them right now makes this one
// wait for the next look. The mutexes are released once the status that records the lock is
// written (plan.releaseLocks), so that the live check of the next Release sees it.
func (r *Reconciler) takeTargets(p *plan, targets []target) bool {
	keys := make([]string, 0, len(targets))
	for _, t := range targets {
		keys = append(keys, "target "+t.key())
	}
	unlock, ok := r.locks.tryLock(keys...)
	if ok {
		p.unlock = append(p.unlock, unlock)
	}
	return ok
}

// describeTargets names targets for messages: "namespace N on cluster A, B".
func describeTargets(targets []target) string {
	if len(targets) == 0 {
		return "no cluster"
	}
	clusters := make([]string, 0, len(targets))
	for _, t := range targets {
		clusters = append(clusters, t.cluster)
	}
	return "namespace " + targets[0].namespace + " on cluster " + strings.Join(clusters, ", ")
}

// lockReleased enqueues the Releases waiting for a deploy lock when a Release lets go of one of
// its targets (it finished there, or is gone): they may be of any Project.
func (r *Reconciler) lockReleased() handler.EventHandler {
	enqueue := func(ctx context.Context, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
		for _, req := range r.lockWaiters(ctx) {
			q.Add(req)
		}
	}
	return handler.Funcs{
		UpdateFunc: func(ctx context.Context, e event.UpdateEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			after := lockedTargets(e.ObjectNew.(*ferryv1.Release))
			for _, t := range lockedTargets(e.ObjectOld.(*ferryv1.Release)) {
				if !slices.Contains(after, t) {
					enqueue(ctx, q)
					return
				}
			}
		},
		DeleteFunc: func(ctx context.Context, e event.DeleteEvent, q workqueue.TypedRateLimitingInterface[reconcile.Request]) {
			if rel, ok := e.Object.(*ferryv1.Release); ok && len(lockedTargets(rel)) > 0 {
				enqueue(ctx, q)
			}
		},
	}
}

// lockWaiters are the unfinished Releases that wait for a deploy lock.
func (r *Reconciler) lockWaiters(ctx context.Context) []reconcile.Request {
	return r.releasesWhere(ctx, func(rel *ferryv1.Release) bool {
		if rel.Status.CompletionTime != nil {
			return false
		}
		return slices.ContainsFunc(rel.Status.Environments, func(es ferryv1.ReleaseEnvironmentStatus) bool {
			c := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
			return es.CompletionTime == nil && c != nil && c.Reason == ferryv1.EnvironmentLockedReason
		})
	})
}

// tryLock locks every key or none, without waiting.
func (k *keyedMutex) tryLock(keys ...string) (unlock func(), ok bool) {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*sync.Mutex{}
	}
	var held []*sync.Mutex
	for _, key := range keys {
		m, found := k.locks[key]
		if !found {
			m = &sync.Mutex{}
			k.locks[key] = m
		}
		if slices.Contains(held, m) {
			continue
		}
		if !m.TryLock() {
			for _, h := range held {
				h.Unlock()
			}
			k.mu.Unlock()
			return nil, false
		}
		held = append(held, m)
	}
	k.mu.Unlock()
	return func() {
		for _, h := range held {
			h.Unlock()
		}
	}, true
}

// attempts counts failed attempts per object.
type attempts struct {
	mu    sync.Mutex
	count map[types.UID]int
}

// add counts one more failed attempt and returns the count.
func (a *attempts) add(uid types.UID) int {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.count == nil {
		a.count = map[types.UID]int{}
	}
	a.count[uid]++
	return a.count[uid]
}

// forget drops the count of an object that is done.
func (a *attempts) forget(uid types.UID) {
	a.mu.Lock()
	defer a.mu.Unlock()
	delete(a.count, uid)
}
