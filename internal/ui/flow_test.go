package ui_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/testutil"
)

// shop is a project with history: what runs in staging and production, the Builds and Releases
// that put it there, GitLab commits in between and step logs.
type shop struct {
	w                   *world
	staging, production string
	gitlab              *gitlabsim.Server
	commits             []string
	b1, b2              *ferryv1.Build
	rel1, rel2          *ferryv1.Release
}

func lineage(runtime, app string) *ferryv1.ImageLineage {
	return &ferryv1.ImageLineage{
		Stack:    &ferryv1.LayerSource{Name: "debian-12", Image: "harbor.example.com/base/debian@sha256:" + strings.Repeat("5", 64), Digest: "sha256:" + strings.Repeat("5", 64)},
		Runtime:  &ferryv1.LayerSource{Name: "python-3.12", Image: "harbor.example.com/base/python@sha256:" + strings.Repeat(runtime, 64), Digest: "sha256:" + strings.Repeat(runtime, 64)},
		AppLayer: "sha256:" + strings.Repeat(app, 64),
	}
}

// newShop builds the history. Release shop-1 runs in production (approved by carl); shop-2 runs
// in staging and waits for production's gate.
func newShop(t *testing.T, w *world) *shop {
	t.Helper()
	ctx := context.Background()
	s := &shop{w: w}
	s.staging = w.environment("staging", nil)
	s.production = w.environment("production", gate(1, "release-managers"))

	s.gitlab = gitlabsim.New()
	t.Cleanup(s.gitlab.Close)
	s.gitlab.AddUser("ferry-bot", "glpat-ui-test-token")
	gid := s.gitlab.AddProject(gitlabsim.Project{PathWithNamespace: "team/shop"})
	parent := []string(nil)
	for _, msg := range []string{"Initial shop", "Add a basket", "Pay with vouchers", "Upgrade to Python 3.12.8"} {
		id, err := s.gitlab.AddCommit(gid, gitlabsim.Commit{Message: msg, ParentIDs: parent, AuthorName: "Dave Developer", AuthoredDate: time.Now().Add(-time.Duration(10-len(s.commits)) * time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		s.commits = append(s.commits, id)
		parent = []string{id}
	}
	if err := w.c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: "shop-gitlab"}, Data: map[string][]byte{"token": []byte("glpat-ui-test-token")}}); err != nil {
		t.Fatal(err)
	}
	p := w.project("shop", s.gitlab.URL, gid, s.staging, s.production)
	p.Spec.GitLab.TokenSecretRef = &ferryv1.SecretKeyReference{Name: "shop-gitlab"}
	if err := w.c.Update(ctx, p); err != nil {
		t.Fatal(err)
	}

	s.b1 = w.build("shop-b1", "shop", s.commits[1], image("shop-1"), "dave", lineage("1", "a"))
	s.b2 = w.build("shop-b2", "shop", s.commits[3], image("shop-2"), "dave", lineage("2", "b"))
	// The local executor's log, where it writes it.
	w.writeLog(s.b2, "==> clone\nFetched "+s.commits[3]+"\n==> test\ncollected 42 items\n42 passed in 3.1s\n==> assemble\npushed "+image("shop-2")+"\n")
	w.allowGitLabTokens()

	carl := testutil.CurrentHub(t).UserClient(t, "carl", "release-managers")
	s.rel1 = w.release(w.c, "shop-1", "shop", s.b1)
	w.setReleaseStatus(s.rel1, func(st *ferryv1.ReleaseStatus) {
		st.Environments = []ferryv1.ReleaseEnvironmentStatus{rolledOut(s.staging, image("shop-1"), ""), waitingFor(s.production, 1)}
	})
	a := &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, GenerateName: "shop-1-production-"},
		Spec:       ferryv1.ApprovalSpec{Release: "shop-1", Environment: s.production, Decision: ferryv1.DecisionApprove, Comment: "Vouchers checked with finance"},
	}
	if err := carl.Create(ctx, a); err != nil {
		t.Fatal(err)
	}
	w.setReleaseStatus(s.rel1, func(st *ferryv1.ReleaseStatus) {
		done := rolledOut(s.production, image("shop-1"), "")
		done.Gate = &ferryv1.GateStatus{RequiredApprovals: 1, Approvals: []ferryv1.ApprovalRecord{{Approval: a.Name, User: "carl", Decision: ferryv1.DecisionApprove, Time: &a.CreationTimestamp}}}
		st.Environments[1] = done
		now := metav1.Now()
		st.CompletionTime = &now
		st.Conditions = []metav1.Condition{cond(ferryv1.ReadyCondition, ferryv1.SucceededReason, "rolled out everywhere", metav1.ConditionTrue)}
	})

	s.rel2 = w.release(w.c, "shop-2", "shop", s.b2)
	w.setReleaseStatus(s.rel2, func(st *ferryv1.ReleaseStatus) {
		st.Environments = []ferryv1.ReleaseEnvironmentStatus{rolledOut(s.staging, image("shop-2"), image("shop-1")), waitingFor(s.production, 1)}
		st.Environments[1].PreviousImage = image("shop-1")
	})
	deployed := metav1.NewTime(time.Now().Add(-time.Hour).Truncate(time.Second))
	p.Status.Environments = []ferryv1.ProjectEnvironmentStatus{
		{Name: s.staging, Image: image("shop-2"), Revision: s.commits[3], Release: "shop-2", DeployedAt: &deployed},
		{Name: s.production, Image: image("shop-1"), Revision: s.commits[1], Release: "shop-1", DeployedAt: &deployed},
	}
	if err := w.c.Status().Update(ctx, p); err != nil {
		t.Fatal(err)
	}
	return s
}

