// Package gitserver is a git server for tests and `ferry dev`: Debian's `git http-backend` behind
// net/http/cgi on loopback, serving real smart-HTTP clones and pushes of bare repositories, with
// optional basic authentication for private repositories. Helpers create repositories, commits and
// tags without a working tree.
//
//	srv, err := gitserver.Start(gitserver.Options{Users: map[string]string{"ci": "s3cret"}})
//	defer srv.Close()
//	_ = srv.CreateRepo("team/app", gitserver.RepoOptions{Private: true})
//	sha, _ := srv.Commit("team/app", gitserver.Commit{Branch: "main", Files: map[string]string{".ferry.yaml": "stack: debian-12\n"}})
//	url := srv.RepoURL("team/app") // http://127.0.0.1:PORT/team/app.git
//
// Like GitLab, repositories allow fetching any reachable commit by SHA
// (uploadpack.allowReachableSHA1InWant), so a Build can fetch a commit that is not a branch head.
package gitserver

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/cgi" //nolint:gosec // G504: httpoxy is fixed since Go 1.6.3; the CGI program is git http-backend
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"
)

// Options configure a Server.
type Options struct {
	// Dir holds the bare repositories, one per name (Dir/team/app.git). A temporary directory is
	// used when empty and removed by Close; a given Dir is kept, so repositories survive a restart.
	Dir string

	// Addr is the address to listen on. Default 127.0.0.1:0 (a free loopback port).
	Addr string

	// Users are the accounts basic authentication accepts, name to password. Private repositories
	// need one to fetch; every push needs one unless AnonymousPush is set.
	Users map[string]string

	// AnonymousPush lets unauthenticated clients push to public repositories (a laptop's `ferry dev`).
	AnonymousPush bool

	// OnPush is called, after the push completed, with the repository's name whenever a push to it
	// succeeded.
	OnPush func(repo string)
}

// RepoOptions configure a repository.
type RepoOptions struct {
	// Private repositories can only be fetched with a user's credentials.
	Private bool

	// DefaultBranch is HEAD's branch. Default main.
	DefaultBranch string
}

// Server serves the repositories under its directory over smart HTTP.
type Server struct {
	opts     Options
	dir      string
	tempDir  bool
	home     string
	backend  string
	listener net.Listener
	http     *http.Server
	done     chan struct{}

	mu    sync.Mutex
	users map[string]string
}

var repoNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]*(/[a-z0-9][a-z0-9._-]*)*$`)

// privateMarker is a file in a private repository's directory.
const privateMarker = "ferry-private"

// Start creates the directory, finds `git http-backend` and serves until Close.
func Start(opts Options) (*Server, error) {
	gitPath, err := exec.LookPath("git")
	if err != nil {
		return nil, fmt.Errorf("failed to find git: %w", err)
	}
	out, err := exec.Command(gitPath, "--exec-path").Output()
	if err != nil {
		return nil, fmt.Errorf("failed to run git --exec-path: %w", err)
	}
	backend := filepath.Join(strings.TrimSpace(string(out)), "git-http-backend")
	if _, err := os.Stat(backend); err != nil {
		return nil, fmt.Errorf("failed to find git http-backend: %w", err)
	}
	s := &Server{opts: opts, dir: opts.Dir, backend: backend, done: make(chan struct{}), users: map[string]string{}}
	for name, password := range opts.Users {
		s.users[name] = password
	}
	if s.dir == "" {
		if s.dir, err = os.MkdirTemp("", "ferry-git-"); err != nil {
			return nil, err
		}
		s.tempDir = true
	} else if err := os.MkdirAll(s.dir, 0o750); err != nil {
		return nil, err
	}
	// git reads no user or system configuration from this machine: an empty HOME of its own.
	if s.home, err = os.MkdirTemp("", "ferry-git-home-"); err != nil {
		return nil, err
	}
	addr := opts.Addr
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	if s.listener, err = net.Listen("tcp", addr); err != nil {
		_ = s.removeDirs()
		return nil, fmt.Errorf("failed to listen on %s: %w", addr, err)
	}
	s.http = &http.Server{Handler: s, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(s.done)
		_ = s.http.Serve(s.listener)
	}()
	return s, nil
}

// URL is the server's base URL, http://127.0.0.1:PORT.
func (s *Server) URL() string { return "http://" + s.listener.Addr().String() }

// RepoURL is the clone URL of a repository.
func (s *Server) RepoURL(name string) string { return s.URL() + "/" + name + ".git" }

// Dir is where the bare repositories are.
func (s *Server) Dir() string { return s.dir }

// AddUser adds or changes an account.
func (s *Server) AddUser(name, password string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.users[name] = password
}

// Close stops serving and, when the directory was temporary, removes it.
func (s *Server) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := s.http.Shutdown(ctx)
	<-s.done
	return errors.Join(err, s.removeDirs())
}

func (s *Server) removeDirs() error {
	err := os.RemoveAll(s.home)
	if s.tempDir {
		err = errors.Join(err, os.RemoveAll(s.dir))
	}
	return err
}

// CreateRepo creates an empty bare repository. Names are lower-case path segments (team/app).
func (s *Server) CreateRepo(name string, opts RepoOptions) error {
	if !repoNameRE.MatchString(name) || strings.Contains(name, "..") {
		return fmt.Errorf("invalid repository name %q: lower-case letters, digits, '.', '_' and '-' in '/'-separated segments", name)
	}
	dir := s.repoDir(name)
	if _, err := os.Stat(dir); err == nil {
		return fmt.Errorf("repository %s already exists", name)
	}
	branch := opts.DefaultBranch
	if branch == "" {
		branch = "main"
	}
	if _, err := s.git("", nil, "init", "--quiet", "--bare", "--initial-branch="+branch, dir); err != nil {
		return err
	}
	// What GitLab allows too: fetching any reachable commit by its SHA, and partial clones.
	for _, kv := range [][2]string{{"uploadpack.allowReachableSHA1InWant", "true"}, {"uploadpack.allowFilter", "true"}} {
		if _, err := s.git(dir, nil, "config", kv[0], kv[1]); err != nil {
			return err
		}
	}
	if opts.Private {
		return os.WriteFile(filepath.Join(dir, privateMarker), nil, 0o644)
	}
	return nil
}

// Repos lists the repositories' names.
func (s *Server) Repos() ([]string, error) {
	var names []string
	err := filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && strings.HasSuffix(p, ".git") {
			rel, _ := filepath.Rel(s.dir, p)
			names = append(names, strings.TrimSuffix(filepath.ToSlash(rel), ".git"))
			return filepath.SkipDir
		}
		return nil
	})
	sort.Strings(names)
	return names, err
}

func (s *Server) repoDir(name string) string {
	return filepath.Join(s.dir, filepath.FromSlash(name)+".git")
}

// Commit describes a commit made directly into a bare repository.
type Commit struct {
	// Branch receives the commit. Default main.
	Branch string
	// Parent is the commit's parent; default the branch's head (none for a new branch). "-" makes a
	// root commit.
	Parent string
	// Dir, when set, is a directory whose files (except .git) replace the parent's tree.
	Dir string
	// Files are written on top (path to content).
	Files map[string]string
	// Executable lists paths of Files that get mode 0755.
	Executable []string
	// Delete lists paths removed from the tree.
	Delete []string
	// Message is the commit message. Default "Commit".
	Message string
	// Author is "Name <email>". Default "Ferry Test <test@ferry.dev>".
	Author string
	// Time is the author and committer date. Default now.
	Time time.Time
}

var authorRE = regexp.MustCompile(`^([^<>]+?)\s*<([^<>]*)>$`)

// Commit writes a commit into a repository, moves the branch to it and returns its SHA.
func (s *Server) Commit(repo string, c Commit) (string, error) {
	dir := s.repoDir(repo)
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("repository %s does not exist", repo)
	}
	if c.Branch == "" {
		c.Branch = "main"
	}
	if c.Message == "" {
		c.Message = "Commit"
	}
	if c.Author == "" {
		c.Author = "Ferry Test <test@ferry.dev>"
	}
	if c.Time.IsZero() {
		c.Time = time.Now()
	}
	m := authorRE.FindStringSubmatch(c.Author)
	if m == nil {
		return "", fmt.Errorf("author %q must look like Name <email>", c.Author)
	}
	work, err := os.MkdirTemp("", "ferry-git-index-")
	if err != nil {
		return "", err
	}
	defer func() { _ = os.RemoveAll(work) }()
	date := fmt.Sprintf("%d %s", c.Time.Unix(), c.Time.Format("-0700"))
	env := []string{
		"GIT_INDEX_FILE=" + filepath.Join(work, "index"),
		"GIT_AUTHOR_NAME=" + m[1], "GIT_AUTHOR_EMAIL=" + m[2], "GIT_AUTHOR_DATE=" + date,
		"GIT_COMMITTER_NAME=" + m[1], "GIT_COMMITTER_EMAIL=" + m[2], "GIT_COMMITTER_DATE=" + date,
	}
	ref := "refs/heads/" + c.Branch
	parent := c.Parent
	if parent == "" {
		parent, _ = s.git(dir, nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	}
	if parent == "-" {
		parent = ""
	}
	if parent != "" && c.Dir == "" {
		if _, err := s.gitEnv(dir, env, nil, "read-tree", parent); err != nil {
			return "", err
		}
	}
	var info bytes.Buffer
	add := func(p string, content []byte, mode string) error {
		sha, err := s.gitEnv(dir, env, content, "hash-object", "-w", "--stdin")
		if err != nil {
			return err
		}
		fmt.Fprintf(&info, "%s %s\t%s\n", mode, sha, p)
		return nil
	}
	if c.Dir != "" {
		if err := walkFiles(c.Dir, add); err != nil {
			return "", err
		}
	}
	paths := make([]string, 0, len(c.Files))
	for p := range c.Files {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		clean := path.Clean(p)
		if clean != p || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "../") || p == ".." || p == ".git" || strings.HasPrefix(p, ".git/") {
			return "", fmt.Errorf("invalid path %q in a commit", p)
		}
		mode := "100644"
		for _, x := range c.Executable {
			if x == p {
				mode = "100755"
			}
		}
		if err := add(p, []byte(c.Files[p]), mode); err != nil {
			return "", err
		}
	}
	for _, p := range c.Delete {
		fmt.Fprintf(&info, "0 %s\t%s\n", strings.Repeat("0", 40), p)
	}
	if info.Len() > 0 {
		if _, err := s.gitEnv(dir, env, info.Bytes(), "update-index", "--add", "--index-info"); err != nil {
			return "", err
		}
	}
	tree, err := s.gitEnv(dir, env, nil, "write-tree")
	if err != nil {
		return "", err
	}
	args := []string{"commit-tree", tree, "-F", "-"}
	if parent != "" {
		args = append(args, "-p", parent)
	}
	sha, err := s.gitEnv(dir, env, []byte(c.Message+"\n"), args...)
	if err != nil {
		return "", err
	}
	if _, err := s.git(dir, nil, "update-ref", ref, sha); err != nil {
		return "", err
	}
	return sha, nil
}

// CommitSeries writes n commits onto a branch at once, each on top of the one before (the first on
// the branch's head, if it has one), with files(i) written on top of the tree, and returns their
// SHAs in order. One git fast-import makes them all: thousands of commits take seconds, where
// Commit takes several git commands each.
func (s *Server) CommitSeries(repo, branch string, n int, files func(i int) map[string]string) ([]string, error) {
	dir := s.repoDir(repo)
	if _, err := os.Stat(dir); err != nil {
		return nil, fmt.Errorf("repository %s does not exist", repo)
	}
	ref := "refs/heads/" + branch
	head, _ := s.git(dir, nil, "rev-parse", "--verify", "--quiet", ref+"^{commit}")
	var stream bytes.Buffer
	data := func(b string) { fmt.Fprintf(&stream, "data %d\n%s\n", len(b), b) }
	now := time.Now().Unix()
	for i := range n {
		fmt.Fprintf(&stream, "commit %s\nmark :%d\ncommitter Ferry Test <test@ferry.dev> %d +0000\n", ref, i+1, now)
		data(fmt.Sprintf("Commit %d", i+1))
		if i == 0 && head != "" {
			fmt.Fprintf(&stream, "from %s\n", head)
		}
		f := files(i)
		paths := make([]string, 0, len(f))
		for p := range f {
			if clean := path.Clean(p); clean != p || strings.HasPrefix(p, "/") || strings.HasPrefix(p, "../") || p == ".git" || strings.HasPrefix(p, ".git/") || strings.ContainsAny(p, "\n\"") {
				return nil, fmt.Errorf("invalid path %q in a commit", p)
			}
			paths = append(paths, p)
		}
		sort.Strings(paths)
		for _, p := range paths {
			fmt.Fprintf(&stream, "M 100644 inline %s\n", p)
			data(f[p])
		}
	}
	marks, err := os.CreateTemp("", "ferry-git-marks-")
	if err != nil {
		return nil, err
	}
	_ = marks.Close()
	defer func() { _ = os.Remove(marks.Name()) }()
	if _, err := s.git(dir, stream.Bytes(), "fast-import", "--quiet", "--export-marks="+marks.Name()); err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(marks.Name())
	if err != nil {
		return nil, err
	}
	shas := make([]string, n)
	for _, line := range strings.Split(strings.TrimSpace(string(raw)), "\n") {
		var mark int
		var sha string
		if _, err := fmt.Sscanf(line, ":%d %s", &mark, &sha); err != nil || mark < 1 || mark > n {
			return nil, fmt.Errorf("git fast-import wrote an unexpected mark %q", line)
		}
		shas[mark-1] = sha
	}
	return shas, nil
}

// walkFiles adds every regular file under root (except .git) with its mode.
func walkFiles(root string, add func(p string, content []byte, mode string) error) error {
	return filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Name() == ".git" {
			return filepath.SkipDir
		}
		if !d.Type().IsRegular() {
			return nil
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		content, err := os.ReadFile(p) //nolint:gosec // G122: the directory is the caller's own source tree
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mode := "100644"
		if info.Mode()&0o111 != 0 {
			mode = "100755"
		}
		return add(filepath.ToSlash(rel), content, mode)
	})
}

// Tag creates a tag pointing at a commit: annotated when message is not empty, else lightweight.
func (s *Server) Tag(repo, tag, sha, message string) error {
	dir := s.repoDir(repo)
	if message == "" {
		_, err := s.git(dir, nil, "update-ref", "refs/tags/"+tag, sha)
		return err
	}
	env := []string{"GIT_COMMITTER_NAME=Ferry Test", "GIT_COMMITTER_EMAIL=test@ferry.dev"}
	_, err := s.gitEnv(dir, env, nil, "tag", "-a", "-m", message, "--", tag, sha)
	return err
}

// Head returns the SHA a branch points at.
func (s *Server) Head(repo, branch string) (string, error) {
	return s.git(s.repoDir(repo), nil, "rev-parse", "--verify", "refs/heads/"+branch+"^{commit}")
}

func (s *Server) git(dir string, stdin []byte, args ...string) (string, error) {
	return s.gitEnv(dir, nil, stdin, args...)
}

// gitEnv runs git on a bare repository (dir, when not empty) with an isolated configuration.
func (s *Server) gitEnv(dir string, env []string, stdin []byte, args ...string) (string, error) {
	sub := args[0]
	if dir != "" {
		args = append([]string{"--git-dir=" + dir}, args...)
	}
	cmd := exec.Command("git", args...)
	cmd.Env = append([]string{"HOME=" + s.home, "GIT_CONFIG_NOSYSTEM=1", "PATH=" + os.Getenv("PATH"), "LANG=C"}, env...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("failed to run git %s: %w: %s", sub, err, strings.TrimSpace(stderr.String()))
	}
	return strings.TrimSpace(stdout.String()), nil
}

// ServeHTTP authenticates the request and hands it to git http-backend.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	repo, ok := repoOf(r.URL.Path)
	if !ok {
		http.NotFound(w, r)
		return
	}
	dir := s.repoDir(repo)
	if _, err := os.Stat(dir); err != nil {
		http.NotFound(w, r)
		return
	}
	push := r.URL.Query().Get("service") == "git-receive-pack" || strings.HasSuffix(r.URL.Path, "/git-receive-pack")
	user, authenticated, tried := s.authenticate(r)
	_, privErr := os.Stat(filepath.Join(dir, privateMarker))
	private := privErr == nil
	needAuth := private || (push && !s.opts.AnonymousPush)
	if !authenticated && (tried || needAuth) {
		w.Header().Set("WWW-Authenticate", `Basic realm="ferry-git"`)
		http.Error(w, "authentication required", http.StatusUnauthorized)
		return
	}
	env := []string{"GIT_PROJECT_ROOT=" + s.dir, "GIT_HTTP_EXPORT_ALL=1", "HOME=" + s.home, "GIT_CONFIG_NOSYSTEM=1"}
	if push {
		// http-backend enables receive-pack for an authenticated REMOTE_USER only.
		if user == "" {
			user = "anonymous"
		}
	}
	if user != "" {
		env = append(env, "REMOTE_USER="+user)
	}
	h := &cgi.Handler{Path: s.backend, Root: "/", Env: env, InheritEnv: []string{"PATH"}}
	rec := &statusRecorder{ResponseWriter: w, status: http.StatusOK}
	h.ServeHTTP(rec, r)
	if push && r.Method == http.MethodPost && rec.status == http.StatusOK && s.opts.OnPush != nil {
		s.opts.OnPush(repo)
	}
}

// authenticate checks basic credentials: the user, whether they are valid, and whether any were
// sent at all.
func (s *Server) authenticate(r *http.Request) (string, bool, bool) {
	name, password, ok := r.BasicAuth()
	if !ok {
		return "", false, false
	}
	s.mu.Lock()
	want, known := s.users[name]
	s.mu.Unlock()
	if !known {
		// Compare anyway, so that timing does not tell which user names exist.
		want = "\x00unknown-user"
	}
	valid := subtle.ConstantTimeCompare([]byte(password), []byte(want)) == 1 && known
	if !valid {
		return "", false, true
	}
	return name, true, true
}

// repoOf finds the repository in a smart-HTTP path: /team/app.git/info/refs → team/app.
func repoOf(p string) (string, bool) {
	i := strings.Index(p, ".git/")
	if i < 0 {
		return "", false
	}
	name := strings.TrimPrefix(p[:i], "/")
	if !repoNameRE.MatchString(name) || strings.Contains(name, "..") {
		return "", false
	}
	return name, true
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Flush() {
	if f, ok := r.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}
