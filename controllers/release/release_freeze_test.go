package release_test

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// freezeOf is a cluster-wide Freeze that started a minute ago and selects the Environments
// labelled selector (this test's only: the hub is shared).
func freezeOf(t *testing.T, c client.Client, reason string, selector map[string]string) *ferryv1.Freeze {
	t.Helper()
	f := &ferryv1.Freeze{
		ObjectMeta: metav1.ObjectMeta{Name: releasetest.Unique("incident")},
		Spec: ferryv1.FreezeSpec{Start: metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second)), Reason: reason,
			EnvironmentSelector: metav1.LabelSelector{MatchLabels: selector}},
	}
	releasetest.CreateCleanly(t, c, f)
	return f
}

// labelEnvironment labels the Environment so that this test's Freezes select it alone, and lets
// mutate change its spec.
func labelEnvironment(t *testing.T, c client.Client, name string, mutate func(*ferryv1.Environment)) map[string]string {
	t.Helper()
	selector := map[string]string{"ferry.dev/test-freeze": name}
	env := &ferryv1.Environment{}
	if err := c.Get(context.Background(), client.ObjectKey{Name: name}, env); err != nil {
		t.Fatal(err)
	}
	env.Labels = selector
	if mutate != nil {
		mutate(env)
	}
	if err := c.Update(context.Background(), env); err != nil {
		t.Fatal(err)
	}
	return selector
}

// TestFreezeStopsTheLineAndBreakGlass: a cluster-wide Freeze keeps a Release from starting, and
// its status says which Freeze and why; ending the Freeze wakes the Release, which rolls out.
// During the next incident, a break-glass Approval from someone the Environment's policy does not
// name is refused; one from the on-call SRE lets exactly that Release through, recorded in its
// status and events.
func TestFreezeStopsTheLineAndBreakGlass(t *testing.T) {
	g := setupGated(t, nil)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	east := startTargets(t)["east"]
	selector := labelEnvironment(t, c, g.env, func(e *ferryv1.Environment) {
		e.Spec.BreakGlass = &ferryv1.BreakGlassPolicy{Groups: []string{"sre"}}
	})
	startManager(t)

	incident := freezeOf(t, c, "INC-1: database down", selector)
	createRelease(t, g.ns, "r1", "r1", releasetest.Deploy(1, nil), nil)
	rel := waitEnv(t, c, g.ns, "r1", g.env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason)
	msg := envCondition(rel, g.env, ferryv1.ReadyCondition).Message
	if want := "Freeze " + incident.Name + " (INC-1: database down) has no end"; !strings.Contains(msg, want) {
		t.Errorf("Frozen message %q does not say %q", msg, want)
	}
	if es := envOf(rel, g.env); es.WindowOpensAt != nil || len(es.Clusters) != 0 {
		t.Errorf("a frozen environment: opens at %v, clusters %+v", es.WindowOpensAt, es.Clusters)
	}
	if d := east.deployment(t, "shop-"+g.env, "shop"); d != nil {
		t.Fatal("a frozen environment was deployed to")
	}

	// The incident is over: ending the Freeze wakes the Release.
	if err := c.Get(ctx, client.ObjectKeyFromObject(incident), incident); err != nil {
		t.Fatal(err)
	}
	end := metav1.NewTime(time.Now().Truncate(time.Second))
	incident.Spec.End = &end
	if err := c.Update(ctx, incident); err != nil {
		t.Fatal(err)
	}
	waitRelease(t, c, g.ns, "r1", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("r1"), 1)

	// The next incident; a fix must go out anyway.
	next := freezeOf(t, c, "INC-2: payment provider outage", selector)
	createRelease(t, g.ns, "r2", "r2", releasetest.Deploy(1, nil), nil)
	waitEnv(t, c, g.ns, "r2", g.env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason)
	dan := hub.UserClient(t, "dan", "release-managers")
	breakGlass := func(comment string) *ferryv1.Approval {
		a := releasetest.Approval(g.ns, "r2", g.env, ferryv1.DecisionApprove, comment)
		a.Spec.BreakGlass = true
		return a
	}
	err := dan.Create(ctx, breakGlass("I want it out"))
	if err == nil || !strings.Contains(err.Error(), `user "dan" (groups release-managers) may not break glass in environment `+g.env) {
		t.Fatalf("break-glass by dan: %v", err)
	}
	testutil.Eventually(t, "the refused break-glass recorded on r2", func() (bool, error) {
		return slices.Contains(eventReasons(t, c, g.ns, "r2"), ferryv1.BreakGlassRefusedReason), nil
	})
	sam := hub.UserClient(t, "sam", "release-managers", "sre")
	if err := sam.Create(ctx, breakGlass("INC-2: this is the fix")); err != nil {
		t.Fatalf("break-glass by sam: %v", err)
	}
	rel = waitRelease(t, c, g.ns, "r2", metav1.ConditionTrue, ferryv1.SucceededReason)
	east.waitAvailable(t, "shop-"+g.env, "shop", releasetest.Image("r2"), 1)
	bg := envOf(rel, g.env).BreakGlass
	if bg == nil || bg.User != "sam" || bg.Reason != "INC-2: this is the fix" || !strings.Contains(bg.Overrode, next.Name) {
		t.Errorf("break-glass record %+v", bg)
	}
	testutil.Eventually(t, "the break-glass recorded as an event on r2", func() (bool, error) {
		return slices.Contains(eventReasons(t, c, g.ns, "r2"), ferryv1.BreakGlassReason), nil
	})

	// It let r2 through, and nothing else: r3 waits for the Freeze.
	createRelease(t, g.ns, "r3", "r3", releasetest.Deploy(1, nil), nil)
	waitEnv(t, c, g.ns, "r3", g.env, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason)
}

