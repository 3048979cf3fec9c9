package main

import (
	"bytes"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestPreviewTable: a live preview shows where it runs; one whose namespace failed to delete shows
// NamespaceDeleteFailed whatever its Ready condition said.
func TestPreviewTable(t *testing.T) {
	live := ferryv1.Preview{
		ObjectMeta: metav1.ObjectMeta{Name: "shop-mr-3"},
		Spec:       ferryv1.PreviewSpec{Project: "shop", MergeRequestIID: 3, Build: "shop-abc"},
		Status: ferryv1.PreviewStatus{Cluster: "previews", Namespace: "shop-mr-3", URL: "http://shop.shop-mr-3.svc.cluster.local:8080",
			Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.HealthyReason}}},
	}
	stuck := *live.DeepCopy()
	stuck.Name = "shop-mr-4"
	stuck.Status.Conditions = append(stuck.Status.Conditions, metav1.Condition{Type: ferryv1.PreviewDeletedCondition, Status: metav1.ConditionFalse, Reason: ferryv1.NamespaceDeleteFailedReason})
	var out bytes.Buffer
	rows := previewTable([]ferryv1.Preview{live, stuck})
	if err := printList(&out, "", "", &ferryv1.PreviewList{}, 2, nil, false, rows); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("table:\n%s", out.String())
	}
	for _, want := range []string{"shop-mr-3", "!3", "previews", "True", "Healthy", "http://shop.shop-mr-3.svc.cluster.local:8080"} {
		if !strings.Contains(lines[1], want) {
			t.Errorf("row %q lacks %q", lines[1], want)
		}
	}
	if !strings.Contains(lines[2], "NamespaceDeleteFailed") || !strings.Contains(lines[2], "False") {
		t.Errorf("stuck row %q", lines[2])
	}
}
