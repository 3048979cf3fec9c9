package release

import (
	"context"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/rollout"
)

// reconcileEnvironment works on the first environment of the path the Release has not passed:
// the checks before it may start (supersession, an older image, deploy windows and freezes, the
// deploy lock), the gate, then
// the rollout. It proceeds once the environment succeeded and the next one may start.
func (r *Reconciler) reconcileEnvironment(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	if es.StartTime == nil {
		es.StartTime = &now
	}
	env := &ferryv1.Environment{}
	if err := r.Get(ctx, types.NamespacedName{Name: es.Name}, env); err != nil {
		if apierrors.IsNotFound(err) {
			setEnvWaiting(es, ferryv1.EnvironmentNotFoundReason, fmt.Sprintf("environment %s not found", es.Name), gen, now)
			return wait(0), nil
		}
		return step{}, fmt.Errorf("failed to read Environment %s: %w", es.Name, err)
	}
	if !rolloutStarted(es) {
		if st, err := r.beforeRollout(ctx, rel, p, env, es, now); err != nil || !st.proceeds() {
			return st, err
		}
	}
	return r.rollOut(ctx, rel, p, env, es, now)
}

// beforeRollout decides whether the Release may start rolling out in env now, and starts it: it
// proceeds once the rollout started.
func (r *Reconciler) beforeRollout(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	siblings, err := r.projectReleases(ctx, rel, fromCache)
	if err != nil {
		return step{}, err
	}
	if st, err := r.mustStop(ctx, rel, p, siblings, es, now); err != nil || !st.proceeds() {
		return st, err
	}
	if st := r.soak(rel, p, env, es, siblings, now); !st.proceeds() {
		return st, nil
	}
	if st, err := r.deployWindow(ctx, rel, env, es, now); err != nil || !st.proceeds() {
		return st, err
	}
	ns, targets, ok := r.targetNamespace(rel, env, es, now)
	if !ok {
		return stop(), nil
	}
	if st := r.waitForHolder(rel, es, siblings, now); !st.proceeds() {
		return st, nil
	}
	if st, err := r.waitForTargets(ctx, rel, es, targets, fromCache, now); err != nil || !st.proceeds() {
		return st, err
	}
	if st, err := r.gate(ctx, rel, p, env, es, now); err != nil || !st.proceeds() {
		return st, err
	}
	if st, err := r.supplyChainGate(ctx, rel, p, env, es, now); err != nil || !st.proceeds() {
		return st, err
	}
	// Take the deploy lock on what the API server says, not on the cache: another Release of the
	// project, or of another project with the same target, may have started a moment ago.
	if !r.takeTargets(p, targets) {
		setEnvWaiting(es, ferryv1.EnvironmentLockedReason, "another Release is taking the deploy lock of "+describeTargets(targets), gen, now)
		return wait(time.Second), nil
	}
	live, err := r.projectReleases(ctx, rel, fromAPIServer)
	if err != nil {
		return step{}, err
	}
	if st, err := r.mustStop(ctx, rel, p, live, es, now); err != nil || !st.proceeds() {
		return st, err
	}
	if st := r.waitForHolder(rel, es, live, now); !st.proceeds() {
		return st, nil
	}
	if st, err := r.waitForTargets(ctx, rel, es, targets, fromAPIServer, now); err != nil || !st.proceeds() {
		return st, err
	}
	if cur := deployedIn(p.project, env.Name); cur != nil {
		es.PreviousImage = cur.Image
	}
	es.Clusters = nil
	waves, count := planWaves(env)
	for _, c := range env.Spec.Clusters {
		es.Clusters = append(es.Clusters, ferryv1.ClusterRolloutStatus{Cluster: c, Namespace: ns, Wave: waves[c]})
	}
	es.Waves, es.Wave = count, min(count, 1)
	msg := fmt.Sprintf("rolling out %s to namespace %s on %s", rollout.ShortImage(p.image), ns, strings.Join(env.Spec.Clusters, ", "))
	setEnvRollingOut(es, msg+droppedNote(p, env), gen, now)
	r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.RollingOutReason, "RollOut", "Environment %s: %s", env.Name, msg)
	r.reportDroppedAnnotations(rel, p, env)
	return proceed(), nil
}

