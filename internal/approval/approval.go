// Package approval holds the rules of an approval gate that both the admission webhook (which
// decides whose decision may be recorded) and the Release controller (which counts the recorded
// decisions) apply: who is eligible under an Environment's policy, what counts as self-approval,
// and how decisions add up to an open, waiting, rejected or expired gate.
package approval

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// MinApprovals is the policy's minimum number of approvals (default 1).
func MinApprovals(p *ferryv1.ApprovalPolicy) int32 {
	if p == nil || p.MinApprovals < 1 {
		return 1
	}
	return p.MinApprovals
}

// ForbidsSelfApproval reports whether the policy refuses approvals from the Release's creator or
// its Build's trigger user (default true).
func ForbidsSelfApproval(p *ferryv1.ApprovalPolicy) bool {
	return p == nil || p.ForbidSelfApproval == nil || *p.ForbidSelfApproval
}

// Eligible returns nil when user (with groups) may decide under the policy, else an error saying
// why not. A nil policy (a batch gate of an environment without an approval policy) admits anyone
// whom RBAC lets create Approvals.
func Eligible(p *ferryv1.ApprovalPolicy, env, user string, groups []string) error {
	if p == nil {
		return nil
	}
	if slices.Contains(p.Users, user) {
		return nil
	}
	for _, g := range groups {
		if slices.Contains(p.Groups, g) {
			return nil
		}
	}
	return fmt.Errorf("user %q%s is not eligible to decide for environment %s: its approval policy admits %s", user, describeGroups(groups), env, DescribePolicy(p))
}

// BreakGlassPolicy is whom an Environment lets break glass: its breakGlass policy, else its approval
// policy's users and groups; nil when it names nobody (then nobody may).
func BreakGlassPolicy(env *ferryv1.Environment) *ferryv1.ApprovalPolicy {
	if bg := env.Spec.BreakGlass; bg != nil {
		return &ferryv1.ApprovalPolicy{Users: bg.Users, Groups: bg.Groups}
	}
	return env.Spec.Approval
}

// MayBreakGlass returns nil when user (with groups) may let a Release through env's freezes and
// closed windows, else an error saying why not.
func MayBreakGlass(env *ferryv1.Environment, user string, groups []string) error {
	p := BreakGlassPolicy(env)
	if p == nil {
		return fmt.Errorf("environment %s names nobody who may break glass (neither spec.breakGlass nor spec.approval)", env.Name)
	}
	if err := Eligible(p, env.Name, user, groups); err != nil {
		return fmt.Errorf("user %q%s may not break glass in environment %s: it admits %s", user, describeGroups(groups), env.Name, DescribePolicy(p))
	}
	return nil
}

// DescribePolicy says whom a policy admits, for messages.
func DescribePolicy(p *ferryv1.ApprovalPolicy) string {
	var parts []string
	if len(p.Users) > 0 {
		parts = append(parts, "users "+strings.Join(p.Users, ", "))
	}
	if len(p.Groups) > 0 {
		parts = append(parts, "members of groups "+strings.Join(p.Groups, ", "))
	}
	return strings.Join(parts, " and ")
}

func describeGroups(groups []string) string {
	var own []string
	for _, g := range groups {
		// system:authenticated is on every request; it only adds noise.
		if g != "system:authenticated" {
			own = append(own, g)
		}
	}
	if len(own) == 0 {
		return " (in no group)"
	}
	return " (groups " + strings.Join(own, ", ") + ")"
}

// Subject is what self-approval is checked against: who created the Release and who triggered
// the Builds that made its image.
type Subject struct {
	// RequestedBy is the Release's spec.requestedBy.
	RequestedBy string
	// Triggers are the Release's Build (spec.build) or, when it names none, the Builds of its
	// Project that made its image.
	Triggers []Trigger
}

// Trigger is who triggered one Build, as a Kubernetes user.
type Trigger struct {
	// Build is the Build's name.
	Build string
	// Named is true for the Build the Release names, false for a Build found by the image.
	Named bool
	// User is the Kubernetes user who triggered the Build; empty when Unknown says why it cannot
	// be known.
	User string
	// Unknown says why who triggered the Build cannot be known (a GitLab identity the mapping
	// cannot map, a Build that is gone): approvals are then refused where self-approval is.
	Unknown string
}

