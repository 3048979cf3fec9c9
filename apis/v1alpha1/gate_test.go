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
