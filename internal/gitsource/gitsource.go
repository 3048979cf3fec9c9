// Package gitsource fetches exactly one commit of a Project's repository with go-git: shallow,
// single commit, by SHA, from the Project's configured clone URL and nothing else, with the
// Project's credentials (basic auth for HTTPS, an SSH key checked against known_hosts for SSH). The
// Build controller reads the pipeline file with ReadFile; the pipeline's first step (`ferry
// git-clone`) and the local executor check the commit out with Checkout.
//
// Refused before anything is fetched: file://, ext::, git://, local paths, URLs with embedded
// credentials, and revisions or refs that start with '-'. Redirects are not followed, so the
// configured URL is the only one ever contacted.
//
// A git server is not trusted to answer, nor to answer in proportion: every operation has a
// deadline, a stall timeout and a cap on the bytes read (Limits), and each object of the pack is
// checked, from its header, against a cap on what the pack inflates to before go-git reads it.
// Nothing is installed into go-git's global transports: each operation has its own HTTP client
// and SSH dialer.
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

	"github.com/go-git/go-billy/v5/osfs"
	git "github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/cache"
	"github.com/go-git/go-git/v5/plumbing/object"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp"
	"github.com/go-git/go-git/v5/plumbing/protocol/packp/capability"
	"github.com/go-git/go-git/v5/plumbing/transport"
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
	// Limits bound the fetch; zero fields take the operation's defaults.
	Limits Limits
}

// ErrNotFound says the commit or the file does not exist.
var ErrNotFound = errors.New("not found")

// FileNotFoundError says the commit exists and has no such file. It is ErrNotFound as well, which
// also stands for a missing commit or repository; errors.As tells the missing file apart.
type FileNotFoundError struct {
	// File is the path looked for, relative to the repository root.
	File string
	// Revision is the commit looked in.
	Revision string
}

func (e *FileNotFoundError) Error() string {
	return fmt.Sprintf("%s at %s: %s", e.File, short(e.Revision), ErrNotFound)
}

// Unwrap makes the error ErrNotFound.
func (e *FileNotFoundError) Unwrap() error { return ErrNotFound }

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

// ReadFile returns one file of the commit's tree. Where the server allows partial fetches, only
// the commit, its trees and the one file are fetched; otherwise the whole commit, within
// req.Limits (default ReadFileLimits). Everything is kept in memory. A missing file is a
// *FileNotFoundError (and ErrNotFound); a server too slow or sending too much is ErrTimeout or ErrTooLarge.
func ReadFile(ctx context.Context, req Request, file string) ([]byte, error) {
	clean := path.Clean(file)
	if file == "" || strings.HasPrefix(clean, "/") || clean == ".." || strings.HasPrefix(clean, "../") {
		return nil, fmt.Errorf("path %q must be relative to the repository root", file)
	}
	f, stop, err := open(ctx, req, ReadFileLimits)
	if err != nil {
		return nil, err
	}
	defer stop()
	return readFile(f, clean)
}

// readFile reads file with f; its errors are final.
func readFile(f *fetcher, file string) ([]byte, error) {
	sto := memory.NewStorage()
	caps, err := f.capabilities()
	if err != nil {
		return nil, f.failed(err)
	}
	partial := caps.Supports(capability.Filter)
	var filter packp.Filter
	if partial {
		filter = packp.FilterBlobNone()
	}
	commit, err := f.fetchCommit(sto, filter)
	if err != nil {
		return nil, f.failed(err)
	}
	tree, err := commit.Tree()
	if err != nil {
		return nil, fmt.Errorf("failed to read the tree of %s: %w", short(f.req.Revision), err)
	}
	entry, err := tree.FindEntry(file)
	if err != nil || !entry.Mode.IsFile() {
		if err == nil || errors.Is(err, object.ErrEntryNotFound) || errors.Is(err, object.ErrDirectoryNotFound) {
			return nil, &FileNotFoundError{File: file, Revision: f.req.Revision}
		}
		return nil, fmt.Errorf("failed to read %s at %s: %w", file, short(f.req.Revision), err)
	}
	if partial {
		if err := f.fetchPack(sto, []plumbing.Hash{entry.Hash}, 0, ""); err != nil {
			if errors.Is(err, ErrTooLarge) || context.Cause(f.ctx) != nil {
				return nil, f.failed(err)
			}
			// The server filters but does not serve a blob by its ID: fetch the commit again
			// with every blob small enough to be the file.
			if _, err := f.fetchCommit(sto, packp.FilterBlobLimit(maxFileSize+1, packp.BlobLimitPrefixNone)); err != nil {
				return nil, f.failed(err)
			}
		}
	}
	blob, err := object.GetBlob(sto, entry.Hash)
	if errors.Is(err, plumbing.ErrObjectNotFound) {
		return nil, fmt.Errorf("%s at %s is larger than %d bytes, the limit", file, short(f.req.Revision), maxFileSize)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read %s at %s: %w", file, short(f.req.Revision), err)
	}
	if blob.Size > maxFileSize {
		return nil, fmt.Errorf("%s at %s is %d bytes; the limit is %d", file, short(f.req.Revision), blob.Size, maxFileSize)
	}
	rd, err := blob.Reader()
	if err != nil {
		return nil, err
	}
	defer func() { _ = rd.Close() }()
	return io.ReadAll(io.LimitReader(rd, maxFileSize))
}

// Checkout fetches the commit into dir (which must be empty or missing) and checks its tree out,
// with HEAD detached at the commit, within req.Limits (default CheckoutLimits). Submodules are
// not fetched.
func Checkout(ctx context.Context, req Request, dir string) error {
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return fmt.Errorf("checkout directory %s is not empty", dir)
	}
	f, stop, err := open(ctx, req, CheckoutLimits)
	if err != nil {
		return err
	}
	defer stop()
	// Build steps may run as another user than the clone step: the checkout must stay readable.
	if err := os.MkdirAll(dir, 0o755); err != nil { //nolint:gosec // G301: see above
		return err
	}
	wt := osfs.New(dir)
	dot, err := wt.Chroot(git.GitDirName)
	if err != nil {
		return err
	}
	sto := filesystem.NewStorage(dot, cache.NewObjectLRUDefault())
	repo, err := git.Init(sto, wt)
	if err != nil {
		return fmt.Errorf("failed to initialise a repository in %s: %w", dir, err)
	}
	if _, err := repo.CreateRemote(&config.RemoteConfig{Name: git.DefaultRemoteName, URLs: []string{req.URL}}); err != nil {
		return err
	}
	commit, err := f.fetchCommit(sto, "")
	if err != nil {
		return f.failed(err)
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

func short(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
