package admission

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/client-go/tools/events"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
)

// ApprovalWebhook decides whose decision on an approval gate may be recorded. RBAC on approvals
// decides who may try; this webhook decides whose decision counts: the approver is who the API
// server authenticated, they must be eligible under the Environment's policy, may not approve
// their own Release when the policy forbids it, decide once per gate, and the decision is bound
// to the Release's digest. An Approval never changes once recorded.
type ApprovalWebhook struct {
	// Reader reads Releases, Projects, Environments, Builds and Approvals, uncached so that a
	// second decision made a moment after the first is seen.
	Reader client.Reader
	// Identities maps the GitLab users who trigger Builds to Kubernetes users, for the
	// self-approval rule.
	Identities approval.IdentityMapping
	// Now returns the current time. Default time.Now.
	Now func() time.Time
	// Asserted believes the person Ferry's UI names; nil believes nobody.
	Asserted *AssertedIdentities
	// Recorder records refused break-glass decisions as events on their Release; nil records
	// none.
	Recorder events.EventRecorder
}

// +kubebuilder:webhook:path=/mutate-ferry-dev-v1alpha1-approval,mutating=true,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=approvals,verbs=create,versions=v1alpha1,name=approvals.ferry.dev,admissionReviewVersions=v1
// +kubebuilder:webhook:path=/validate-ferry-dev-v1alpha1-approval,mutating=false,failurePolicy=fail,sideEffects=None,groups=ferry.dev,resources=approvals,verbs=create;update;delete,versions=v1alpha1,name=vapprovals.ferry.dev,admissionReviewVersions=v1
// +kubebuilder:rbac:groups="",resources=namespaces,verbs=get

// Default records the approver from the request, binds the decision to the Release's image,
// labels the Approval with its project, release and environment, and makes the Release its owner
// so that deleting the Release deletes its decisions. A client-supplied approver that is not the
// requesting user is refused.
func (w *ApprovalWebhook) Default(ctx context.Context, a *ferryv1.Approval) error {
	user, err := w.Asserted.requester(ctx, a, "approvals", "")
	if err != nil {
		return err
	}
	if err := checkApprover(a, user); err != nil {
		return err
	}
	a.Spec.Approver = user
	rel := &ferryv1.Release{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.Release}, rel); err != nil {
		// The validating webhook says what is wrong with the Release.
		return client.IgnoreNotFound(err)
	}
	if a.Spec.Image == "" {
		a.Spec.Image = rel.Spec.Image
	}
	setLabel(a, ferryv1.ProjectLabel, rel.Spec.Project)
	setLabel(a, ferryv1.ReleaseLabel, rel.Name)
	setLabel(a, ferryv1.EnvironmentLabel, a.Spec.Environment)
	if !slices.ContainsFunc(a.OwnerReferences, func(o metav1.OwnerReference) bool { return o.UID == rel.UID }) {
		// No blockOwnerDeletion: that would need the right to update the Release's finalizers.
		a.OwnerReferences = append(a.OwnerReferences, metav1.OwnerReference{
			APIVersion: ferryv1.GroupVersion.String(), Kind: "Release", Name: rel.Name, UID: rel.UID, Controller: ptr.To(false),
		})
	}
	return nil
}

// setLabel sets a label when the value is a valid label value (names may be longer than 63).
func setLabel(a *ferryv1.Approval, key, value string) {
	if len(validation.IsValidLabelValue(value)) > 0 {
		return
	}
	if a.Labels == nil {
		a.Labels = map[string]string{}
	}
	a.Labels[key] = value
}

