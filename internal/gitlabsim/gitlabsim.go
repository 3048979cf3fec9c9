// Package gitlabsim simulates GitLab for `ferry dev` and for tests: it serves the parts of GitLab's
// REST API v4 that Ferry uses (commit statuses with GitLab's state machine, merge request notes,
// projects, project members' roles, repository commits and compare, deployments and environments
// as docs/gitlab-deployments.md describes them) and sends GitLab-shaped
// webhooks (push, tag push, merge request, note) to the hooks registered on its projects.
//
// It speaks the real protocol: project IDs or URL-encoded paths in the URL (a raw "/" in a path
// routes nowhere, as in GitLab), PRIVATE-TOKEN or Bearer authentication, GitLab's error bodies, the
// commit-status transitions of app/services/ci/create_commit_status_service.rb (re-posting the
// current state is HTTP 400 "Cannot transition status via :run from :running", running→pending is
// refused, a terminal state starts a new status row), pagination headers, and webhook headers as
// GitLab 17.11 sends them. It records every API call and can inject 5xx, 429 and redirects.
package gitlabsim

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Server is a simulated GitLab instance listening on loopback.
type Server struct {
	// URL is the instance's base URL, for example http://127.0.0.1:41234. The REST API is under
	// URL + "/api/v4".
	URL string

	// HookClient sends webhooks. Default: a client with a 10 s timeout, like GitLab's default
	// webhook_timeout.
	HookClient *http.Client

	// OnAPIDelivery, when set, is told about every webhook delivery an API request caused (a note,
	// a merge request opened or merged through the API). GitLab sends those from a background job
	// after it answered the request; so does the simulator. Set it before the first request.
	OnAPIDelivery func(Delivery)

	// MoveBranch, when set, moves a branch in the repository the project stands for (ferry dev's
	// git server) when a merge request is merged through the API; that repository then reports
	// the push, which moves the simulator's branch and delivers the Push Hook. Without it the
	// simulator moves its own branch and delivers the Push Hook itself. from is the branch's head
	// the merge was checked against, user who merged (and so pushed). It reports its own
	// failures. Set it before the first request.
	MoveBranch func(ctx context.Context, projectID int64, branch, from, to, user string)

	srv *httptest.Server
	now func() time.Time
	// background runs what API requests leave for after their answer (webhook deliveries).
	background sync.WaitGroup

	mu            sync.Mutex
	nextID        int64
	users         map[string]*User // by token
	projects      map[int64]*project
	projectByPath map[string]int64 // lower-case path_with_namespace
	statuses      []*CommitStatus
	pipelines     map[string]int64 // project/sha/ref → pipeline ID
	deployments   []*Deployment
	environments  []*Environment
	calls         []Call
	faults        []*Fault
}

// User is a GitLab user that authenticates with a token.
type User struct {
	ID       int64  `json:"id"`
	Username string `json:"username"`
	Name     string `json:"name"`
	State    string `json:"state"`
	WebURL   string `json:"web_url"`
}

// Project is what a test registers about a GitLab project.
type Project struct {
	// ID is GitLab's numeric project ID; 0 assigns the next free one.
	ID int64
	// PathWithNamespace is the full path, for example group/subgroup/app.
	PathWithNamespace string
	// DefaultBranch defaults to "main".
	DefaultBranch string
	// Members are the usernames allowed to use the project's API; empty allows every user.
	Members []string
}

type project struct {
	Project
	commits       map[string]*Commit
	branches      map[string]string // name → SHA
	tags          map[string]tag
	mergeRequests map[int64]*MergeRequest
	notes         map[int64][]*Note // MR iid → notes
	hooks         []Hook
	roles         map[string]int // username → access_level
}

type tag struct {
	sha     string // the commit
	object  string // the tag object for annotated tags, else the commit
	message string
}

// Call is one API request the server answered.
type Call struct {
	Method string
	// Path is the escaped request path, as sent (group%2Fapp stays encoded).
	Path     string
	RawQuery string
	Body     []byte
	// Host is the Host header the request was sent to.
	Host string
	// User is the username the request authenticated as; "" when it carried no known token.
	User string
	// HadToken says whether the request carried any token at all.
	HadToken bool
	// Status is the HTTP status the server answered.
	Status int
}

