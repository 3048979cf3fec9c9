package admission

import (
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	authorizationv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// authenticatedGroup is the group the API server gives every authenticated user; an asserted
// person gets it as impersonation would give it, and never asserts it.
const authenticatedGroup = "system:authenticated"

// TrustedUI is the identity Ferry's UI runs as: the one user whose requests may name another
// person in ferryv1.AssertedIdentityAnnotation. The manager fills it from --ui-identity, or with
// its own identity when it serves the UI itself. Empty, nobody may name anyone.
type TrustedUI struct {
	mu   sync.RWMutex
	user string
	// inProcess: the UI runs in the manager's process, with the identity its controllers write
	// with.
	inProcess bool
}

// Set replaces the UI's username: the UI runs apart (`ferry ui`) under an identity of its own,
// whose every write must name the person it acts for.
func (u *TrustedUI) Set(user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.user, u.inProcess = user, false
}

// SetInProcess replaces the UI's username with the manager's own, when the manager serves the UI
// in its process (`ferry dev`, one machine): the controllers write with that identity too, so its
// requests that name nobody are its own, judged as that user's, and only those that name a person
// are the UI's.
func (u *TrustedUI) SetInProcess(user string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.user, u.inProcess = user, true
}

// User is the UI's username, "" when there is none.
func (u *TrustedUI) User() string {
	if u == nil {
		return ""
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.user
}

// InProcess reports whether the UI runs in the manager's process, with its identity.
func (u *TrustedUI) InProcess() bool {
	if u == nil {
		return false
	}
	u.mu.RLock()
	defer u.mu.RUnlock()
	return u.inProcess
}

// AssertedIdentities decides whom a request acts for. Ferry's UI writes with its own
// ServiceAccount, which RBAC lets create Approvals and patch Releases, and names the signed-in
// person on the object; it holds no right to impersonate anyone. The webhook believes that name
// only from the UI, only where RBAC lets that person do what the UI does for them (a
// SubjectAccessReview), and then judges the request as theirs: eligibility, self-approval and
// one decision per person apply to the person, never to the UI. A compromised UI can therefore
// create Approvals and re-request gates in the name of people who may do so, and nothing else;
// anyone but the UI who names a person is refused.
type AssertedIdentities struct {
	// UI is the identity whose assertions are believed.
	UI *TrustedUI
	// Client creates SubjectAccessReviews.
	Client client.Client
}

// requester is whom a request on obj acts for: the person Ferry's UI names on obj when the UI
// makes the request, else the authenticated user. For the UI, RBAC must let that person do verb
// on resource (of ferry.dev) in obj's namespace, by obj's name but for a create; an empty verb
// asks nothing (the mutating webhook, whose request the validating webhook checks again). A nil
// receiver trusts nobody.
func (a *AssertedIdentities) requester(ctx context.Context, obj client.Object, resource, verb string) (*ferryv1.Approver, error) {
	user, err := requestUser(ctx)
	if err != nil {
		return nil, err
	}
	raw, asserted := obj.GetAnnotations()[ferryv1.AssertedIdentityAnnotation]
	ui := a.uiUser()
	if ui == "" || user.Username != ui {
		if asserted {
			return nil, notTheUI(user.Username, ui)
		}
		return user, nil
	}
	if !asserted {
		if a.UI.InProcess() {
			// The manager's own identity, which the UI in its process shares.
			return user, nil
		}
		return nil, fmt.Errorf("ferry's UI (%s) acts only for the person it names in annotation %s, and decides nothing as itself", ui, ferryv1.AssertedIdentityAnnotation)
	}
	person, err := parseAssertedIdentity(raw)
	if err != nil {
		return nil, err
	}
	if verb != "" {
		name := obj.GetName()
		if verb == "create" {
			// The API server authorizes a create without the name (RBAC's resourceNames never
			// limit it), and a generated name is only known here.
			name = ""
		}
		if err := a.authorize(ctx, person, verb, resource, obj.GetNamespace(), name); err != nil {
			return nil, err
		}
	}
	return person, nil
}

func (a *AssertedIdentities) uiUser() string {
	if a == nil {
		return ""
	}
	return a.UI.User()
}

// notTheUI is the refusal of an asserted identity from anyone but the UI.
func notTheUI(user, ui string) error {
	if ui == "" {
		return fmt.Errorf("annotation %s names the person Ferry's UI acts for, and this installation trusts no UI to name anyone (the manager's --ui-identity): user %q may not set it", ferryv1.AssertedIdentityAnnotation, user)
	}
	return fmt.Errorf("annotation %s names the person Ferry's UI acts for and only the UI (%s) may set it: user %q may not act for another person", ferryv1.AssertedIdentityAnnotation, ui, user)
}

// parseAssertedIdentity reads the annotation: a JSON Approver with a username, no Kubernetes
// (system:) username or group, no empty group. The person gets system:authenticated, as every
// authenticated user does.
func parseAssertedIdentity(raw string) (*ferryv1.Approver, error) {
	person := &ferryv1.Approver{}
	dec := json.NewDecoder(strings.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(person); err != nil {
		return nil, fmt.Errorf("annotation %s is not a JSON {\"username\": …, \"groups\": […]}: %w", ferryv1.AssertedIdentityAnnotation, err)
	}
	switch {
	case strings.TrimSpace(person.Username) == "":
		return nil, fmt.Errorf("annotation %s names no username", ferryv1.AssertedIdentityAnnotation)
	case strings.HasPrefix(person.Username, "system:"):
		return nil, fmt.Errorf("annotation %s names user %q: Ferry's UI never acts for a Kubernetes (system:) user", ferryv1.AssertedIdentityAnnotation, person.Username)
	}
	for _, g := range person.Groups {
		switch {
		case strings.TrimSpace(g) == "":
			return nil, fmt.Errorf("annotation %s names an empty group", ferryv1.AssertedIdentityAnnotation)
		case strings.HasPrefix(g, "system:"):
			return nil, fmt.Errorf("annotation %s names group %q for user %q: Ferry's UI never asserts a Kubernetes (system:) group", ferryv1.AssertedIdentityAnnotation, g, person.Username)
		}
	}
	person.Groups = append(slices.Clone(person.Groups), authenticatedGroup)
	return person, nil
}

// authorize asks the API server whether RBAC lets person do verb on resource of ferry.dev in
// namespace (named name, when not empty), and refuses in RBAC's words when it does not.
func (a *AssertedIdentities) authorize(ctx context.Context, person *ferryv1.Approver, verb, resource, namespace, name string) error {
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: person.Username, Groups: person.Groups,
		ResourceAttributes: &authorizationv1.ResourceAttributes{
			Namespace: namespace, Verb: verb, Group: ferryv1.GroupVersion.Group, Resource: resource, Name: name,
		},
	}}
	if err := a.Client.Create(ctx, review); err != nil {
		return fmt.Errorf("failed to ask whether user %q may %s %s in namespace %s: %w", person.Username, verb, resource, namespace, err)
	}
	if review.Status.Allowed {
		return nil
	}
	what := fmt.Sprintf("resource %q", resource)
	if name != "" {
		what = fmt.Sprintf("resource %q named %q", resource, name)
	}
	return fmt.Errorf("user %q cannot %s %s in API group %q in the namespace %q: Ferry's UI acts for a person only where RBAC lets them act", person.Username, verb, what, ferryv1.GroupVersion.Group, namespace)
}

// checkReleaseCreate refuses a Release created with an asserted identity: the UI never creates
// Releases.
func (a *AssertedIdentities) checkReleaseCreate(ctx context.Context, r *ferryv1.Release) error {
	if _, ok := r.Annotations[ferryv1.AssertedIdentityAnnotation]; !ok {
		return nil
	}
	user, err := requestUser(ctx)
	if err != nil {
		return err
	}
	return fmt.Errorf("annotation %s names the person Ferry's UI acts for, and the UI never creates Releases: user %q may not set it", ferryv1.AssertedIdentityAnnotation, user.Username)
}

// checkReleaseUpdate lets Ferry's UI change nothing of a Release but its re-request annotation
// (ferryv1.ReRequestAnnotation), for a person RBAC lets patch it; anyone else may remove the
// name of the last person the UI acted for but not write one.
func (a *AssertedIdentities) checkReleaseUpdate(ctx context.Context, oldObj, newObj *ferryv1.Release) error {
	req, err := admission.RequestFromContext(ctx)
	if err != nil {
		return fmt.Errorf("no admission request in context: %w", err)
	}
	ui := a.uiUser()
	before, after := oldObj.Annotations[ferryv1.AssertedIdentityAnnotation], newObj.Annotations[ferryv1.AssertedIdentityAnnotation]
	if ui == "" || req.UserInfo.Username != ui {
		if after != "" && after != before {
			return notTheUI(req.UserInfo.Username, ui)
		}
		return nil
	}
	if a.UI.InProcess() && !actsForPerson(oldObj, newObj) {
		// The controllers' own write (a finalizer, a consumed re-request), with the identity the
		// UI in the manager's process shares.
		return nil
	}
	if _, err := a.requester(ctx, newObj, "releases", "patch"); err != nil {
		return err
	}
	if _, ok := newObj.Annotations[ferryv1.ReRequestAnnotation]; !ok {
		return fmt.Errorf("ferry's UI (%s) may only re-request a gate of Release %s (annotation %s)", ui, newObj.Name, ferryv1.ReRequestAnnotation)
	}
	if what := releaseChangeBesidesReRequest(oldObj, newObj); what != "" {
		return fmt.Errorf("ferry's UI (%s) may only re-request a gate of Release %s (annotation %s), not change %s", ui, newObj.Name, ferryv1.ReRequestAnnotation, what)
	}
	return nil
}

// actsForPerson reports whether an update of a Release is the UI acting for a person: it writes
// a re-request or names a person, where the old version had neither that re-request nor that
// person.
func actsForPerson(oldObj, newObj *ferryv1.Release) bool {
	changed := func(key string) bool {
		after, ok := newObj.Annotations[key]
		return ok && after != oldObj.Annotations[key]
	}
	return changed(ferryv1.ReRequestAnnotation) || changed(ferryv1.AssertedIdentityAnnotation)
}

// releaseChangeBesidesReRequest names what changed between two versions of a Release besides
// the re-request and asserted-identity annotations, "" when nothing did.
func releaseChangeBesidesReRequest(oldObj, newObj *ferryv1.Release) string {
	strip := func(m map[string]string) map[string]string {
		m = maps.Clone(m)
		delete(m, ferryv1.ReRequestAnnotation)
		delete(m, ferryv1.AssertedIdentityAnnotation)
		return m
	}
	switch {
	case !maps.Equal(strip(oldObj.Annotations), strip(newObj.Annotations)):
		return "its other annotations"
	case !maps.Equal(oldObj.Labels, newObj.Labels):
		return "its labels"
	case !slices.Equal(oldObj.Finalizers, newObj.Finalizers):
		return "its finalizers"
	case !equality.Semantic.DeepEqual(oldObj.OwnerReferences, newObj.OwnerReferences):
		return "its owner references"
	case !equality.Semantic.DeepEqual(oldObj.Spec, newObj.Spec):
		return "its spec"
	}
	return ""
}