// ValidateCreate refuses a decision that must not count, with the reason.
func (w *ApprovalWebhook) ValidateCreate(ctx context.Context, a *ferryv1.Approval) (admission.Warnings, error) {
	user, err := w.Asserted.requester(ctx, a, "approvals", "create")
	if err != nil {
		return nil, err
	}
	if err := checkApprover(a, user); err != nil {
		return nil, err
	}
	what := fmt.Sprintf("environment %s of Release %s", a.Spec.Environment, a.Spec.Release)
	if a.Spec.Batch > 0 {
		what = fmt.Sprintf("batch %d of %s", a.Spec.Batch, what)
	}

	rel := &ferryv1.Release{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.Release}, rel); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("release %s not found in namespace %s", a.Spec.Release, a.Namespace)
		}
		return nil, fmt.Errorf("failed to read Release %s: %w", a.Spec.Release, err)
	}
	if a.Spec.Image != rel.Spec.Image {
		return nil, fmt.Errorf("the decision must be bound to the Release's image %s, not %s", rel.Spec.Image, a.Spec.Image)
	}
	for _, o := range a.OwnerReferences {
		// Another owner's deletion would make the garbage collector try to delete the decision.
		if o.UID != rel.UID {
			return nil, fmt.Errorf("metadata.ownerReferences names %s %s: an Approval belongs to its Release only", o.Kind, o.Name)
		}
	}
	if err := w.checkOnPath(ctx, rel, a.Spec.Environment); err != nil {
		return nil, err
	}
	env := &ferryv1.Environment{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Name: a.Spec.Environment}, env); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("environment %s not found", a.Spec.Environment)
		}
		return nil, fmt.Errorf("failed to read Environment %s: %w", a.Spec.Environment, err)
	}
	if a.Spec.BreakGlass {
		return nil, w.checkBreakGlass(ctx, a, rel, env, user, what)
	}
	policy := env.Spec.Approval
	if err := checkGateExists(env, a.Spec.Batch); err != nil {
		return nil, err
	}
	if err := approval.Eligible(policy, env.Name, user.Username, user.Groups); err != nil {
		return nil, err
	}
	if a.Spec.Decision == ferryv1.DecisionApprove && approval.ForbidsSelfApproval(policy) {
		subject, err := w.subject(ctx, rel)
		if err != nil {
			return nil, err
		}
		if err := approval.SelfApproval(policy, env.Name, user.Username, subject); err != nil {
			return nil, err
		}
	}
	if err := checkGateOpen(rel, env.Name, a.Spec.Batch, w.now()); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := checkBatchReached(rel, env.Name, a.Spec.Batch); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if err := w.checkFirstDecision(ctx, a, user.Username, what); err != nil {
		return nil, err
	}
	return nil, nil
}

// ValidateUpdate refuses every change: an Approval is the audit record of one decision. Only
// the garbage collector's removal of an owner reference (a Release deleted with its dependents
// orphaned) passes.
func (w *ApprovalWebhook) ValidateUpdate(_ context.Context, oldObj, newObj *ferryv1.Approval) (admission.Warnings, error) {
	what := "its spec"
	switch {
	case !maps.Equal(oldObj.Labels, newObj.Labels):
		what = "its labels"
	case !maps.Equal(oldObj.Annotations, newObj.Annotations):
		what = "its annotations"
	case equality.Semantic.DeepEqual(oldObj.Spec, newObj.Spec) && droppedOwners(oldObj.OwnerReferences, newObj.OwnerReferences):
		return nil, nil
	}
	return nil, fmt.Errorf("approval %s is an immutable record of a decision and %s cannot change: create a new Approval instead", oldObj.Name, what)
}

// droppedOwners reports whether after is before with some owner references removed.
func droppedOwners(before, after []metav1.OwnerReference) bool {
	if len(after) >= len(before) {
		return false
	}
	for _, o := range after {
		if !slices.ContainsFunc(before, func(b metav1.OwnerReference) bool { return equality.Semantic.DeepEqual(b, o) }) {
			return false
		}
	}
	return true
}

// ValidateDelete refuses to delete a decision while its Release exists: a deleted rejection
// would reopen the gate it closed, a deleted approval would rewrite the audit record. The
// decisions go with their Release (they are its dependents) and with their namespace.
func (w *ApprovalWebhook) ValidateDelete(ctx context.Context, a *ferryv1.Approval) (admission.Warnings, error) {
	rel := &ferryv1.Release{}
	switch err := w.Reader.Get(ctx, types.NamespacedName{Namespace: a.Namespace, Name: a.Spec.Release}, rel); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("failed to read Release %s: %w", a.Spec.Release, err)
	case !rel.DeletionTimestamp.IsZero():
		return nil, nil
	}
	ns := &corev1.Namespace{}
	switch err := w.Reader.Get(ctx, types.NamespacedName{Name: a.Namespace}, ns); {
	case apierrors.IsNotFound(err):
		return nil, nil
	case err != nil:
		return nil, fmt.Errorf("failed to read namespace %s: %w", a.Namespace, err)
	case !ns.DeletionTimestamp.IsZero():
		return nil, nil
	}
	return nil, fmt.Errorf("approval %s records %s's decision (%s) on environment %s of Release %s, which still exists: decisions are never deleted while their Release exists; delete the Release to remove them",
		a.Name, approverName(a), a.Spec.Decision, a.Spec.Environment, a.Spec.Release)
}

func approverName(a *ferryv1.Approval) string {
	if a.Spec.Approver == nil {
		return "an unknown person"
	}
	return strconv.Quote(a.Spec.Approver.Username)
}

func (w *ApprovalWebhook) now() time.Time {
	if w.Now != nil {
		return w.Now()
	}
	return time.Now()
}

