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
			_, mode, serr := f.stat()
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
