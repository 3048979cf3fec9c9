package dev

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// What `ferry dev mr` does as people do it in GitLab: a developer pushes a branch and opens a
// merge request, people comment on it (Ferry's commands: /retest, /cancel, /ok-to-test), and a
// maintainer merges it. Everything goes through the fake GitLab's REST API, which sends GitLab's
// Merge Request Hook, Note Hook and, for the merge, the Push Hook of the target branch.

// MROptions configure the merge request commands.
type MROptions struct {
	// DataDir is the running local environment's data directory. Default DefaultDataDir.
	DataDir string
	// Project is the example app.
	Project string
	// As is the GitLab user who acts: default the developer (bob) to open and comment, the
	// release manager (alice, a maintainer: main is protected) to merge.
	As string
	// Out receives what happened and what to run next. Default os.Stdout.
	Out io.Writer
	// Command is how the output names the ferry binary. Default "ferry".
	Command string
	// Timeout bounds the GitLab requests. Default 1m.
	Timeout time.Duration
}

// MergeRequest is what the commands print of a merge request.
type MergeRequest struct {
	IID          int64  `json:"iid"`
	Title        string `json:"title"`
	State        string `json:"state"`
	SourceBranch string `json:"source_branch"`
	TargetBranch string `json:"target_branch"`
	SHA          string `json:"sha"`
	WebURL       string `json:"web_url"`
	// PreviewURL is where the preview answers once it is ready (real nodes, a project with
	// previews); not GitLab's.
	PreviewURL string `json:"-"`
}

// merger is who merges by default: main is protected, so a maintainer.
const merger = "alice"

func (o *MROptions) defaults(as string) {
	if o.DataDir == "" {
		o.DataDir = DefaultDataDir
	}
	if o.Out == nil {
		o.Out = os.Stdout
	}
	if o.Command == "" {
		o.Command = "ferry"
	}
	if o.Timeout <= 0 {
		o.Timeout = time.Minute
	}
	if o.As == "" {
		o.As = as
	}
}

// load is what every command reads first: the endpoints, the project and the acting user's
// token.
func (o *MROptions) load() (*Endpoints, ProjectEndpoint, string, error) {
	ep, err := ReadEndpoints(o.DataDir)
	if err != nil {
		return nil, ProjectEndpoint{}, "", err
	}
	proj, err := ep.project(o.Project)
	if err != nil {
		return nil, ProjectEndpoint{}, "", err
	}
	u, ok := ep.Users[o.As]
	if !ok || u.GitLabToken == "" {
		return nil, ProjectEndpoint{}, "", fmt.Errorf("no GitLab user %q in ferry dev (users: %s)", o.As, strings.Join(userNames(ep), ", "))
	}
	return ep, proj, u.GitLabToken, nil
}

func userNames(ep *Endpoints) []string {
	names := make([]string, 0, len(People))
	for _, p := range People {
		if _, ok := ep.Users[p.Name]; ok {
			names = append(names, p.Name)
		}
	}
	return names
}

// OpenMergeRequest commits a change on a new branch as the developer, pushes the branch and opens
// a merge request from it into main through GitLab's API. GitLab sends the Merge Request Hook:
// Ferry builds the head and, for a project with previews, deploys it to the merge request's
// preview namespace.
func OpenMergeRequest(ctx context.Context, opts MROptions, message string) (*MergeRequest, error) {
	opts.defaults(developer)
	ep, proj, token, err := opts.load()
	if err != nil {
		return nil, err
	}
	if message == "" {
		message = "Change " + opts.Project + " (ferry dev mr open)"
	}
	auth, err := ep.developerGitAuth()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	branch := "change-" + time.Now().UTC().Format("20060102-150405.000")
	branch = strings.ReplaceAll(branch, ".", "-")
	sha, err := commitAndPush(ctx, proj.RepoURL, branch, message, "", auth)
	if err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Out, "Pushed %s to %s (branch %s) as %s: %q.\n", short(sha), proj.GitLabProject, branch, developer, message)
	mr := &MergeRequest{}
	body := map[string]string{"source_branch": branch, "target_branch": "main", "title": message}
	if err := gitlabCall(ctx, ep, token, http.MethodPost, projectPath(proj)+"/merge_requests", body, mr); err != nil {
		return nil, fmt.Errorf("failed to open a merge request of %s into main: %w", branch, err)
	}
	mr.PreviewURL = proj.PreviewURL(mr.IID)
	fmt.Fprintf(opts.Out, "Opened merge request !%d as %s: %s\n", mr.IID, opts.As, mr.WebURL)
	fmt.Fprintf(opts.Out, "GitLab sent its Merge Request Hook; Ferry builds %s.\n", short(mr.SHA))
	switch {
	case mr.PreviewURL != "":
		fmt.Fprintf(opts.Out, "Its preview answers, once the Build succeeded and the preview is ready, at %s\n", mr.PreviewURL)
	case proj.Preview:
		fmt.Fprintf(opts.Out, "Its preview is deployed once the Build succeeded (nodes are simulated: no URL to open).\n")
	}
	kubeconfig := rel(ep.Kubeconfig)
	fmt.Fprintf(opts.Out, "Next:\n")
	fmt.Fprintf(opts.Out, "  %s get builds --kubeconfig %s\n", opts.Command, kubeconfig)
	if proj.Preview {
		fmt.Fprintf(opts.Out, "  kubectl get previews --kubeconfig %s\n", kubeconfig)
	}
	fmt.Fprintf(opts.Out, "  %s dev mr comment %s %d /retest%s   # Ferry answers on the merge request\n", opts.Command, opts.Project, mr.IID, dataDirFlag(opts.DataDir))
	fmt.Fprintf(opts.Out, "  %s dev mr merge %s %d%s           # as %s, a maintainer: main moves, Ferry builds and releases it\n", opts.Command, opts.Project, mr.IID, dataDirFlag(opts.DataDir), merger)
	return mr, nil
}

