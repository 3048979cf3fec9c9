package ui_test

import (
	"context"
	"fmt"
	"html"
	"net/http"
	"net/url"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestDecisionsAreMadeAsThePerson: approving from the list records an Approval by the signed-in
// person with their groups (the UI, which impersonates nobody, names them and Ferry's webhook
// believes it from the UI); a refusal by Ferry's webhook, RBAC or validation is shown as worded,
// with the comment kept; nobody sees Releases RBAC hides from them.
func TestDecisionsAreMadeAsThePerson(t *testing.T) {
	w := newWorld(t, worldOptions{people: []person{
		{name: "rita", groups: []string{"release-managers"}},
		{name: "carl", groups: []string{"release-managers"}},
		{name: "eve", groups: []string{"developers"}},
		{name: "stranger"},
	}})
	w.bind([]string{"eve"}, "release-managers")
	prod := w.environment("prod", gate(2, "release-managers"))
	w.project("shop", "https://gitlab.example.com", 0, prod)
	b := w.build("shop-b1", "shop", revision("1"), image("1"), "dave", nil)
	rel := w.release(w.c, "shop-1", "shop", b)
	w.setReleaseStatus(rel, func(st *ferryv1.ReleaseStatus) {
		st.Environments = []ferryv1.ReleaseEnvironmentStatus{waitingFor(prod, 2)}
	})
	gateID := fmt.Sprintf("gate-%s-shop-1-%s-0", w.ns, prod)

	// Rita approves from the list.
	rita := newClient(t, w.URL)
	page := rita.signIn(w.tokens["rita"])
	// The UI reads from its cache, which sees the Release's new status a moment after it is written.
	testutil.Eventually(t, "the waiting gate on rita's list", func() (bool, error) {
		if strings.Contains(page, `id="`+gateID+`"`) && strings.Contains(page, "shop</span> → <span class=\"env\">"+prod) {
			return true, nil
		}
		_, page = rita.get("/")
		return false, fmt.Errorf("the list reads:\n%s", page)
	})
	code, page := rita.post("/releases/"+w.ns+"/shop-1/decide", url.Values{
		"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}, "batch": {"0"}, "decision": {"Approve"}, "comment": {"Checked the changelog"}, "from": {"waiting"},
	})
	if code != http.StatusOK || !strings.Contains(page, "You approved "+prod+" for Release shop-1") {
		t.Fatalf("approve: %d\n%s", code, page)
	}
	list := w.approvals()
	if len(list) != 1 || list[0].Spec.Decision != ferryv1.DecisionApprove || list[0].Spec.Comment != "Checked the changelog" || list[0].Spec.Release != "shop-1" || list[0].Spec.Environment != prod {
		t.Fatalf("approvals after rita: %+v", list)
	}
	if got := list[0].Spec.Approver; got == nil || got.Username != "rita" || strings.Join(got.Groups, ",") != "release-managers,system:authenticated" {
		t.Errorf("the Approval records approver %+v, want rita in release-managers (and system:authenticated, as the API server adds it)", got)
	}
	if got := list[0].Annotations[ferryv1.AssertedIdentityAnnotation]; got != `{"username":"rita","groups":["release-managers"]}` {
		t.Errorf("annotation %s = %q, want rita as the UI named her", ferryv1.AssertedIdentityAnnotation, got)
	}
	// The flash shows once.
	if _, page := rita.get("/"); strings.Contains(page, "You approved") {
		t.Error("the flash message showed twice")
	}

	// Carl's rejection without a comment is refused by the API's validation, verbatim; his
	// words are kept.
	carl := newClient(t, w.URL)
	carl.signIn(w.tokens["carl"])
	_, page = carl.get("/releases/" + w.ns + "/shop-1")
	code, page = carl.post("/releases/"+w.ns+"/shop-1/decide", url.Values{
		"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}, "decision": {"Reject"}, "comment": {"  "}, "from": {"release"},
	})
	if code != http.StatusUnprocessableEntity || !strings.Contains(html.UnescapeString(page), "a rejection needs a comment saying why") {
		t.Errorf("rejection without a comment: %d\n%s", code, page)
	}

	// Eve may try (RBAC lets her) and the API server refuses her as herself; the page says so
	// in the API server's words and keeps her comment.
	eve := newClient(t, w.URL)
	eve.signIn(w.tokens["eve"])
	_, page = eve.get("/releases/" + w.ns + "/shop-1")
	if !strings.Contains(html.UnescapeString(page), `User "eve" (groups developers) is not eligible to decide for environment `+prod) {
		t.Errorf("eve is not told she is not eligible:\n%s", page)
	}
	code, page = eve.post("/releases/"+w.ns+"/shop-1/decide", url.Values{
		"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}, "decision": {"Approve"}, "comment": {"ship it"}, "from": {"release"},
	})
	refusal := `admission webhook "vapprovals.ferry.dev" denied the request: user "eve" (groups developers) is not eligible to decide for environment ` + prod
	if code < 400 || !strings.Contains(html.UnescapeString(page), refusal) || !strings.Contains(page, ">ship it</textarea>") {
		t.Errorf("eve's refusal: %d, want %q shown with her comment kept:\n%s", code, refusal, page)
	}
	if n := len(w.approvals()); n != 1 {
		t.Errorf("%d Approvals after eve's refused decision, want 1", n)
	}

	// A stranger sees nothing of the namespace, and RBAC refuses their decision.
	stranger := newClient(t, w.URL)
	page = stranger.signIn(w.tokens["stranger"])
	if strings.Contains(page, "shop-1") || !strings.Contains(page, "Nothing waits for your decision") {
		t.Errorf("the stranger sees the gate:\n%s", page)
	}
	if code, _ := stranger.get("/releases/" + w.ns + "/shop-1"); code != http.StatusNotFound {
		t.Errorf("the stranger's release page: %d, want 404", code)
	}
	for _, path := range []string{"/releases", "/audit", "/builds", "/environments"} {
		if _, page := stranger.get(path); strings.Contains(page, w.ns) {
			t.Errorf("the stranger sees %s in %s", w.ns, path)
		}
	}
	code, page = stranger.post("/releases/"+w.ns+"/shop-1/decide", url.Values{
		"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}, "decision": {"Approve"}, "from": {"release"},
	})
	forbidden := `approvals.ferry.dev is forbidden: User "stranger" cannot create resource "approvals" in API group "ferry.dev" in the namespace "` + w.ns + `"`
	if code != http.StatusForbidden || !strings.Contains(html.UnescapeString(page), forbidden) {
		t.Errorf("the stranger's decision: %d, want %q:\n%s", code, forbidden, page)
	}

	// An expired gate is re-requested from the release page, as rita, the way `ferry approve
	// --rerequest` does it.
	w.setReleaseStatus(rel, func(st *ferryv1.ReleaseStatus) {
		st.Environments[0].Conditions = []metav1.Condition{
			cond(ferryv1.ApprovedCondition, ferryv1.ExpiredReason, "the gate expired", metav1.ConditionFalse),
			cond(ferryv1.ReadyCondition, ferryv1.ExpiredReason, "the gate expired", metav1.ConditionFalse),
		}
	})
	testutil.Eventually(t, "the expired gate on the release page", func() (bool, error) {
		_, page = rita.get("/releases/" + w.ns + "/shop-1")
		return strings.Contains(page, "Re-request approval"), nil
	})
	if _, page := rita.get("/"); !strings.Contains(page, "The gate expired: re-request it on the Release") {
		t.Errorf("the expired gate is not listed as such:\n%s", page)
	}
	code, page = rita.post("/releases/"+w.ns+"/shop-1/rerequest", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}})
	if code != http.StatusOK || !strings.Contains(page, "You re-requested the approval gate of "+prod) {
		t.Fatalf("re-request: %d\n%s", code, page)
	}
	if err := w.c.Get(context.Background(), client.ObjectKeyFromObject(rel), rel); err != nil {
		t.Fatal(err)
	}
	if got := rel.Annotations[ferryv1.ReRequestAnnotation]; got != prod {
		t.Errorf("annotation %s = %q, want %q", ferryv1.ReRequestAnnotation, got, prod)
	}
	if got := rel.Annotations[ferryv1.AssertedIdentityAnnotation]; got != `{"username":"rita","groups":["release-managers"]}` {
		t.Errorf("annotation %s = %q, want rita, for whom the UI re-requested", ferryv1.AssertedIdentityAnnotation, got)
	}
	_, page = stranger.get("/")
	code, page = stranger.post("/releases/"+w.ns+"/shop-1/rerequest", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "environment": {prod}})
	if code != http.StatusForbidden || !strings.Contains(html.UnescapeString(page), `User "stranger" cannot patch resource "releases"`) {
		t.Errorf("the stranger's re-request: %d\n%s", code, page)
	}
}
