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
	s := Subject{RequestedBy: "ann", Triggers: []Trigger{{Build: "shop-1", Named: true, User: "dave"}, {Build: "shop-0", User: "oidc:Erin"}}}
	unknown := Subject{RequestedBy: "ann", Triggers: []Trigger{{Build: "shop-1", Named: true, Unknown: "build shop-1 was triggered by GitLab user \"dave\", whose e-mail address the event did not carry"}}}
	cases := []struct {
		name    string
		policy  *ferryv1.ApprovalPolicy
		user    string
		subject Subject
		wantErr string
	}{
		{name: "creator", policy: &ferryv1.ApprovalPolicy{}, user: "ann", subject: s, wantErr: `user "ann" created this Release`},
		{name: "trigger user", policy: &ferryv1.ApprovalPolicy{}, user: "dave", subject: s, wantErr: `user "dave" triggered the Build of this Release (shop-1)`},
		{name: "another Build of the image, names compared as GitLab does", policy: &ferryv1.ApprovalPolicy{}, user: "oidc:erin", subject: s, wantErr: `user "oidc:erin" triggered Build shop-0, which made this Release's image`},
		{name: "someone else", policy: &ferryv1.ApprovalPolicy{}, user: "bob", subject: s},
		{name: "allowed by the policy", policy: &ferryv1.ApprovalPolicy{ForbidSelfApproval: ptr.To(false)}, user: "ann", subject: s},
		{name: "a trigger that cannot be mapped refuses everyone", policy: &ferryv1.ApprovalPolicy{}, user: "bob", subject: unknown,
			wantErr: `whether user "bob" triggered the Build of this Release (shop-1) cannot be checked: build shop-1 was triggered by GitLab user "dave", whose e-mail address the event did not carry; environment prod forbids self-approval`},
		{name: "unless the policy allows self-approval", policy: &ferryv1.ApprovalPolicy{ForbidSelfApproval: ptr.To(false)}, user: "bob", subject: unknown},
	}
	for _, tc := range cases {
		err := SelfApproval(tc.policy, "prod", tc.user, tc.subject)
		if (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: SelfApproval = %v, want %q", tc.name, err, tc.wantErr)
		}
	}
}

func TestSubjectOf(t *testing.T) {
	rel := &ferryv1.Release{Spec: ferryv1.ReleaseSpec{RequestedBy: "ann", Build: "shop-1"}}
	m := IdentityMapping{Prefix: "oidc:"}
	if s := SubjectOf(rel, nil, m); len(s.Triggers) != 1 || s.Triggers[0].Unknown != "build shop-1 no longer exists" {
		t.Errorf("a named Build that is gone: %+v", s)
	}
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "shop-1"}, Spec: ferryv1.BuildSpec{Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: "dave"}}}
	if s := SubjectOf(rel, []*ferryv1.Build{b}, m); s.RequestedBy != "ann" || len(s.Triggers) != 1 || s.Triggers[0] != (Trigger{Build: "shop-1", Named: true, User: "oidc:dave"}) {
		t.Errorf("the named Build: %+v", s)
	}
	rel.Spec.Build = ""
	if s := SubjectOf(rel, []*ferryv1.Build{b}, m); s.Triggers[0].Named {
		t.Errorf("a Build found by the image is not the named one: %+v", s)
	}
}

