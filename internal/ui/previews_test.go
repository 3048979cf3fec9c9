package ui_test

import (
	"context"
	"fmt"
	"html"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestPreviewsPage: the UI lists the live previews a person may see, with a namespace that failed
// to delete shown as such; a stranger sees none.
func TestPreviewsPage(t *testing.T) {
	w := newWorld(t, worldOptions{people: []person{{name: "rita", groups: []string{"release-managers"}}, {name: "stranger"}}})
	w.bind(nil, "release-managers")
	ctx := context.Background()
	for i, failing := range []bool{false, true} {
		pv := &ferryv1.Preview{
			ObjectMeta: metav1.ObjectMeta{Namespace: w.ns, Name: fmt.Sprintf("shop-mr-%d", i+1)},
			Spec:       ferryv1.PreviewSpec{Project: "shop", MergeRequestIID: int64(i + 1), Build: fmt.Sprintf("shop-b%d", i+1)},
		}
		if err := w.c.Create(ctx, pv); err != nil {
			t.Fatal(err)
		}
		now := metav1.Now()
		pv.Status = ferryv1.PreviewStatus{Namespace: pv.Name, Cluster: "previews", URL: "http://shop." + pv.Name + ".svc.cluster.local:8080", LastActivity: &now}
		meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.HealthyReason, Message: "1 of 1 replicas"})
		if failing {
			meta.SetStatusCondition(&pv.Status.Conditions, metav1.Condition{Type: ferryv1.PreviewDeletedCondition, Status: metav1.ConditionFalse, Reason: ferryv1.NamespaceDeleteFailedReason, Message: "namespace shop-mr-2 on cluster previews could not be deleted, retrying: forbidden"})
		}
		if err := w.c.Status().Update(ctx, pv); err != nil {
			t.Fatal(err)
		}
	}
	rita := newClient(t, w.URL)
	rita.signIn(w.tokens["rita"])
	var page string
	testutil.Eventually(t, "both previews on rita's page", func() (bool, error) {
		_, page = rita.get("/previews")
		page = html.UnescapeString(page)
		return strings.Contains(page, w.ns+"/shop-mr-1") && strings.Contains(page, w.ns+"/shop-mr-2"), fmt.Errorf("page:\n%s", page)
	})
	for _, want := range []string{"!1", "http://shop.shop-mr-1.svc.cluster.local:8080", "<code>shop-mr-1</code> on previews", "Namespace not deleted yet (retrying):", "could not be deleted, retrying: forbidden"} {
		if !strings.Contains(page, want) {
			t.Errorf("the previews page lacks %q:\n%s", want, page)
		}
	}
	stranger := newClient(t, w.URL)
	stranger.signIn(w.tokens["stranger"])
	if _, page := stranger.get("/previews"); strings.Contains(page, w.ns) || !strings.Contains(page, "No previews you may see") {
		t.Errorf("the stranger's previews page:\n%s", page)
	}
}