// waitForHolder makes the environment wait while another Release of the project is writing into
// it (see lockHolder).
func (r *Reconciler) waitForHolder(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, siblings []ferryv1.Release, now metav1.Time) step {
	holder := lockHolder(siblings, rel, es.Name)
	if holder == "" {
		return proceed()
	}
	setEnvWaiting(es, ferryv1.EnvironmentLockedReason, fmt.Sprintf("release %s is rolling out in environment %s", holder, es.Name), rel.Generation, now)
	return wait(0)
}

// mustStop stops the Release before env when a newer Release of the project has reached env, or
// env runs a newer image and this is not a rollback; otherwise it proceeds.
func (r *Reconciler) mustStop(ctx context.Context, rel *ferryv1.Release, p *plan, siblings []ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	if newer := supersededBy(siblings, rel, es.Name); newer != "" {
		setEnvStopped(es, ferryv1.SupersededReason, fmt.Sprintf("superseded by the newer Release %s, which reached environment %s first", newer, es.Name), gen, now)
		return stop(), nil
	}
	msg, err := r.newerImageDeployed(ctx, rel, p, es.Name)
	if err != nil {
		return step{}, err
	}
	if msg == "" {
		return proceed(), nil
	}
	setEnvStopped(es, ferryv1.NewerImageDeployedReason, msg, gen, now)
	return stop(), nil
}

// readFrom says where a lookup of Releases reads them.
type readFrom int

const (
	// fromCache reads the manager's cache, which may not have seen a write of a moment ago.
	fromCache readFrom = iota
	// fromAPIServer reads the API server: what takes the deploy lock must see every write.
	fromAPIServer
)

// projectReleases lists the other Releases of the same project, from the cache or the API server.
func (r *Reconciler) projectReleases(ctx context.Context, rel *ferryv1.Release, from readFrom) ([]ferryv1.Release, error) {
	list := &ferryv1.ReleaseList{}
	var err error
	if from == fromAPIServer {
		err = r.APIReader.List(ctx, list, client.InNamespace(rel.Namespace))
	} else {
		err = r.List(ctx, list, client.InNamespace(rel.Namespace), client.MatchingFields{projectIndex: rel.Spec.Project})
	}
	if err != nil {
		return nil, fmt.Errorf("failed to list the Releases of project %s: %w", rel.Spec.Project, err)
	}
	var out []ferryv1.Release
	for _, o := range list.Items {
		if o.Spec.Project == rel.Spec.Project && o.Name != rel.Name {
			out = append(out, o)
		}
	}
	return out, nil
}

// newerThan orders Releases by creation (then name, for Releases created in the same second).
func newerThan(a, b *ferryv1.Release) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.After(b.CreationTimestamp.Time)
	}
	return a.Name > b.Name
}

// supersededBy names a newer Release of the project that has reached env, "" when there is none.
func supersededBy(siblings []ferryv1.Release, rel *ferryv1.Release, env string) string {
	for i := range siblings {
		o := &siblings[i]
		if !newerThan(o, rel) || !o.DeletionTimestamp.IsZero() {
			continue
		}
		if es := envStatus(o, env); es != nil && es.StartTime != nil {
			return o.Name
		}
	}
	return ""
}

// lockHolder names a Release of the project that is writing into env, "" when none is.
func lockHolder(siblings []ferryv1.Release, rel *ferryv1.Release, env string) string {
	for i := range siblings {
		o := &siblings[i]
		if o.Name == rel.Name {
			continue
		}
		if es := envStatus(o, env); es != nil && holdsLock(es) {
			return o.Name
		}
	}
	return ""
}

