// Package cluster holds the Cluster controller: it probes each target cluster with the credentials
// its Cluster names and reports whether Ferry can reach it.
package cluster

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/builder"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	"sigs.k8s.io/controller-runtime/pkg/predicate"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/clusters"
	"github.com/ferryci/ferry/internal/patch"
)

const (
	// DefaultProbeInterval is how often a reachable cluster is probed.
	DefaultProbeInterval = 5 * time.Minute
	// retryInterval is how soon an unreachable cluster is probed again.
	retryInterval = 30 * time.Second
	// secretRefIndex indexes Clusters by the name of their kubeconfig Secret.
	secretRefIndex = "spec.kubeConfigSecretRef.name" //nolint:gosec // G101: an index name, not a credential
)

// Reconciler probes Clusters.
type Reconciler struct {
	client.Client
	// Cache builds and keeps the per-cluster clients; the Release controller reads from it too.
	Cache *clusters.Cache
	// Namespace is Ferry's namespace, where kubeconfig Secrets live.
	Namespace string
	// Recorder emits events.
	Recorder events.EventRecorder
	// Now returns the current time. Default time.Now.
	Now func() time.Time
}

// +kubebuilder:rbac:groups=ferry.dev,resources=clusters,verbs=get;list;watch
// +kubebuilder:rbac:groups=ferry.dev,resources=clusters/status,verbs=get;update;patch
// +kubebuilder:rbac:groups=events.k8s.io,resources=events,verbs=create;patch

// Reconcile probes one Cluster and records the outcome.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (_ ctrl.Result, retErr error) {
	log := ctrl.LoggerFrom(ctx)
	c := &ferryv1.Cluster{}
	if err := r.Get(ctx, req.NamespacedName, c); err != nil {
		if apierrors.IsNotFound(err) {
			r.Cache.Invalidate(req.Name)
		}
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	patcher := patch.NewStatusPatcher(c)
	defer func() {
		retErr = errors.Join(retErr, patcher.Patch(ctx, r.Client, c))
	}()

	before := readyState(c)
	result := r.probe(ctx, c)
	if result.err != nil && !isClusterError(result.err) {
		// Reading the Secret failed for a reason of our own (API server hiccup): retry with backoff.
		return ctrl.Result{}, result.err
	}
	setStatus(c, result)
	changed := readyState(c) != before

	if result.err != nil {
		reason := clusters.ReasonOf(result.err)
		log.Info("Cluster is not reachable", "reason", reason, "message", result.err.Error())
		if changed {
			r.Recorder.Eventf(c, nil, corev1.EventTypeWarning, reason, "Probe", "%s", result.err.Error())
		}
		return ctrl.Result{RequeueAfter: jitter(retryInterval)}, nil
	}
	if changed {
		r.Recorder.Eventf(c, nil, corev1.EventTypeNormal, ferryv1.ClusterReachableReason, "Probe", "API server answered, version %s", result.version)
	}
	interval := DefaultProbeInterval
	if c.Spec.ProbeInterval != nil && c.Spec.ProbeInterval.Duration > 0 {
		interval = c.Spec.ProbeInterval.Duration
	}
	return ctrl.Result{RequeueAfter: jitter(interval)}, nil
}

func (r *Reconciler) probe(ctx context.Context, c *ferryv1.Cluster) probeResult {
	now := time.Now
	if r.Now != nil {
		now = r.Now
	}
	res := probeResult{time: metav1.NewTime(now())}
	_, cfg, err := r.Cache.ForCluster(ctx, c)
	if err != nil {
		res.err = err
		return res
	}
	res.host = cfg.Host
	res.version, res.err = clusters.Probe(ctx, cfg)
	return res
}

func isClusterError(err error) bool {
	var ce *clusters.Error
	return errors.As(err, &ce)
}

// readyState is the Ready condition's status and reason, "" when there is none.
func readyState(c *ferryv1.Cluster) string {
	if cond := meta.FindStatusCondition(c.Status.Conditions, ferryv1.ReadyCondition); cond != nil {
		return string(cond.Status) + "/" + cond.Reason
	}
	return ""
}

// jitter spreads probes of many clusters by up to 10% of d.
func jitter(d time.Duration) time.Duration {
	return d + time.Duration(rand.Int64N(int64(d)/10+1)) //nolint:gosec // G404: jitter needs no cryptographic randomness
}

// SetupWithManager registers the controller: it watches Clusters, and the Secrets in Ferry's
// namespace that they name, so that a rotated kubeconfig is probed at once.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &ferryv1.Cluster{}, secretRefIndex, func(o client.Object) []string {
		c := o.(*ferryv1.Cluster)
		if c.Spec.KubeConfigSecretRef == nil {
			return nil
		}
		return []string{c.Spec.KubeConfigSecretRef.Name}
	}); err != nil {
		return err
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&ferryv1.Cluster{}, builder.WithPredicates(predicate.GenerationChangedPredicate{})).
		Watches(&corev1.Secret{}, handler.EnqueueRequestsFromMapFunc(r.clustersForSecret)).
		Named("cluster").
		Complete(r)
}

func (r *Reconciler) clustersForSecret(ctx context.Context, o client.Object) []reconcile.Request {
	if o.GetNamespace() != r.Namespace {
		return nil
	}
	list := &ferryv1.ClusterList{}
	if err := r.List(ctx, list, client.MatchingFields{secretRefIndex: o.GetName()}); err != nil {
		ctrl.LoggerFrom(ctx).Error(err, "Failed to list Clusters for a Secret", "secret", o.GetName())
		return nil
	}
	reqs := make([]reconcile.Request, 0, len(list.Items))
	for _, c := range list.Items {
		reqs = append(reqs, reconcile.Request{NamespacedName: types.NamespacedName{Name: c.Name}})
	}
	return reqs
}
