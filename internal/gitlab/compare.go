package gitlab

import (
	"context"
	"fmt"
	"time"

	gl "gitlab.com/gitlab-org/api/client-go"
)

// Commit is one commit of a comparison.
type Commit struct {
	// ID is the full SHA.
	ID string
	// Title is the first line of the message.
	Title string
	// AuthorName is who wrote it.
	AuthorName string
	// AuthoredDate is when.
	AuthoredDate time.Time
	// WebURL shows the commit in GitLab.
	WebURL string
}

// Comparison is what changed between two commits.
type Comparison struct {
	// Commits are reachable from to and not from from, oldest first.
	Commits []Commit
	// WebURL shows the comparison in GitLab.
	WebURL string
	// Timeout is set when GitLab gave up computing the comparison: the list may be incomplete.
	Timeout bool
}

// Compare asks GitLab for the commits between from and to (GET
// /projects/:id/repository/compare).
func (c *Client) Compare(ctx context.Context, project ProjectRef, from, to string) (*Comparison, error) {
	cmp, _, err := c.api.Repositories.Compare(project.pid(), &gl.CompareOptions{From: &from, To: &to}, gl.WithContext(ctx))
	if err != nil {
		return nil, fmt.Errorf("failed to compare %s...%s of %s: %w", short(from), short(to), project, convert(err))
	}
	out := &Comparison{WebURL: cmp.WebURL, Timeout: cmp.CompareTimeout}
	for _, ci := range cmp.Commits {
		if ci == nil {
			continue
		}
		co := Commit{ID: ci.ID, Title: ci.Title, AuthorName: ci.AuthorName, WebURL: ci.WebURL}
		if ci.AuthoredDate != nil {
			co.AuthoredDate = *ci.AuthoredDate
		}
		out.Commits = append(out.Commits, co)
	}
	return out, nil
}
