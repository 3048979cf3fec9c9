package admission_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/ui"
)

// uiUser is the UI's ServiceAccount as config/default installs it.
const uiUser = "system:serviceaccount:ferry-system:ferry-ui"

// asserted is the annotation that names the person the UI acts for.
func asserted(t *testing.T, username string, groups ...string) map[string]string {
	t.Helper()
	data, err := json.Marshal(ferryv1.Approver{Username: username, Groups: groups})
	if err != nil {
		t.Fatal(err)
	}
	return map[string]string{ferryv1.AssertedIdentityAnnotation: string(data)}
}

// patchAnnotations merge-patches a Release's annotations as c.
func patchAnnotations(c client.Client, ns, name string, annotations map[string]string) error {
	body, err := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	if err != nil {
		return err
	}
	rel := &ferryv1.Release{}
	rel.Namespace, rel.Name = ns, name
	return c.Patch(context.Background(), rel, client.RawPatch(types.MergePatchType, body))
}

// TestAssertedIdentityOnlyFromTheUI: the UI impersonates nobody; it names the person it acts for
// on what it writes. Anyone else who names a person, on an Approval, a Release or a re-request, is
// refused; the UI itself is believed only for people whom RBAC lets do what it does for them,
// never for a Kubernetes (system:) group, never as itself, and on a Release only to re-request a
// gate.
func TestAssertedIdentityOnlyFromTheUI(t *testing.T) {
	hub := testutil.CurrentHub(t)
	testutil.StartManager(t, manager.Options{Controllers: []string{"-*"}, UIIdentity: uiUser})
	f := setupApprovalFixture(t)
	ctx := context.Background()
	c := hub.Client
	// The UI's role, and the same rights for mallory, who is no release manager.
	rules := []rbacv1.PolicyRule{ferryRule([]string{"approvals"}, "create"), ferryRule([]string{"releases"}, "create", "get", "patch")}
	grant(t, c, f.ns, "ui-like", rules, uiUser, "mallory")
	uiClient := hub.UserClient(t, uiUser, "system:serviceaccounts", "system:serviceaccounts:ferry-system")
	mallory := hub.UserClient(t, "mallory", "developers")

	approvalFor := func(annotations map[string]string) *ferryv1.Approval {
		a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
		a.Annotations = annotations
		return a
	}
	t.Run("anyone but the UI naming a person", func(t *testing.T) {
		wantRefused(t, createApproval(t, mallory, approvalFor(asserted(t, "alice"))),
			"annotation "+ferryv1.AssertedIdentityAnnotation, `only the UI (`+uiUser+`) may set it: user "mallory" may not act for another person`)
		wantRefused(t, patchAnnotations(mallory, f.ns, f.release, mergeMaps(asserted(t, "alice"), map[string]string{ferryv1.ReRequestAnnotation: f.prod})),
			`user "mallory" may not act for another person`)
		rel := &ferryv1.Release{}
		if err := c.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
			t.Fatal(err)
		}
		forged := &ferryv1.Release{Spec: rel.Spec}
		forged.Namespace, forged.Name, forged.Annotations = f.ns, "forged", asserted(t, "alice")
		forged.Spec.RequestedBy = ""
		wantRefused(t, mallory.Create(ctx, forged), "the UI never creates Releases")
		if n := len(approvalsOf(t, f.ns)); n != 0 {
			t.Errorf("%d Approvals recorded", n)
		}
	})
	t.Run("the UI for someone RBAC does not let decide", func(t *testing.T) {
		wantRefused(t, createApproval(t, uiClient, approvalFor(asserted(t, "stranger"))),
			`user "stranger" cannot create resource "approvals" in API group "ferry.dev" in the namespace "`+f.ns+`"`)
		wantRefused(t, patchAnnotations(uiClient, f.ns, f.release, mergeMaps(asserted(t, "stranger"), map[string]string{ferryv1.ReRequestAnnotation: f.prod})),
			`user "stranger" cannot patch resource "releases" named "`+f.release+`"`)
	})
	t.Run("the UI asserting a Kubernetes group or user", func(t *testing.T) {
		wantRefused(t, createApproval(t, uiClient, approvalFor(asserted(t, "bob", "system:masters"))), `names group "system:masters"`)
		wantRefused(t, createApproval(t, uiClient, approvalFor(asserted(t, "system:admin"))), `names user "system:admin"`)
		wantRefused(t, createApproval(t, uiClient, approvalFor(map[string]string{ferryv1.AssertedIdentityAnnotation: `{"username":"bob","uid":"0"}`})), "is not a JSON")
	})
	t.Run("the UI as itself", func(t *testing.T) {
		wantRefused(t, createApproval(t, uiClient, approvalFor(nil)), "acts only for the person it names", "decides nothing as itself")
	})
	t.Run("the UI changing more of a Release than a re-request", func(t *testing.T) {
		wantRefused(t, patchAnnotations(uiClient, f.ns, f.release, mergeMaps(asserted(t, "alice"), map[string]string{"example.com/other": "x", ferryv1.ReRequestAnnotation: f.prod})),
			"may only re-request a gate", "not change its other annotations")
		wantRefused(t, patchAnnotations(uiClient, f.ns, f.release, asserted(t, "alice")), "may only re-request a gate")
	})
	t.Run("the UI for a person RBAC lets decide", func(t *testing.T) {
		a := approvalFor(asserted(t, "alice"))
		if err := createApproval(t, uiClient, a); err != nil {
			t.Fatal(err)
		}
		if a.Spec.Approver == nil || a.Spec.Approver.Username != "alice" {
			t.Errorf("approver %+v, want alice, for whom the UI acted", a.Spec.Approver)
		}
		if err := patchAnnotations(uiClient, f.ns, f.release, mergeMaps(asserted(t, "alice"), map[string]string{ferryv1.ReRequestAnnotation: f.prod})); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("anyone may remove the name", func(t *testing.T) {
		// A JSON merge patch removes a key with null.
		body := []byte(`{"metadata":{"annotations":{"` + ferryv1.AssertedIdentityAnnotation + `":null}}}`)
		rel := &ferryv1.Release{}
		rel.Namespace, rel.Name = f.ns, f.release
		if err := mallory.Patch(ctx, rel, client.RawPatch(types.MergePatchType, body)); err != nil {
			t.Fatal(err)
		}
	})
}

// TestUIInTheManagersProcess: a manager that serves the UI itself (ferry dev, one machine) trusts
// its own identity as the UI's, and its controllers still write with it: the Release controller's
// finalizer passes the Release webhook. A decision made in that UI is the signed-in person's.
// Someone else naming a person is still refused.
func TestUIInTheManagersProcess(t *testing.T) {
	hub := testutil.CurrentHub(t)
	tokens := filepath.Join(t.TempDir(), "tokens.yaml")
	if err := os.WriteFile(tokens, []byte("- {token: tok-alice-0123456789, user: alice}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	m := testutil.StartManager(t, manager.Options{Controllers: []string{"release"}, UIAddr: "127.0.0.1:0", UI: ui.Config{TokenFile: tokens}})
	f := setupApprovalFixture(t)
	ctx := context.Background()
	testutil.Eventually(t, "the Release controller's finalizer on Release "+f.release, func() (bool, error) {
		rel := &ferryv1.Release{}
		if err := hub.Client.Get(ctx, client.ObjectKey{Namespace: f.ns, Name: f.release}, rel); err != nil {
			return false, err
		}
		return controllerutil.ContainsFinalizer(rel, ferryv1.ReleaseFinalizer), nil
	})

	// alice approves in the UI of the manager's process.
	testutil.Eventually(t, "the UI to listen", func() (bool, error) { return m.UI.Addr() != "", nil })
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	browser := &http.Client{Jar: jar, Timeout: 30 * time.Second}
	base := "http://" + m.UI.Addr()
	page := testutil.GetOK(t, browser, base+"/signin")
	if resp, err := browser.PostForm(base+"/signin/token", url.Values{"csrf": {testutil.CSRFToken(t, page)}, "token": {"tok-alice-0123456789"}}); err != nil {
		t.Fatal(err)
	} else {
		_ = resp.Body.Close()
	}
	page = testutil.GetOK(t, browser, base+"/releases/"+f.ns+"/"+f.release)
	resp, err := browser.PostForm(base+"/releases/"+f.ns+"/"+f.release+"/decide", url.Values{
		"csrf": {testutil.CSRFToken(t, page)}, "environment": {f.prod}, "decision": {"Approve"}, "from": {"release"},
	})
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	list := approvalsOf(t, f.ns)
	if len(list) != 1 || list[0].Spec.Approver == nil || list[0].Spec.Approver.Username != "alice" {
		t.Fatalf("after alice approved in the UI (%d): %+v", resp.StatusCode, list)
	}

	grant(t, hub.Client, f.ns, "approver", []rbacv1.PolicyRule{ferryRule([]string{"approvals"}, "create")}, "mallory")
	mallory := hub.UserClient(t, "mallory", "developers")
	a := releasetest.Approval(f.ns, f.release, f.prod, ferryv1.DecisionApprove, "")
	a.Annotations = asserted(t, "alice")
	wantRefused(t, createApproval(t, mallory, a), `user "mallory" may not act for another person`)
}

func mergeMaps(ms ...map[string]string) map[string]string {
	out := map[string]string{}
	for _, m := range ms {
		for k, v := range m {
			out[k] = v
		}
	}
	return out
}

func approvalsOf(t *testing.T, ns string) []ferryv1.Approval {
	t.Helper()
	var list ferryv1.ApprovalList
	if err := testutil.CurrentHub(t).Client.List(context.Background(), &list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	return list.Items
}
