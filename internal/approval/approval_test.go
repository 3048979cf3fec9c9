package approval

import (
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func TestEligible(t *testing.T) {
	policy := &ferryv1.ApprovalPolicy{Users: []string{"alice"}, Groups: []string{"release-managers"}}
	cases := []struct {
		name    string
		policy  *ferryv1.ApprovalPolicy
		user    string
		groups  []string
		wantErr string
	}{
		{name: "named user", policy: policy, user: "alice"},
		{name: "group member", policy: policy, user: "bob", groups: []string{"system:authenticated", "release-managers"}},
		{name: "neither", policy: policy, user: "eve", groups: []string{"developers", "system:authenticated"}, wantErr: `user "eve" (groups developers) is not eligible to decide for environment prod: its approval policy admits users alice and members of groups release-managers`},
		{name: "no groups", policy: &ferryv1.ApprovalPolicy{Groups: []string{"sre"}}, user: "eve", wantErr: `user "eve" (in no group) is not eligible to decide for environment prod: its approval policy admits members of groups sre`},
		{name: "no policy admits anyone", user: "eve"},
	}
	for _, tc := range cases {
		err := Eligible(tc.policy, "prod", tc.user, tc.groups)
		if (err == nil) != (tc.wantErr == "") || (err != nil && err.Error() != tc.wantErr) {
			t.Errorf("%s: Eligible = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestSelfApproval(t *testing.T) {
	s := Subject{RequestedBy: "ann", TriggerUser: "dave"}
	cases := []struct {
		name    string
		policy  *ferryv1.ApprovalPolicy
		user    string
		wantErr string
	}{
		{name: "creator", policy: &ferryv1.ApprovalPolicy{}, user: "ann", wantErr: "created this Release"},
		{name: "trigger user", policy: &ferryv1.ApprovalPolicy{}, user: "dave", wantErr: "triggered the Build"},
		{name: "someone else", policy: &ferryv1.ApprovalPolicy{}, user: "bob"},
		{name: "allowed by the policy", policy: &ferryv1.ApprovalPolicy{ForbidSelfApproval: ptr.To(false)}, user: "ann"},
	}
	for _, tc := range cases {
		err := SelfApproval(tc.policy, "prod", tc.user, s)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: SelfApproval = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestTally(t *testing.T) {
	image := "harbor.example.com/a@sha256:" + strings.Repeat("a", 64)
	t0 := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	decision := func(name, user string, groups []string, d ferryv1.Decision, at time.Duration) ferryv1.Approval {
		return ferryv1.Approval{
			ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(t0.Add(at))},
			Spec:       ferryv1.ApprovalSpec{Release: "r", Environment: "prod", Decision: d, Image: image, Approver: &ferryv1.Approver{Username: user, Groups: groups}},
		}
	}
	rm := []string{"release-managers"}
	policy := &ferryv1.ApprovalPolicy{Groups: rm, MinApprovals: 2}
	s := Subject{RequestedBy: "ann", TriggerUser: "dave"}
	otherImage := decision("other-image", "carl", rm, ferryv1.DecisionApprove, 0)
	otherImage.Spec.Image = "harbor.example.com/a@sha256:" + strings.Repeat("b", 64)
	otherEnv := decision("other-env", "carl", rm, ferryv1.DecisionApprove, 0)
	otherEnv.Spec.Environment = "staging"
	batch := decision("batch", "carl", rm, ferryv1.DecisionApprove, 0)
	batch.Spec.Batch = 2

	cases := []struct {
		name          string
		approvals     []ferryv1.Approval
		notAfter      *metav1.Time
		wantApproved  bool
		wantApprovers []string
		wantRejection string
		wantRecords   int
	}{
		{name: "none", wantApprovers: nil},
		{name: "one of two", approvals: []ferryv1.Approval{decision("a1", "bob", rm, ferryv1.DecisionApprove, 0)}, wantApprovers: []string{"bob"}, wantRecords: 1},
		{name: "two people", approvals: []ferryv1.Approval{decision("a2", "carl", rm, ferryv1.DecisionApprove, time.Second), decision("a1", "bob", rm, ferryv1.DecisionApprove, 0)}, wantApproved: true, wantApprovers: []string{"bob", "carl"}, wantRecords: 2},
		{name: "the same person twice counts once", approvals: []ferryv1.Approval{decision("a1", "bob", rm, ferryv1.DecisionApprove, 0), decision("a2", "bob", rm, ferryv1.DecisionApprove, time.Second)}, wantApprovers: []string{"bob"}, wantRecords: 1},
		{name: "ineligible, self, other image, env and batch do not count", approvals: []ferryv1.Approval{
			decision("e", "eve", []string{"developers"}, ferryv1.DecisionApprove, 0),
			decision("s1", "ann", rm, ferryv1.DecisionApprove, 0),
			decision("s2", "dave", rm, ferryv1.DecisionApprove, 0),
			otherImage, otherEnv, batch,
			decision("a1", "bob", rm, ferryv1.DecisionApprove, 0),
		}, wantApprovers: []string{"bob"}, wantRecords: 1},
		{name: "one rejection closes the gate", approvals: []ferryv1.Approval{
			decision("a1", "bob", rm, ferryv1.DecisionApprove, 0),
			decision("a2", "carl", rm, ferryv1.DecisionApprove, time.Second),
			decision("r1", "erin", rm, ferryv1.DecisionReject, 2*time.Second),
		}, wantApprovers: []string{"bob", "carl"}, wantRejection: "r1", wantRecords: 3},
		{name: "a creator may reject", approvals: []ferryv1.Approval{decision("r1", "ann", rm, ferryv1.DecisionReject, 0)}, wantRejection: "r1", wantRecords: 1},
		{name: "decisions after the expiry do not count", approvals: []ferryv1.Approval{
			decision("a1", "bob", rm, ferryv1.DecisionApprove, 0),
			decision("a2", "carl", rm, ferryv1.DecisionApprove, time.Hour),
		}, notAfter: &metav1.Time{Time: t0.Add(time.Minute)}, wantApprovers: []string{"bob"}, wantRecords: 1},
	}
	for _, tc := range cases {
		g := Tally(policy, tc.approvals, "r", "prod", 0, image, s, tc.notAfter)
		if g.Approved() != tc.wantApproved || strings.Join(g.Approvers, ",") != strings.Join(tc.wantApprovers, ",") || len(g.Records) != tc.wantRecords || g.Required != 2 {
			t.Errorf("%s: approved %v approvers %v records %d required %d", tc.name, g.Approved(), g.Approvers, len(g.Records), g.Required)
		}
		if got := ""; g.Rejection != nil {
			got = g.Rejection.Name
			if got != tc.wantRejection {
				t.Errorf("%s: rejection %s, want %s", tc.name, got, tc.wantRejection)
			}
		} else if tc.wantRejection != "" {
			t.Errorf("%s: no rejection, want %s", tc.name, tc.wantRejection)
		}
	}

	// A batch gate needs one approval.
	g := Tally(policy, []ferryv1.Approval{batch}, "r", "prod", 2, image, s, nil)
	if !g.Approved() || g.Required != 1 {
		t.Errorf("batch gate: approved %v required %d", g.Approved(), g.Required)
	}
}
