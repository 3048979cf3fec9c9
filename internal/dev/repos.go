package dev

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/gitserver"
)

// skippedNames are left out when an example app is imported: build output and caches that may
// lie around in a checkout but are not part of the app.
var skippedNames = map[string]bool{".git": true, "__pycache__": true, ".pytest_cache": true, "bin": true, ".venv": true}

// exampleFiles reads an example app's files (path → content) and lists the executable ones.
func exampleFiles(dir string) (map[string]string, []string, error) {
	files := map[string]string{}
	var executable []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if skippedNames[d.Name()] && p != dir {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(d.Name(), ".pyc") {
			return nil
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(p) //nolint:gosec // G122: the example apps of this checkout, read by their owner
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		files[rel] = string(data)
		if info.Mode()&0o111 != 0 {
			executable = append(executable, rel)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("failed to read the example app in %s: %w", dir, err)
	}
	if len(files) == 0 {
		return nil, nil, fmt.Errorf("the example app in %s has no files", dir)
	}
	return files, executable, nil
}

// importExample creates the repository of an example app with one commit of its files, unless the
// repository exists already (a later start keeps what was pushed since). It reports whether it
// created the repository.
func importExample(git *gitserver.Server, repo, dir string) (bool, error) {
	if _, err := os.Stat(filepath.Join(git.Dir(), filepath.FromSlash(repo)+".git")); err == nil {
		return false, nil
	}
	files, executable, err := exampleFiles(dir)
	if err != nil {
		return false, err
	}
	if err := git.CreateRepo(repo, gitserver.RepoOptions{}); err != nil {
		return false, err
	}
	_, err = git.Commit(repo, gitserver.Commit{
		Branch:     "main",
		Files:      files,
		Executable: executable,
		Message:    "Import " + path.Base(repo) + " from Ferry's examples",
		Author:     "Ferry <ferry@localhost>",
	})
	return err == nil, err
}

// mirror keeps the fake GitLab's view of the git server's repositories: the commits and branch
// heads of each project, and a webhook delivery for every push, the way GitLab fires its Push Hook
// after a `git push`.
type mirror struct {
	git    *gitserver.Server
	gitlab *gitlabsim.Server
	// pusher is the GitLab user pushes are attributed to (the git server knows who pushed only as
	// an authenticated account, and only one account may push: the developer's).
	pusher string
	log    func(format string, args ...any)

	mu       sync.Mutex
	projects map[string]int64             // repository → GitLab project ID
	heads    map[string]map[string]string // repository → ref → SHA (refs/heads/…, refs/tags/…)
	known    map[string]map[string]bool   // repository → commits the fake GitLab has
}

func newMirror(git *gitserver.Server, gl *gitlabsim.Server, pusher string, log func(string, ...any)) *mirror {
	return &mirror{
		git: git, gitlab: gl, pusher: pusher, log: log,
		projects: map[string]int64{}, heads: map[string]map[string]string{}, known: map[string]map[string]bool{},
	}
}

// connect lets what people do through the fake GitLab's API reach the git server and the log: a
// merge (ferry dev mr merge) moves the repository's branch, and the hooks GitLab sends for merge
// requests opened and comments written through the API are logged as pushes are.
func (m *mirror) connect() {
	m.gitlab.MoveBranch = m.moveBranch
	m.gitlab.OnAPIDelivery = func(d gitlabsim.Delivery) {
		m.log("GitLab API → GitLab %s → receiver %s", d.Event, describeDelivery(d))
	}
}

// add registers a repository as a GitLab project and copies its history and refs without sending
// webhooks: what was pushed before this start was delivered then.
func (m *mirror) add(repo string, projectID int64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.gitlab.AddProject(gitlabsim.Project{ID: projectID, PathWithNamespace: repo, DefaultBranch: "main"})
	m.projects[repo] = projectID
	m.known[repo] = map[string]bool{}
	refs, err := m.refs(repo)
	if err != nil {
		return err
	}
	if err := m.importCommits(repo, refs); err != nil {
		return err
	}
	for ref, sha := range refs {
		if branch, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
			if err := m.gitlab.SetBranch(projectID, branch, sha); err != nil {
				return err
			}
		}
	}
	m.heads[repo] = refs
	return nil
}

// onPush is the git server's push callback: for every ref that moved it copies the new commits
// and delivers GitLab's Push Hook or Tag Push Hook, then logs what the receiver answered.
func (m *mirror) onPush(repo string) { m.onPushAs(repo, m.pusher) }

// moveBranch is the fake GitLab's MoveBranch: a merge request merged through GitLab's API moves
// the target branch of the git server's repository (from the head the merge was checked against,
// so that a push in between is not overwritten), and the push is reported as the merging user's,
// as GitLab does for the push a merge makes.
func (m *mirror) moveBranch(_ context.Context, projectID int64, branch, from, to, user string) {
	repo := m.repoOf(projectID)
	if repo == "" {
		m.log("merge into %s of GitLab project %d: no repository of ferry dev is that project", branch, projectID)
		return
	}
	if _, err := m.gitCmd(repo, "update-ref", "refs/heads/"+branch, to, from); err != nil {
		m.log("merge into %s %s: %v", repo, branch, err)
		return
	}
	m.onPushAs(repo, user)
}

func (m *mirror) repoOf(projectID int64) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for repo, id := range m.projects {
		if id == projectID {
			return repo
		}
	}
	return ""
}

