package gitlabsim

import (
	"fmt"
	"net/http"
	"regexp"
	"sort"
	"strconv"
	"time"
	"unicode/utf8"
)

// Commit status states GitLab accepts.
const (
	StatePending  = "pending"
	StateRunning  = "running"
	StateSuccess  = "success"
	StateFailed   = "failed"
	StateCanceled = "canceled"
	StateSkipped  = "skipped"
)

// CommitStatus is one row of GitLab's commit statuses (a job of an external pipeline).
type CommitStatus struct {
	ID          int64      `json:"id"`
	SHA         string     `json:"sha"`
	Ref         string     `json:"ref"`
	Status      string     `json:"status"`
	Name        string     `json:"name"`
	TargetURL   *string    `json:"target_url"`
	Description *string    `json:"description"`
	CreatedAt   time.Time  `json:"created_at"`
	StartedAt   *time.Time `json:"started_at"`
	FinishedAt  *time.Time `json:"finished_at"`
	AllowFail   bool       `json:"allow_failure"`
	Coverage    *float64   `json:"coverage"`
	PipelineID  int64      `json:"pipeline_id"`
	Author      User       `json:"author"`

	// ProjectID is the project the status belongs to (not part of GitLab's answer).
	ProjectID int64 `json:"-"`
}

var shaPattern = regexp.MustCompile(`^[0-9a-f]{7,64}$`)

// transition applies GitLab's state machine for a new state on an existing running-or-pending
// status (create_commit_status_service.rb's apply_job_state!). It returns the event name and
// whether the transition is allowed.
func transition(from, to string) (event string, ok bool) {
	switch to {
	case StatePending:
		return "enqueue", from == "created"
	case StateRunning:
		// enqueue (non-bang, may fail silently) then run!: pending → running only.
		if from == "created" || from == StatePending {
			return "run", true
		}
		return "run", false
	case StateSuccess:
		return "success", from == "created" || from == StatePending || from == StateRunning
	case StateFailed:
		return "drop", from == "created" || from == StatePending || from == StateRunning
	case StateCanceled:
		return "cancel", from == "created" || from == StatePending || from == StateRunning
	case StateSkipped:
		return "skip", from == "created" || from == StatePending
	}
	return "", false
}

// postStatus implements POST /projects/:id/statuses/:sha.
func (s *Server) postStatus(r *request) (int, any) {
	sha := r.PathValue("sha")
	state := r.params["state"]
	switch state {
	case StatePending, StateRunning, StateSuccess, StateFailed, StateCanceled, StateSkipped:
	case "":
		return http.StatusBadRequest, map[string]string{"error": "state is missing"}
	default:
		return http.StatusBadRequest, map[string]string{"error": "state does not have a valid value"}
	}
	if !shaPattern.MatchString(sha) {
		return http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"}
	}
	if len(r.project.commits) > 0 && r.project.commits[sha] == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"}
	}
	name := r.params["name"]
	if name == "" {
		name = r.params["context"]
	}
	if name == "" {
		name = "default"
	}
	for field, max := range map[string]int{"ref": 255, "target_url": 255, "description": 255, "name": 255} {
		if utf8.RuneCountInString(r.params[field]) > max {
			return http.StatusBadRequest, map[string]any{"message": map[string][]string{field: {fmt.Sprintf("is too long (maximum is %d characters)", max)}}}
		}
	}
	ref := r.params["ref"]
	if ref == "" {
		// GitLab picks the first branch containing the commit.
		ref = r.project.firstBranchContaining(sha)
		if ref == "" {
			return http.StatusNotFound, map[string]string{"message": "404 References for commit Not Found"}
		}
	}

	now := s.now().UTC()
	current := s.openStatus(r.project.ID, sha, ref, name, r.user.Username)
	from := "created"
	if current != nil {
		from = current.Status
	}
	event, ok := transition(from, state)
	if !ok {
		return http.StatusBadRequest, map[string]string{"message": fmt.Sprintf("Cannot transition status via :%s from :%s", event, from)}
	}
	st := current
	if st == nil {
		st = &CommitStatus{
			ID:         s.id(),
			ProjectID:  r.project.ID,
			SHA:        sha,
			Ref:        ref,
			Name:       name,
			CreatedAt:  now,
			PipelineID: s.pipeline(r.project.ID, sha, ref),
			Author:     *r.user,
		}
		s.statuses = append(s.statuses, st)
	}
	st.Status = state
	if v, ok := r.params["target_url"]; ok {
		st.TargetURL = &v
	}
	if v, ok := r.params["description"]; ok {
		st.Description = &v
	}
	if v, ok := r.params["coverage"]; ok {
		if f, err := strconv.ParseFloat(v, 64); err == nil {
			st.Coverage = &f
		}
	}
	switch state {
	case StateRunning:
		st.StartedAt = &now
	case StateSuccess, StateFailed, StateCanceled, StateSkipped:
		st.FinishedAt = &now
	}
	return http.StatusCreated, *st
}

// openStatus is the running-or-pending status with the same project, SHA, ref, name and user.
func (s *Server) openStatus(projectID int64, sha, ref, name, user string) *CommitStatus {
	for i := len(s.statuses) - 1; i >= 0; i-- {
		st := s.statuses[i]
		if st.ProjectID == projectID && st.SHA == sha && st.Ref == ref && st.Name == name && st.Author.Username == user &&
			(st.Status == StatePending || st.Status == StateRunning) {
			return st
		}
	}
	return nil
}

func (s *Server) pipeline(projectID int64, sha, ref string) int64 {
	key := fmt.Sprintf("%d/%s/%s", projectID, sha, ref)
	if id, ok := s.pipelines[key]; ok {
		return id
	}
	id := s.id()
	s.pipelines[key] = id
	return id
}

// listStatuses implements GET /projects/:id/repository/commits/:sha/statuses: by default only the
// latest status per name; all=true lists every row.
func (s *Server) listStatuses(r *request) (int, any) {
	sha := r.PathValue("sha")
	all := r.params["all"] == "true"
	var out []CommitStatus
	latest := map[string]int{}
	for _, st := range s.statuses {
		if st.ProjectID != r.project.ID || st.SHA != sha {
			continue
		}
		if ref := r.params["ref"]; ref != "" && st.Ref != ref {
			continue
		}
		if name := r.params["name"]; name != "" && st.Name != name {
			continue
		}
		if !all {
			if i, ok := latest[st.Name]; ok {
				out[i] = *st
				continue
			}
			latest[st.Name] = len(out)
		}
		out = append(out, *st)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return http.StatusOK, paginate(r.params, out)
}

// Statuses returns every commit-status row of a project's commit, oldest first.
func (s *Server) Statuses(projectID int64, sha string) []CommitStatus {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []CommitStatus
	for _, st := range s.statuses {
		if st.ProjectID == projectID && st.SHA == sha {
			out = append(out, *st)
		}
	}
	return out
}