// Fault makes matching API requests fail before they are handled.
type Fault struct {
	// Method matches the request method; "" matches all.
	Method string
	// PathContains matches a substring of the escaped request path; "" matches all.
	PathContains string
	// Status is the HTTP status to answer: 5xx, 429, or 3xx with Location for a redirect.
	Status int
	// Times is how many requests fail; 0 means every matching request until ClearFaults.
	Times int
	// RetryAfter is sent as the Retry-After header when set (seconds).
	RetryAfter string
	// Location is sent with 3xx answers.
	Location string

	used int
}

// New starts a simulated GitLab on a loopback port. Close stops it.
func New() *Server {
	s := &Server{
		users:         map[string]*User{},
		projects:      map[int64]*project{},
		projectByPath: map[string]int64{},
		pipelines:     map[string]int64{},
		now:           time.Now,
		nextID:        1000,
	}
	s.srv = httptest.NewServer(s.handler())
	s.URL = s.srv.URL
	s.HookClient = &http.Client{Timeout: 10 * time.Second}
	return s
}

// Close stops the server and waits for the webhook deliveries API requests started.
func (s *Server) Close() {
	s.srv.Close()
	s.background.Wait()
}

// APIURL is the REST API's base URL.
func (s *Server) APIURL() string { return s.URL + "/api/v4" }

// Host is the host:port the server listens on.
func (s *Server) Host() string {
	u, _ := url.Parse(s.URL)
	return u.Host
}

// Listener is the server's listener address.
func (s *Server) Listener() net.Addr { return s.srv.Listener.Addr() }

func (s *Server) id() int64 {
	s.nextID++
	return s.nextID
}

// AddUser registers a user and the token it authenticates with.
func (s *Server) AddUser(username, token string) *User {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := &User{ID: s.id(), Username: username, Name: username, State: "active", WebURL: s.URL + "/" + username}
	s.users[token] = u
	return u
}

// AddProject registers a project and returns its ID.
func (s *Server) AddProject(p Project) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p.ID == 0 {
		p.ID = s.id()
	}
	if p.DefaultBranch == "" {
		p.DefaultBranch = "main"
	}
	s.projects[p.ID] = &project{
		Project:       p,
		commits:       map[string]*Commit{},
		branches:      map[string]string{},
		tags:          map[string]tag{},
		mergeRequests: map[int64]*MergeRequest{},
		notes:         map[int64][]*Note{},
	}
	s.projectByPath[strings.ToLower(p.PathWithNamespace)] = p.ID
	return p.ID
}

// Inject adds a fault. Faults are matched in the order they were added.
func (s *Server) Inject(f Fault) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = append(s.faults, &f)
}

// ClearFaults removes every fault.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = nil
}

// Calls returns the API requests answered so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Call(nil), s.calls...)
}

// ResetCalls forgets the recorded calls.
func (s *Server) ResetCalls() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls = nil
}

// request is what the router hands a handler: the authenticated user and the project.
type request struct {
	*http.Request
	user    *User
	project *project
	body    []byte
	params  map[string]string
	// after runs once the request was answered and s.mu released, in the background: what
	// GitLab's Sidekiq jobs do after a request (webhooks, a merge's push).
	after []func(ctx context.Context)
}

// later leaves f for after the answer.
func (r *request) later(f func(ctx context.Context)) { r.after = append(r.after, f) }

// deliverAPIHooks tells OnAPIDelivery about deliveries an API request caused.
func (s *Server) deliverAPIHooks(ds []Delivery) {
	if s.OnAPIDelivery == nil {
		return
	}
	for _, d := range ds {
		s.OnAPIDelivery(d)
	}
}

// runAfter runs a request's after functions in the background; they take s.mu themselves.
func (s *Server) runAfter(after []func(ctx context.Context)) {
	if len(after) == 0 {
		return
	}
	s.background.Add(1)
	go func() {
		defer s.background.Done()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		for _, f := range after {
			f(ctx)
		}
	}()
}

type handlerFunc func(r *request) (int, any)

