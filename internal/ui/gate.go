package ui

import (
	"strings"
	"unicode"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// mayDecide says whether id may approve and reject a gate under policy, and if not, why: the
// rules of Ferry's Approval webhook, from the package it uses (eligible user or group; no
// self-approval when the policy forbids it, which blocks approving, not rejecting). The webhook
// still has the last word.
func mayDecide(policy *ferryv1.ApprovalPolicy, env string, id auth.Identity, s approval.Subject) (approve, reject bool, why string) {
	if err := approval.Eligible(policy, env, id.User, id.Groups); err != nil {
		return false, false, sentence(err.Error()) + ": the API server will refuse a decision from you"
	}
	if err := approval.SelfApproval(policy, env, id.User, s); err != nil {
		return false, true, sentence(err.Error()) + " (you may reject)"
	}
	return true, true, ""
}

// sentence capitalises a message that starts a sentence.
func sentence(s string) string {
	for i, r := range s {
		return string(unicode.ToUpper(r)) + s[i+len(string(r)):]
	}
	return s
}

// describePolicy says whom a policy admits.
func describePolicy(p *ferryv1.ApprovalPolicy) string {
	return strings.TrimSpace(approval.DescribePolicy(p))
}
