package gitlabsim

import (
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// Deployment states GitLab accepts from the API (lib/api/deployments.rb: created and blocked are
// only reached by CI jobs).
const (
	DeploymentRunning  = "running"
	DeploymentSuccess  = "success"
	DeploymentFailed   = "failed"
	DeploymentCanceled = "canceled"
)

// Environment is one of a project's environments, as GET /projects/:id/environments answers.
type Environment struct {
	ID          int64     `json:"id"`
	Name        string    `json:"name"`
	Slug        string    `json:"slug"`
	ExternalURL *string   `json:"external_url"`
	State       string    `json:"state"`
	Tier        string    `json:"tier"`
	CreatedAt   time.Time `json:"created_at"`
	UpdatedAt   time.Time `json:"updated_at"`

	// ProjectID is the project the environment belongs to (not part of GitLab's answer).
	ProjectID int64 `json:"-"`
}

// Deployment is one deployment record, as GitLab's Entities::Deployment presents it. Deployments
// made through the API have no deployable (CI job).
type Deployment struct {
	ID          int64       `json:"id"`
	IID         int64       `json:"iid"`
	Ref         string      `json:"ref"`
	SHA         string      `json:"sha"`
	Tag         bool        `json:"-"`
	Status      string      `json:"status"`
	CreatedAt   time.Time   `json:"created_at"`
	UpdatedAt   time.Time   `json:"updated_at"`
	FinishedAt  *time.Time  `json:"finished_at"`
	User        User        `json:"user"`
	Environment Environment `json:"environment"`
	Deployable  *struct{}   `json:"deployable"`

	// ProjectID is the project the deployment belongs to (not part of GitLab's answer).
	ProjectID int64 `json:"-"`
}

// environmentName is Gitlab::Regex.environment_name_regex: letters, digits, spaces and - _ / $ {
// } . , with no "/" at either end.
var environmentName = regexp.MustCompile(`^[a-zA-Z0-9 _/${}.\-]+$`)

const environmentNameMessage = "can contain only letters, digits, '-', '_', '/', '$', '{', '}', '.', and spaces, but it cannot start or end with '/'"

// deploymentTransition is Deployment's state machine (app/models/deployment.rb): run only from
// created; succeed, drop and cancel from any state but their own.
func deploymentTransition(from, to string) (event string, ok bool) {
	switch to {
	case DeploymentRunning:
		return "run", from == "created"
	case DeploymentSuccess:
		return "succeed", from != DeploymentSuccess
	case DeploymentFailed:
		return "drop", from != DeploymentFailed
	case DeploymentCanceled:
		return "cancel", from != DeploymentCanceled
	}
	return "", false
}

func validDeploymentStatus(s string) bool {
	return s == DeploymentRunning || s == DeploymentSuccess || s == DeploymentFailed || s == DeploymentCanceled
}

// missing is Grape's answer for required parameters that were not sent.
func missing(params map[string]string, names ...string) (int, any, bool) {
	var absent []string
	for _, n := range names {
		if _, ok := params[n]; !ok {
			absent = append(absent, n+" is missing")
		}
	}
	if len(absent) == 0 {
		return 0, nil, false
	}
	return http.StatusBadRequest, map[string]string{"error": strings.Join(absent, ", ")}, true
}

func validationError(field string, messages ...string) map[string]any {
	return map[string]any{"message": map[string][]string{field: messages}}
}

// createDeployment implements POST /projects/:id/deployments: environment, sha, ref, tag and
// status are required; the environment is found or created by name.
func (s *Server) createDeployment(r *request) (int, any) {
	if code, body, bad := missing(r.params, "environment", "sha", "ref", "tag", "status"); bad {
		return code, body
	}
	tag, err := strconv.ParseBool(r.params["tag"])
	if err != nil {
		return http.StatusBadRequest, map[string]string{"error": "tag is invalid"}
	}
	status := r.params["status"]
	if !validDeploymentStatus(status) {
		return http.StatusBadRequest, map[string]string{"error": "status does not have a valid value"}
	}
	env, code, body := s.findOrCreateEnvironment(r.project, r.params["environment"])
	if env == nil {
		return code, body
	}
	sha, ref := r.params["sha"], r.params["ref"]
	// Deployment validates that the commit and the ref exist (gitlab-org/gitlab!20849); a project
	// whose repository the test did not populate accepts any.
	if len(r.project.commits) > 0 && r.project.commits[sha] == nil {
		return http.StatusBadRequest, validationError("sha", "The commit does not exist")
	}
	if len(r.project.commits) > 0 {
		exists := false
		if tag {
			_, exists = r.project.tags[ref]
		} else {
			_, exists = r.project.branches[ref]
		}
		if !exists {
			return http.StatusBadRequest, validationError("ref", "The branch or tag does not exist")
		}
	}
	now := s.now().UTC()
	var iid int64
	for _, d := range s.deployments {
		if d.ProjectID == r.project.ID {
			iid = max(iid, d.IID)
		}
	}
	d := &Deployment{
		ID: s.id(), IID: iid + 1, ProjectID: r.project.ID,
		Ref: ref, SHA: sha, Tag: tag, Status: status,
		CreatedAt: now, UpdatedAt: now, User: *r.user, Environment: *env,
	}
	if status != DeploymentRunning {
		d.FinishedAt = &now
	}
	s.deployments = append(s.deployments, d)
	return http.StatusCreated, *d
}

// updateDeployment implements PUT /projects/:id/deployments/:deployment_id: only status, and a
// transition the state machine refuses is a validation error.
func (s *Server) updateDeployment(r *request) (int, any) {
	d := s.deployment(r.project, r.PathValue("deployment_id"))
	if d == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Deployment Not Found"}
	}
	if code, body, bad := missing(r.params, "status"); bad {
		return code, body
	}
	status := r.params["status"]
	if !validDeploymentStatus(status) {
		return http.StatusBadRequest, map[string]string{"error": "status does not have a valid value"}
	}
	event, ok := deploymentTransition(d.Status, status)
	if !ok {
		return http.StatusBadRequest, validationError("status", fmt.Sprintf("cannot transition via \"%s\"", event))
	}
	now := s.now().UTC()
	d.Status = status
	d.UpdatedAt = now
	if status != DeploymentRunning {
		d.FinishedAt = &now
	}
	d.Environment = *s.environmentByID(d.Environment.ID)
	return http.StatusOK, *d
}

