package gitlabsim

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ZeroSHA is what GitLab sends as before (new ref) or after (deleted ref).
const ZeroSHA = "0000000000000000000000000000000000000000"

// UserAgent is the User-Agent the simulator sends webhooks with.
const UserAgent = "GitLab/17.11.1-ee"

// Hook is a project webhook.
type Hook struct {
	// URL receives the deliveries.
	URL string
	// Token is sent in X-Gitlab-Token; empty sends no header, as GitLab does.
	Token string
	// SigningToken (whsec_<base64>) makes the simulator sign deliveries the Standard Webhooks way:
	// webhook-id, webhook-timestamp and webhook-signature "v1,<base64 HMAC-SHA256>".
	SigningToken string
	// PushEvents, TagPushEvents, MergeRequestsEvents and NoteEvents ("Comments") are the ticked
	// triggers.
	PushEvents, TagPushEvents, MergeRequestsEvents, NoteEvents bool
}

// Delivery is one webhook request and its answer.
type Delivery struct {
	HookURL string
	Event   string
	Header  http.Header
	Body    []byte
	// Status and Response are the receiver's answer; Err is set when there was none.
	Status   int
	Response []byte
	Err      error

	hook Hook
}

// IdempotencyKey is the delivery's Idempotency-Key, the same on a redelivery.
func (d Delivery) IdempotencyKey() string { return d.Header.Get("Idempotency-Key") }

// AddHook registers a webhook on a project.
func (s *Server) AddHook(projectID int64, h Hook) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	p := s.projects[projectID]
	if p == nil {
		return fmt.Errorf("no project %d", projectID)
	}
	p.hooks = append(p.hooks, h)
	return nil
}

// SetHookURL points every hook of a project at url (a receiver that moved).
func (s *Server) SetHookURL(projectID int64, url string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if p := s.projects[projectID]; p != nil {
		for i := range p.hooks {
			p.hooks[i].URL = url
		}
	}
}

// PushSpec describes a branch push.
type PushSpec struct {
	Branch string
	// To is the new head; "" deletes the branch.
	To string
	// User is the pusher's username.
	User string
}

// Push moves a branch (the commits must exist, see AddCommit) and delivers a Push Hook to every
// hook of the project with push events ticked.
func (s *Server) Push(ctx context.Context, projectID int64, spec PushSpec) ([]Delivery, error) {
	s.mu.Lock()
	p := s.projects[projectID]
	if p == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("no project %d", projectID)
	}
	before, existed := p.branches[spec.Branch]
	if !existed {
		before = ZeroSHA
	}
	after, checkout := spec.To, any(spec.To)
	var commits []*Commit
	switch {
	case spec.To == "":
		after, checkout = ZeroSHA, nil
		delete(p.branches, spec.Branch)
	case p.commits[spec.To] == nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("project %d has no commit %s", projectID, spec.To)
	default:
		from := before
		if !existed {
			from = p.branches[p.DefaultBranch]
		}
		if from == ZeroSHA {
			from = ""
		}
		commits = p.between(from, spec.To)
		p.branches[spec.Branch] = spec.To
	}
	payload := s.pushPayload(p, "push", "refs/heads/"+spec.Branch, before, after, checkout, nil, commits, spec.User)
	hooks := selectHooks(p.hooks, func(h Hook) bool { return h.PushEvents })
	s.mu.Unlock()
	return s.deliver(ctx, hooks, "Push Hook", payload), nil
}

// TagSpec describes a tag push.
type TagSpec struct {
	Tag string
	// SHA is the commit the tag points at; "" deletes the tag.
	SHA string
	// Message makes the tag annotated: after is then the tag object, checkout_sha the commit.
	Message string
	User    string
}

