package rollout

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// A target namespace belongs to exactly one Project. Ferry records the owner on the namespace when
// it creates it (or adopts it, when the Environment says so) and writes into a namespace only when
// the record names the Project being deployed: team A's Project "billing" never writes into team
// B's "billing-prod", whatever the two Environments' templates give.

// SystemNamespaces are never deployed into, whatever an Environment's template gives; so is every
// namespace whose name starts with "kube-", and Ferry's own namespace.
var SystemNamespaces = []string{"default", "kube-system", "kube-public", "kube-node-lease"}

// Owner is the Project a target namespace belongs to.
type Owner struct {
	// Namespace and Name are the Project's namespace and name on the hub.
	Namespace string
	Name      string
	// UID is the Project's UID: the ownership record on the namespace.
	UID types.UID
}

func (o Owner) String() string { return o.Namespace + "/" + o.Name }

// NamespaceRules say which target namespaces a rollout may write into besides the ones its Project
// owns.
type NamespaceRules struct {
	// Adopt lets a rollout take over a namespace that exists and that no Project owns, recording
	// the Project as its owner (Environment spec.existingNamespaces: Adopt).
	Adopt bool
	// FerryNamespace is Ferry's own namespace, refused like the system namespaces.
	FerryNamespace string
}

// NamespaceError is a refusal to write into a target namespace. Its Reason is NamespaceNotOwned or
// NamespaceReserved; its Message names the namespace, the owner and what to do.
type NamespaceError struct {
	Reason  string
	Message string
}

func (e *NamespaceError) Error() string { return e.Message }

// IsNamespaceRefused reports whether err is a refusal to write into a target namespace.
func IsNamespaceRefused(err error) (*NamespaceError, bool) {
	var ne *NamespaceError
	return ne, errors.As(err, &ne)
}

// CheckReserved refuses a system namespace, any kube-* namespace and Ferry's own namespace, with a
// NamespaceReserved error saying which template and which environment gave it.
func CheckReserved(namespace, ferryNamespace, environment string) error {
	reserved := slices.Contains(SystemNamespaces, namespace) || strings.HasPrefix(namespace, "kube-") ||
		(ferryNamespace != "" && namespace == ferryNamespace)
	if !reserved {
		return nil
	}
	what := "a system namespace"
	if namespace == ferryNamespace {
		what = "Ferry's own namespace"
	}
	return &NamespaceError{
		Reason: ferryv1.NamespaceReservedReason,
		Message: fmt.Sprintf("namespace %s is %s: Ferry never deploys into %s, any kube-* namespace or its own namespace; change the namespaceTemplate of environment %s (or the Project's name)",
			namespace, what, strings.Join(SystemNamespaces, ", "), environment),
	}
}

// ownership is what a namespace's record says about a Project.
type ownership int

const (
	// owned: the namespace carries the Project's UID.
	owned ownership = iota
	// unowned: no Project's UID; the namespace was not created by Ferry for a Project.
	unowned
	// ownedByOther: another Project's UID.
	ownedByOther
)

// ownershipOf reads the ownership record of ns for owner.
func ownershipOf(ns *corev1.Namespace, owner Owner) ownership {
	switch uid := ns.Labels[ferryv1.ProjectUIDLabel]; {
	case uid == "":
		return unowned
	case types.UID(uid) == owner.UID:
		return owned
	}
	return ownedByOther
}

// recordedOwner names the Project a namespace's record points at, for messages.
func recordedOwner(ns *corev1.Namespace) string {
	if o := ns.Annotations[ferryv1.OwnerAnnotation]; o != "" {
		return o
	}
	if p := ns.Labels[ferryv1.ProjectLabel]; p != "" {
		return ns.Labels[ferryv1.ProjectNamespaceLabel] + "/" + p
	}
	return "(unnamed)"
}