func (s *Server) handler() http.Handler {
	mux := http.NewServeMux()
	route := func(pattern string, needsProject bool, h handlerFunc) {
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) { s.serve(w, r, needsProject, h) })
	}
	route("GET /api/v4/user", false, func(r *request) (int, any) { return http.StatusOK, r.user })
	route("GET /api/v4/projects/{id}", true, s.getProject)
	route("POST /api/v4/projects/{id}/statuses/{sha}", true, s.postStatus)
	route("GET /api/v4/projects/{id}/repository/commits/{sha}/statuses", true, s.listStatuses)
	route("GET /api/v4/projects/{id}/repository/commits/{sha}", true, s.getCommit)
	route("GET /api/v4/projects/{id}/repository/compare", true, s.compare)
	route("POST /api/v4/projects/{id}/merge_requests", true, s.createMergeRequest)
	route("GET /api/v4/projects/{id}/merge_requests/{iid}", true, s.getMergeRequest)
	route("PUT /api/v4/projects/{id}/merge_requests/{iid}/merge", true, s.mergeMergeRequest)
	route("GET /api/v4/projects/{id}/merge_requests/{iid}/notes", true, s.listNotes)
	route("POST /api/v4/projects/{id}/merge_requests/{iid}/notes", true, s.postNote)
	route("PUT /api/v4/projects/{id}/merge_requests/{iid}/notes/{note_id}", true, s.putNote)
	route("GET /api/v4/projects/{id}/members/all/{user_id}", true, s.getMemberAll)
	route("GET /api/v4/projects/{id}/deployments", true, s.listDeployments)
	route("POST /api/v4/projects/{id}/deployments", true, s.createDeployment)
	route("GET /api/v4/projects/{id}/deployments/{deployment_id}", true, s.getDeployment)
	route("PUT /api/v4/projects/{id}/deployments/{deployment_id}", true, s.updateDeployment)
	route("GET /api/v4/projects/{id}/environments", true, s.listEnvironments)
	route("PUT /api/v4/projects/{id}/environments/{environment_id}", true, s.updateEnvironment)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		s.record(r, nil, nil, http.StatusNotFound)
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "404 Not Found"})
	})
	return mux
}

// serve authenticates, applies faults, finds the project and records the call.
func (s *Server) serve(w http.ResponseWriter, r *http.Request, needsProject bool, h handlerFunc) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 2<<20))
	s.mu.Lock()
	defer s.mu.Unlock()
	token := r.Header.Get("PRIVATE-TOKEN")
	if token == "" {
		token, _ = strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	}
	user := s.users[token]
	if f := s.matchFault(r); f != nil {
		s.record(r, body, user, f.Status)
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if f.Location != "" {
			w.Header().Set("Location", f.Location)
		}
		writeJSON(w, f.Status, map[string]string{"message": fmt.Sprintf("%d %s", f.Status, http.StatusText(f.Status))})
		return
	}
	status, out, req := s.dispatch(r, body, user, needsProject, h)
	s.record(r, body, user, status)
	if req != nil {
		s.runAfter(req.after)
	}
	if status == http.StatusOK || status == http.StatusCreated {
		if p, ok := out.(page); ok {
			p.writeHeaders(w)
			out = p.items
		}
	}
	writeJSON(w, status, out)
}

func (s *Server) dispatch(r *http.Request, body []byte, user *User, needsProject bool, h handlerFunc) (int, any, *request) {
	if user == nil {
		return http.StatusUnauthorized, map[string]string{"message": "401 Unauthorized"}, nil
	}
	req := &request{Request: r, user: user, body: body}
	if needsProject {
		p := s.lookupProject(r.PathValue("id"))
		if p == nil || !p.allows(user) {
			return http.StatusNotFound, map[string]string{"message": "404 Project Not Found"}, nil
		}
		req.project = p
	}
	params, err := parseParams(r, body)
	if err != nil {
		return http.StatusBadRequest, map[string]string{"error": err.Error()}, nil
	}
	req.params = params
	status, out := h(req)
	return status, out, req
}

func (p *project) allows(u *User) bool {
	if len(p.Members) == 0 {
		return true
	}
	for _, m := range p.Members {
		if m == u.Username {
			return true
		}
	}
	return false
}