// SubjectOf is what self-approval of rel is checked against. builds are the Release's Build when
// it names one (nil when it is gone), else the Builds of its Project that made its image.
func SubjectOf(rel *ferryv1.Release, builds []*ferryv1.Build, m IdentityMapping) Subject {
	s := Subject{RequestedBy: rel.Spec.RequestedBy}
	if rel.Spec.Build != "" && len(builds) == 0 {
		s.Triggers = append(s.Triggers, Trigger{Build: rel.Spec.Build, Named: true, Unknown: fmt.Sprintf("build %s no longer exists", rel.Spec.Build)})
	}
	for _, b := range builds {
		t := Trigger{Build: b.Name, Named: b.Name == rel.Spec.Build}
		user, err := m.TriggerUser(b)
		if err != nil {
			t.Unknown = err.Error()
		}
		t.User = user
		s.Triggers = append(s.Triggers, t)
	}
	return s
}

// SelfApproval returns an error when user may not approve because the policy forbids approving
// one's own Release: they created it, triggered a Build that made its image, or who triggered
// one cannot be known. GitLab names users case-insensitively, so trigger users are compared so.
func SelfApproval(p *ferryv1.ApprovalPolicy, env, user string, s Subject) error {
	if !ForbidsSelfApproval(p) || user == "" {
		return nil
	}
	if user == s.RequestedBy {
		return fmt.Errorf("user %q created this Release and environment %s forbids self-approval: someone else must approve", user, env)
	}
	for _, t := range s.Triggers {
		switch {
		case t.Unknown != "":
			return fmt.Errorf("whether user %q triggered %s cannot be checked: %s; environment %s forbids self-approval, so no approval can count until it can", user, t.describe(), t.Unknown, env)
		case strings.EqualFold(user, t.User):
			return fmt.Errorf("user %q triggered %s and environment %s forbids self-approval: someone else must approve", user, t.describe(), env)
		}
	}
	return nil
}

func (t Trigger) describe() string {
	if t.Named {
		return "the Build of this Release (" + t.Build + ")"
	}
	return "Build " + t.Build + ", which made this Release's image"
}

// Gate is the tally of an approval gate.
type Gate struct {
	// Required is the number of approvals needed.
	Required int32
	// Records are the counted decisions, one per person, oldest first.
	Records []ferryv1.ApprovalRecord
	// Approvers are the people whose approvals count.
	Approvers []string
	// Rejection is the first counted rejection, if any: it closes the gate.
	Rejection *ferryv1.Approval
}

// Approved reports whether the gate is open.
func (g *Gate) Approved() bool {
	return g.Rejection == nil && len(g.Approvers) >= int(g.Required)
}

// Tally counts the decisions on one gate (release, environment, batch) under a policy: only
// decisions bound to image, from eligible people, no self-approval when the policy forbids it, one
// decision per person (the first), none made after notAfter when it is set.
func Tally(p *ferryv1.ApprovalPolicy, approvals []ferryv1.Approval, release, env string, batch int32, image string, s Subject, notAfter *metav1.Time) Gate {
	g := Gate{Required: MinApprovals(p)}
	if batch > 0 {
		g.Required = 1
	}
	sorted := slices.Clone(approvals)
	slices.SortFunc(sorted, func(a, b ferryv1.Approval) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(a.Name, b.Name)
	})
	seen := map[string]bool{}
	for i := range sorted {
		a := &sorted[i]
		// A break-glass decision lets a Release through a freeze; it is not a vote on the gate.
		if a.Spec.BreakGlass || a.Spec.Release != release || a.Spec.Environment != env || a.Spec.Batch != batch || a.Spec.Approver == nil || a.DeletionTimestamp != nil {
			continue
		}
		user := a.Spec.Approver.Username
		if seen[user] || a.Spec.Image != image {
			continue
		}
		if notAfter != nil && a.CreationTimestamp.After(notAfter.Time) {
			continue
		}
		if Eligible(p, env, user, a.Spec.Approver.Groups) != nil {
			continue
		}
		if a.Spec.Decision == ferryv1.DecisionApprove && SelfApproval(p, env, user, s) != nil {
			continue
		}
		seen[user] = true
		t := a.CreationTimestamp
		g.Records = append(g.Records, ferryv1.ApprovalRecord{Approval: a.Name, User: user, Decision: a.Spec.Decision, Time: &t})
		switch a.Spec.Decision {
		case ferryv1.DecisionApprove:
			g.Approvers = append(g.Approvers, user)
		case ferryv1.DecisionReject:
			if g.Rejection == nil {
				g.Rejection = a
			}
		}
	}
	return g
}

// Expired reports whether a gate window that started at waitingSince has passed under the
// policy's expiry at now.
func Expired(expiresAt *metav1.Time, now time.Time) bool {
	return expiresAt != nil && now.After(expiresAt.Time)
}
