package approval

import (
	"fmt"
	"net/mail"
	"strconv"
	"strings"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// IdentityClaim names what of a GitLab user becomes their Kubernetes username: the claim of
// GitLab's OpenID Connect ID token that the API server's --oidc-username-claim names.
type IdentityClaim string

const (
	// ClaimUsername is the GitLab username (the ID token's preferred_username or nickname; the
	// event's user_username). The default: `ferry dev` and static token files name people so.
	ClaimUsername IdentityClaim = "username"
	// ClaimEmail is the e-mail address (the ID token's email; the event's user_email, which GitLab
	// sends only for a user with a public address).
	ClaimEmail IdentityClaim = "email"
	// ClaimSub is the GitLab user's numeric ID (the ID token's sub; the event's user_id).
	ClaimSub IdentityClaim = "sub"
)

// IdentityMapping says which Kubernetes user a GitLab user is, the way the API server's OpenID
// Connect authenticator names a person who signs in with GitLab: the value of one claim
// (--oidc-username-claim) after a prefix (--oidc-username-prefix). Self-approval compares the
// person who triggered a Build in GitLab with the Kubernetes user who approves, so the mapping
// must be the API server's; the UI's --ui-oidc-username-claim and --ui-oidc-username-prefix
// describe the same mapping when the UI signs people in with GitLab.
type IdentityMapping struct {
	// Claim is ClaimUsername (when empty), ClaimEmail or ClaimSub.
	Claim IdentityClaim
	// Prefix is put before the claim's value.
	Prefix string
}

// NewIdentityMapping checks a claim and prefix as the manager's flags give them. The claim may
// be named as the API server's flag names it (preferred_username, nickname, email, sub) or as
// username; a prefix of "-" means none, as for the API server.
func NewIdentityMapping(claim, prefix string) (IdentityMapping, error) {
	m := IdentityMapping{Prefix: prefix}
	switch strings.TrimSpace(claim) {
	case "", "username", "preferred_username", "nickname":
		m.Claim = ClaimUsername
	case "email":
		m.Claim = ClaimEmail
	case "sub":
		m.Claim = ClaimSub
	default:
		return m, fmt.Errorf("--gitlab-identity-claim %q is not one of username (preferred_username, nickname), email or sub", claim)
	}
	if m.Prefix == "-" {
		m.Prefix = ""
	}
	if strings.HasPrefix(m.Prefix, "system:") {
		return m, fmt.Errorf("--gitlab-identity-username-prefix %q is reserved by Kubernetes", prefix)
	}
	return m, nil
}

func (m IdentityMapping) claim() IdentityClaim {
	if m.Claim == "" {
		return ClaimUsername
	}
	return m.Claim
}

// String describes the mapping as the manager's flags set it, for messages.
func (m IdentityMapping) String() string {
	s := "--gitlab-identity-claim=" + string(m.claim())
	if m.Prefix != "" {
		s += " --gitlab-identity-username-prefix=" + m.Prefix
	}
	return s
}

// TriggerUser is the Kubernetes user who triggered Build b: for a GitLab event, the GitLab user
// under the mapping; for a Manual Build, its creator as the API server authenticated them. The
// error says why it cannot be known and how to configure the mapping.
func (m IdentityMapping) TriggerUser(b *ferryv1.Build) (string, error) {
	t := b.Spec.Trigger
	switch t.Kind {
	case ferryv1.TriggerManual:
		if t.User == "" {
			return "", fmt.Errorf("build %s is Manual and records no user", b.Name)
		}
		return t.User, nil
	case ferryv1.TriggerPush, ferryv1.TriggerTag, ferryv1.TriggerMergeRequest:
	default:
		return "", fmt.Errorf("build %s records no trigger kind, so who triggered it is unknown", b.Name)
	}
	who := describeGitLabUser(t)
	switch m.claim() {
	case ClaimEmail:
		if !UsableEmail(t.UserEmail) {
			return "", fmt.Errorf("build %s was triggered by GitLab user %s, whose e-mail address the event did not carry (GitLab sends only a public address), so it cannot be mapped under %s: "+
				"map GitLab users by their ID (--gitlab-identity-claim=sub with the API server's --oidc-username-claim=sub) or username instead, or have the user set a public e-mail address", b.Name, who, m)
		}
		return m.Prefix + t.UserEmail, nil
	case ClaimSub:
		if t.UserID <= 0 {
			return "", fmt.Errorf("build %s was triggered by GitLab user %s, whose user ID it does not record, so it cannot be mapped under %s", b.Name, who, m)
		}
		return m.Prefix + strconv.FormatInt(t.UserID, 10), nil
	default:
		if t.User == "" {
			return "", fmt.Errorf("build %s records no GitLab username, so it cannot be mapped under %s: map GitLab users by their ID (--gitlab-identity-claim=sub)", b.Name, m)
		}
		return m.Prefix + t.User, nil
	}
}

func describeGitLabUser(t ferryv1.BuildTrigger) string {
	var parts []string
	if t.User != "" {
		parts = append(parts, strconv.Quote(t.User))
	}
	if t.UserID > 0 {
		parts = append(parts, "ID "+strconv.FormatInt(t.UserID, 10))
	}
	if len(parts) == 0 {
		return "(unnamed)"
	}
	return strings.Join(parts, ", ")
}

// UsableEmail reports whether an event's user_email names a person: a plain address, not ""
// or "[REDACTED]", and not a no-reply placeholder (noreply@gitlab.com,
// 123-alice@users.noreply.gitlab.com), which would never match the address a person signs in
// with and so would let them approve their own change.
func UsableEmail(s string) bool {
	if s == "" || len(s) > 254 {
		return false
	}
	addr, err := mail.ParseAddress(s)
	if err != nil || addr.Name != "" || addr.Address != s {
		return false
	}
	local, domain, _ := strings.Cut(strings.ToLower(s), "@")
	for _, placeholder := range []string{"noreply", "no-reply", "donotreply", "do-not-reply"} {
		if local == placeholder || strings.HasPrefix(domain, placeholder+".") || strings.Contains(domain, "."+placeholder+".") {
			return false
		}
	}
	return true
}