// newerImageDeployed says why the Release may not replace what env runs: an image built after
// the Release's, or one whose age cannot be compared with it because no Build of the Project is
// known to have made one of the two. Only a rollback may replace those. "" when it may. The age of
// an image is that of the first Build that made it, whoever created the Release.
func (r *Reconciler) newerImageDeployed(ctx context.Context, rel *ferryv1.Release, p *plan, env string) (string, error) {
	cur := deployedIn(p.project, env)
	if rel.Spec.Rollback || cur == nil || cur.Image == "" || sameDigest(cur.Image, p.image) {
		return "", nil
	}
	running := rollout.ShortImage(cur.Image)
	if cur.Release != "" {
		running += " (Release " + cur.Release + ")"
	}
	ours, err := r.builtAt(ctx, rel.Namespace, rel.Spec.Project, p.image, nil)
	if err != nil {
		return "", err
	}
	theirs, err := r.builtAt(ctx, rel.Namespace, rel.Spec.Project, cur.Image, cur.BuiltAt)
	if err != nil {
		return "", err
	}
	const only = "only a rollback Release (spec.rollback, `ferry rollback`) may replace it"
	switch {
	case theirs == nil:
		return fmt.Sprintf("environment %s runs %s, which no Build of project %s is known to have made, so whether this Release's image is older cannot be judged: %s", env, running, rel.Spec.Project, only), nil
	case ours == nil:
		return fmt.Sprintf("no Build of project %s is known to have made this Release's image %s, so whether it is older than %s, which environment %s runs (built %s), cannot be judged: %s",
			rel.Spec.Project, rollout.ShortImage(p.image), running, env, theirs.UTC().Format(time.RFC3339), only), nil
	case theirs.After(ours.Time):
		return fmt.Sprintf("environment %s runs %s, built %s, newer than this Release's image (built %s): only a rollback Release may replace a newer image with an older one",
			env, running, theirs.UTC().Format(time.RFC3339), ours.UTC().Format(time.RFC3339)), nil
	}
	return "", nil
}

// builtAt is when image was made: the creation of the first Build of the project that made it,
// or recorded when the Project recorded it as deployed (its Build may be gone since). Nil when no
// Build is known to have made it.
func (r *Reconciler) builtAt(ctx context.Context, namespace, project, image string, recorded *metav1.Time) (*metav1.Time, error) {
	if recorded != nil {
		return recorded, nil
	}
	builds, err := r.buildsOfImage(ctx, namespace, project, image, true)
	if err != nil || len(builds) == 0 {
		return nil, err
	}
	return &builds[0].CreationTimestamp, nil
}

// sameDigest reports whether two pinned images have the same digest.
func sameDigest(a, b string) bool {
	_, da, _ := strings.Cut(a, "@")
	_, db, _ := strings.Cut(b, "@")
	return da != "" && da == db
}

// maxGateRecords is the API's limit on the decisions a gate's status lists.
const maxGateRecords = 100

