package ui

import (
	"context"
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

// accessCache answers "may this person list these objects in this namespace?" by asking the API
// server as them (SelfSubjectAccessReview, which every authenticated user may create), so the UI
// shows each person what kubectl would.
type accessCache struct {
	newClient func(auth.Identity) (client.Client, error)
	now       func() time.Time

	mu      sync.Mutex
	answers map[string]accessAnswer
}

type accessAnswer struct {
	allowed bool
	expires time.Time
}

func newAccessCache(newClient func(auth.Identity) (client.Client, error)) *accessCache {
	return &accessCache{newClient: newClient, now: time.Now, answers: map[string]accessAnswer{}}
}

func accessKey(id auth.Identity, resource, namespace string) string {
	groups := slices.Clone(id.Groups)
	slices.Sort(groups)
	return strings.Join([]string{id.User, strings.Join(groups, ","), resource, namespace}, "\x00")
}

// canList reports whether id may list resource (of ferry.dev, or "pods/log" of core) in
// namespace. Errors count as no.
func (a *accessCache) canList(ctx context.Context, id auth.Identity, resource, namespace string) bool {
	key := accessKey(id, resource, namespace)
	now := a.now()
	a.mu.Lock()
	ans, ok := a.answers[key]
	a.mu.Unlock()
	if ok && now.Before(ans.expires) {
		return ans.allowed
	}
	allowed := a.ask(ctx, id, resource, namespace)
	a.mu.Lock()
	if len(a.answers) > 10000 {
		// Forget everything rather than grow without bound; answers are cheap to ask again.
		a.answers = map[string]accessAnswer{}
	}
	a.answers[key] = accessAnswer{allowed: allowed, expires: now.Add(accessTTL)}
	a.mu.Unlock()
	return allowed
}

func (a *accessCache) ask(ctx context.Context, id auth.Identity, resource, namespace string) bool {
	c, err := a.newClient(id)
	if err != nil {
		return false
	}
	attrs := &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "list", Group: ferryv1.GroupVersion.Group, Resource: resource}
	if res, sub, ok := strings.Cut(resource, "/"); ok {
		attrs = &authorizationv1.ResourceAttributes{Namespace: namespace, Verb: "get", Resource: res, Subresource: sub}
	}
	review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{ResourceAttributes: attrs}}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := c.Create(ctx, review); err != nil {
		return false
	}
	return review.Status.Allowed
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
