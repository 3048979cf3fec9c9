// Package gitsource fetches exactly one commit of a Project's repository with go-git: shallow,
// single commit, by SHA, from the Project's configured clone URL and nothing else, with the
// Project's credentials (basic auth for HTTPS, an SSH key checked against known_hosts for SSH). The
// Build controller reads the pipeline file with ReadFile; the pipeline's first step (`ferry
// git-clone`) and the local executor check the commit out with Checkout.
//
// Refused before anything is fetched: file://, ext::, git://, local paths, URLs with embedded
// credentials, and revisions or refs that start with '-'. Redirects are not followed, so the
// configured URL is the only one ever contacted.
package gitsource

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path"
	"regexp"
	"strings"
	"sync"

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/transport"
	"github.com/go-git/go-git/v5/plumbing/transport/client"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/filesystem"
	"github.com/go-git/go-git/v5/storage/memory"
)

// Request names one commit of one repository.
type Request struct {
	// URL is the Project's clone URL: https://…, http://…, ssh://… or user@host:path.
	URL string
	// Revision is the commit's full 40-hex SHA.
	Revision string
	// Ref is the ref the commit was pushed to (refs/heads/main). It is fetched instead, 50 commits
	// deep, only when the server refuses to serve a commit by SHA.
	Ref string
	// Credentials authenticate the fetch; nil for a public repository.
	Credentials *Credentials
}

// ErrNotFound says the commit or the file does not exist.
var ErrNotFound = errors.New("not found")

// ErrAuth says the server refused the credentials (or wanted some).
var ErrAuth = errors.New("authentication failed")

// fallbackDepth is how deep a ref is fetched when a server cannot serve a commit by SHA.
const fallbackDepth = 50

// maxFileSize bounds what ReadFile returns.
const maxFileSize = 1 << 20

