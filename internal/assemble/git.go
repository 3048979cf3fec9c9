package assemble

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GitRepository is what `ferry build` reads from the repository a directory belongs to, without
// running git: the commit HEAD names and the URL of the remote "origin".
type GitRepository struct {
	// Head is the commit HEAD names (40 or 64 hex digits).
	Head string
	// Origin is the URL of the remote "origin", "" without one.
	Origin string
}

// ReadGitRepository finds the repository that contains dir (dir or a parent holds .git, a
// directory, or a file `gitdir: …` for worktrees and submodules) and reads HEAD and the origin.
// It returns nil, nil when dir is not inside a repository.
func ReadGitRepository(dir string) (*GitRepository, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	var gitDir string
	for d := abs; ; d = filepath.Dir(d) {
		candidate := filepath.Join(d, ".git")
		info, err := os.Stat(candidate)
		if err == nil {
			gitDir = candidate
			if !info.IsDir() {
				if gitDir, err = readGitDirFile(candidate); err != nil {
					return nil, err
				}
			}
			break
		}
		if filepath.Dir(d) == d {
			return nil, nil
		}
	}
	common := gitDir
	if b, err := os.ReadFile(filepath.Join(gitDir, "commondir")); err == nil {
		common = strings.TrimSpace(string(b))
		if !filepath.IsAbs(common) {
			common = filepath.Join(gitDir, common)
		}
	}
	head, err := readHead(gitDir, common)
	if err != nil {
		return nil, err
	}
	return &GitRepository{Head: head, Origin: readOrigin(filepath.Join(common, "config"))}, nil
}

// readGitDirFile follows a `.git` file (`gitdir: <path>`).
func readGitDirFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	target, ok := strings.CutPrefix(strings.TrimSpace(string(b)), "gitdir: ")
	if !ok {
		return "", fmt.Errorf("%s is not a gitdir file", path)
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(filepath.Dir(path), target)
	}
	return target, nil
}

// readHead resolves HEAD to a commit: detached, a loose ref, or a packed ref.
func readHead(gitDir, common string) (string, error) {
	b, err := os.ReadFile(filepath.Join(gitDir, "HEAD"))
	if err != nil {
		return "", fmt.Errorf("failed to read the git HEAD: %w", err)
	}
	head := strings.TrimSpace(string(b))
	ref, symbolic := strings.CutPrefix(head, "ref: ")
	if !symbolic {
		if !revisionRE.MatchString(head) {
			return "", fmt.Errorf("the git HEAD %q is not a commit", head)
		}
		return head, nil
	}
	for _, d := range []string{gitDir, common} {
		if b, err := os.ReadFile(filepath.Join(d, filepath.FromSlash(ref))); err == nil {
			if h := strings.TrimSpace(string(b)); revisionRE.MatchString(h) {
				return h, nil
			}
		}
	}
	f, err := os.Open(filepath.Join(common, "packed-refs"))
	if err == nil {
		defer func() { _ = f.Close() }()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			hash, name, ok := strings.Cut(sc.Text(), " ")
			if ok && name == ref && revisionRE.MatchString(hash) {
				return hash, nil
			}
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return "", err
	}
	return "", fmt.Errorf("the git branch %s has no commit yet", strings.TrimPrefix(ref, "refs/heads/"))
}

// readOrigin returns remote.origin.url from a git config file, or "".
func readOrigin(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	in := false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if strings.HasPrefix(line, "[") {
			in = strings.ReplaceAll(line, " ", "") == `[remote"origin"]`
			continue
		}
		if k, v, ok := strings.Cut(line, "="); in && ok && strings.TrimSpace(k) == "url" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
