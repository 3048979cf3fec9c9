package ui_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// weekWorld is a UI with an Environment that has office hours in Berlin and is stopped by a
// cluster-wide Freeze for an incident, from an hour ago to two days from now; rita may see
// Environments (a ClusterRoleBinding), bob may not.
type weekWorld struct {
	*world
	env, freeze string
	start, end  time.Time
}

func newWeekWorld(t *testing.T) *weekWorld {
	t.Helper()
	w := newWorld(t, worldOptions{people: []person{{name: "rita", groups: []string{"release-managers"}}, {name: "bob"}}})
	ctx := context.Background()
	suffix := randomHex(6)
	role := &rbacv1.ClusterRole{
		ObjectMeta: metav1.ObjectMeta{Name: "environment-viewers-" + suffix},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{ferryv1.GroupVersion.Group}, Resources: []string{"environments", "freezes"}, Verbs: []string{"get", "list", "watch"}}},
	}
	binding := &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: role.Name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: "rita"}},
	}
	ww := &weekWorld{world: w, env: "prod-" + suffix, freeze: "inc-42-" + suffix}
	ww.start = time.Now().Add(-time.Hour).Truncate(time.Minute)
	ww.end = ww.start.Add(50 * time.Hour)
	env := &ferryv1.Environment{
		ObjectMeta: metav1.ObjectMeta{Name: ww.env, Labels: map[string]string{"week-test": suffix}},
		Spec: ferryv1.EnvironmentSpec{
			Clusters: []string{"eu-west-1"}, Rollout: ferryv1.RolloutStrategy{Type: ferryv1.RollingStrategy},
			Windows: []ferryv1.DeployWindow{{Name: "office", Kind: ferryv1.AllowWindow, Schedule: "0 9 * * 1-5", Duration: metav1.Duration{Duration: 8 * time.Hour}, TimeZone: "Europe/Berlin"}},
		},
	}
	end := metav1.NewTime(ww.end)
	freeze := &ferryv1.Freeze{
		ObjectMeta: metav1.ObjectMeta{Name: ww.freeze},
		Spec: ferryv1.FreezeSpec{
			Start: metav1.NewTime(ww.start), End: &end, Reason: "incident INC-42",
			EnvironmentSelector: metav1.LabelSelector{MatchLabels: map[string]string{"week-test": suffix}},
		},
	}
	for _, o := range []client.Object{role, binding, env, freeze} {
		if err := w.c.Create(ctx, o); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = w.c.Delete(context.Background(), o) })
	}
	return ww
}

// TestWeekPage: the week of an Environment names its window and the cluster-wide Freeze that
// stops it, to people who may see Environments only; bad parameters are refused by name.
func TestWeekPage(t *testing.T) {
	w := newWeekWorld(t)
	path := "/environments/" + w.env + "/week"

	anonymous := newClient(t, w.URL).noRedirects()
	if code, _ := anonymous.get(path); code != http.StatusSeeOther {
		t.Errorf("signed out: %d, want a redirect to sign in", code)
	}

	rita := newClient(t, w.URL)
	rita.signIn(w.tokens["rita"])
	var page string
	testutil.Eventually(t, "the week to show the window and the Freeze", func() (bool, error) {
		var code int
		code, page = rita.get(path + "?tz=Europe/Berlin")
		return code == http.StatusOK && strings.Contains(page, w.freeze), nil
	})
	for _, want := range []string{
		"Deploy windows of " + w.env, "allow: window office", "(0 9 * * 1-5 in Europe/Berlin, for 8h0m0s)",
		"frozen: cluster-wide Freeze " + w.freeze + ", incident INC-42", "Frozen</span>", "frozen: incident INC-42 until " + w.end.In(berlin(t)).Format("Mon 2 Jan 15:04") + " Europe/Berlin",
		`id="week-prev"`, `id="week-next"`, "(Europe/Berlin)",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the week page does not say %q", want)
		}
	}
	// Another week, by its first day.
	if code, page := rita.get(path + "?week=2027-03-22&tz=Europe/Berlin"); code != http.StatusOK || !strings.Contains(page, "Mon 22 Mar – Sun 28 Mar 2027") || !strings.Contains(page, "23 hours: the clocks change") {
		t.Errorf("the week of Berlin's spring-forward: %d\n%s", code, page)
	}
	// The Environments page links to it and says where the Environment stands.
	if _, page := rita.get("/environments"); !strings.Contains(page, `href="/environments/`+w.env+`/week"`) || !strings.Contains(page, "frozen: incident INC-42") {
		t.Errorf("the Environments page does not link to the week of %s", w.env)
	}

	// Attacker side: a path for a zone, garbage for a week.
	for _, tc := range []struct{ query, want string }{
		{"?tz=../../etc", "The tz parameter"},
		{"?tz=Local", "The tz parameter"},
		{"?week=../../etc/passwd", "The week parameter"},
		{"?week=2026-02-30", "The week parameter"},
		{"?week=99999-01-01", "The week parameter"},
	} {
		if code, page := rita.get(path + tc.query); code != http.StatusBadRequest || !strings.Contains(page, tc.want) {
			t.Errorf("%s: %d, want 400 saying %q", tc.query, code, tc.want)
		}
	}
	if code, _ := rita.get("/environments/no-such-environment/week"); code != http.StatusNotFound {
		t.Errorf("an Environment that does not exist: %d", code)
	}

	bob := newClient(t, w.URL)
	bob.signIn(w.tokens["bob"])
	code, page := bob.get(path)
	if code != http.StatusForbidden || strings.Contains(page, "INC-42") || strings.Contains(page, "office") {
		t.Errorf("bob, who may not see Environments: %d\n%s", code, page)
	}
	if _, page := bob.get("/environments"); strings.Contains(page, "/week") || strings.Contains(page, "INC-42") {
		t.Errorf("the Environments page shows bob the deploy windows")
	}
}