// requestUser is the authenticated identity of the admission request.
func requestUser(ctx context.Context) (*ferryv1.Approver, error) {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("no admission request in context: %w", err)
	}
	if req.UserInfo.Username == "" {
		return nil, fmt.Errorf("the request has no authenticated user")
	}
	return &ferryv1.Approver{Username: req.UserInfo.Username, Groups: slices.Clone(req.UserInfo.Groups)}, nil
}

// checkApprover refuses an approver field that names anyone but the requesting user.
func checkApprover(a *ferryv1.Approval, user *ferryv1.Approver) error {
	got := a.Spec.Approver
	if got == nil {
		return nil
	}
	if got.Username != user.Username {
		return fmt.Errorf("spec.approver names %q but the request was made by %q: the approver is taken from the request; leave spec.approver empty", got.Username, user.Username)
	}
	if got.Groups != nil && !sameSet(got.Groups, user.Groups) {
		return fmt.Errorf("spec.approver.groups [%s] are not the groups the request was authenticated with [%s]: leave spec.approver empty", strings.Join(got.Groups, ", "), strings.Join(user.Groups, ", "))
	}
	return nil
}

func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(slices.Compact(a), slices.Compact(b))
}

// checkOnPath refuses an environment the Release does not go through.
func (w *ApprovalWebhook) checkOnPath(ctx context.Context, rel *ferryv1.Release, env string) error {
	p := &ferryv1.Project{}
	if err := w.Reader.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}, p); err != nil {
		if apierrors.IsNotFound(err) {
			return fmt.Errorf("project %s of Release %s not found", rel.Spec.Project, rel.Name)
		}
		return fmt.Errorf("failed to read Project %s: %w", rel.Spec.Project, err)
	}
	path := p.Spec.Promotion.Environments
	if len(rel.Spec.Environments) > 0 {
		path = slices.DeleteFunc(slices.Clone(path), func(e string) bool { return !slices.Contains(rel.Spec.Environments, e) })
	}
	if !slices.Contains(path, env) {
		return fmt.Errorf("release %s does not go through environment %s (its path: %s)", rel.Name, env, strings.Join(path, " → "))
	}
	return nil
}

// checkGateExists refuses a decision on a gate the Environment does not have.
func checkGateExists(env *ferryv1.Environment, batch int32) error {
	if batch == 0 {
		if env.Spec.Approval == nil {
			return fmt.Errorf("environment %s has no approval gate: there is nothing to decide", env.Name)
		}
		return nil
	}
	r := env.Spec.Rollout
	if r.Type != ferryv1.BatchStrategy || r.Batch == nil || r.Batch.Between != ferryv1.BatchGateApproval {
		return fmt.Errorf("environment %s does not wait for approvals between batches: leave spec.batch at 0 to decide its gate", env.Name)
	}
	if batch < 2 || batch > r.Batch.Batches {
		return fmt.Errorf("environment %s rolls out in %d batches; an approval between batches names batch 2 to %d, not %d", env.Name, r.Batch.Batches, r.Batch.Batches, batch)
	}
	return nil
}

// subject is whom self-approval is checked against: the Release's creator, and who triggered its
// Build or, when it names none, the Builds of its Project that made its image.
func (w *ApprovalWebhook) subject(ctx context.Context, rel *ferryv1.Release) (approval.Subject, error) {
	var builds []*ferryv1.Build
	if rel.Spec.Build != "" {
		b := &ferryv1.Build{}
		switch err := w.Reader.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Build}, b); {
		case err == nil:
			builds = append(builds, b)
		case !apierrors.IsNotFound(err):
			return approval.Subject{}, fmt.Errorf("failed to read Build %s: %w", rel.Spec.Build, err)
		}
	} else {
		var err error
		if builds, err = buildsOfImage(ctx, w.Reader, rel.Namespace, rel.Spec.Project, rel.Spec.Image); err != nil {
			return approval.Subject{}, err
		}
	}
	return approval.SubjectOf(rel, builds, w.Identities), nil
}

// checkGateOpen refuses decisions on a gate that can no longer take them: the Release finished,
// the gate was closed by a rejection, or it expired and was not re-requested.
func checkGateOpen(rel *ferryv1.Release, env string, batch int32, now time.Time) error {
	if rel.Status.CompletionTime != nil {
		reason := ""
		if c := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition); c != nil {
			reason = " (" + c.Reason + ": " + c.Message + ")"
		}
		return fmt.Errorf("release %s has finished%s: there is nothing left to decide", rel.Name, reason)
	}
	if batch > 0 {
		return nil
	}
	for _, es := range rel.Status.Environments {
		if es.Name != env {
			continue
		}
		if c := meta.FindStatusCondition(es.Conditions, ferryv1.ApprovedCondition); c != nil && c.Status != metav1.ConditionUnknown {
			switch c.Reason {
			case ferryv1.RejectedReason:
				return fmt.Errorf("the gate is closed: %s", c.Message)
			case ferryv1.ExpiredReason:
				return fmt.Errorf("the gate expired: %s", c.Message)
			}
		}
		if es.Gate != nil && approval.Expired(es.Gate.ExpiresAt, now) && !meta.IsStatusConditionTrue(es.Conditions, ferryv1.ApprovedCondition) {
			return fmt.Errorf("the gate expired at %s: re-request it with `ferry approve %s --env %s --rerequest` (or annotate the Release %s=%s)", es.Gate.ExpiresAt.UTC().Format(time.RFC3339), rel.Name, env, ferryv1.ReRequestAnnotation, env)
		}
	}
	return nil
}

