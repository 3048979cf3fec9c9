package local

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestNewTakesTheLogDirectory: one executor uses a log directory at a time, and a new one removes
// the workspaces a stopped one left behind.
func TestNewTakesTheLogDirectory(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, workDir, "build-123", "source")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	// Read-only directories, as Go's module cache leaves them, are removed too.
	if err := os.Chmod(filepath.Dir(stale), 0o500); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().Build()
	first, err := New(Options{APIReader: reader, LogDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, workDir)); err != nil || len(entries) != 0 {
		t.Errorf("workspaces left: %v, %v", entries, err)
	}
	if _, err := New(Options{APIReader: reader, LogDir: dir}); err == nil || !strings.Contains(err.Error(), "another Ferry manager with the local executor uses it") {
		t.Errorf("a second executor on the same directory: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := New(Options{APIReader: reader, LogDir: dir})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	_ = second.Close()
}

func TestNewRefuses(t *testing.T) {
	reader := fake.NewClientBuilder().Build()
	for name, opts := range map[string]Options{
		"no log directory":     {APIReader: reader},
		"no reader":            {LogDir: t.TempDir()},
		"negative parallelism": {APIReader: reader, LogDir: t.TempDir(), Parallelism: -1},
		"empty env name":       {APIReader: reader, LogDir: t.TempDir(), StepEnv: []string{"=x"}},
	} {
		if e, err := New(opts); err == nil {
			_ = e.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestLogPath(t *testing.T) {
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app-main-1", UID: "0f1e"}}
	if got := LogPath("/var/lib/ferry/builds", b); got != "/var/lib/ferry/builds/team/app-main-1-0f1e.log" {
		t.Errorf("LogPath = %s", got)
	}
	b.Name = strings.Repeat("a", 253)
	if got := filepath.Base(LogPath("/logs", b)); len(got) > 255 || !strings.HasSuffix(got, "-0f1e.log") {
		t.Errorf("LogPath of a long name = %s (%d bytes)", got, len(got))
	}
	if got := logURL("/var/lib/ferry/builds/team/a b.log"); got != "file:///var/lib/ferry/builds/team/a%20b.log" {
		t.Errorf("logURL = %s", got)
	}
}