// TestWeekInTheBrowser: the week renders a block per day the Freeze touches, each with its
// tooltip, under the UI's Content-Security-Policy (no inline styles).
func TestWeekInTheBrowser(t *testing.T) {
	w := newWeekWorld(t)
	rita := newTab(t, w.URL)
	rita.signIn(w.tokens["rita"])
	rita.open("/environments/" + w.env + "/week")
	rita.do(chromedp.WaitVisible(chromedp.CSS("svg.week-chart")))
	rita.waitText("#week-now", "incident INC-42")

	// In UTC, the week starts at today's midnight: the Freeze covers the days from today (or
	// yesterday's last hour, outside the week) to two days from now.
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	want := 0
	for d := range 7 {
		from, to := midnight.AddDate(0, 0, d), midnight.AddDate(0, 0, d+1)
		if w.start.Before(to) && w.end.After(from) {
			want++
		}
	}
	if got := eval[int](rita, `document.querySelectorAll('svg.week-chart rect.frozen').length`); got != want {
		t.Errorf("%d frozen blocks, want %d (one per day the Freeze touches)", got, want)
	}
	if got := eval[string](rita, `document.querySelector('rect.frozen title').textContent`); !strings.Contains(got, "cluster-wide Freeze "+w.freeze+", incident INC-42") {
		t.Errorf("the frozen block's tooltip: %q", got)
	}
	// Blocks have a size: the chart is drawn, not left to styles the policy refuses.
	if got := eval[float64](rita, `document.querySelector('rect.frozen').getBoundingClientRect().width`); got <= 0 {
		t.Errorf("the frozen block is %vpx wide", got)
	}
	if got := eval[string](rita, `getComputedStyle(document.querySelector('rect.frozen')).fill`); got == "" || got == "none" || got == "rgb(0, 0, 0)" {
		t.Errorf("the frozen block's colour is %q: the stylesheet does not reach it", got)
	}
	rita.checkAccessible()
	rita.screenshot("week")

	// Next week, and back.
	rita.do(chromedp.Click(chromedp.ID("week-next")), chromedp.WaitVisible(chromedp.ID("week-today")))
	rita.do(chromedp.Click(chromedp.ID("week-prev")), chromedp.WaitVisible(chromedp.CSS("svg.week-chart")))
	if got := eval[int](rita, `document.querySelectorAll('svg.week-chart rect.frozen').length`); got != want {
		t.Errorf("back on this week: %d frozen blocks, want %d", got, want)
	}
}

func berlin(t *testing.T) *time.Location {
	t.Helper()
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}
