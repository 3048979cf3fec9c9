package ui

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	authorizationv1 "k8s.io/api/authorization/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// accessTTL is how long an answer about what a person may read is reused: a new RoleBinding
// shows within this time.
const accessTTL = 30 * time.Second

// authenticatedGroup is the group the API server gives every authenticated user; a person's
// access is asked with it, as the API server would authorize them.
const authenticatedGroup = "system:authenticated"

// accessCache answers "may this person do this?" by asking the API server about them
// (SubjectAccessReview, made by the UI's own ServiceAccount, which may impersonate nobody), so the
// UI shows each person what kubectl would and acts for them only where RBAC lets them act.
type accessCache struct {
	// creator creates SubjectAccessReviews.
	creator client.Writer
	now     func() time.Time

	mu      sync.Mutex
	answers map[string]accessAnswer
}

type accessAnswer struct {
	allowed bool
	expires time.Time
}

func newAccessCache(creator client.Writer) *accessCache {
	return &accessCache{creator: creator, now: time.Now, answers: map[string]accessAnswer{}}
}

func accessKey(id auth.Identity, attrs authorizationv1.ResourceAttributes) string {
	groups := slices.Clone(id.Groups)
	slices.Sort(groups)
	return strings.Join([]string{id.User, strings.Join(groups, ","), attrs.Verb, attrs.Group, attrs.Resource, attrs.Subresource, attrs.Namespace, attrs.Name}, "\x00")
}

// listAttributes are those of listing resource of ferry.dev in namespace.
func listAttributes(resource, namespace string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "list", Group: ferryv1.GroupVersion.Group, Resource: resource}
}

// logAttributes are those of reading the logs of the pods in namespace: what `kubectl logs` of a
// Build's Tekton pod needs, and what the UI asks for the local executor's log files too.
func logAttributes(namespace string) authorizationv1.ResourceAttributes {
	return authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: "pods", Subresource: "log"}
}

// canList reports whether id may list resource (of ferry.dev) in namespace. Errors count as no.
func (a *accessCache) canList(ctx context.Context, id auth.Identity, resource, namespace string) bool {
	return a.cached(ctx, id, listAttributes(resource, namespace))
}

// canReadLogs reports whether id may read the logs of pods in namespace. Errors count as no.
func (a *accessCache) canReadLogs(ctx context.Context, id auth.Identity, namespace string) bool {
	return a.cached(ctx, id, logAttributes(namespace))
}

// cached answers from an answer younger than accessTTL, or asks.
func (a *accessCache) cached(ctx context.Context, id auth.Identity, attrs authorizationv1.ResourceAttributes) bool {
	key := accessKey(id, attrs)
	now := a.now()
	a.mu.Lock()
	ans, ok := a.answers[key]
	a.mu.Unlock()
	if ok && now.Before(ans.expires) {
		return ans.allowed
	}
	allowed, err := a.ask(ctx, id, attrs)
	allowed = allowed && err == nil
	a.mu.Lock()
	if len(a.answers) > 10000 {
		// Forget everything rather than grow without bound; answers are cheap to ask again.
		a.answers = map[string]accessAnswer{}
	}
	a.answers[key] = accessAnswer{allowed: allowed, expires: now.Add(accessTTL)}
	a.mu.Unlock()
	return allowed
}

// ask asks the API server, now, whether RBAC lets id do what attrs say.
func (a *accessCache) ask(ctx context.Context, id auth.Identity, attrs authorizationv1.ResourceAttributes) (bool, error) {
	review := &authorizationv1.SubjectAccessReview{Spec: authorizationv1.SubjectAccessReviewSpec{
		User: id.User, Groups: append(slices.Clone(id.Groups), authenticatedGroup), ResourceAttributes: &attrs,
	}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := a.creator.Create(ctx, review); err != nil {
		return false, fmt.Errorf("failed to ask the API server whether %s may %s %s: %w", id.User, attrs.Verb, attrs.Resource, err)
	}
	return review.Status.Allowed, nil
}

// visible keeps the namespaces in which id may list resource.
func (a *accessCache) visible(ctx context.Context, id auth.Identity, resource string, namespaces []string) map[string]bool {
	out := map[string]bool{}
	for _, ns := range namespaces {
		if _, done := out[ns]; done {
			continue
		}
		out[ns] = a.canList(ctx, id, resource, ns)
	}
	return out
}