// PushTag creates or deletes a tag and delivers a Tag Push Hook.
func (s *Server) PushTag(ctx context.Context, projectID int64, spec TagSpec) ([]Delivery, error) {
	s.mu.Lock()
	p := s.projects[projectID]
	if p == nil {
		s.mu.Unlock()
		return nil, fmt.Errorf("no project %d", projectID)
	}
	old, existed := p.tags[spec.Tag]
	before := ZeroSHA
	if existed {
		before = old.object
	}
	var after string
	var checkout, message any
	var commits []*Commit
	switch {
	case spec.SHA == "":
		after = ZeroSHA
		delete(p.tags, spec.Tag)
	case p.commits[spec.SHA] == nil:
		s.mu.Unlock()
		return nil, fmt.Errorf("project %d has no commit %s", projectID, spec.SHA)
	default:
		t := tag{sha: spec.SHA, object: spec.SHA, message: spec.Message}
		if spec.Message != "" {
			sum := sha256.Sum256([]byte(spec.Tag + "\x00" + spec.SHA + "\x00" + spec.Message))
			t.object = fmt.Sprintf("%x", sum[:20])
			message = spec.Message
		}
		p.tags[spec.Tag] = t
		after, checkout = t.object, spec.SHA
		commits = []*Commit{p.commits[spec.SHA]}
	}
	payload := s.pushPayload(p, "tag_push", "refs/tags/"+spec.Tag, before, after, checkout, message, commits, spec.User)
	hooks := selectHooks(p.hooks, func(h Hook) bool { return h.TagPushEvents })
	s.mu.Unlock()
	return s.deliver(ctx, hooks, "Tag Push Hook", payload), nil
}

// OpenMergeRequest registers a merge request and delivers a Merge Request Hook with action open.
func (s *Server) OpenMergeRequest(ctx context.Context, projectID int64, mr MergeRequest, user string) (int64, []Delivery, error) {
	s.mu.Lock()
	if mr.Author.ID == 0 {
		mr.Author = s.hookUser(user)
	}
	iid, err := s.addMergeRequest(projectID, mr)
	s.mu.Unlock()
	if err != nil {
		return 0, nil, err
	}
	d, err := s.MergeRequestEvent(ctx, projectID, iid, "open", "", user)
	return iid, d, err
}

// findMergeRequest finds a project's merge request by iid; s.mu must be held.
func (s *Server) findMergeRequest(projectID, iid int64) (*project, *MergeRequest, error) {
	p := s.projects[projectID]
	if p == nil || p.mergeRequests[iid] == nil {
		return nil, nil, fmt.Errorf("project %d has no merge request !%d", projectID, iid)
	}
	return p, p.mergeRequests[iid], nil
}

// UpdateMergeRequest moves a merge request's head to sha and delivers action update with oldrev.
func (s *Server) UpdateMergeRequest(ctx context.Context, projectID, iid int64, sha, user string) ([]Delivery, error) {
	s.mu.Lock()
	_, mr, err := s.findMergeRequest(projectID, iid)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	oldrev := mr.SHA
	mr.SHA = sha
	s.mu.Unlock()
	return s.MergeRequestEvent(ctx, projectID, iid, "update", oldrev, user)
}

// MergeRequestEvent delivers a Merge Request Hook for an existing merge request. action is one of
// GitLab's (open, reopen, update, close, merge, approved, …); oldrev is only sent when non-empty.
func (s *Server) MergeRequestEvent(ctx context.Context, projectID, iid int64, action, oldrev, user string) ([]Delivery, error) {
	s.mu.Lock()
	p, mr, err := s.findMergeRequest(projectID, iid)
	if err != nil {
		s.mu.Unlock()
		return nil, err
	}
	switch action {
	case "close":
		mr.State = "closed"
	case "merge":
		mr.State = "merged"
	case "reopen":
		mr.State = "opened"
	}
	payload := s.mergeRequestPayload(p, mr, action, oldrev, user)
	hooks := selectHooks(p.hooks, func(h Hook) bool { return h.MergeRequestsEvents })
	s.mu.Unlock()
	return s.deliver(ctx, hooks, "Merge Request Hook", payload), nil
}

