package gitlabsim

import (
	"context"
	"net/http"
	"strconv"
	"strings"
)

// putNote implements PUT /projects/:id/merge_requests/:iid/notes/:note_id as GitLab documents it
// (Notes API, "Modify existing merge request note"): body is required, only the note's author may
// edit it (403 otherwise), and a note of another merge request is not found.
func (s *Server) putNote(r *request) (int, any) {
	mr := s.mergeRequest(r)
	if mr == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	id, err := strconv.ParseInt(r.PathValue("note_id"), 10, 64)
	if err != nil {
		return http.StatusNotFound, map[string]string{"message": "404 Note Not Found"}
	}
	body, ok := r.params["body"]
	if !ok || strings.TrimSpace(body) == "" {
		return http.StatusBadRequest, map[string]string{"error": "body is missing"}
	}
	if len([]rune(body)) > 1_000_000 {
		return http.StatusBadRequest, map[string]any{"message": map[string][]string{"note": {"is too long (maximum is 1000000 characters)"}}}
	}
	for _, n := range r.project.notes[mr.IID] {
		if n.ID != id {
			continue
		}
		if n.Author.ID != r.user.ID {
			return http.StatusForbidden, map[string]string{"message": "403 Forbidden"}
		}
		n.Body = body
		n.UpdatedAt = s.now().UTC()
		// An edit is delivered too, with action "update" (GitLab ≥ 16.11).
		projectID, iid := r.project.ID, mr.IID
		r.later(func(ctx context.Context) { s.deliverAPIHooks(s.noteEvent(ctx, projectID, iid, n, "update")) })
		return http.StatusOK, n
	}
	return http.StatusNotFound, map[string]string{"message": "404 Note Not Found"}
}
