package gitlabsim

import (
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// GitLab's roles (access_level of the members API, Gitlab::Access).
const (
	GuestAccess      = 10
	ReporterAccess   = 20
	DeveloperAccess  = 30
	MaintainerAccess = 40
	OwnerAccess      = 50
)

// SetRole gives a user (registered with AddUser) a role in a project, as a direct or inherited
// membership would; accessLevel 0 removes it.
func (s *Server) SetRole(projectID int64, username string, accessLevel int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	if p == nil {
		return fmt.Errorf("no project %d", projectID)
	}
	if p.roles == nil {
		p.roles = map[string]int{}
	}
	if accessLevel == 0 {
		delete(p.roles, username)
		return nil
	}
	p.roles[username] = accessLevel
	return nil
}

func (s *Server) userByID(id int64) *User {
	for _, u := range s.users {
		if u.ID == id {
			return u
		}
	}
	return nil
}

// getMemberAll implements GET /projects/:id/members/all/:user_id ("Get a member of a group or
// project, including inherited and invited members"): the member with its access_level, or 404
// "404 Not found" for a user who has no role in the project.
func (s *Server) getMemberAll(r *request) (int, any) {
	id, err := strconv.ParseInt(r.PathValue("user_id"), 10, 64)
	if err != nil {
		return http.StatusBadRequest, map[string]string{"error": "user_id is invalid"}
	}
	u := s.userByID(id)
	if u == nil || r.project.roles[u.Username] == 0 {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	return http.StatusOK, map[string]any{
		"id":               u.ID,
		"username":         u.Username,
		"name":             u.Name,
		"state":            u.State,
		"avatar_url":       nil,
		"web_url":          u.WebURL,
		"access_level":     r.project.roles[u.Username],
		"created_at":       "2024-01-01T00:00:00.000Z",
		"expires_at":       nil,
		"membership_state": "active",
	}
}

// NoteSpec is a comment a user writes on a merge request.
type NoteSpec struct {
	// User is the author's username (register it with AddUser so that it has an ID of its own).
	User string
	Body string
	// Action is the note's object_attributes.action: "create" (default) or "update" for an edit.
	Action string
}

// Comment adds a note to a merge request, as a user, and delivers a Note Hook to every hook of
// the project with note events ticked ("Comments" in GitLab's webhook settings).
func (s *Server) Comment(ctx context.Context, projectID, iid int64, spec NoteSpec) (Note, []Delivery, error) {
	s.mu.Lock()
	p, mr, err := s.findMergeRequest(projectID, iid)
	if err != nil {
		s.mu.Unlock()
		return Note{}, nil, err
	}
	u := s.hookUser(spec.User)
	now := s.now().UTC()
	n := &Note{
		ID: s.id(), Body: spec.Body, Author: u, CreatedAt: now, UpdatedAt: now,
		NoteableID: mr.ID, NoteableType: "MergeRequest", NoteableIID: mr.IID,
	}
	p.notes[iid] = append(p.notes[iid], n)
	note := *n
	s.mu.Unlock()
	action := spec.Action
	if action == "" {
		action = "create"
	}
	return note, s.noteEvent(ctx, projectID, iid, n, action), nil
}

// notePayload follows lib/gitlab/data_builder/note.rb for a note on a merge request: the note in
// object_attributes (with action, GitLab ≥ 16.11), the merge request's hook attributes in
// merge_request.
func (s *Server) notePayload(p *project, mr *MergeRequest, n *Note, action string) map[string]any {
	source := p
	if sp := s.projects[mr.SourceProjectID]; sp != nil {
		source = sp
	}
	stamp := func(t time.Time) string { return t.Format("2006-01-02 15:04:05 MST") }
	web := s.URL + "/" + p.PathWithNamespace
	mrAttrs := map[string]any{
		"id":                    mr.ID,
		"iid":                   mr.IID,
		"title":                 mr.Title,
		"state":                 mr.State,
		"source_branch":         mr.SourceBranch,
		"target_branch":         mr.TargetBranch,
		"source_project_id":     mr.SourceProjectID,
		"target_project_id":     mr.TargetProjectID,
		"author_id":             mr.Author.ID,
		"merge_status":          "can_be_merged",
		"detailed_merge_status": "mergeable",
		"draft":                 false,
		"work_in_progress":      false,
		"url":                   mr.WebURL,
		"source":                s.hookProject(source),
		"target":                s.hookProject(p),
		"labels":                []any{},
	}
	if c := source.commits[mr.SHA]; c != nil {
		mrAttrs["last_commit"] = hookCommit(c)
	} else {
		mrAttrs["last_commit"] = map[string]any{"id": mr.SHA}
	}
	return map[string]any{
		"object_kind": "note",
		"event_type":  "note",
		"user": map[string]any{
			"id": n.Author.ID, "name": n.Author.Name, "username": n.Author.Username, "avatar_url": nil, "email": "[REDACTED]",
		},
		"project_id": p.ID,
		"project":    s.hookProject(p),
		"repository": map[string]any{
			"name": strings.TrimSuffix(p.PathWithNamespace[strings.LastIndex(p.PathWithNamespace, "/")+1:], ".git"),
			"url":  "git@" + s.Host() + ":" + p.PathWithNamespace + ".git", "description": "", "homepage": web,
		},
		"object_attributes": map[string]any{
			"id":            n.ID,
			"note":          n.Body,
			"noteable_type": "MergeRequest", //nolint:misspell // GitLab's field name
			"author_id":     n.Author.ID,
			"created_at":    stamp(n.CreatedAt),
			"updated_at":    stamp(n.UpdatedAt),
			"project_id":    p.ID,
			"attachment":    nil,
			"line_code":     nil,
			"commit_id":     "",
			"noteable_id":   mr.ID, //nolint:misspell // GitLab's field name
			"system":        false,
			"st_diff":       nil,
			"type":          nil,
			"action":        action,
			"url":           fmt.Sprintf("%s#note_%d", mr.WebURL, n.ID),
		},
		"merge_request": mrAttrs,
	}
}