// onPushAs reports a push to repo by user.
func (m *mirror) onPushAs(repo, user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	id, ok := m.projects[repo]
	if !ok {
		return
	}
	refs, err := m.refs(repo)
	if err != nil {
		m.log("git push to %s: %v", repo, err)
		return
	}
	if err := m.importCommits(repo, refs); err != nil {
		m.log("git push to %s: %v", repo, err)
		return
	}
	old := m.heads[repo]
	names := make([]string, 0, len(refs)+len(old))
	for ref := range refs {
		names = append(names, ref)
	}
	for ref := range old {
		if _, still := refs[ref]; !still {
			names = append(names, ref)
		}
	}
	sort.Strings(names)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, ref := range names {
		sha := refs[ref]
		if old[ref] == sha {
			continue
		}
		var deliveries []gitlabsim.Delivery
		if branch, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
			deliveries, err = m.gitlab.Push(ctx, id, gitlabsim.PushSpec{Branch: branch, To: sha, User: user})
		} else if tag, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
			deliveries, err = m.gitlab.PushTag(ctx, id, gitlabsim.TagSpec{Tag: tag, SHA: sha, User: user})
		} else {
			continue
		}
		if err != nil {
			m.log("git push to %s %s: %v", repo, ref, err)
			continue
		}
		for _, d := range deliveries {
			m.log("%s %s %s → GitLab %s → receiver %s", repo, shortRef(ref), short(sha), d.Event, describeDelivery(d))
		}
	}
	m.heads[repo] = refs
}

// describeDelivery says what the receiver answered, without the request's headers (the secret
// token is one of them).
func describeDelivery(d gitlabsim.Delivery) string {
	if d.Err != nil {
		return "unreachable: " + d.Err.Error()
	}
	var answer struct {
		Result string   `json:"result"`
		Builds []string `json:"builds"`
		Reason string   `json:"reason"`
		Error  string   `json:"error"`
	}
	_ = json.Unmarshal(d.Response, &answer)
	s := fmt.Sprintf("%d %s", d.Status, answer.Result)
	if len(answer.Builds) > 0 {
		s += ": Build " + strings.Join(answer.Builds, ", ")
	}
	if answer.Reason != "" {
		s += " (" + answer.Reason + ")"
	}
	if answer.Error != "" {
		s += " (" + answer.Error + ")"
	}
	return s
}

// refs lists a repository's branches and tags with the commits they point at (annotated tags
// peeled).
func (m *mirror) refs(repo string) (map[string]string, error) {
	out, err := m.gitCmd(repo, "for-each-ref", "--format=%(refname) %(objectname) %(*objectname)", "refs/heads", "refs/tags")
	if err != nil {
		return nil, err
	}
	refs := map[string]string{}
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		switch len(f) {
		case 2:
			refs[f[0]] = f[1]
		case 3:
			refs[f[0]] = f[2]
		}
	}
	return refs, nil
}

// commitFormat separates a commit's fields with NUL and commits with RS.
const commitFormat = "%H%x00%P%x00%an%x00%ae%x00%aI%x00%cn%x00%ce%x00%cI%x00%B%x1e"

// importCommits copies the commits reachable from refs that the fake GitLab does not have yet,
// parents first.
func (m *mirror) importCommits(repo string, refs map[string]string) error {
	if len(refs) == 0 {
		return nil
	}
	args := []string{"log", "--reverse", "--topo-order", "--format=" + commitFormat}
	seen := map[string]bool{}
	for _, sha := range refs {
		if !seen[sha] {
			args = append(args, sha)
			seen[sha] = true
		}
	}
	for sha := range m.known[repo] {
		args = append(args, "^"+sha)
	}
	out, err := m.gitCmd(repo, args...)
	if err != nil {
		return err
	}
	id := m.projects[repo]
	for _, rec := range strings.Split(out, "\x1e") {
		rec = strings.TrimLeft(rec, "\n")
		if rec == "" {
			continue
		}
		f := strings.SplitN(rec, "\x00", 9)
		if len(f) != 9 {
			return fmt.Errorf("failed to read the history of %s: unexpected git log output", repo)
		}
		authored, _ := time.Parse(time.RFC3339, f[4])
		committed, _ := time.Parse(time.RFC3339, f[7])
		var parents []string
		if f[1] != "" {
			parents = strings.Fields(f[1])
		}
		if _, err := m.gitlab.AddCommit(id, gitlabsim.Commit{
			ID: f[0], ParentIDs: parents, Message: strings.TrimRight(f[8], "\n"),
			AuthorName: f[2], AuthorEmail: f[3], AuthoredDate: authored,
			CommitterName: f[5], CommitterEmail: f[6], CommittedDate: committed,
		}); err != nil {
			return fmt.Errorf("failed to copy commit %s of %s to GitLab: %w", short(f[0]), repo, err)
		}
		m.known[repo][f[0]] = true
	}
	return nil
}

// gitCmd runs git on a bare repository of the git server, reading no configuration of this
// machine's user.
func (m *mirror) gitCmd(repo string, args ...string) (string, error) {
	dir := filepath.Join(m.git.Dir(), filepath.FromSlash(repo)+".git")
	cmd := exec.Command("git", append([]string{"--git-dir=" + dir}, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "GIT_CONFIG_NOSYSTEM=1", "GIT_CONFIG_GLOBAL=/dev/null", "HOME=" + os.TempDir(), "LANG=C"}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("failed to run git %s in %s: %w: %s", args[0], repo, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

func short(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	return sha
}

func shortRef(ref string) string {
	if b, ok := strings.CutPrefix(ref, "refs/heads/"); ok {
		return b
	}
	if t, ok := strings.CutPrefix(ref, "refs/tags/"); ok {
		return "tag " + t
	}
	return ref
}
