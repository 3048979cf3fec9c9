package main

import (
	"context"
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/releasetest"
)

// setClock sets the CLI's clock for the test.
func setClock(t *testing.T, now *time.Time) {
	t.Helper()
	clock = func() time.Time { return *now }
	t.Cleanup(func() { clock = time.Now })
}

// TestFreezeAndWindowCommands: `ferry get windows` says per Environment whether a rollout may start
// now, why not and when that changes (on the CLI's clock); `ferry freeze start|end` stops and
// releases Environments, cluster-wide or one Environment; `ferry get releases` shows a Release
// waiting for a window and when it opens; `ferry approve --break-glass` records a break-glass.
func TestFreezeAndWindowCommands(t *testing.T) {
	e := startCLIEnv(t)
	ctx := context.Background()
	c := e.admin
	// Monday 2026-11-23, 10:00 UTC (11:00 in Berlin).
	now := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	setClock(t, &now)

	prod := releasetest.Environment("prod", releasetest.Gate(1, nil, []string{"release-managers"}), "east")
	prod.Labels = map[string]string{"tier": "production"}
	prod.Spec.Windows = []ferryv1.DeployWindow{
		{Name: "office-hours", Kind: ferryv1.AllowWindow, Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, TimeZone: "Europe/Berlin"},
		{Name: "friday-evening", Kind: ferryv1.DenyWindow, Schedule: "0 15 * * 5", Duration: metav1.Duration{Duration: 2 * time.Hour}, TimeZone: "Europe/Berlin"},
	}
	releasetest.CreateCleanly(t, c, prod)
	staging := releasetest.Environment("staging", nil, "east")
	staging.Spec.Windows = []ferryv1.DeployWindow{{Name: "night", Kind: ferryv1.AllowWindow, Schedule: "0 22 * * *", Duration: metav1.Duration{Duration: 4 * time.Hour}}}
	releasetest.CreateCleanly(t, c, staging)
	releasetest.CreateCleanly(t, c, releasetest.Environment("dev", nil, "east"))
	// bob is on the platform team: he may freeze.
	platform := &rbacv1.ClusterRole{ObjectMeta: metav1.ObjectMeta{Name: "ferry-freezer"}, Rules: []rbacv1.PolicyRule{
		{APIGroups: []string{ferryv1.GroupVersion.Group}, Resources: []string{"freezes"}, Verbs: []string{"get", "list", "create", "update", "delete"}},
		{APIGroups: []string{ferryv1.GroupVersion.Group}, Resources: []string{"environments"}, Verbs: []string{"get", "list", "update"}},
	}}
	releasetest.CreateCleanly(t, c, platform)
	releasetest.CreateCleanly(t, c, &rbacv1.ClusterRoleBinding{ObjectMeta: metav1.ObjectMeta{Name: "ferry-freezer-bob"},
		RoleRef:  rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: platform.Name},
		Subjects: []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "bob"}}})

	getWindows := func() map[string]windowState {
		t.Helper()
		var states []windowState
		if err := json.Unmarshal([]byte(e.mustFerry("bob", "get", "windows", "-o", "json")), &states); err != nil {
			t.Fatal(err)
		}
		out := map[string]windowState{}
		for _, s := range states {
			out[s.Environment] = s
		}
		return out
	}
	rfc := func(m *metav1.Time) string {
		if m == nil {
			return ""
		}
		return m.UTC().Format(time.RFC3339)
	}

	// Windows alone: prod is inside office hours, staging outside its night window, dev open.
	out := e.mustFerry("bob", "get", "windows")
	t.Logf("ferry get windows:\n%s", out)
	for _, want := range []string{"ENVIRONMENT", "NEXT CHANGE", "prod", "closes 2026-11-23T16:00:00Z", "allow office-hours (0 9 * * 1-5 Europe/Berlin, 8h0m0s)",
		"staging", "closed", "opens 2026-11-23T22:00:00Z", "outside the allow windows (night) until 2026-11-23T22:00:00Z"} {
		if !strings.Contains(out, want) {
			t.Errorf("get windows lacks %q:\n%s", want, out)
		}
	}
	states := getWindows()
	if s := states["prod"]; !s.Open || rfc(s.ClosesAt) != "2026-11-23T16:00:00Z" {
		t.Errorf("prod: %+v", s)
	}
	if s := states["staging"]; s.Open || rfc(s.OpensAt) != "2026-11-23T22:00:00Z" {
		t.Errorf("staging: %+v", s)
	}
	if s := states["dev"]; !s.Open || s.ClosesAt != nil || len(s.Reasons) != 0 {
		t.Errorf("dev: %+v", s)
	}

	// Stop the line for production.
	if _, err := e.ferry("bob", "freeze", "start", "incident-1"); err == nil || !strings.Contains(err.Error(), "needs a reason") {
		t.Errorf("freeze without a reason: %v", err)
	}
	if _, err := e.ferry("bob", "freeze", "start", "incident-1", "--reason", "x", "--selector", "tier in (production"); err == nil || !strings.Contains(err.Error(), "--selector") {
		t.Errorf("freeze with a broken selector: %v", err)
	}
	if _, err := e.ferry("eve", "freeze", "start", "incident-1", "--reason", "x"); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("freeze by a developer: %v", err)
	}
	out = e.mustFerry("bob", "freeze", "start", "incident-1", "--reason", "INC-1: database down", "--selector", "tier=production")
	if want := "freeze/incident-1 created: no rollout starts in the Environments labelled tier=production from 2026-11-23T10:00:00Z until it is ended: INC-1: database down"; !strings.Contains(out, want) {
		t.Errorf("freeze start printed %q", out)
	}
	f := &ferryv1.Freeze{}
	if err := c.Get(ctx, client.ObjectKey{Name: "incident-1"}, f); err != nil || f.Spec.EnvironmentSelector.MatchLabels["tier"] != "production" || f.Spec.End != nil {
		t.Fatalf("freeze %+v: %v", f.Spec, err)
	}
	t.Cleanup(func() { _ = c.Delete(ctx, f) })
	// `ferry get freezes` lists it: active, open-ended, what it selects, why.
	if out := e.mustFerry("bob", "get", "freezes"); !regexp.MustCompile(`(?m)^incident-1\s+yes\s+2026-11-23T10:00:00Z\s+its end\s+tier=production\s+INC-1: database down$`).MatchString(out) {
		t.Errorf("get freezes:\n%s", out)
	}
	var one map[string]any
	if err := json.Unmarshal([]byte(e.mustFerry("bob", "get", "freeze", "incident-1", "-o", "json")), &one); err != nil || one["kind"] != "Freeze" {
		t.Errorf("get freeze incident-1 -o json: %v %v", one["kind"], err)
	}
	states = getWindows()
	if s := states["prod"]; s.Open || s.OpensAt != nil || !strings.Contains(strings.Join(s.Reasons, ";"), "Freeze incident-1 (INC-1: database down) has no end") || strings.Join(s.Freezes, ",") != "freeze/incident-1" {
		t.Errorf("prod frozen: %+v", s)
	}
	if s := states["dev"]; !s.Open {
		t.Errorf("dev is not selected: %+v", s)
	}

	// A freeze of one Environment, for two hours.
	out = e.mustFerry("bob", "freeze", "start", "quarter-end", "--env", "dev", "--reason", "books close", "--for", "2h")
	if !strings.Contains(out, "environment/dev frozen (freeze quarter-end) from 2026-11-23T10:00:00Z until 2026-11-23T12:00:00Z: books close") {
		t.Errorf("freeze --env printed %q", out)
	}
	if s := getWindows()["dev"]; s.Open || rfc(s.OpensAt) != "2026-11-23T12:00:00Z" {
		t.Errorf("dev frozen: %+v", s)
	}
	if _, err := e.ferry("bob", "freeze", "start", "quarter-end", "--env", "dev", "--reason", "again"); err == nil || !strings.Contains(err.Error(), "already has a freeze quarter-end") {
		t.Errorf("a second freeze of the same name: %v", err)
	}

	// A Release waiting for its window shows it in `ferry get releases`.
	if err := c.Create(ctx, releasetest.Project(e.ns, "shop", "dev", "prod")); err != nil {
		t.Fatal(err)
	}
	releasetest.CreateBuild(t, c, e.ns, "b1", "shop", "refs/heads/main", releasetest.Image("v1"), "dave", releasetest.Deploy(1, nil))
	m := regexp.MustCompile(`^release/(\S+) created`).FindStringSubmatch(e.mustFerry("ann", "release", "create", "shop", "--build", "b1"))
	if m == nil {
		t.Fatal("release create printed nothing to match")
	}
	rel := &ferryv1.Release{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: m[1]}, rel); err != nil {
		t.Fatal(err)
	}
	opens := metav1.NewTime(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC))
	rel.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "dev", WindowOpensAt: &opens, Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.FrozenReason, Message: "frozen", LastTransitionTime: metav1.Now()}}},
		{Name: "prod", Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.WaitingForPreviousEnvironmentReason, Message: "waiting", LastTransitionTime: metav1.Now()}}},
	}
	if err := c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if out := e.mustFerry("bob", "get", "releases"); !strings.Contains(out, "dev:frozen(opens 2026-11-23T12:00:00Z) prod:pending") {
		t.Errorf("get releases:\n%s", out)
	}
	rel.Status.Environments[0].Conditions[0].Reason = ferryv1.WaitingForWindowReason
	if err := c.Status().Update(ctx, rel); err != nil {
		t.Fatal(err)
	}
	if out := e.mustFerry("bob", "get", "releases"); !strings.Contains(out, "dev:waiting-for-window(opens 2026-11-23T12:00:00Z)") {
		t.Errorf("get releases:\n%s", out)
	}

	// Break-glass from the CLI: needs a message, and a person the policy names.
	if _, err := e.ferry("bob", "approve", rel.Name, "--env", "prod", "--break-glass"); err == nil || !strings.Contains(err.Error(), "needs a message") {
		t.Errorf("break-glass without a message: %v", err)
	}
	if _, err := e.ferry("eve", "approve", rel.Name, "--env", "prod", "--break-glass", "-m", "please"); err == nil || !strings.Contains(err.Error(), "may not break glass in environment prod") {
		t.Errorf("break-glass by eve: %v", err)
	}
	out = e.mustFerry("bob", "approve", rel.Name, "--env", "prod", "--break-glass", "-m", "INC-1: this is the fix")
	if !strings.Contains(out, "release "+rel.Name+" let through by break-glass for environment prod by bob") {
		t.Errorf("break-glass printed %q", out)
	}

	// End the freezes, in the same second they began and later.
	out = e.mustFerry("bob", "freeze", "end", "incident-1")
	if !strings.Contains(out, "freeze/incident-1 ended at 2026-11-23T10:00:01Z") {
		t.Errorf("freeze end printed %q", out)
	}
	now = now.Add(5 * time.Minute)
	out = e.mustFerry("bob", "freeze", "end", "quarter-end", "--env", "dev")
	if !strings.Contains(out, "freeze quarter-end of environment dev ended at 2026-11-23T10:05:00Z") {
		t.Errorf("freeze end --env printed %q", out)
	}
	if out := e.mustFerry("bob", "freeze", "end", "incident-1"); !strings.Contains(out, "had ended at 2026-11-23T10:00:01Z") {
		t.Errorf("ending an ended freeze printed %q", out)
	}
	if _, err := e.ferry("bob", "freeze", "end", "no-such-freeze"); err == nil || !strings.Contains(err.Error(), "not found") {
		t.Errorf("ending an unknown freeze: %v", err)
	}
	states = getWindows()
	if !states["prod"].Open || !states["dev"].Open {
		t.Errorf("after the freezes: prod %+v, dev %+v", states["prod"], states["dev"])
	}

	// A freeze that has not begun is removed when it is ended.
	e.mustFerry("bob", "freeze", "start", "tomorrow", "--reason", "release party", "--start", "2026-11-24T00:00:00Z")
	if out := e.mustFerry("bob", "freeze", "end", "tomorrow"); !strings.Contains(out, "had not begun: deleted") {
		t.Errorf("ending a freeze to come printed %q", out)
	}
}
