package gitlabsim

import (
	"context"
	"crypto/sha1" //nolint:gosec // G505: git object names are SHA-1; this is no security use
	"encoding/hex"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Commit is a commit in a simulated project's repository.
type Commit struct {
	ID             string    `json:"id"`
	ShortID        string    `json:"short_id"`
	Title          string    `json:"title"`
	Message        string    `json:"message"`
	AuthorName     string    `json:"author_name"`
	AuthorEmail    string    `json:"author_email"`
	AuthoredDate   time.Time `json:"authored_date"`
	CommitterName  string    `json:"committer_name"`
	CommitterEmail string    `json:"committer_email"`
	CommittedDate  time.Time `json:"committed_date"`
	CreatedAt      time.Time `json:"created_at"`
	ParentIDs      []string  `json:"parent_ids"`
	WebURL         string    `json:"web_url"`
}

// AddCommit records a commit of a project. ID defaults to a SHA-1 derived from the message and
// parents; timestamps default to now. It returns the commit ID.
func (s *Server) AddCommit(projectID int64, c Commit) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	if p == nil {
		return "", fmt.Errorf("no project %d", projectID)
	}
	for _, parent := range c.ParentIDs {
		if p.commits[parent] == nil {
			return "", fmt.Errorf("project %d has no parent commit %s", projectID, parent)
		}
	}
	if c.ID == "" {
		h := sha1.New() //nolint:gosec // G401: a git-like object name, not a security use
		fmt.Fprintf(h, "%d\x00%s\x00%s\x00%d", projectID, c.Message, strings.Join(c.ParentIDs, ","), len(p.commits))
		c.ID = hex.EncodeToString(h.Sum(nil))
	}
	now := s.now().UTC()
	if c.AuthoredDate.IsZero() {
		c.AuthoredDate = now
	}
	if c.CommittedDate.IsZero() {
		c.CommittedDate = c.AuthoredDate
	}
	c.CreatedAt = c.CommittedDate
	if c.Title == "" {
		c.Title, _, _ = strings.Cut(c.Message, "\n")
	}
	if c.AuthorName == "" {
		c.AuthorName, c.AuthorEmail = "Test User", "test@example.com"
	}
	if c.CommitterName == "" {
		c.CommitterName, c.CommitterEmail = c.AuthorName, c.AuthorEmail
	}
	c.ShortID = c.ID[:8]
	c.WebURL = s.URL + "/" + p.PathWithNamespace + "/-/commit/" + c.ID
	p.commits[c.ID] = &c
	return c.ID, nil
}

// SetBranch points a branch at a commit without sending a webhook.
func (s *Server) SetBranch(projectID int64, branch, sha string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	if p == nil || p.commits[sha] == nil {
		return fmt.Errorf("project %d has no commit %s", projectID, sha)
	}
	p.branches[branch] = sha
	return nil
}

// ancestors returns every commit reachable from sha, sha included.
func (p *project) ancestors(sha string) map[string]bool {
	seen := map[string]bool{}
	stack := []string{sha}
	for len(stack) > 0 {
		id := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		c := p.commits[id]
		if c == nil || seen[id] {
			continue
		}
		seen[id] = true
		stack = append(stack, c.ParentIDs...)
	}
	return seen
}

// between lists the commits reachable from to but not from from, oldest first.
func (p *project) between(from, to string) []*Commit {
	exclude := map[string]bool{}
	if from != "" {
		exclude = p.ancestors(from)
	}
	var out []*Commit
	for id := range p.ancestors(to) {
		if !exclude[id] {
			out = append(out, p.commits[id])
		}
	}
	slices.SortStableFunc(out, func(a, b *Commit) int {
		if c := a.CommittedDate.Compare(b.CommittedDate); c != 0 {
			return c
		}
		// A parent sorts before its children when the clock did not move.
		if slices.Contains(b.ParentIDs, a.ID) {
			return -1
		}
		if slices.Contains(a.ParentIDs, b.ID) {
			return 1
		}
		return strings.Compare(a.ID, b.ID)
	})
	return out
}