// Redeliver sends a delivery again the way GitLab's "Resend Request" does: same body and
// Idempotency-Key, a new X-Gitlab-Webhook-UUID, a fresh signature.
func (s *Server) Redeliver(ctx context.Context, d Delivery) Delivery {
	h := d.Header.Clone()
	h.Set("X-Gitlab-Webhook-UUID", newUUID())
	return s.send(ctx, d.hook, d.Event, h, d.Body)
}

func selectHooks(hooks []Hook, want func(Hook) bool) []Hook {
	var out []Hook
	for _, h := range hooks {
		if want(h) {
			out = append(out, h)
		}
	}
	return out
}

func (s *Server) deliver(ctx context.Context, hooks []Hook, event string, payload map[string]any) []Delivery {
	body, _ := json.Marshal(payload)
	eventUUID := newUUID()
	out := make([]Delivery, 0, len(hooks))
	for _, h := range hooks {
		header := http.Header{}
		header.Set("Content-Type", "application/json")
		header.Set("User-Agent", UserAgent)
		header.Set("Idempotency-Key", newUUID())
		header.Set("X-Gitlab-Event", event)
		header.Set("X-Gitlab-Webhook-UUID", newUUID())
		header.Set("X-Gitlab-Instance", s.URL)
		header.Set("X-Gitlab-Event-UUID", eventUUID)
		out = append(out, s.send(ctx, h, event, header, body))
	}
	return out
}

func (s *Server) send(ctx context.Context, h Hook, event string, header http.Header, body []byte) Delivery {
	if h.Token != "" {
		header.Set("X-Gitlab-Token", strings.NewReplacer("\n", "", "\r", "").Replace(h.Token))
	}
	if h.SigningToken != "" {
		id := header.Get("Idempotency-Key")
		ts := strconv.FormatInt(s.now().Unix(), 10)
		header.Set("webhook-id", id)
		header.Set("webhook-timestamp", ts)
		header.Set("webhook-signature", Sign(h.SigningToken, id, ts, body))
	}
	d := Delivery{HookURL: h.URL, Event: event, Header: header, Body: body, hook: h}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, h.URL, bytes.NewReader(body))
	if err != nil {
		d.Err = err
		return d
	}
	req.Header = header.Clone()
	resp, err := s.HookClient.Do(req)
	if err != nil {
		d.Err = err
		return d
	}
	defer func() { _ = resp.Body.Close() }()
	d.Status = resp.StatusCode
	// GitLab keeps 8 KB of the answer.
	d.Response, _ = io.ReadAll(io.LimitReader(resp.Body, 8<<10))
	return d
}

// Sign computes a Standard Webhooks signature header value ("v1,<base64>") for a signing token
// "whsec_<base64 key>": HMAC-SHA256 with the decoded key over "<id>.<timestamp>.<body>".
func Sign(signingToken, id, timestamp string, body []byte) string {
	key, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(signingToken, "whsec_"))
	if err != nil {
		key = []byte(signingToken)
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// NewSigningToken returns a fresh whsec_ signing token.
func NewSigningToken() string {
	key := make([]byte, 32)
	_, _ = rand.Read(key)
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

func newUUID() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:])
}

func (s *Server) hookUser(username string) User {
	for _, u := range s.users {
		if u.Username == username {
			return *u
		}
	}
	return User{ID: 1, Username: username, Name: username, State: "active"}
}

func (s *Server) hookProject(p *project) map[string]any {
	parts := strings.Split(p.PathWithNamespace, "/")
	namespace := parts[0]
	if len(parts) > 1 {
		// GitLab sends the leaf group's display name, not the path.
		namespace = parts[len(parts)-2]
	}
	web := s.URL + "/" + p.PathWithNamespace
	ssh := "git@" + s.Host() + ":" + p.PathWithNamespace + ".git"
	return map[string]any{
		"id":                  p.ID,
		"name":                parts[len(parts)-1],
		"description":         "",
		"web_url":             web,
		"avatar_url":          nil,
		"git_ssh_url":         ssh,
		"git_http_url":        web + ".git",
		"namespace":           namespace,
		"visibility_level":    0,
		"path_with_namespace": p.PathWithNamespace,
		"default_branch":      p.DefaultBranch,
		"ci_config_path":      nil,
		"homepage":            web,
		"url":                 ssh,
		"ssh_url":             ssh,
		"http_url":            web + ".git",
	}
}

