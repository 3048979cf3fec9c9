package image

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// writeTree creates files (path → content; a trailing "/" makes a directory, "-> target" a link).
func writeTree(t *testing.T, dir string, files map[string]string) {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		switch {
		case strings.HasSuffix(p, "/"):
			if err := os.MkdirAll(full, 0o755); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(content, "-> "):
			if err := os.Symlink(strings.TrimPrefix(content, "-> "), full); err != nil {
				t.Fatal(err)
			}
		default:
			if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

// tarEntry is what a test checks of a layer entry.
type tarEntry struct {
	name     string
	typeflag byte
	mode     int64
	link     string
	content  string
}

func readLayer(t *testing.T, l *Layer) []tarEntry {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	var out []tarEntry
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Uid != 0 || h.Gid != 0 || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: owner %d:%d (%q:%q), want 0:0 without names", h.Name, h.Uid, h.Gid, h.Uname, h.Gname)
		}
		if !h.ModTime.Equal(DefaultEpoch) {
			t.Errorf("%s: mtime %s, want %s", h.Name, h.ModTime, DefaultEpoch)
		}
		b, _ := io.ReadAll(tr)
		out = append(out, tarEntry{name: h.Name, typeflag: h.Typeflag, mode: h.Mode, link: h.Linkname, content: string(b)})
	}
}

func buildLayer(t *testing.T, opts LayerOptions) *Layer {
	t.Helper()
	if opts.Workdir == "" {
		opts.Workdir = "/app"
	}
	l, err := BuildLayer(context.Background(), opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

func TestBuildLayerContent(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"main.py":          "print('hi')\n",
		"bin/run":          "#!/bin/sh\n",
		"lib/a/util.py":    "x = 1\n",
		"lib/current":      "-> a",
		"static/up":        "-> ../lib/a/util.py",
		".git/HEAD":        "ref: refs/heads/main\n",
		"vendor/dep/.git":  "gitdir: ../../.git/modules/dep\n",
		"vendor/dep/dep.c": "int x;\n",
		"empty/":           "",
	})
	if err := os.Chmod(filepath.Join(dir, "bin/run"), 0o4755); err != nil {
		t.Fatal(err)
	}
	l := buildLayer(t, LayerOptions{Dir: dir, Workdir: "/srv/app"})
	got := readLayer(t, l)
	var names []string
	for _, e := range got {
		names = append(names, e.name)
	}
	want := []string{
		"srv/", "srv/app/",
		"srv/app/bin/", "srv/app/bin/run", "srv/app/empty/", "srv/app/lib/", "srv/app/lib/a/", "srv/app/lib/a/util.py",
		"srv/app/lib/current", "srv/app/main.py", "srv/app/static/", "srv/app/static/up",
		"srv/app/vendor/", "srv/app/vendor/dep/", "srv/app/vendor/dep/dep.c",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("entries:\n got %q\nwant %q", names, want)
	}
	byName := map[string]tarEntry{}
	for _, e := range got {
		byName[e.name] = e
	}
	if e := byName["srv/app/bin/run"]; e.mode != 0o755 || e.typeflag != tar.TypeReg {
		t.Errorf("bin/run: mode %o type %c, want 0755 (setuid dropped) regular", e.mode, e.typeflag)
	}
	if e := byName["srv/app/main.py"]; e.mode != 0o644 || e.content != "print('hi')\n" {
		t.Errorf("main.py: %+v", e)
	}
	if e := byName["srv/app/lib/current"]; e.typeflag != tar.TypeSymlink || e.link != "a" {
		t.Errorf("lib/current: %+v, want a link to a", e)
	}
	if e := byName["srv/"]; e.mode != 0o755 || e.typeflag != tar.TypeDir {
		t.Errorf("srv/: %+v", e)
	}
	if l.Files != 4 || l.Entries != len(want) {
		t.Errorf("files %d entries %d, want 4 and %d", l.Files, l.Entries, len(want))
	}
}

func TestBuildLayerArtifacts(t *testing.T) {
	dir := t.TempDir()
	writeTree(t, dir, map[string]string{
		"app/main.py":       "1",
		"app/static/x.css":  "2",
		"requirements.txt":  "3",
		"tests/test_x.py":   "4",
		"app/static/.git/x": "5",
	})
	l := buildLayer(t, LayerOptions{Dir: dir, Artifacts: []string{"requirements.txt", "app/static/", "app/static/x.css", "./app/main.py"}})
	var names []string
	for _, e := range readLayer(t, l) {
		names = append(names, e.name)
	}
	want := []string{"app/", "app/app/", "app/app/main.py", "app/app/static/", "app/app/static/x.css", "app/requirements.txt"}
	if !slices.Equal(names, want) {
		t.Fatalf("entries:\n got %q\nwant %q", names, want)
	}
}

