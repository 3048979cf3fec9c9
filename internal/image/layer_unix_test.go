//go:build unix

package image

import (
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestBuildLayerDropsSpecialFiles(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"app.py": "1"})
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(dir, "sock"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = ln.Close() }()
	want := []string{"pipe", "sock"}
	// A character device (/dev/null's numbers), where the test may create one.
	if err := syscall.Mknod(filepath.Join(dir, "null"), syscall.S_IFCHR|0o666, int((1<<8)|3)); err == nil {
		want = []string{"null", "pipe", "sock"}
	} else {
		t.Logf("cannot create a device file here (%v): checking pipes and sockets only", err)
	}
	var log strings.Builder
	l := buildLayer(t, LayerOptions{Dir: dir, Log: &log})
	if !slices.Equal(l.Dropped, want) {
		t.Fatalf("dropped %q, want %q", l.Dropped, want)
	}
	var names []string
	for _, e := range readLayer(t, l) {
		names = append(names, e.name)
	}
	if !slices.Equal(names, []string{"app/", "app/app.py"}) {
		t.Fatalf("entries %q, want only app.py", names)
	}
	for _, w := range want {
		if !strings.Contains(log.String(), "left out "+w) {
			t.Errorf("log %q does not report %s", log.String(), w)
		}
	}
}

func TestFileOpenerDoesNotHangOnAPipe(t *testing.T) {
	dir := t.TempDir()
	if err := syscall.Mkfifo(filepath.Join(dir, "pipe"), 0o644); err != nil {
		t.Fatal(err)
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	files := newFileOpener(root)
	defer files.close()
	done := make(chan error, 1)
	go func() {
		f, err := files.open("pipe")
		if err == nil {
			_, mode, _, serr := f.stat()
			_ = f.Close()
			if serr == nil && mode.IsRegular() {
				err = os.ErrInvalid
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("open or stat of a pipe: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("opening a pipe put in a file's place hangs")
	}
	// A link in a file's place is not followed.
	if err := os.Symlink("/etc/passwd", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if f, err := files.open("link"); err == nil {
		_ = f.Close()
		t.Fatal("opened a symbolic link")
	}
}

// TestBuildLayerTakesOnlyTheOwnersFiles: with Owner set, a file of another user among the
// artifacts (a hard link a build step made to a file it could not read) fails the layer, and
// names only the artifact.
func TestBuildLayerTakesOnlyTheOwnersFiles(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{"app/main.py": "1", "app/theirs.txt": "2"})
	owner := os.Geteuid()
	l := buildLayer(t, LayerOptions{Dir: dir, Owner: &owner})
	if l.Files != 2 {
		t.Errorf("files %d, want 2", l.Files)
	}
	if os.Geteuid() != 0 {
		t.Skip("making a file of another user needs root")
	}
	if err := os.Chown(filepath.Join(dir, "app/theirs.txt"), 4242, 4242); err != nil {
		t.Fatal(err)
	}
	_, err := BuildLayer(t.Context(), LayerOptions{Dir: dir, Workdir: "/app", Owner: &owner})
	if err == nil || !strings.Contains(err.Error(), "app/theirs.txt belongs to user 4242, not to 0 who made the artifacts") {
		t.Fatalf("error %v", err)
	}
	if strings.Contains(err.Error(), dir) {
		t.Errorf("error %q names the host path", err)
	}
	// Without Owner, every file is taken.
	if l := buildLayer(t, LayerOptions{Dir: dir}); l.Files != 2 {
		t.Errorf("files %d, want 2", l.Files)
	}
}

// TestBuildLayerThroughRoot: with Root, the artifacts are read through it, whatever Dir's path
// points to now (a build step replaced the checkout by a link to /etc).
func TestBuildLayerThroughRoot(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "source")
	writeTree(t, dir, map[string]string{"hostname": "from the checkout"})
	root, err := os.OpenRoot(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = root.Close() }()
	if err := os.Rename(dir, filepath.Join(base, "moved")); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("/etc", dir); err != nil {
		t.Fatal(err)
	}
	l := buildLayer(t, LayerOptions{Dir: dir, Root: root, Artifacts: []string{"hostname"}})
	entries := readLayer(t, l)
	if len(entries) != 2 || entries[1].content != "from the checkout" {
		t.Fatalf("entries %+v", entries)
	}
}