// TestFreezeNeverInterruptsARollout: a Freeze that begins while a rollout is in flight (a batch
// rollout waiting between its batches) does not stop it: it finishes. An environment freeze with
// an end keeps the next Release waiting, with windowOpensAt, and the Release starts by itself at
// that time.
func TestFreezeNeverInterruptsARollout(t *testing.T) {
	startTargets(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	env := batchEnvironment(t, "west")
	if err := c.Create(ctx, releasetest.Project(ns, "shop", env.Name)); err != nil {
		t.Fatal(err)
	}
	releasetest.BindReleaseManagers(t, c, ns, nil, []string{"release-managers"})
	bob := hub.UserClient(t, "bob", "release-managers")
	selector := labelEnvironment(t, c, env.Name, nil)

	createRelease(t, ns, "v1", "v1", releasetest.Deploy(2, nil), nil)
	waitRelease(t, c, ns, "v1", metav1.ConditionTrue, ferryv1.SucceededReason)
	createRelease(t, ns, "v2", "v2", releasetest.Deploy(2, nil), nil)
	waitCluster(t, ns, "v2", env.Name, "west", ferryv1.WaitingForApprovalReason)

	// Stop the line while v2 is between its batches: v2 goes on.
	freezeOf(t, c, "INC-3: stop the line", selector)
	approve(t, bob, ns, "v2", env.Name, 2)
	waitRelease(t, c, ns, "v2", metav1.ConditionTrue, ferryv1.SucceededReason)
	startTargets(t)["west"].waitAvailable(t, "shop-"+env.Name, "shop", releasetest.Image("v2"), 2)
	createRelease(t, ns, "v3", "v3", releasetest.Deploy(2, nil), nil)
	waitEnv(t, c, ns, "v3", env.Name, ferryv1.ReadyCondition, metav1.ConditionUnknown, ferryv1.FrozenReason)

	// The Freeze is deleted; an environment freeze of a few seconds takes over. v3 waits for it to
	// end, says when, and starts then without anything else changing.
	list := &ferryv1.FreezeList{}
	if err := c.List(ctx, list); err != nil {
		t.Fatal(err)
	}
	var e ferryv1.Environment
	if err := c.Get(ctx, client.ObjectKey{Name: env.Name}, &e); err != nil {
		t.Fatal(err)
	}
	start := metav1.NewTime(time.Now().Add(-time.Minute).Truncate(time.Second))
	end := metav1.NewTime(time.Now().Add(5 * time.Second).Truncate(time.Second))
	e.Spec.Freezes = []ferryv1.EnvironmentFreeze{{Name: "short", Start: start, End: &end, Reason: "a short pause"}}
	if err := c.Update(ctx, &e); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if list.Items[i].Spec.EnvironmentSelector.MatchLabels["ferry.dev/test-freeze"] == env.Name {
			if err := c.Delete(ctx, &list.Items[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	testutil.Eventually(t, "v3 waiting for the environment freeze, until its end", func() (bool, error) {
		rel := getRelease(t, c, ns, "v3")
		es := envOf(rel, env.Name)
		ready := envCondition(rel, env.Name, ferryv1.ReadyCondition)
		if ready.Reason == ferryv1.FrozenReason && strings.Contains(ready.Message, "freeze short (a short pause) until") && es.WindowOpensAt != nil {
			if !es.WindowOpensAt.Equal(&end) {
				t.Errorf("windowOpensAt %v, want %v", es.WindowOpensAt, end)
			}
			return true, nil
		}
		// It may have started already when the machine is slow: then the freeze had ended.
		return ready.Reason != ferryv1.FrozenReason && time.Now().After(end.Time), nil
	})
	waitCluster(t, ns, "v3", env.Name, "west", ferryv1.WaitingForApprovalReason)
	approve(t, bob, ns, "v3", env.Name, 2)
	waitRelease(t, c, ns, "v3", metav1.ConditionTrue, ferryv1.SucceededReason)
	if rel := getRelease(t, c, ns, "v3"); envOf(rel, env.Name).StartTime == nil {
		t.Error("v3 has no start time")
	}
}