// refusal is the error for a namespace a rollout may not write into; nil when it may.
func refusal(ns *corev1.Namespace, cluster string, w *Workload, rules NamespaceRules) error {
	where := fmt.Sprintf("namespace %s on cluster %s", ns.Name, cluster)
	switch ownershipOf(ns, w.Owner) {
	case owned:
		return nil
	case ownedByOther:
		other := recordedOwner(ns)
		msg := fmt.Sprintf("%s belongs to Project %s (UID %s, label %s): Ferry does not deploy Project %s into it",
			where, other, ns.Labels[ferryv1.ProjectUIDLabel], ferryv1.ProjectUIDLabel, w.Owner)
		if other == w.Owner.String() {
			msg += fmt.Sprintf("; it was created for an earlier Project of the same name (deleted since, or on another Ferry); if it is this team's, hand it over on the cluster: kubectl label namespace %s %s=%s --overwrite",
				ns.Name, ferryv1.ProjectUIDLabel, w.Owner.UID)
		} else {
			msg += fmt.Sprintf("; give environment %s a namespace template that keeps Projects apart (for example \"{namespace}-{project}-{environment}\") or rename the Project", w.Environment)
		}
		return &NamespaceError{Reason: ferryv1.NamespaceNotOwnedReason, Message: msg}
	}
	if rules.Adopt {
		return nil
	}
	origin := "it was not created by Ferry"
	if ns.Labels[ferryv1.ManagedByLabel] == ferryv1.ManagedByValue {
		origin = "it was created by a Ferry that did not record owners yet"
	}
	return &NamespaceError{
		Reason: ferryv1.NamespaceNotOwnedReason,
		Message: fmt.Sprintf("%s exists and no Project owns it (%s): Ferry does not deploy Project %s into it; to take it over, set spec.existingNamespaces: Adopt on environment %s, or label it on the cluster: kubectl label namespace %s %s=%s",
			where, origin, w.Owner, w.Environment, ns.Name, ferryv1.ProjectUIDLabel, w.Owner.UID),
	}
}

// targetNamespaceLabels are the labels of the target namespace: the workload's, and the ownership
// record.
func (w *Workload) targetNamespaceLabels() map[string]string {
	labels := w.namespaceLabels()
	labels[ferryv1.ProjectUIDLabel] = string(w.Owner.UID)
	labels[ferryv1.ProjectNamespaceLabel] = w.Owner.Namespace
	return labels
}

// Claim makes sure the workload's namespace on cluster belongs to its Project before anything is
// written into it: it creates a namespace that does not exist with the ownership record, adopts
// one that no Project owns when rules allow it, and refuses (a *NamespaceError) a reserved
// namespace, one owned by another Project, or one that exists unowned when rules do not adopt.
// Other errors mean the cluster did not answer as expected.
func Claim(ctx context.Context, c client.Client, cluster string, w *Workload, rules NamespaceRules) error {
	_, err := claim(ctx, c, cluster, w, rules)
	return err
}

// claim is Claim; created reports that it created the namespace.
func claim(ctx context.Context, c client.Client, cluster string, w *Workload, rules NamespaceRules) (created bool, _ error) {
	if err := CheckReserved(w.Namespace, rules.FerryNamespace, w.Environment); err != nil {
		return false, err
	}
	if w.Owner.UID == "" {
		// A workload without an owner would create namespaces nobody can tell apart.
		return false, fmt.Errorf("the workload of project %s names no owning Project", w.Project)
	}
	ns := &corev1.Namespace{}
	err := c.Get(ctx, types.NamespacedName{Name: w.Namespace}, ns)
	if apierrors.IsNotFound(err) {
		created := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
			Name:        w.Namespace,
			Labels:      w.targetNamespaceLabels(),
			Annotations: map[string]string{ferryv1.OwnerAnnotation: w.Owner.String()},
		}}
		// Create, not apply: it fails if someone else made the namespace in the meantime, which
		// is then judged like any namespace that exists.
		if err = c.Create(ctx, created, client.FieldOwner(ferryv1.FieldManager)); err == nil {
			return true, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return false, fmt.Errorf("failed to create namespace %s: %w", w.Namespace, err)
		}
		err = c.Get(ctx, types.NamespacedName{Name: w.Namespace}, ns)
	}
	if err != nil {
		return false, fmt.Errorf("failed to read namespace %s: %w", w.Namespace, err)
	}
	if err := refusal(ns, cluster, w, rules); err != nil {
		return false, err
	}
	if ownershipOf(ns, w.Owner) == owned {
		return false, nil
	}
	// Adopt: record the owner, guarded by the resourceVersion so that of two Projects adopting at
	// once, one fails and then finds the other's record.
	before := ns.DeepCopy()
	if ns.Labels == nil {
		ns.Labels = map[string]string{}
	}
	for k, v := range w.targetNamespaceLabels() {
		ns.Labels[k] = v
	}
	if ns.Annotations == nil {
		ns.Annotations = map[string]string{}
	}
	ns.Annotations[ferryv1.OwnerAnnotation] = w.Owner.String()
	if err := c.Patch(ctx, ns, client.MergeFromWithOptions(before, client.MergeFromWithOptimisticLock{}), client.FieldOwner(ferryv1.FieldManager)); err != nil {
		return false, fmt.Errorf("failed to record Project %s as the owner of namespace %s: %w", w.Owner, w.Namespace, err)
	}
	return false, nil
}