func TestIdentityMapping(t *testing.T) {
	build := func(kind ferryv1.TriggerKind, user string, id int64, email string) *ferryv1.Build {
		return &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "b"}, Spec: ferryv1.BuildSpec{Trigger: ferryv1.BuildTrigger{Kind: kind, User: user, UserID: id, UserEmail: email}}}
	}
	push := build(ferryv1.TriggerPush, "alice", 42, "alice@example.com")
	cases := []struct {
		name, claim, prefix string
		build               *ferryv1.Build
		want, wantErr       string
	}{
		{name: "default: the username unchanged (ferry dev)", build: push, want: "alice"},
		{name: "API server's claim name", claim: "preferred_username", prefix: "oidc:", build: push, want: "oidc:alice"},
		{name: "nickname", claim: "nickname", prefix: "https://gitlab.example.com#", build: push, want: "https://gitlab.example.com#alice"},
		{name: "e-mail", claim: "email", build: push, want: "alice@example.com"},
		{name: "user ID", claim: "sub", prefix: "gitlab:", build: build(ferryv1.TriggerMergeRequest, "alice", 42, ""), want: "gitlab:42"},
		{name: "a prefix of - is none", claim: "sub", prefix: "-", build: push, want: "42"},
		{name: "no e-mail address", claim: "email", build: build(ferryv1.TriggerTag, "alice", 42, ""), wantErr: `build b was triggered by GitLab user "alice", ID 42, whose e-mail address the event did not carry (GitLab sends only a public address), so it cannot be mapped under --gitlab-identity-claim=email: map GitLab users by their ID (--gitlab-identity-claim=sub`},
		{name: "no user ID", claim: "sub", build: build(ferryv1.TriggerPush, "alice", 0, ""), wantErr: "whose user ID it does not record"},
		{name: "no username", build: build(ferryv1.TriggerPush, "", 42, ""), wantErr: "records no GitLab username"},
		{name: "Manual: the Kubernetes user, never mapped", claim: "email", prefix: "oidc:", build: build(ferryv1.TriggerManual, "oidc:bob", 0, ""), want: "oidc:bob"},
		{name: "Manual without a user", build: build(ferryv1.TriggerManual, "", 0, ""), wantErr: "is Manual and records no user"},
		{name: "no kind", build: build("", "alice", 42, ""), wantErr: "records no trigger kind"},
	}
	for _, tc := range cases {
		m, err := NewIdentityMapping(tc.claim, tc.prefix)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		got, err := m.TriggerUser(tc.build)
		if got != tc.want || (err == nil) != (tc.wantErr == "") || (err != nil && !strings.Contains(err.Error(), tc.wantErr)) {
			t.Errorf("%s: TriggerUser = %q, %v; want %q, %q", tc.name, got, err, tc.want, tc.wantErr)
		}
	}
	for _, bad := range [][2]string{{"groups", ""}, {"username", "system:"}} {
		if _, err := NewIdentityMapping(bad[0], bad[1]); err == nil {
			t.Errorf("NewIdentityMapping(%q, %q) accepted", bad[0], bad[1])
		}
	}
}

func TestUsableEmail(t *testing.T) {
	for s, want := range map[string]bool{
		"alice@example.com": true, "a.b+c@corp.example": true,
		"": false, "[REDACTED]": false, "noreply@gitlab.com": false, "No-Reply@example.com": false,
		"123-alice@users.noreply.gitlab.com": false, "Alice <alice@example.com>": false, "alice": false,
	} {
		if got := UsableEmail(s); got != want {
			t.Errorf("UsableEmail(%q) = %v, want %v", s, got, want)
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
	s := Subject{RequestedBy: "ann", Triggers: []Trigger{{Build: "b", Named: true, User: "dave"}}}
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

	// When who triggered the Build cannot be known, no approval counts; a rejection still does.
	unknown := Subject{RequestedBy: "ann", Triggers: []Trigger{{Build: "b", Named: true, Unknown: "build b no longer exists"}}}
	g := Tally(policy, []ferryv1.Approval{decision("a1", "bob", rm, ferryv1.DecisionApprove, 0), decision("a2", "carl", rm, ferryv1.DecisionApprove, 0), decision("r1", "erin", rm, ferryv1.DecisionReject, time.Second)}, "r", "prod", 0, image, unknown, nil)
	if len(g.Approvers) != 0 || g.Rejection == nil || g.Rejection.Name != "r1" {
		t.Errorf("unknown trigger: approvers %v, rejection %v", g.Approvers, g.Rejection)
	}

	// A batch gate needs one approval.
	g = Tally(policy, []ferryv1.Approval{batch}, "r", "prod", 2, image, s, nil)
	if !g.Approved() || g.Required != 1 {
		t.Errorf("batch gate: approved %v required %d", g.Approved(), g.Required)
	}
}
