package dev

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/util"

	"github.com/ferryci/ferry/internal/controlplane"
)

// TestSetHealthBreaksAndRepairsTheExamples checks --unhealthy and --healthy on the example apps
// as they are in examples/: each marks its health check, breaking it makes it answer 500, and
// repairing it gives back the file as it was.
func TestSetHealthBreaksAndRepairsTheExamples(t *testing.T) {
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	for _, file := range []string{"go-hello/main.go", "python-web/app.py"} {
		t.Run(file, func(t *testing.T) {
			original, err := os.ReadFile(filepath.Join(root, "examples", file))
			if err != nil {
				t.Fatal(err)
			}
			fs := memfs.New()
			if err := util.WriteFile(fs, "/"+filepath.Base(file), original, 0o644); err != nil {
				t.Fatal(err)
			}
			changed, err := setHealth(fs, HealthBroken)
			if err != nil {
				t.Fatal(err)
			}
			if len(changed) != 1 || changed[0] != filepath.Base(file) {
				t.Fatalf("changed %v, want [%s]", changed, filepath.Base(file))
			}
			broken, _ := util.ReadFile(fs, "/"+filepath.Base(file))
			if !strings.Contains(string(broken), "unhealthy on purpose") || strings.Contains(string(broken), "health: ok") {
				t.Fatalf("the health check of %s is not broken:\n%s", file, broken)
			}
			if _, err := setHealth(fs, HealthBroken); err == nil {
				t.Fatal("breaking an already broken health check succeeded")
			}
			if _, err := setHealth(fs, HealthOK); err != nil {
				t.Fatal(err)
			}
			repaired, _ := util.ReadFile(fs, "/"+filepath.Base(file))
			if string(repaired) != string(original) {
				t.Fatalf("repairing did not give back %s:\n%s", file, repaired)
			}
		})
	}
}