// firstBranchContaining is what GitLab's repository.branch_names_contains(sha).first answers.
func (p *project) firstBranchContaining(sha string) string {
	names := make([]string, 0, len(p.branches))
	for name := range p.branches {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		if p.ancestors(p.branches[name])[sha] {
			return name
		}
	}
	return ""
}

// resolve turns a branch, tag or commit SHA into a commit SHA.
func (p *project) resolve(ref string) string {
	if sha, ok := p.branches[ref]; ok {
		return sha
	}
	if t, ok := p.tags[ref]; ok {
		return t.sha
	}
	if p.commits[ref] != nil {
		return ref
	}
	return ""
}

func (s *Server) getCommit(r *request) (int, any) {
	sha := r.project.resolve(r.PathValue("sha"))
	if sha == "" {
		return http.StatusNotFound, map[string]string{"message": "404 Commit Not Found"}
	}
	return http.StatusOK, r.project.commits[sha]
}

// compare implements GET /projects/:id/repository/compare?from=&to=: the commits reachable from
// to and not from from, oldest first, as GitLab's Compare answer (without diffs).
func (s *Server) compare(r *request) (int, any) {
	fromRef, toRef := r.params["from"], r.params["to"]
	if fromRef == "" || toRef == "" {
		return http.StatusBadRequest, map[string]string{"error": "from is missing, to is missing"}
	}
	from, to := r.project.resolve(fromRef), r.project.resolve(toRef)
	if from == "" || to == "" {
		return http.StatusNotFound, map[string]string{"message": "404 Ref Not Found"}
	}
	commits := r.project.between(from, to)
	var head *Commit
	if len(commits) > 0 {
		head = commits[len(commits)-1]
	}
	return http.StatusOK, map[string]any{
		"commit":           head,
		"commits":          commits,
		"diffs":            []any{},
		"compare_timeout":  false,
		"compare_same_ref": from == to,
		"web_url":          fmt.Sprintf("%s/%s/-/compare/%s...%s", s.URL, r.project.PathWithNamespace, fromRef, toRef),
	}
}

// MergeRequest is a merge request of a simulated project.
type MergeRequest struct {
	IID          int64  `json:"iid"`
	ID           int64  `json:"id"`
	ProjectID    int64  `json:"project_id"`
	Title        string `json:"title"`
	State        string `json:"state"`
	SourceBranch string `json:"source_branch"`
	TargetBranch string `json:"target_branch"`
	SHA          string `json:"sha"`
	// SourceProjectID is the fork the MR comes from; 0 means the project itself.
	SourceProjectID int64  `json:"source_project_id"`
	TargetProjectID int64  `json:"target_project_id"`
	WebURL          string `json:"web_url"`
	Author          User   `json:"author"`
	// MergedBy and MergedAt are set once the merge request is merged; MergeCommitSHA stays null,
	// as for GitLab's fast-forward merges, which make no merge commit.
	MergedBy       *User      `json:"merged_by"`
	MergedAt       *time.Time `json:"merged_at"`
	MergeCommitSHA *string    `json:"merge_commit_sha"`
}

// Note is a comment on a merge request.
type Note struct {
	ID           int64     `json:"id"`
	Type         *string   `json:"type"`
	Body         string    `json:"body"`
	Author       User      `json:"author"`
	CreatedAt    time.Time `json:"created_at"`
	UpdatedAt    time.Time `json:"updated_at"`
	System       bool      `json:"system"`
	NoteableID   int64     `json:"noteable_id"`   //nolint:misspell // GitLab's field name
	NoteableType string    `json:"noteable_type"` //nolint:misspell // GitLab's field name
	NoteableIID  int64     `json:"noteable_iid"`  //nolint:misspell // GitLab's field name
	Resolvable   bool      `json:"resolvable"`
	Confidential bool      `json:"confidential"`
	Internal     bool      `json:"internal"`

	// QuickActions are the lines of the body that GitLab would have run as quick actions
	// (lines starting with "/"), with the author's rights. Not part of GitLab's answer.
	QuickActions []string `json:"-"`
}