func TestBuildLayerIsReproducible(t *testing.T) {
	files := map[string]string{"a/b/c.txt": "c", "a/d.txt": "d", "z.bin": strings.Repeat("z", 100000), "link": "-> a/d.txt"}
	one, two := t.TempDir(), t.TempDir()
	writeTree(t, one, files)
	writeTree(t, two, files)
	// Different modification and access times on every file of the second tree.
	err := filepath.Walk(two, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		old := time.Now().Add(-72 * time.Hour)
		return os.Chtimes(p, old, old)
	})
	if err != nil {
		t.Fatal(err)
	}
	a := buildLayer(t, LayerOptions{Dir: one})
	b := buildLayer(t, LayerOptions{Dir: two})
	da, _ := a.Digest()
	db, _ := b.Digest()
	ia, _ := a.DiffID()
	ib, _ := b.DiffID()
	if da != db || ia != ib {
		t.Fatalf("same tree, different mtimes: digests %s and %s, diff IDs %s and %s", da, db, ia, ib)
	}
	// And the bytes really are those hashes.
	rc, _ := a.Compressed()
	sum := sha256Hex(t, rc)
	if "sha256:"+sum != da.String() {
		t.Fatalf("digest %s, content hashes to %s", da, sum)
	}
	// Another epoch gives another layer.
	c := buildLayer(t, LayerOptions{Dir: one, Epoch: time.Unix(1700000000, 0)})
	if dc, _ := c.Digest(); dc == da {
		t.Fatal("a different epoch gave the same layer")
	}
}

func TestEpochFromEnv(t *testing.T) {
	t.Setenv("SOURCE_DATE_EPOCH", "")
	if e, err := EpochFromEnv(); err != nil || !e.Equal(DefaultEpoch) {
		t.Fatalf("unset: %s %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "1700000000")
	if e, err := EpochFromEnv(); err != nil || e.Unix() != 1700000000 {
		t.Fatalf("set: %s %v", e, err)
	}
	t.Setenv("SOURCE_DATE_EPOCH", "yesterday")
	if _, err := EpochFromEnv(); err == nil || !strings.Contains(err.Error(), "SOURCE_DATE_EPOCH") {
		t.Fatalf("invalid: %v", err)
	}
}

func TestBuildLayerLargeSpillsToDisk(t *testing.T) {
	dir := t.TempDir()
	// Incompressible data larger than the in-memory limit.
	data := make([]byte, spillLimit+(1<<20))
	var x uint32 = 2463534242
	for i := range data {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		data[i] = byte(x)
	}
	if err := os.WriteFile(filepath.Join(dir, "big.bin"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := t.TempDir()
	l, err := BuildLayer(context.Background(), LayerOptions{Dir: dir, Workdir: "/app", TempDir: tmp})
	if err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(tmp); len(files) != 1 {
		t.Fatalf("temporary files: %d, want 1", len(files))
	}
	rc, _ := l.Compressed()
	sum := sha256Hex(t, rc)
	if d, _ := l.Digest(); d.Hex != sum {
		t.Fatalf("digest %s, content %s", d, sum)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if files, _ := os.ReadDir(tmp); len(files) != 0 {
		t.Fatalf("Close left %d temporary files", len(files))
	}
}

func TestBuildLayerRefusesHostileInput(t *testing.T) {
	for _, tc := range []struct {
		name      string
		files     map[string]string
		artifacts []string
		workdir   string
		want      string
	}{
		{name: "artifact with ..", files: map[string]string{"a": "1"}, artifacts: []string{"../etc/passwd"}, want: `"../etc/passwd": leaves the repository`},
		{name: "artifact with .. in the middle", files: map[string]string{"a/b": "1"}, artifacts: []string{"a/../../x"}, want: "leaves the repository"},
		{name: "absolute artifact", files: map[string]string{"a": "1"}, artifacts: []string{"/etc/passwd"}, want: "not an absolute path"},
		{name: "missing artifact", files: map[string]string{"a": "1"}, artifacts: []string{"nope"}, want: `"nope": no such file or directory`},
		{name: "absolute symlink", files: map[string]string{"etc": "-> /etc"}, want: `symbolic link etc points to the absolute path "/etc"`},
		{name: "escaping symlink", files: map[string]string{"a/up": "-> ../../secret"}, want: "symbolic link a/up points to \"../../secret\", outside the artifacts"},
		{name: "escape through a chain of links", files: map[string]string{"sub/d": "-> .", "l": "-> sub/d/../.."}, want: "symbolic link l points to \"sub/d/../..\", outside"},
		{name: "escape through a link to an absolute path", files: map[string]string{"sub/d": "-> /", "l2": "-> sub/d/etc"}, want: "absolute path"},
		{name: "link loop", files: map[string]string{"x": "-> y", "y": "-> x", "z": "-> x/a"}, want: "too many levels"},
		{name: "artifact through a symlinked directory", files: map[string]string{"real/f": "1", "alias": "-> real"}, artifacts: []string{"alias/f"}, want: "alias is a symbolic link or file"},
		{name: "relative workdir", files: map[string]string{"a": "1"}, workdir: "app", want: "must be an absolute path"},
		{name: "root workdir", files: map[string]string{"a": "1"}, workdir: "/", want: "must not be the image's root"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "repo")
			writeTree(t, dir, tc.files)
			if tc.workdir == "" {
				tc.workdir = "/app"
			}
			l, err := BuildLayer(context.Background(), LayerOptions{Dir: dir, Artifacts: tc.artifacts, Workdir: tc.workdir})
			if err == nil {
				_ = l.Close()
				t.Fatalf("got a layer, want an error containing %q", tc.want)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want it to contain %q", err, tc.want)
			}
			if strings.Contains(err.Error(), dir) {
				t.Errorf("error %q names the host path %s", err, dir)
			}
		})
	}
}

func sha256Hex(t *testing.T, rc io.ReadCloser) string {
	t.Helper()
	defer func() { _ = rc.Close() }()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil))
}