// checkBatchReached refuses a decision on batch N (2 or more) before the environment's rollout
// has made batch N-1 healthy on every cluster (of the current wave, when it rolls out in waves)
// and waits for it.
func checkBatchReached(rel *ferryv1.Release, env string, batch int32) error {
	if batch == 0 {
		return nil
	}
	var es *ferryv1.ReleaseEnvironmentStatus
	for i := range rel.Status.Environments {
		if rel.Status.Environments[i].Name == env {
			es = &rel.Status.Environments[i]
		}
	}
	waitFor := fmt.Sprintf("an approval of batch %d is taken once batch %d is healthy on every cluster and the rollout waits for it", batch, batch-1)
	if es == nil || len(es.Clusters) == 0 {
		return fmt.Errorf("the rollout in environment %s has not started: %s", env, waitFor)
	}
	if es.CompletionTime != nil {
		return fmt.Errorf("the rollout in environment %s has finished: there is nothing left to decide", env)
	}
	for _, c := range es.Clusters {
		if es.Waves > 0 && c.Wave != es.Wave {
			// Rolling out in waves: only the clusters of the wave rolling out now wait for the
			// decision (an earlier wave is done, a later one has not started).
			continue
		}
		switch {
		case c.Batch > batch-1:
			return fmt.Errorf("cluster %s is past batch %d already (at batch %d of %d): there is nothing left to decide", c.Cluster, batch-1, c.Batch, c.Batches)
		case c.Batch < batch-1:
			return fmt.Errorf("cluster %s is at batch %d of %d: %s", c.Cluster, c.Batch, c.Batches, waitFor)
		case c.BatchHealthyTime == nil:
			return fmt.Errorf("cluster %s is rolling out batch %d of %d, which is not healthy yet: %s", c.Cluster, c.Batch, c.Batches, waitFor)
		}
	}
	return nil
}

// checkFirstDecision refuses a second decision by the same person on the same gate.
func (w *ApprovalWebhook) checkFirstDecision(ctx context.Context, a *ferryv1.Approval, user, what string) error {
	list := &ferryv1.ApprovalList{}
	if err := w.Reader.List(ctx, list, client.InNamespace(a.Namespace)); err != nil {
		return fmt.Errorf("failed to list Approvals in %s: %w", a.Namespace, err)
	}
	for _, other := range list.Items {
		if other.Name == a.Name || other.Spec.Release != a.Spec.Release || other.Spec.Environment != a.Spec.Environment || other.Spec.Batch != a.Spec.Batch {
			continue
		}
		if other.Spec.BreakGlass != a.Spec.BreakGlass {
			// A break-glass decision and a vote on the gate are two different decisions.
			continue
		}
		if other.Spec.Approver != nil && other.Spec.Approver.Username == user {
			return fmt.Errorf("user %q already decided on %s (Approval %s: %s); one decision per person counts", user, what, other.Name, other.Spec.Decision)
		}
	}
	return nil
}

// checkBreakGlass refuses a break-glass decision from someone the Environment's policy does not
// let break glass, and records the refusal as an event on the Release. It does not look at the
// rollout: a break-glass made while a rollout is in flight is recorded and applies when the
// Release is about to start in the environment. Self-approval rules do not apply: the people
// named for break-glass are trusted to unblock their own fix.
func (w *ApprovalWebhook) checkBreakGlass(ctx context.Context, a *ferryv1.Approval, rel *ferryv1.Release, env *ferryv1.Environment, user *ferryv1.Approver, what string) error {
	if err := approval.MayBreakGlass(env, user.Username, user.Groups); err != nil {
		if w.Recorder != nil {
			w.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.BreakGlassRefusedReason, "BreakGlass", "Refused break-glass on environment %s by %s: %s", env.Name, user.Username, err)
		}
		return err
	}
	if rel.Status.CompletionTime != nil {
		return fmt.Errorf("%s: release %s has finished: there is nothing left to let through", what, rel.Name)
	}
	return w.checkFirstDecision(ctx, a, user.Username, "break-glass on "+what)
}
