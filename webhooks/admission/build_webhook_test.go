package admission_test

import (
	"context"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestBuildTriggerComesFromTheReceiver: a developer who may create Builds cannot name another
// person as the trigger or pass a Build off as a push; a Build made by hand is Manual, by its
// creator, and a Manual Build of main does not ride auto-release. The receiver's Builds (the
// manager's own identity, learnt at start) keep their trigger.
func TestBuildTriggerComesFromTheReceiver(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	testutil.StartManager(t, manager.Options{Controllers: []string{"release"}})
	ns := testutil.Namespace(t, c)
	p := releasetest.Project(ns, "shop", releasetest.Unique("dev"))
	p.Spec.Promotion.AutoRelease = &ferryv1.AutoRelease{Branches: []string{"main"}}
	if err := c.Create(ctx, p); err != nil {
		t.Fatal(err)
	}
	grant(t, c, ns, "build-creator", []rbacv1.PolicyRule{ferryRule([]string{"builds"}, "create", "get")}, "mallory")
	mallory := hub.UserClient(t, "mallory", "developers")

	t.Run("another person's push", func(t *testing.T) {
		forged := pushBuild(ns, "forged-push", "refs/heads/main", ferryv1.BuildTrigger{User: "alice", DeliveryID: "0f4c-forged"})
		wantRefused(t, mallory.Create(ctx, forged), `spec.trigger names kind Push, user "alice", a deliveryID`, `a Build created by "mallory" is Manual, by mallory`, "leave spec.trigger empty")
		manual := pushBuild(ns, "forged-manual", "refs/heads/main", ferryv1.BuildTrigger{Kind: ferryv1.TriggerManual, User: "alice"})
		wantRefused(t, mallory.Create(ctx, manual), `spec.trigger names user "alice"`)
		gitlab := pushBuild(ns, "forged-identity", "refs/heads/main", ferryv1.BuildTrigger{Kind: ferryv1.TriggerManual, UserID: 42, UserEmail: "alice@example.com"})
		wantRefused(t, mallory.Create(ctx, gitlab), "a GitLab user ID or e-mail address")
	})

	byHand := pushBuild(ns, "by-hand", "refs/heads/main", ferryv1.BuildTrigger{Kind: ferryv1.TriggerManual})
	byHand.Spec.Trigger = ferryv1.BuildTrigger{}
	t.Run("a Build by hand is Manual, by its creator", func(t *testing.T) {
		if err := mallory.Create(ctx, byHand); err != nil {
			t.Fatal(err)
		}
		if byHand.Spec.Trigger != (ferryv1.BuildTrigger{Kind: ferryv1.TriggerManual, User: "mallory"}) || byHand.Labels[ferryv1.TriggerKindLabel] != "Manual" {
			t.Errorf("trigger %+v, labels %v; want Manual by mallory", byHand.Spec.Trigger, byHand.Labels)
		}
		own := pushBuild(ns, "by-hand-named", "refs/heads/main", ferryv1.BuildTrigger{Kind: ferryv1.TriggerManual, User: "mallory"})
		if err := mallory.Create(ctx, own); err != nil {
			t.Errorf("naming oneself: %v", err)
		}
	})

	pushed := pushBuild(ns, "pushed", "refs/heads/main", ferryv1.BuildTrigger{User: "alice", UserID: 42, DeliveryID: "0f4c-real"})
	t.Run("the receiver's trigger is kept", func(t *testing.T) {
		if err := c.Create(ctx, pushed); err != nil {
			t.Fatal(err)
		}
		if pushed.Spec.Trigger != (ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "alice", UserID: 42, DeliveryID: "0f4c-real"}) {
			t.Errorf("trigger = %+v", pushed.Spec.Trigger)
		}
	})

	t.Run("a Manual Build of main is not released automatically", func(t *testing.T) {
		if byHand.UID == "" || pushed.UID == "" {
			t.Skip("the Builds were not created")
		}
		// Both succeed, the Manual one first: the auto-release controller (one worker) looks at
		// it before the push, whose Release shows it has.
		succeed(t, c, byHand, releasetest.Image("by-hand"))
		succeed(t, c, pushed, releasetest.Image("pushed"))
		testutil.Eventually(t, "the push released", func() (bool, error) {
			err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "pushed"}, &ferryv1.Release{})
			return err == nil, err
		})
		if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: "by-hand"}, &ferryv1.Release{}); !apierrors.IsNotFound(err) {
			t.Errorf("the Manual Build of refs/heads/main was released: %v", err)
		}
	})
}

// TestBuildCreatorsAreConfigurable: with --trusted-build-creators, only those users' Builds keep
// their trigger; the manager's own identity is no longer trusted.
func TestBuildCreatorsAreConfigurable(t *testing.T) {
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	testutil.StartManager(t, manager.Options{Controllers: []string{"-cluster"}, BuildCreators: []string{"ferry-receiver"}})
	ns := testutil.Namespace(t, c)
	grant(t, c, ns, "receiver", []rbacv1.PolicyRule{ferryRule([]string{"builds"}, "create")}, "ferry-receiver")
	receiver := hub.UserClient(t, "ferry-receiver")

	b := pushBuild(ns, "pushed", "refs/tags/v1", ferryv1.BuildTrigger{Kind: ferryv1.TriggerTag, User: "alice", Tag: "v1"})
	if err := receiver.Create(ctx, b); err != nil {
		t.Fatal(err)
	}
	if b.Spec.Trigger.Kind != ferryv1.TriggerTag || b.Spec.Trigger.User != "alice" {
		t.Errorf("the trusted creator's trigger became %+v", b.Spec.Trigger)
	}
	admin := pushBuild(ns, "by-admin", "refs/heads/main", ferryv1.BuildTrigger{User: "alice"})
	wantRefused(t, c.Create(ctx, admin), "only Ferry's GitLab receiver records what a GitLab event triggered")
}