// getDeployment implements GET /projects/:id/deployments/:deployment_id.
func (s *Server) getDeployment(r *request) (int, any) {
	d := s.deployment(r.project, r.PathValue("deployment_id"))
	if d == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Deployment Not Found"}
	}
	out := *d
	out.Environment = *s.environmentByID(d.Environment.ID)
	return http.StatusOK, out
}

// listDeployments implements GET /projects/:id/deployments with the environment and status
// filters, order_by id, iid, created_at, updated_at, finished_at or ref, and sort asc or desc.
func (s *Server) listDeployments(r *request) (int, any) {
	orderBy := r.params["order_by"]
	if orderBy == "" {
		orderBy = "id"
	}
	if !slices.Contains([]string{"id", "iid", "created_at", "updated_at", "finished_at", "ref"}, orderBy) {
		return http.StatusBadRequest, map[string]string{"error": "order_by does not have a valid value"}
	}
	sortDir := r.params["sort"]
	if sortDir == "" {
		sortDir = "asc"
	}
	if sortDir != "asc" && sortDir != "desc" {
		return http.StatusBadRequest, map[string]string{"error": "sort does not have a valid value"}
	}
	if st, ok := r.params["status"]; ok && !validDeploymentStatus(st) && st != "created" && st != "blocked" {
		return http.StatusBadRequest, map[string]string{"error": "status does not have a valid value"}
	}
	var out []Deployment
	for _, d := range s.deployments {
		if d.ProjectID != r.project.ID {
			continue
		}
		if env, ok := r.params["environment"]; ok && d.Environment.Name != env {
			continue
		}
		if st, ok := r.params["status"]; ok && d.Status != st {
			continue
		}
		c := *d
		c.Environment = *s.environmentByID(d.Environment.ID)
		out = append(out, c)
	}
	key := func(d Deployment) string {
		switch orderBy {
		case "iid":
			return fmt.Sprintf("%020d", d.IID)
		case "created_at":
			return d.CreatedAt.Format(time.RFC3339Nano)
		case "updated_at":
			return d.UpdatedAt.Format(time.RFC3339Nano)
		case "finished_at":
			if d.FinishedAt == nil {
				return ""
			}
			return d.FinishedAt.Format(time.RFC3339Nano)
		case "ref":
			return d.Ref
		}
		return fmt.Sprintf("%020d", d.ID)
	}
	slices.SortStableFunc(out, func(a, b Deployment) int {
		c := strings.Compare(key(a), key(b))
		if c == 0 {
			c = int(a.ID - b.ID)
		}
		if sortDir == "desc" {
			return -c
		}
		return c
	})
	return http.StatusOK, paginate(r.params, out)
}

