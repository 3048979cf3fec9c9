package ui

import (
	"fmt"
	"slices"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// gateSubject is whom self-approval is checked against.
type gateSubject struct {
	requestedBy, triggerUser string
}

// mayDecide says whether id may approve and reject a gate under policy, and if not, why — the
// rules Ferry's Approval webhook applies (eligible user or group; no self-approval when the policy
// forbids it, which blocks approving, not rejecting).
func mayDecide(policy *ferryv1.ApprovalPolicy, env string, id auth.Identity, s gateSubject) (approve, reject bool, why string) {
	if policy != nil && !slices.Contains(policy.Users, id.User) && !slices.ContainsFunc(id.Groups, func(g string) bool { return slices.Contains(policy.Groups, g) }) {
		return false, false, fmt.Sprintf("You are not eligible to decide for environment %s (its policy admits %s): the API server will refuse a decision from you", env, describePolicy(policy))
	}
	forbid := policy == nil || policy.ForbidSelfApproval == nil || *policy.ForbidSelfApproval
	if forbid && id.User != "" {
		switch id.User {
		case s.requestedBy:
			return false, true, fmt.Sprintf("You created this Release and environment %s forbids self-approval: you may only reject", env)
		case s.triggerUser:
			return false, true, fmt.Sprintf("You triggered the Build of this Release and environment %s forbids self-approval: you may only reject", env)
		}
	}
	return true, true, ""
}

// minApprovals is the policy's minimum (default 1).
func minApprovals(p *ferryv1.ApprovalPolicy) int32 {
	if p == nil || p.MinApprovals < 1 {
		return 1
	}
	return p.MinApprovals
}
