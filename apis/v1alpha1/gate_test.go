package v1alpha1

import "testing"

func TestGateApproved(t *testing.T) {
	var none *GateStatus
	if got := none.Approved(); got != 0 {
		t.Errorf("a nil gate counts %d approvals", got)
	}
	g := &GateStatus{RequiredApprovals: 2, Approvals: []ApprovalRecord{
		{User: "alice", Decision: DecisionApprove},
		{User: "carl", Decision: DecisionReject},
		{User: "rita", Decision: DecisionApprove},
	}}
	if got := g.Approved(); got != 2 {
		t.Errorf("Approved() = %d, want 2 (a rejection is not an approval)", got)
	}
}

func TestPackageDiffCounts(t *testing.T) {
	for _, tc := range []struct {
		d     PackageDiff
		want  string
		total int
	}{
		{PackageDiff{Added: 3, Removed: 1, Upgraded: 5}, "+3 −1 ↑5", 9},
		{PackageDiff{}, "+0 −0 ↑0", 0},
		{PackageDiff{Added: 1, Downgraded: 2, Changed: 4}, "+1 −0 ↑0 ↓2 ~4", 7},
	} {
		if got := tc.d.Counts(); got != tc.want {
			t.Errorf("%+v.Counts() = %q, want %q", tc.d, got, tc.want)
		}
		if got := tc.d.Total(); got != tc.total {
			t.Errorf("%+v.Total() = %d, want %d", tc.d, got, tc.total)
		}
	}
}