// listEnvironments implements GET /projects/:id/environments with the name and search filters.
func (s *Server) listEnvironments(r *request) (int, any) {
	var out []Environment
	for _, e := range s.environments {
		if e.ProjectID != r.project.ID {
			continue
		}
		if name, ok := r.params["name"]; ok && e.Name != name {
			continue
		}
		if q, ok := r.params["search"]; ok && !strings.Contains(e.Name, q) {
			continue
		}
		out = append(out, *e)
	}
	return http.StatusOK, paginate(r.params, out)
}

// updateEnvironment implements PUT /projects/:id/environments/:environment_id for external_url
// (and name, which Ferry never changes).
func (s *Server) updateEnvironment(r *request) (int, any) {
	id, _ := strconv.ParseInt(r.PathValue("environment_id"), 10, 64)
	e := s.environmentByID(id)
	if e == nil || e.ProjectID != r.project.ID {
		return http.StatusNotFound, map[string]string{"message": "404 Environment Not Found"}
	}
	if v, ok := r.params["external_url"]; ok {
		if v != "" {
			u, err := url.Parse(v)
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				return http.StatusBadRequest, validationError("external_url", "is blocked: Only allowed schemes are http, https")
			}
			if utf8.RuneCountInString(v) > 255 {
				return http.StatusBadRequest, validationError("external_url", "is too long (maximum is 255 characters)")
			}
			e.ExternalURL = &v
		} else {
			e.ExternalURL = nil
		}
	}
	e.UpdatedAt = s.now().UTC()
	return http.StatusOK, *e
}

func (s *Server) findOrCreateEnvironment(p *project, name string) (*Environment, int, any) {
	for _, e := range s.environments {
		if e.ProjectID == p.ID && e.Name == name {
			return e, 0, nil
		}
	}
	switch {
	case name == "":
		return nil, http.StatusBadRequest, validationError("name", "can't be blank")
	case utf8.RuneCountInString(name) > 255:
		return nil, http.StatusBadRequest, validationError("name", "is too long (maximum is 255 characters)")
	case !environmentName.MatchString(name) || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/"):
		return nil, http.StatusBadRequest, validationError("name", environmentNameMessage)
	}
	now := s.now().UTC()
	e := &Environment{
		ID: s.id(), ProjectID: p.ID, Name: name, Slug: slug(name), State: "available",
		Tier: tier(name), CreatedAt: now, UpdatedAt: now,
	}
	s.environments = append(s.environments, e)
	return e, 0, nil
}

func (s *Server) environmentByID(id int64) *Environment {
	for _, e := range s.environments {
		if e.ID == id {
			return e
		}
	}
	return nil
}

func (s *Server) deployment(p *project, id string) *Deployment {
	n, err := strconv.ParseInt(id, 10, 64)
	if err != nil {
		return nil
	}
	for _, d := range s.deployments {
		if d.ID == n && d.ProjectID == p.ID {
			return d
		}
	}
	return nil
}

// slug is a simplified Gitlab::Slug::Environment: lower case, runs of other characters as "-".
func slug(name string) string {
	var b strings.Builder
	dash := false
	for _, c := range strings.ToLower(name) {
		if (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') {
			b.WriteRune(c)
			dash = false
			continue
		}
		if !dash && b.Len() > 0 {
			b.WriteByte('-')
			dash = true
		}
	}
	return strings.Trim(b.String(), "-")
}

// tier is Environment#guess_tier.
func tier(name string) string {
	n := strings.ToLower(name)
	switch {
	case strings.HasPrefix(n, "dev") || strings.HasPrefix(n, "review") || strings.HasPrefix(n, "trunk"):
		return "development"
	case strings.HasPrefix(n, "test") || strings.HasPrefix(n, "qa"):
		return "testing"
	case strings.HasPrefix(n, "st") || strings.HasPrefix(n, "model") || strings.HasPrefix(n, "pre"):
		return "staging"
	case strings.HasPrefix(n, "prod") || strings.HasPrefix(n, "live"):
		return "production"
	}
	return "other"
}

// Deployments returns a project's deployment records, oldest first, each with its environment as
// it is now.
func (s *Server) Deployments(projectID int64) []Deployment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Deployment
	for _, d := range s.deployments {
		if d.ProjectID == projectID {
			c := *d
			c.Environment = *s.environmentByID(d.Environment.ID)
			out = append(out, c)
		}
	}
	return out
}

// Environments returns a project's environments, oldest first.
func (s *Server) Environments(projectID int64) []Environment {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []Environment
	for _, e := range s.environments {
		if e.ProjectID == projectID {
			out = append(out, *e)
		}
	}
	return out
}
