package assemble

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func git(t *testing.T, dir string, args ...string) string {
	t.Helper()
	cmd := exec.Command("git", append([]string{"-C", dir, "-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"}, args...)...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

func TestReadGitRepository(t *testing.T) {
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	dir := t.TempDir()
	repo := filepath.Join(dir, "repo")
	git(t, dir, "init", "-q", repo)
	if _, err := ReadGitRepository(repo); err == nil || !strings.Contains(err.Error(), "main has no commit yet") {
		t.Fatalf("unborn branch: %v", err)
	}
	writeFiles(t, repo, map[string]string{"svc/a.txt": "a"})
	git(t, repo, "add", ".")
	git(t, repo, "commit", "-qm", "one")
	git(t, repo, "remote", "add", "origin", "https://gitlab.example.com/team-a/app.git")
	want := git(t, repo, "rev-parse", "HEAD")

	check := func(what, dir, want string) {
		t.Helper()
		got, err := ReadGitRepository(dir)
		if err != nil || got == nil || got.Head != want {
			t.Fatalf("%s: got %+v %v, want HEAD %s", what, got, err, want)
		}
		if got.Origin != "https://gitlab.example.com/team-a/app.git" {
			t.Errorf("%s: origin %q", what, got.Origin)
		}
	}
	check("loose ref", repo, want)
	check("subdirectory", filepath.Join(repo, "svc"), want)
	git(t, repo, "pack-refs", "--all")
	check("packed ref", repo, want)
	git(t, repo, "checkout", "-q", "--detach")
	check("detached", repo, want)
	git(t, repo, "checkout", "-q", "main")
	wt := filepath.Join(dir, "wt")
	git(t, repo, "worktree", "add", "-q", "-b", "other", wt)
	writeFiles(t, wt, map[string]string{"b.txt": "b"})
	git(t, wt, "add", ".")
	git(t, wt, "commit", "-qm", "two")
	check("worktree", wt, git(t, wt, "rev-parse", "HEAD"))

	if got, err := ReadGitRepository(t.TempDir()); got != nil || err != nil {
		t.Fatalf("not a repository: %+v %v", got, err)
	}
}