// rolledOut is an environment status after a healthy rollout on one cluster.
func rolledOut(env, img, previous string) ferryv1.ReleaseEnvironmentStatus {
	start := metav1.NewTime(time.Now().Add(-2 * time.Hour).Truncate(time.Second))
	end := metav1.NewTime(start.Add(3 * time.Minute))
	return ferryv1.ReleaseEnvironmentStatus{
		Name: env,
		Conditions: []metav1.Condition{
			cond(ferryv1.ApprovedCondition, ferryv1.NoGateReason, "no gate", metav1.ConditionTrue),
			cond(ferryv1.RolledOutCondition, ferryv1.HealthyReason, shortImageName(img)+" is healthy on eu-west-1", metav1.ConditionTrue),
			cond(ferryv1.ReadyCondition, ferryv1.SucceededReason, shortImageName(img)+" is healthy on eu-west-1", metav1.ConditionTrue),
		},
		Clusters: []ferryv1.ClusterRolloutStatus{{
			Cluster: "eu-west-1", Namespace: "shop-" + env, Replicas: 3, UpdatedReplicas: 3, AvailableReplicas: 3,
			Conditions: []metav1.Condition{cond(ferryv1.RolledOutCondition, ferryv1.HealthyReason, "3 of 3 replicas available", metav1.ConditionTrue)},
			StartTime:  &start, CompletionTime: &end,
		}},
		PreviousImage: previous,
		StartTime:     &start, CompletionTime: &end,
	}
}

func shortImageName(img string) string {
	_, d, _ := strings.Cut(img, "@")
	return "shop@" + d[:19]
}

