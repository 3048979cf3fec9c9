package gitlab

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// AccessLevel is a GitLab role as the members API reports it (access_level, Gitlab::Access).
type AccessLevel int

// GitLab's roles.
const (
	NoAccess   AccessLevel = 0
	Guest      AccessLevel = 10
	Planner    AccessLevel = 15
	Reporter   AccessLevel = 20
	Developer  AccessLevel = 30
	Maintainer AccessLevel = 40
	Owner      AccessLevel = 50
)

// String is the role's name as GitLab's UI shows it.
func (a AccessLevel) String() string {
	switch {
	case a >= Owner:
		return "Owner"
	case a >= Maintainer:
		return "Maintainer"
	case a >= Developer:
		return "Developer"
	case a >= Reporter:
		return "Reporter"
	case a >= Planner:
		return "Planner"
	case a >= Guest:
		return "Guest"
	}
	return "no role"
}

// MemberAccess returns the role of the user with numeric ID userID in project, inherited (from
// ancestor groups) and invited memberships included: GET /projects/:id/members/all/:user_id.
// A user who is not a member (GitLab answers 404) or whose membership is not active has NoAccess.
func (c *Client) MemberAccess(ctx context.Context, project ProjectRef, userID int64) (AccessLevel, error) {
	if userID <= 0 {
		return NoAccess, nil
	}
	m, _, err := c.api.ProjectMembers.GetInheritedProjectMember(project.pid(), userID, gl.WithContext(ctx))
	if err != nil {
		err = convert(err)
		var apiErr *APIError
		if errors.As(err, &apiErr) && apiErr.StatusCode == http.StatusNotFound {
			return NoAccess, nil
		}
		return NoAccess, fmt.Errorf("failed to read the role of user %d in %s: %w", userID, project, err)
	}
	if m == nil || (m.State != "" && m.State != "active") {
		return NoAccess, nil
	}
	return AccessLevel(m.AccessLevel), nil
}