// AddMergeRequest registers a merge request without sending a webhook; IID 0 takes the next one.
func (s *Server) AddMergeRequest(projectID int64, mr MergeRequest) (int64, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.addMergeRequest(projectID, mr)
}

func (s *Server) addMergeRequest(projectID int64, mr MergeRequest) (int64, error) {
	p := s.projects[projectID]
	if p == nil {
		return 0, fmt.Errorf("no project %d", projectID)
	}
	if mr.IID == 0 {
		mr.IID = int64(len(p.mergeRequests) + 1)
	}
	mr.ID = s.id()
	mr.ProjectID = projectID
	mr.TargetProjectID = projectID
	if mr.SourceProjectID == 0 {
		mr.SourceProjectID = projectID
	}
	if mr.State == "" {
		mr.State = "opened"
	}
	if mr.TargetBranch == "" {
		mr.TargetBranch = p.DefaultBranch
	}
	mr.WebURL = fmt.Sprintf("%s/%s/-/merge_requests/%d", s.URL, p.PathWithNamespace, mr.IID)
	p.mergeRequests[mr.IID] = &mr
	return mr.IID, nil
}

func (s *Server) mergeRequest(r *request) *MergeRequest {
	iid, err := strconv.ParseInt(r.PathValue("iid"), 10, 64)
	if err != nil {
		return nil
	}
	return r.project.mergeRequests[iid]
}

func (s *Server) getMergeRequest(r *request) (int, any) {
	mr := s.mergeRequest(r)
	if mr == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	return http.StatusOK, mr
}

// postNote implements POST /projects/:id/merge_requests/:iid/notes.
func (s *Server) postNote(r *request) (int, any) {
	mr := s.mergeRequest(r)
	if mr == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	body := r.params["body"]
	if strings.TrimSpace(body) == "" {
		return http.StatusBadRequest, map[string]string{"error": "body is missing"}
	}
	if len([]rune(body)) > 1_000_000 {
		return http.StatusBadRequest, map[string]any{"message": map[string][]string{"note": {"is too long (maximum is 1000000 characters)"}}}
	}
	now := s.now().UTC()
	n := &Note{
		ID:           s.id(),
		Body:         body,
		Author:       *r.user,
		CreatedAt:    now,
		UpdatedAt:    now,
		NoteableID:   mr.ID,
		NoteableType: "MergeRequest",
		NoteableIID:  mr.IID,
		Internal:     r.params["internal"] == "true",
	}
	for line := range strings.SplitSeq(body, "\n") {
		if strings.HasPrefix(line, "/") {
			n.QuickActions = append(n.QuickActions, line)
		}
	}
	r.project.notes[mr.IID] = append(r.project.notes[mr.IID], n)
	// GitLab sends the Note Hook for every note, Ferry's replies included; the receiver finds no
	// command line in those and answers them "ignored", so a reply never answers itself.
	projectID, iid := r.project.ID, mr.IID
	r.later(func(ctx context.Context) { s.deliverAPIHooks(s.noteEvent(ctx, projectID, iid, n, "create")) })
	return http.StatusCreated, n
}

// listNotes implements GET /projects/:id/merge_requests/:iid/notes: newest first unless sort=asc.
func (s *Server) listNotes(r *request) (int, any) {
	mr := s.mergeRequest(r)
	if mr == nil {
		return http.StatusNotFound, map[string]string{"message": "404 Not found"}
	}
	notes := make([]Note, 0, len(r.project.notes[mr.IID]))
	for _, n := range r.project.notes[mr.IID] {
		notes = append(notes, *n)
	}
	if r.params["sort"] != "asc" {
		slices.Reverse(notes)
	}
	return http.StatusOK, paginate(r.params, notes)
}

// Notes returns the notes of a merge request, oldest first.
func (s *Server) Notes(projectID, iid int64) []Note {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	if p == nil {
		return nil
	}
	var out []Note
	for _, n := range p.notes[iid] {
		out = append(out, *n)
	}
	return out
}
