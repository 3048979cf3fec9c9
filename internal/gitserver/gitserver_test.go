package gitserver

import (
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func startServer(t *testing.T, opts Options) *Server {
	t.Helper()
	s, err := Start(opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := s.Close(); err != nil {
			t.Error(err)
		}
	})
	return s
}

// gitCLI runs the git client with no configuration of this machine's user.
func gitCLI(t *testing.T, dir string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command("git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "HOME="+t.TempDir(), "GIT_CONFIG_NOSYSTEM=1", "GIT_TERMINAL_PROMPT=0")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func withUser(raw, user, password string) string {
	u, _ := url.Parse(raw)
	u.User = url.UserPassword(user, password)
	return u.String()
}

func TestCloneCommitsAndTags(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.CreateRepo("team/app", RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	if err := s.CreateRepo("team/app", RepoOptions{}); err == nil {
		t.Error("creating a repository twice succeeded")
	}
	if err := s.CreateRepo("../escape", RepoOptions{}); err == nil {
		t.Error("a name with .. was accepted")
	}
	first, err := s.Commit("team/app", Commit{Files: map[string]string{"README": "one\n", "run.sh": "#!/bin/sh\n"}, Executable: []string{"run.sh"}, Message: "first"})
	if err != nil {
		t.Fatal(err)
	}
	second, err := s.Commit("team/app", Commit{Files: map[string]string{"src/main.go": "package main\n"}, Delete: []string{"README"}, Time: time.Unix(1700000000, 0)})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := s.Head("team/app", "main"); err != nil || head != second {
		t.Fatalf("head = %s, %v; want %s", head, err, second)
	}
	if err := s.Tag("team/app", "v1.0.0", first, "release 1.0.0"); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := gitCLI(t, dir, "clone", "--quiet", s.RepoURL("team/app"), "app"); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app")
	if _, err := os.Stat(filepath.Join(app, "README")); !os.IsNotExist(err) {
		t.Errorf("README survived its deletion: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(app, "src/main.go")); err != nil || string(b) != "package main\n" {
		t.Errorf("src/main.go = %q, %v", b, err)
	}
	if fi, err := os.Stat(filepath.Join(app, "run.sh")); err != nil || fi.Mode()&0o100 == 0 {
		t.Errorf("run.sh is not executable: %v %v", fi, err)
	}
	if out, err := gitCLI(t, app, "rev-parse", "v1.0.0^{commit}"); err != nil || strings.TrimSpace(out) != first {
		t.Errorf("tag v1.0.0 = %q, %v; want %s", out, err, first)
	}
	// A commit that is not a branch head can be fetched by SHA, as from GitLab.
	fresh := filepath.Join(dir, "fresh")
	for _, args := range [][]string{{"init", "--quiet", fresh}, {"-C", fresh, "fetch", "--quiet", "--depth=1", s.RepoURL("team/app"), first}} {
		if out, err := gitCLI(t, dir, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	if names, err := s.Repos(); err != nil || len(names) != 1 || names[0] != "team/app" {
		t.Errorf("Repos = %v, %v", names, err)
	}
}

func TestCommitFromDirectory(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.CreateRepo("app", RepoOptions{DefaultBranch: "trunk"}); err != nil {
		t.Fatal(err)
	}
	src := t.TempDir()
	for p, content := range map[string]string{"a.txt": "a", "sub/b.txt": "b", ".git/config": "ignored"} {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(src, p)), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(src, p), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.Commit("app", Commit{Branch: "trunk", Dir: src, Files: map[string]string{"extra": "x"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := gitCLI(t, dir, "clone", "--quiet", s.RepoURL("app"), "app"); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	out, err := gitCLI(t, filepath.Join(dir, "app"), "ls-files")
	if err != nil || out != "a.txt\nextra\nsub/b.txt\n" {
		t.Errorf("files = %q, %v", out, err)
	}
}

func TestPrivateRepoAndPush(t *testing.T) {
	var mu sync.Mutex
	var pushed []string
	s := startServer(t, Options{
		Users:  map[string]string{"dev": "pa55word"},
		OnPush: func(repo string) { mu.Lock(); pushed = append(pushed, repo); mu.Unlock() },
	})
	if err := s.CreateRepo("secret/app", RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit("secret/app", Commit{Files: map[string]string{"f": "1"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := gitCLI(t, dir, "clone", "--quiet", s.RepoURL("secret/app"), "anon"); err == nil {
		t.Fatalf("anonymous clone of a private repository succeeded:\n%s", out)
	}
	if out, err := gitCLI(t, dir, "clone", "--quiet", withUser(s.RepoURL("secret/app"), "dev", "wrong"), "wrong"); err == nil {
		t.Fatalf("clone with a wrong password succeeded:\n%s", out)
	}
	if out, err := gitCLI(t, dir, "clone", "--quiet", withUser(s.RepoURL("secret/app"), "dev", "pa55word"), "app"); err != nil {
		t.Fatalf("clone with credentials: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app")
	if err := os.WriteFile(filepath.Join(app, "g"), []byte("2"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"add", "g"}, {"-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "--quiet", "-m", "two"}, {"push", "--quiet", "origin", "HEAD:main"}} {
		if out, err := gitCLI(t, app, args...); err != nil {
			t.Fatalf("git %v: %v\n%s", args, err, out)
		}
	}
	local, _ := gitCLI(t, app, "rev-parse", "HEAD")
	if head, err := s.Head("secret/app", "main"); err != nil || head != strings.TrimSpace(local) {
		t.Errorf("server head = %s, %v; want %s", head, err, local)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(pushed) != 1 || pushed[0] != "secret/app" {
		t.Errorf("OnPush calls = %v", pushed)
	}
}

func TestAnonymousPushRefused(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.CreateRepo("app", RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Commit("app", Commit{Files: map[string]string{"f": "1"}}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := gitCLI(t, dir, "clone", "--quiet", s.RepoURL("app"), "app"); err != nil {
		t.Fatalf("clone: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app")
	if out, err := gitCLI(t, app, "-c", "user.name=T", "-c", "user.email=t@example.com", "commit", "--quiet", "--allow-empty", "-m", "x"); err != nil {
		t.Fatal(err, out)
	}
	if out, err := gitCLI(t, app, "push", "--quiet", "origin", "HEAD:main"); err == nil {
		t.Fatalf("anonymous push succeeded:\n%s", out)
	}
}

// TestCommitSeries: a series of commits lands on the branch's head, each on the one before, with
// the files of each on top of the tree before it; a path that could escape is refused.
func TestCommitSeries(t *testing.T) {
	s := startServer(t, Options{})
	if err := s.CreateRepo("team/app", RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	first, err := s.Commit("team/app", Commit{Files: map[string]string{"README": "one\n"}})
	if err != nil {
		t.Fatal(err)
	}
	shas, err := s.CommitSeries("team/app", "main", 3, func(i int) map[string]string {
		return map[string]string{"n.txt": fmt.Sprintf("%d\n", i)}
	})
	if err != nil {
		t.Fatal(err)
	}
	if head, err := s.Head("team/app", "main"); err != nil || len(shas) != 3 || head != shas[2] {
		t.Fatalf("head = %s, %v; series %v", head, err, shas)
	}
	dir := t.TempDir()
	if out, err := gitCLI(t, dir, "clone", "--quiet", s.RepoURL("team/app"), "app"); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	app := filepath.Join(dir, "app")
	parents := []string{first, shas[0], shas[1]}
	for i, sha := range shas {
		if out, err := gitCLI(t, app, "rev-parse", sha+"^"); err != nil || strings.TrimSpace(out) != parents[i] {
			t.Errorf("parent of commit %d = %q, %v; want %s", i, out, err, parents[i])
		}
		if out, err := gitCLI(t, app, "show", sha+":n.txt"); err != nil || out != fmt.Sprintf("%d\n", i) {
			t.Errorf("n.txt at commit %d = %q, %v", i, out, err)
		}
		if out, err := gitCLI(t, app, "show", sha+":README"); err != nil || out != "one\n" {
			t.Errorf("README at commit %d = %q, %v", i, out, err)
		}
	}
	for _, bad := range []string{"../escape", "/abs", ".git/config", "a\nM 100644 inline b"} {
		if _, err := s.CommitSeries("team/app", "main", 1, func(int) map[string]string { return map[string]string{bad: "x"} }); err == nil {
			t.Errorf("path %q was accepted", bad)
		}
	}
}