// TestReleaseManagerInTheBrowser drives the UI in headless Chromium with the controller's status
// writes made by the test: a release manager signs in with a ferry dev link, sees what waits for
// them and what it would change, approves, and watches the rollout without reloading; a new gate
// appears on its own; a POST without the CSRF token is refused; someone ineligible gets the API
// server's refusal; signing out ends the session.
func TestReleaseManagerInTheBrowser(t *testing.T) {
	w := newWorld(t, worldOptions{people: []person{
		{name: "rita", groups: []string{"release-managers"}},
		{name: "eve", groups: []string{"developers"}},
	}})
	w.bind([]string{"eve"}, "release-managers")
	w.allowLogs("rita")
	s := newShop(t, w)
	ctx := context.Background()
	prodGate := fmt.Sprintf("gate-%s-shop-2-%s-0", w.ns, s.production)

	rita := newTab(t, w.URL)
	rita.open("/releases")
	rita.waitText("h1", "Sign in")
	rita.screenshot("signin")
	rita.signIn(w.tokens["rita"])
	rita.waitText("#mine", "shop → "+s.production)
	rita.waitText("#"+prodGate, "dave")
	rita.checkAccessible()
	rita.screenshot("waiting")
	// The first Tab reaches the skip link.
	rita.do(chromedp.KeyEvent(kb.Tab))
	if got := eval[string](rita, `document.activeElement.className`); got != "skip" {
		t.Errorf("the first Tab focuses %q, want the skip link", got)
	}

	// What would change in production: the commits between shop-1 and shop-2 from GitLab, and a
	// new runtime and app layer on the same stack.
	rita.open("/releases/" + w.ns + "/shop-2")
	env := "#env-" + s.production
	rita.waitText(env, "Waiting for approval")
	for _, want := range []string{"Pay with vouchers", "Upgrade to Python 3.12.8", "compare in GitLab"} {
		rita.waitText(env, want)
	}
	if got := rita.text(env); strings.Contains(got, "Add a basket") {
		t.Errorf("production already runs commit 'Add a basket' but it is listed as a change:\n%s", got)
	}
	layers := rita.text(env + " table.layers")
	for _, want := range []string{"Stack\tdebian-12 sha256:555555555555\tdebian-12 sha256:555555555555\tSame", "Runtime\tpython-3.12 sha256:111111111111\tpython-3.12 sha256:222222222222\tChanged", "Application\tsha256:aaaaaaaaaaaa\tsha256:bbbbbbbbbbbb\tChanged"} {
		if !strings.Contains(layers, want) {
			t.Errorf("layers table lacks %q:\n%s", want, layers)
		}
	}
	rita.checkAccessible()
	rita.screenshot("release")

	// Approve with a comment from the release page, with the keyboard only.
	rita.do(
		chromedp.Focus(chromedp.ID("comment-"+prodGate)),
		chromedp.KeyEvent("Vouchers verified in staging"),
		chromedp.KeyEvent(kb.Tab),
	)
	if got := eval[string](rita, `document.activeElement.textContent`); !strings.HasPrefix(got, "Approve") {
		t.Fatalf("Tab from the comment went to %q, want the Approve button", got)
	}
	rita.do(chromedp.KeyEvent(kb.Enter), chromedp.WaitVisible(chromedp.ID("flash")))
	rita.waitText("#flash", "You approved "+s.production+" for Release shop-2")
	var mine *ferryv1.Approval
	for _, a := range w.approvals() {
		if a.Spec.Release == "shop-2" {
			mine = &a
		}
	}
	if mine == nil || mine.Spec.Comment != "Vouchers verified in staging" || mine.Spec.Decision != ferryv1.DecisionApprove || mine.Spec.Environment != s.production {
		t.Fatalf("rita's Approval: %+v", mine)
	}

	// The rollout, as the controller reports it, shows up without a reload.
	eval[int](rita, `window.ferryMarker = 42`)
	rita.do(chromedp.WaitReady(chromedp.CSS(`body[data-live-connected="true"]`)))
	w.setReleaseStatus(s.rel2, func(st *ferryv1.ReleaseStatus) {
		es := &st.Environments[1]
		es.Conditions = []metav1.Condition{
			cond(ferryv1.ApprovedCondition, ferryv1.ApprovedReason, "approved by rita", metav1.ConditionTrue),
			cond(ferryv1.RolledOutCondition, ferryv1.RollingOutReason, "eu-west-1: 1 of 3 updated", metav1.ConditionUnknown),
			cond(ferryv1.ReadyCondition, ferryv1.RollingOutReason, "eu-west-1: 1 of 3 updated", metav1.ConditionUnknown),
		}
		es.Gate.Approvals = []ferryv1.ApprovalRecord{{Approval: mine.Name, User: "rita", Decision: ferryv1.DecisionApprove, Time: &mine.CreationTimestamp}}
		es.Clusters = []ferryv1.ClusterRolloutStatus{{Cluster: "eu-west-1", Namespace: "shop-" + s.production, Replicas: 3, UpdatedReplicas: 1,
			Conditions: []metav1.Condition{cond(ferryv1.RolledOutCondition, ferryv1.RollingOutReason, "1 of 3 updated", metav1.ConditionUnknown)}}}
	})
	rita.waitText(env, "Rolling out")
	rita.waitText(env, "0 of 3 available, 1 updated")
	rita.screenshot("release-rolling-out")
	w.setReleaseStatus(s.rel2, func(st *ferryv1.ReleaseStatus) {
		st.Environments[1] = rolledOut(s.production, image("shop-2"), image("shop-1"))
		st.Environments[1].Gate = &ferryv1.GateStatus{RequiredApprovals: 1, Approvals: []ferryv1.ApprovalRecord{{Approval: mine.Name, User: "rita", Decision: ferryv1.DecisionApprove, Time: &mine.CreationTimestamp}}}
	})
	rita.waitText(env, "Rolled out")
	rita.waitText(env, "3 of 3 available")
	if m := eval[int](rita, `window.ferryMarker || 0`); m != 42 {
		t.Error("the page reloaded to show the rollout; it must update in place")
	}
	if got := rita.text(env + " table.decisions"); !strings.Contains(got, "rita\tApproved") || !strings.Contains(got, "Vouchers verified in staging") {
		t.Errorf("the decision is not listed with who and why:\n%s", got)
	}

	// A new gate appears on the list without a reload.
	rita.open("/")
	rita.waitText("#mine", "Nothing waits for your decision")
	eval[int](rita, `window.ferryMarker = 7`)
	rita.do(chromedp.WaitReady(chromedp.CSS(`body[data-live-connected="true"]`)))
	rel3 := w.release(w.c, "shop-3", "shop", s.b2)
	w.setReleaseStatus(rel3, func(st *ferryv1.ReleaseStatus) {
		st.Environments = []ferryv1.ReleaseEnvironmentStatus{rolledOut(s.staging, image("shop-2"), ""), waitingFor(s.production, 1)}
	})
	rita.waitText("#mine", "shop-3")
	if m := eval[int](rita, `window.ferryMarker || 0`); m != 7 {
		t.Error("the list reloaded to show the new gate; it must update in place")
	}

	// A POST without the CSRF token is refused, whatever else it carries.
	status := eval[int](rita, fmt.Sprintf(`fetch('/releases/%s/shop-3/decide', {method: 'POST', body: new URLSearchParams({environment: %q, decision: 'Approve', from: 'release'})}).then(r => r.status)`, w.ns, s.production))
	if status != http.StatusForbidden {
		t.Errorf("POST without the CSRF token: %d, want 403", status)
	}
	for _, a := range w.approvals() {
		if a.Spec.Release == "shop-3" {
			t.Errorf("an Approval was created without a CSRF token: %s", a.Name)
		}
	}

	// The other pages.
	rita.open("/environments")
	rita.waitText("#matrix", w.ns+"/shop")
	matrix := rita.text("#matrix")
	for _, want := range []string{"sha256:" + fmt.Sprintf("%x", "shop-2")[:12], "Healthy", "Waiting for approval"} {
		if !strings.Contains(matrix, want) {
			t.Errorf("environments matrix lacks %q:\n%s", want, matrix)
		}
	}
	rita.checkAccessible()
	rita.screenshot("environments")
	rita.open("/builds")
	rita.waitText("#builds", "shop-b2")
	rita.checkAccessible()
	rita.screenshot("builds")
	rita.open("/builds/" + w.ns + "/shop-b2")
	rita.do(chromedp.Click(chromedp.CSS(".step:nth-child(2) summary")))
	rita.waitText("#build-steps", "42 passed in 3.1s")
	rita.checkAccessible()
	rita.screenshot("build")
	rita.open("/audit?environment=" + s.staging)
	rita.waitText("#audit", "No decisions match the filter")
	rita.open("/audit?person=carl")
	rita.waitText("#audit", "Vouchers checked with finance")
	if got := rita.text("#audit"); strings.Contains(got, "Vouchers verified in staging") {
		t.Errorf("the audit filtered by carl shows rita's decision:\n%s", got)
	}
	rita.open("/audit")
	rita.waitText("#audit", "Vouchers verified in staging")
	rita.checkAccessible()
	rita.screenshot("audit")

	// At phone width nothing but a table's own scroll box is wider than the screen.
	rita.do(chromedp.EmulateViewport(390, 844))
	for _, path := range []string{"/", "/releases/" + w.ns + "/shop-2", "/environments", "/audit"} {
		rita.open(path)
		if wide := eval[bool](rita, `document.documentElement.scrollWidth > window.innerWidth`); wide {
			t.Errorf("%s is wider than a phone's screen", path)
		}
	}
	rita.open("/releases/" + w.ns + "/shop-2")
	rita.screenshot("phone-release")
	rita.do(chromedp.EmulateReset())

	// Eve may try; the API server refuses her, and the page shows its words.
	eve := newTab(t, w.URL)
	eve.signIn(w.tokens["eve"])
	eve.open("/releases/" + w.ns + "/shop-3")
	gate3 := fmt.Sprintf("gate-%s-shop-3-%s-0", w.ns, s.production)
	eve.do(
		chromedp.SendKeys(chromedp.ID("comment-"+gate3), "LGTM"),
		chromedp.Click(chromedp.CSS("#form-"+gate3+" button.approve")),
		chromedp.WaitVisible(chromedp.CSS(".refusal")),
	)
	eveClient := testutil.CurrentHub(t).UserClient(t, "eve", "developers")
	err := eveClient.Create(ctx, &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, GenerateName: "x-"},
		Spec:       ferryv1.ApprovalSpec{Release: "shop-3", Environment: s.production, Decision: ferryv1.DecisionApprove, Comment: "LGTM"},
	}, client.DryRunAll)
	if err == nil {
		t.Fatal("the API server let eve approve")
	}
	// Word for word, but for the generated name of the Approval that was refused.
	generated := regexp.MustCompile(`approvals.ferry.dev "[^"]+"`)
	if got, want := generated.ReplaceAllString(eve.text(".refusal"), "NAME"), generated.ReplaceAllString(err.Error(), "NAME"); got != want {
		t.Errorf("the page shows %q, the API server said %q", got, want)
	}
	if v := eval[string](eve, `document.getElementById('comment-`+gate3+`').value`); v != "LGTM" {
		t.Errorf("eve's comment was lost: %q", v)
	}
	eve.screenshot("refusal")

	// Signing out ends the session: the cookie is worthless afterwards.
	cookie := rita.cookie("ferry-session")
	if cookie == "" {
		t.Fatal("no session cookie")
	}
	if code, _ := replay(t, w.URL, "ferry-session", cookie); code != http.StatusOK {
		t.Fatalf("the live session cookie: %d", code)
	}
	rita.do(chromedp.Click(chromedp.ID("signout")))
	rita.waitText("main", "You are signed out")
	if c := rita.cookie("ferry-session"); c != "" {
		t.Error("the browser still holds the session cookie")
	}
	if code, loc := replay(t, w.URL, "ferry-session", cookie); code != http.StatusSeeOther || !strings.HasPrefix(loc, "/signin") {
		t.Errorf("replaying the signed-out cookie: %d %s, want a redirect to sign in", code, loc)
	}
}