func (s *Server) hookRepository(p *project) map[string]any {
	web := s.URL + "/" + p.PathWithNamespace
	parts := strings.Split(p.PathWithNamespace, "/")
	return map[string]any{
		"name":             parts[len(parts)-1],
		"url":              "git@" + s.Host() + ":" + p.PathWithNamespace + ".git",
		"description":      "",
		"homepage":         web,
		"git_http_url":     web + ".git",
		"git_ssh_url":      "git@" + s.Host() + ":" + p.PathWithNamespace + ".git",
		"visibility_level": 0,
	}
}

func hookCommit(c *Commit) map[string]any {
	return map[string]any{
		"id":        c.ID,
		"message":   c.Message,
		"title":     c.Title,
		"timestamp": c.AuthoredDate.Format(time.RFC3339),
		"url":       c.WebURL,
		"author":    map[string]string{"name": c.AuthorName, "email": c.AuthorEmail},
		"added":     []string{},
		"modified":  []string{},
		"removed":   []string{},
	}
}

// pushPayload follows lib/gitlab/data_builder/push.rb: commits holds the newest 20, oldest first;
// total_commits_count the real number.
func (s *Server) pushPayload(p *project, kind, ref, before, after string, checkout, message any, commits []*Commit, username string) map[string]any {
	u := s.hookUser(username)
	list := make([]map[string]any, 0, 20)
	for _, c := range commits[max(0, len(commits)-20):] {
		list = append(list, hookCommit(c))
	}
	return map[string]any{
		"object_kind":         kind,
		"event_name":          kind,
		"before":              before,
		"after":               after,
		"ref":                 ref,
		"ref_protected":       false,
		"checkout_sha":        checkout,
		"message":             message,
		"user_id":             u.ID,
		"user_name":           u.Name,
		"user_username":       u.Username,
		"user_email":          "",
		"user_avatar":         nil,
		"project_id":          p.ID,
		"project":             s.hookProject(p),
		"commits":             list,
		"total_commits_count": len(commits),
		"push_options":        map[string]any{},
		"repository":          s.hookRepository(p),
	}
}

func (s *Server) mergeRequestPayload(p *project, mr *MergeRequest, action, oldrev, username string) map[string]any {
	u := s.hookUser(username)
	source := p
	if sp := s.projects[mr.SourceProjectID]; sp != nil {
		source = sp
	}
	attrs := map[string]any{
		"id":                    mr.ID,
		"iid":                   mr.IID,
		"title":                 mr.Title,
		"state":                 mr.State,
		"action":                action,
		"source_branch":         mr.SourceBranch,
		"target_branch":         mr.TargetBranch,
		"source_project_id":     mr.SourceProjectID,
		"target_project_id":     mr.TargetProjectID,
		"author_id":             mr.Author.ID,
		"merge_status":          "can_be_merged",
		"detailed_merge_status": "mergeable",
		"draft":                 false,
		"url":                   mr.WebURL,
		"source":                s.hookProject(source),
		"target":                s.hookProject(p),
		"system":                false,
	}
	if c := source.commits[mr.SHA]; c != nil {
		attrs["last_commit"] = hookCommit(c)
	} else {
		attrs["last_commit"] = map[string]any{"id": mr.SHA}
	}
	if oldrev != "" {
		attrs["oldrev"] = oldrev
	}
	return map[string]any{
		"object_kind": "merge_request",
		"event_type":  "merge_request",
		"user": map[string]any{
			"id": u.ID, "name": u.Name, "username": u.Username, "avatar_url": nil, "email": "[REDACTED]",
		},
		"project":           s.hookProject(p),
		"object_attributes": attrs,
		"labels":            []any{},
		"changes":           map[string]any{},
		"repository":        s.hookRepository(p),
	}
}