var (
	shaRE     = regexp.MustCompile(`^[0-9a-f]{40}$`)
	scpLikeRE = regexp.MustCompile(`^([A-Za-z0-9._-]+)@([A-Za-z0-9.-]+):(.+)$`)
	hostRE    = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$`)
)

// ValidateURL accepts the clone URLs Ferry fetches from: http(s) and ssh URLs without embedded
// passwords, and scp-like user@host:path. Everything git could turn into a local read or a command
// is refused.
func ValidateURL(raw string) error {
	if raw == "" {
		return errors.New("the clone URL is empty")
	}
	if strings.ContainsAny(raw, " \t\r\n\x00") {
		return errors.New("the clone URL contains whitespace or control characters")
	}
	if strings.HasPrefix(raw, "-") {
		return errors.New("the clone URL starts with '-'")
	}
	if strings.Contains(raw, "::") && !strings.Contains(raw, "://") {
		return fmt.Errorf("transport %q is refused: only http(s) and ssh", strings.SplitN(raw, "::", 2)[0]+"::")
	}
	if m := scpLikeRE.FindStringSubmatch(raw); m != nil && !strings.Contains(raw, "://") {
		if !hostRE.MatchString(m[2]) {
			return fmt.Errorf("invalid host %q in the clone URL", m[2])
		}
		if strings.HasPrefix(m[3], "-") || strings.HasPrefix(m[1], "-") {
			return errors.New("the clone URL's user or path starts with '-'")
		}
		return nil
	}
	u, err := url.Parse(raw)
	if err != nil {
		return errors.New("the clone URL cannot be parsed")
	}
	switch u.Scheme {
	case "https", "http", "ssh":
	case "":
		return errors.New("local paths are refused: the clone URL must be an http(s) or ssh URL")
	default:
		return fmt.Errorf("scheme %q is refused: only http(s) and ssh", u.Scheme)
	}
	if u.Host == "" || strings.HasPrefix(u.Host, "-") || strings.HasPrefix(u.Hostname(), "-") {
		return errors.New("the clone URL has no valid host")
	}
	if _, hasPassword := u.User.Password(); hasPassword || (u.User != nil && u.Scheme != "ssh") {
		return errors.New("the clone URL must not embed credentials; put them in the Project's credentials Secret")
	}
	if u.User != nil && strings.HasPrefix(u.User.Username(), "-") {
		return errors.New("the clone URL's user starts with '-'")
	}
	if u.Path == "" || u.Path == "/" || strings.HasPrefix(strings.TrimPrefix(u.Path, "/"), "-") {
		return errors.New("the clone URL has no repository path")
	}
	return nil
}

// ValidateRevision accepts a full 40-hex commit SHA.
func ValidateRevision(sha string) error {
	if !shaRE.MatchString(sha) {
		return fmt.Errorf("revision %q is not a full 40-hex commit SHA", sha)
	}
	return nil
}

// ValidateRef accepts a ref under refs/ that git would accept and that no component of starts
// with '-'.
func ValidateRef(ref string) error {
	if !strings.HasPrefix(ref, "refs/") {
		return fmt.Errorf("ref %q must start with refs/", ref)
	}
	if strings.ContainsAny(ref, " \t\r\n\x00~^:?*[\\") || strings.Contains(ref, "..") || strings.Contains(ref, "@{") ||
		strings.HasSuffix(ref, "/") || strings.HasSuffix(ref, ".lock") || strings.Contains(ref, "//") {
		return fmt.Errorf("ref %q is not a valid git ref", ref)
	}
	for _, part := range strings.Split(ref, "/") {
		if strings.HasPrefix(part, "-") || strings.HasPrefix(part, ".") {
			return fmt.Errorf("ref %q has a component starting with '-' or '.'", ref)
		}
	}
	return nil
}

func (r Request) validate() error {
	if err := ValidateURL(r.URL); err != nil {
		return err
	}
	if err := ValidateRevision(r.Revision); err != nil {
		return err
	}
	if r.Ref != "" {
		return ValidateRef(r.Ref)
	}
	return nil
}

// ReadFile fetches the commit into memory and returns one file of its tree. A missing file is
// ErrNotFound.
func ReadFile(ctx context.Context, req Request, file string) ([]byte, error) {
	clean := path.Clean(file)
	if file == "" || strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
		return nil, fmt.Errorf("path %q must be relative to the repository root", file)
	}
	repo, err := git.Init(memory.NewStorage(), nil)
	if err != nil {
		return nil, err
	}
	commit, err := fetch(ctx, repo, req)
	if err != nil {
		return nil, err
	}
	f, err := commit.File(clean)
	if err != nil {
		if errors.Is(err, object.ErrFileNotFound) {
			return nil, fmt.Errorf("%s at %s: %w", clean, short(req.Revision), ErrNotFound)
		}
		return nil, fmt.Errorf("failed to read %s at %s: %w", clean, short(req.Revision), err)
	}
	if f.Size > maxFileSize {
		return nil, fmt.Errorf("%s at %s is %d bytes; the limit is %d", clean, short(req.Revision), f.Size, maxFileSize)
	}
	rd, err := f.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rd.Close() }()
	return io.ReadAll(io.LimitReader(rd, maxFileSize))
}

// Checkout fetches the commit into dir (which must be empty or missing) and checks its tree out,
// with HEAD detached at the commit. Submodules are not fetched.
func Checkout(ctx context.Context, req Request, dir string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("checkout directory %s is not empty", dir)
	}
	// Build steps may run as another user than the clone step: the checkout must stay readable.
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: see above
		return err
	}
	wt := osfs.New(dir)
	dot, err := wt.Chroot(git.GitDirName)
	if err != nil {
		return err
	}
	repo, err := git.Init(filesystem.NewStorage(dot, cache.NewObjectLRUDefault()), wt)
	if err != nil {
		return fmt.Errorf("failed to initialise a repository in %s: %w", dir, err)
	}
	commit, err := fetch(ctx, repo, req)
	if err != nil {
		return err
	}
	w, err := repo.Worktree()
	if err != nil {
		return err
	}
	if err := w.Checkout(&git.CheckoutOptions{Hash: commit.Hash, Force: true}); err != nil {
		return fmt.Errorf("failed to check out %s: %w", short(req.Revision), err)
	}
	return nil
}

// fetch brings the one commit into repo: by SHA at depth 1, or, if the server refuses fetching by
// SHA, the Build's ref at a bounded depth.
func fetch(ctx context.Context, repo *git.Repository, req Request) (*object.Commit, error) {
	if err := req.validate(); err != nil {
		return nil, err
	}
	installTransports()
	auth, err := req.Credentials.authMethod(req.URL)
	if err != nil {
		return nil, err
	}
	remote, err := repo.CreateRemote(&config.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{req.URL}})
	if err != nil {
		return nil, err
	}
	hash := plumbing.NewHash(req.Revision)
	err = remote.FetchContext(ctx, &git.FetchOptions{
		RefSpecs: []config.RefSpec{config.RefSpec(req.Revision + ":refs/ferry/revision")},
		Depth:    1,
		Auth:     auth,
		Tags:     git.NoTags,
	})
	if errors.Is(err, git.ErrExactSHA1NotSupported) && req.Ref != "" {
		err = remote.FetchContext(ctx, &git.FetchOptions{
			RefSpecs: []config.RefSpec{config.RefSpec("+" + req.Ref + ":refs/ferry/ref")},
			Depth:    fallbackDepth,
			Auth:     auth,
			Tags:     git.NoTags,
		})
	}
	if err != nil && !errors.Is(err, git.NoErrAlreadyUpToDate) {
		return nil, classify(req, err)
	}
	commit, err := repo.CommitObject(hash)
	if err != nil {
		if errors.Is(err, plumbing.ErrObjectNotFound) {
			return nil, fmt.Errorf("commit %s of %s: %w (the server does not serve commits by SHA and it is not within %d commits of %s)", short(req.Revision), req.URL, ErrNotFound, fallbackDepth, req.Ref)
		}
		return nil, err
	}
	return commit, nil
}

// classify turns go-git's errors into messages that name the repository and never the credentials.
func classify(req Request, err error) error {
	switch {
	case errors.Is(err, transport.ErrAuthenticationRequired), errors.Is(err, transport.ErrAuthorizationFailed):
		if req.Credentials == nil {
			return fmt.Errorf("failed to fetch %s: %w: the repository needs credentials (the Project's credentialsSecretRef)", req.URL, ErrAuth)
		}
		return fmt.Errorf("failed to fetch %s: %w: the server refused the credentials", req.URL, ErrAuth)
	case errors.Is(err, transport.ErrRepositoryNotFound):
		return fmt.Errorf("failed to fetch %s: repository %w", req.URL, ErrNotFound)
	case strings.Contains(err.Error(), "not our ref"), strings.Contains(err.Error(), "not a valid object"), strings.Contains(err.Error(), "unadvertised object"):
		return fmt.Errorf("failed to fetch %s: commit %s %w", req.URL, short(req.Revision), ErrNotFound)
	}
	return fmt.Errorf("failed to fetch commit %s from %s: %s", short(req.Revision), req.URL, redact(err.Error(), req.Credentials))
}

// redact removes credentials from a message, in case a transport echoed them.
func redact(msg string, c *Credentials) string {
	if c == nil {
		return msg
	}
	for _, s := range []string{c.Password, string(c.SSHPrivateKey)} {
		if len(s) >= 4 {
			msg = strings.ReplaceAll(msg, s, "[redacted]")
		}
	}
	return msg
}

var installOnce sync.Once

// installTransports replaces go-git's HTTP transport with one that never follows redirects: a
// redirect would fetch from a URL other than the Project's.
func installTransports() {
	installOnce.Do(func() {
		c := githttp.NewClientWithOptions(nil, &githttp.ClientOptions{RedirectPolicy: githttp.NoFollowRedirects})
		client.InstallProtocol("http", c)
		client.InstallProtocol("https", c)
	})
}

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
