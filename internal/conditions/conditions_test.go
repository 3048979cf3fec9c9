package conditions

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/text"
)

func TestSet(t *testing.T) {
	t0 := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	t1 := metav1.NewTime(t0.Add(time.Minute))
	var conds []metav1.Condition
	Set(&conds, ferryv1.ReadyCondition, metav1.ConditionUnknown, "Waiting", "waiting", 1, t0)
	Set(&conds, ferryv1.ReadyCondition, metav1.ConditionUnknown, "StillWaiting", strings.Repeat("é", text.MaxMessage+10), 2, t1)
	c := conds[0]
	if len(conds) != 1 || c.Reason != "StillWaiting" || c.ObservedGeneration != 2 || !c.LastTransitionTime.Equal(&t0) {
		t.Errorf("same status: %+v; want the reason and generation updated, the transition time kept", c)
	}
	if got := len([]rune(c.Message)); got != text.MaxMessage || !strings.HasSuffix(c.Message, "…") {
		t.Errorf("message of %d characters, want %d ending with an ellipsis", got, text.MaxMessage)
	}
	Set(&conds, ferryv1.ReadyCondition, metav1.ConditionTrue, "Done", "done", 2, t1)
	if c := conds[0]; !c.LastTransitionTime.Equal(&t1) || c.Status != metav1.ConditionTrue {
		t.Errorf("new status: %+v; want the transition time now", c)
	}
}

func TestMarkStalled(t *testing.T) {
	now := metav1.NewTime(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC))
	conds := []metav1.Condition{{Type: ferryv1.ReconcilingCondition, Status: metav1.ConditionTrue, Reason: "Progressing"}}
	MarkStalled(&conds, ferryv1.ProjectNotFoundReason, ProjectNotFound("team", "shop"), 3, now)
	want := map[string]metav1.ConditionStatus{
		ferryv1.ReadyCondition: metav1.ConditionFalse, ferryv1.ReconcilingCondition: metav1.ConditionFalse, ferryv1.StalledCondition: metav1.ConditionTrue,
	}
	if len(conds) != len(want) {
		t.Fatalf("conditions %+v", conds)
	}
	for _, c := range conds {
		if c.Status != want[c.Type] || c.Reason != ferryv1.ProjectNotFoundReason || c.Message != "project shop not found in namespace team" || c.ObservedGeneration != 3 {
			t.Errorf("%s: %+v", c.Type, c)
		}
	}
}
