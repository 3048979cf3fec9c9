package gitlabsim

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// What a developer does with merge requests through GitLab's REST API (Merge requests API,
// docs/api/merge_requests.md, checked for GitLab 17.x):
//
//   - POST /projects/:id/merge_requests with source_branch, target_branch and title (all
//     required: Grape answers 400 "<param> is missing"): 201 and the merge request, whose sha is
//     the source branch's head; a branch that does not exist is refused by the merge request's
//     validation (400); a second open merge request for the same source and target branches is
//     409 "Another open merge request already exists for this source branch: !<iid>". GitLab then
//     sends the Merge Request Hook with action "open".
//   - PUT /projects/:id/merge_requests/:merge_request_iid/merge: 200 and the merged merge request;
//     405 "Method Not Allowed" when it cannot be accepted (closed, already merged, draft); 406
//     "Branch cannot be merged" when it cannot be merged as the project's merge method asks (here
//     always fast-forward: the target branch must be an ancestor of the head); 409 "SHA does not
//     match HEAD of source branch" when the sha parameter is not the head; 401 for a user who may
//     not merge (default branch protection: Maintainers). The target branch moves to the head,
//     the Push Hook of the target branch and the Merge Request Hook with action "merge" follow.

// createMergeRequest implements POST /projects/:id/merge_requests (same-project merge requests).
func (s *Server) createMergeRequest(r *request) (int, any) {
	var missing []string
	for _, name := range []string{"source_branch", "target_branch", "title"} {
		if r.params[name] == "" {
			missing = append(missing, name+" is missing")
		}
	}
	if len(missing) > 0 {
		return http.StatusBadRequest, map[string]string{"error": strings.Join(missing, ", ")}
	}
	p := r.project
	source, target := r.params["source_branch"], r.params["target_branch"]
	var problems []string
	if _, ok := p.branches[source]; !ok {
		problems = append(problems, fmt.Sprintf("Source branch %q does not exist", source))
	}
	if _, ok := p.branches[target]; !ok {
		problems = append(problems, fmt.Sprintf("Target branch %q does not exist", target))
	}
	if source == target {
		problems = append(problems, "You can't use same project/branch for source and target")
	}
	if len(problems) > 0 {
		return http.StatusBadRequest, map[string]any{"message": problems}
	}
	for _, other := range p.mergeRequests {
		if other.State == "opened" && other.SourceBranch == source && other.TargetBranch == target {
			return http.StatusConflict, map[string]any{"message": []string{fmt.Sprintf("Another open merge request already exists for this source branch: !%d", other.IID)}}
		}
	}
	iid, err := s.addMergeRequest(p.ID, MergeRequest{
		Title: r.params["title"], SourceBranch: source, TargetBranch: target, SHA: p.branches[source], Author: *r.user,
	})
	if err != nil {
		return http.StatusInternalServerError, map[string]string{"message": err.Error()}
	}
	projectID, user := p.ID, r.user.Username
	r.later(func(ctx context.Context) {
		ds, _ := s.MergeRequestEvent(ctx, projectID, iid, "open", "", user)
		s.deliverAPIHooks(ds)
	})
	return http.StatusCreated, *p.mergeRequests[iid]
}

// mergeMergeRequest implements PUT /projects/:id/merge_requests/:iid/merge as a fast-forward
// merge.
func (s *Server) mergeMergeRequest(r *request) (int, any) {
	mr := s.mergeRequest(r)
	if mr == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	p := r.project
	if p.roles != nil && p.roles[r.user.Username] < MaintainerAccess {
		return http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"}
	}
	if mr.State != "opened" {
		return http.StatusMethodNotAllowed, map[string]string{"message": "405 Method Not Allowed"}
	}
	if sha := r.params["sha"]; sha != "" && sha != mr.SHA {
		return http.StatusConflict, map[string]string{"message": "SHA does not match HEAD of source branch: " + mr.SHA}
	}
	from, ok := p.branches[mr.TargetBranch]
	if !ok || !p.ancestors(mr.SHA)[from] {
		return http.StatusNotAcceptable, map[string]string{"message": "Branch cannot be merged"}
	}
	now := s.now().UTC()
	by := *r.user
	mr.State, mr.MergedAt, mr.MergedBy = "merged", &now, &by
	projectID, iid, branch, to, user := p.ID, mr.IID, mr.TargetBranch, mr.SHA, r.user.Username
	r.later(func(ctx context.Context) {
		if s.MoveBranch != nil {
			// The repository's push reaches the simulator as it does for `git push`.
			s.MoveBranch(ctx, projectID, branch, from, to, user)
		} else {
			// The branch and the head are the project's: Push cannot fail.
			ds, _ := s.Push(ctx, projectID, PushSpec{Branch: branch, To: to, User: user})
			s.deliverAPIHooks(ds)
		}
		ds, _ := s.MergeRequestEvent(ctx, projectID, iid, "merge", "", user)
		s.deliverAPIHooks(ds)
	})
	return http.StatusOK, *mr
}

// noteEvent delivers a Note Hook for a note that is already stored, as GitLab does for every
// note, whoever wrote it and whatever it says.
func (s *Server) noteEvent(ctx context.Context, projectID, iid int64, n *Note, action string) []Delivery {
	s.mu.Lock()
	p, mr, err := s.findMergeRequest(projectID, iid)
	if err != nil {
		s.mu.Unlock()
		return nil
	}
	payload := s.notePayload(p, mr, n, action)
	hooks := selectHooks(p.hooks, func(h Hook) bool { return h.NoteEvents })
	s.mu.Unlock()
	return s.deliver(ctx, hooks, "Note Hook", payload)
}