// CommentMergeRequest writes a comment on a merge request through GitLab's API; GitLab sends the
// Note Hook, and Ferry runs the commands in it and replies.
func CommentMergeRequest(ctx context.Context, opts MROptions, iid int64, text string) error {
	opts.defaults(developer)
	if strings.TrimSpace(text) == "" {
		return fmt.Errorf("the comment on !%d is empty: say what to comment, for example /retest", iid)
	}
	ep, proj, token, err := opts.load()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var note struct {
		ID int64 `json:"id"`
	}
	path := fmt.Sprintf("%s/merge_requests/%d/notes", projectPath(proj), iid)
	if err := gitlabCall(ctx, ep, token, http.MethodPost, path, map[string]string{"body": text}, &note); err != nil {
		return fmt.Errorf("failed to comment on !%d of %s: %w", iid, proj.GitLabProject, err)
	}
	fmt.Fprintf(opts.Out, "Commented on !%d as %s (note %d): %q\n", iid, opts.As, note.ID, text)
	fmt.Fprintf(opts.Out, "GitLab sent its Note Hook; Ferry's reply comes as a note on the merge request:\n")
	fmt.Fprintf(opts.Out, "  curl -H \"PRIVATE-TOKEN: …\" %s/api/v4%s\n", ep.GitLabURL, path)
	return nil
}

// MergeMergeRequest merges a merge request through GitLab's API, as a maintainer by default: the
// git server's main moves to its head, GitLab sends the Push Hook of main (Ferry builds and
// releases it) and the Merge Request Hook "merge" (Ferry removes the preview).
func MergeMergeRequest(ctx context.Context, opts MROptions, iid int64) (*MergeRequest, error) {
	opts.defaults(merger)
	ep, proj, token, err := opts.load()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	mr := &MergeRequest{}
	path := fmt.Sprintf("%s/merge_requests/%d/merge", projectPath(proj), iid)
	if err := gitlabCall(ctx, ep, token, http.MethodPut, path, nil, mr); err != nil {
		return nil, fmt.Errorf("failed to merge !%d of %s as %s: %w", iid, proj.GitLabProject, opts.As, err)
	}
	fmt.Fprintf(opts.Out, "Merged !%d into %s as %s: %s is at %s.\n", iid, mr.TargetBranch, opts.As, mr.TargetBranch, short(mr.SHA))
	fmt.Fprintf(opts.Out, "GitLab sends the Push Hook of %s (Ferry builds it and releases it to dev) and the Merge Request Hook (Ferry removes the preview).\n", mr.TargetBranch)
	fmt.Fprintf(opts.Out, "  %s get releases --kubeconfig %s\n", opts.Command, rel(ep.Kubeconfig))
	return mr, nil
}

// projectPath is the API path of a project.
func projectPath(p ProjectEndpoint) string {
	return "/projects/" + strconv.FormatInt(p.GitLabProjectID, 10)
}

func dataDirFlag(dir string) string {
	if dir == "" || dir == DefaultDataDir {
		return ""
	}
	return " --data-dir " + dir
}

// gitlabCall sends a request to the fake GitLab's REST API and decodes the answer into out. An
// answer other than 2xx is an error with GitLab's message.
func gitlabCall(ctx context.Context, ep *Endpoints, token, method, path string, body, out any) error {
	var reader io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			return err
		}
		reader = bytes.NewReader(data)
	}
	u, err := url.JoinPath(ep.GitLabURL, "api", "v4")
	if err != nil {
		return fmt.Errorf("GitLab URL %q: %w", ep.GitLabURL, err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u+path, reader)
	if err != nil {
		return err
	}
	req.Header.Set("PRIVATE-TOKEN", token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GitLab does not answer (is ferry dev running?): %w", err)
	}
	defer func() { _ = resp.Body.Close() }()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("GitLab answered %s %s: %s", method, path, strings.TrimSpace(resp.Status+" "+string(data)))
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(data, out); err != nil {
		return fmt.Errorf("failed to read GitLab's answer to %s %s: %w", method, path, err)
	}
	return nil
}