// gate evaluates the Environment's approval gate: it proceeds when the Release may roll out, waits
// for approvals (until the gate expires), and stops when it was rejected or expired.
func (r *Reconciler) gate(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	gen := rel.Generation
	policy := env.Spec.Approval
	if policy == nil {
		es.Gate = nil
		setGateOpen(es, ferryv1.NoGateReason, fmt.Sprintf("environment %s has no approval gate", env.Name), gen, now)
		return proceed(), nil
	}
	if r.autoPromote(rel, p, env, es, now) {
		return proceed(), nil
	}
	if es.Gate == nil || es.Gate.WaitingSince == nil {
		es.Gate = &ferryv1.GateStatus{WaitingSince: &now, ExpiresAt: expiresAt(policy, now)}
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.WaitingForApprovalReason, "Gate", "Waiting for %d approval(s) for environment %s", approval.MinApprovals(policy), env.Name)
	}
	approvals, err := r.approvals(ctx, rel)
	if err != nil {
		return step{}, err
	}
	tally := approval.Tally(policy, approvals, rel.Name, env.Name, 0, rel.Spec.Image, p.subject, es.Gate.ExpiresAt)
	es.Gate.RequiredApprovals = tally.Required
	// The status keeps the first 100 decisions (the API's limit); the Approvals are the full record.
	es.Gate.Approvals = tally.Records[:min(len(tally.Records), maxGateRecords)]
	waited := now.Sub(es.Gate.WaitingSince.Time).Seconds()
	switch {
	case tally.Rejection != nil:
		a := tally.Rejection
		msg := fmt.Sprintf("rejected by %s: %s", a.Spec.Approver.Username, a.Spec.Comment)
		setGateClosed(es, ferryv1.RejectedReason, msg, gen, now)
		approvalWait.WithLabelValues(env.Name, "rejected").Observe(waited)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.RejectedReason, "Gate", "Environment %s: %s", env.Name, msg)
		return stop(), nil
	case tally.Approved():
		msg := fmt.Sprintf("approved by %s", strings.Join(tally.Approvers, ", "))
		setGateOpen(es, ferryv1.ApprovedReason, msg, gen, now)
		approvalWait.WithLabelValues(env.Name, "approved").Observe(waited)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.ApprovedReason, "Gate", "Environment %s: %s", env.Name, msg)
		return proceed(), nil
	case approval.Expired(es.Gate.ExpiresAt, now.Time):
		msg := fmt.Sprintf("the gate expired at %s with %d of %d approvals; re-request it with `ferry approve %s --env %s --rerequest` (or annotate the Release %s=%s)",
			es.Gate.ExpiresAt.UTC().Format(time.RFC3339), len(tally.Approvers), tally.Required, rel.Name, env.Name, ferryv1.ReRequestAnnotation, env.Name)
		if !isExpired(es) {
			approvalWait.WithLabelValues(env.Name, "expired").Observe(waited)
			r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.ExpiredReason, "Gate", "Environment %s: %s", env.Name, msg)
		}
		setGateClosed(es, ferryv1.ExpiredReason, msg, gen, now)
		return stop(), nil
	}
	msg := fmt.Sprintf("%d of %d approvals", len(tally.Approvers), tally.Required)
	if len(tally.Approvers) > 0 {
		msg += " (" + strings.Join(tally.Approvers, ", ") + ")"
	}
	msg += "; eligible: " + approval.DescribePolicy(policy)
	if es.Gate.ExpiresAt != nil {
		msg += "; expires at " + es.Gate.ExpiresAt.UTC().Format(time.RFC3339)
	}
	setGateWaiting(es, msg, gen, now)
	if es.Gate.ExpiresAt != nil {
		return wait(es.Gate.ExpiresAt.Sub(now.Time) + time.Second), nil
	}
	return wait(0), nil
}

func isExpired(es *ferryv1.ReleaseEnvironmentStatus) bool {
	for _, c := range es.Conditions {
		if c.Type == ferryv1.ApprovedCondition {
			return c.Reason == ferryv1.ExpiredReason
		}
	}
	return false
}

// expiresAt is when a gate that starts waiting now expires under the policy; nil for no expiry.
func expiresAt(policy *ferryv1.ApprovalPolicy, now metav1.Time) *metav1.Time {
	if policy == nil || policy.Expiry == nil || policy.Expiry.Duration <= 0 {
		return nil
	}
	t := metav1.NewTime(now.Add(policy.Expiry.Duration))
	return &t
}

// approvals lists the decisions recorded on the Release.
func (r *Reconciler) approvals(ctx context.Context, rel *ferryv1.Release) ([]ferryv1.Approval, error) {
	list := &ferryv1.ApprovalList{}
	if err := r.List(ctx, list, client.InNamespace(rel.Namespace), client.MatchingFields{releaseIndex: rel.Name}); err != nil {
		return nil, fmt.Errorf("failed to list the Approvals of Release %s: %w", rel.Name, err)
	}
	return list.Items, nil
}