// lookupProject finds a project by numeric ID or by its (already unescaped) path.
func (s *Server) lookupProject(id string) *project {
	if n, err := strconv.ParseInt(id, 10, 64); err == nil {
		return s.projects[n]
	}
	if n, ok := s.projectByPath[strings.ToLower(id)]; ok {
		return s.projects[n]
	}
	return nil
}

func (s *Server) matchFault(r *http.Request) *Fault {
	for i, f := range s.faults {
		if f.Method != "" && f.Method != r.Method {
			continue
		}
		if f.PathContains != "" && !strings.Contains(r.URL.EscapedPath(), f.PathContains) {
			continue
		}
		f.used++
		if f.Times > 0 && f.used >= f.Times {
			s.faults = append(s.faults[:i], s.faults[i+1:]...)
		}
		return f
	}
	return nil
}

func (s *Server) record(r *http.Request, body []byte, user *User, status int) {
	c := Call{
		Method:   r.Method,
		Path:     r.URL.EscapedPath(),
		RawQuery: r.URL.RawQuery,
		Body:     body,
		Host:     r.Host,
		HadToken: r.Header.Get("PRIVATE-TOKEN") != "" || r.Header.Get("Authorization") != "",
		Status:   status,
	}
	if user != nil {
		c.User = user.Username
	}
	s.calls = append(s.calls, c)
}

// parseParams merges query parameters with a JSON or form body, as Grape does.
func parseParams(r *http.Request, body []byte) (map[string]string, error) {
	params := map[string]string{}
	for k, v := range r.URL.Query() {
		params[k] = v[0]
	}
	if len(body) == 0 {
		return params, nil
	}
	ct := r.Header.Get("Content-Type")
	switch {
	case strings.HasPrefix(ct, "application/json"):
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			return nil, fmt.Errorf("failed to parse the JSON body: %w", err)
		}
		for k, v := range m {
			switch v := v.(type) {
			case string:
				params[k] = v
			case nil:
			default:
				b, _ := json.Marshal(v)
				params[k] = string(b)
			}
		}
	case strings.HasPrefix(ct, "application/x-www-form-urlencoded"):
		form, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, err
		}
		for k, v := range form {
			params[k] = v[0]
		}
	}
	return params, nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// page is a paginated list answer.
type page struct {
	items              any
	page, perPage, all int
}

func (p page) writeHeaders(w http.ResponseWriter) {
	h := w.Header()
	h.Set("X-Page", strconv.Itoa(p.page))
	h.Set("X-Per-Page", strconv.Itoa(p.perPage))
	h.Set("X-Total", strconv.Itoa(p.all))
	pages := (p.all + p.perPage - 1) / p.perPage
	h.Set("X-Total-Pages", strconv.Itoa(max(pages, 1)))
	if p.page < pages {
		h.Set("X-Next-Page", strconv.Itoa(p.page+1))
	} else {
		h.Set("X-Next-Page", "")
	}
}

// paginate cuts items according to the page and per_page parameters (default 1 and 20, at most 100).
func paginate[T any](params map[string]string, items []T) page {
	pg, _ := strconv.Atoi(params["page"])
	if pg < 1 {
		pg = 1
	}
	per, _ := strconv.Atoi(params["per_page"])
	if per < 1 {
		per = 20
	}
	per = min(per, 100)
	start := min((pg-1)*per, len(items))
	end := min(start+per, len(items))
	return page{items: append([]T{}, items[start:end]...), page: pg, perPage: per, all: len(items)}
}

func (s *Server) getProject(r *request) (int, any) {
	return http.StatusOK, s.projectJSON(r.project)
}

func (s *Server) projectJSON(p *project) map[string]any {
	parts := strings.Split(p.PathWithNamespace, "/")
	return map[string]any{
		"id":                  p.ID,
		"name":                parts[len(parts)-1],
		"path":                parts[len(parts)-1],
		"path_with_namespace": p.PathWithNamespace,
		"default_branch":      p.DefaultBranch,
		"web_url":             s.URL + "/" + p.PathWithNamespace,
		"http_url_to_repo":    s.URL + "/" + p.PathWithNamespace + ".git",
		"ssh_url_to_repo":     "git@" + s.Host() + ":" + p.PathWithNamespace + ".git",
	}
}
