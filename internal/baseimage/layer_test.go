package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/ferryci/ferry/internal/image"
)

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: layers of a root file system keep owners")
	}
}

// makeRootfs builds a small root file system with what a real one has: setuid programs, a sticky
// /tmp, files of other owners, absolute symbolic links, hard links, devices under dev (left out)
// and a pipe (left out).
func makeRootfs(t *testing.T, dir string) {
	t.Helper()
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	file := func(p, content string, mode os.FileMode, uid, gid int) {
		t.Helper()
		full := filepath.Join(dir, p)
		must(os.MkdirAll(filepath.Dir(full), 0o755))
		must(os.WriteFile(full, []byte(content), 0o600))
		must(os.Lchown(full, uid, gid))
		must(os.Chmod(full, mode))
	}
	mkdir := func(p string, mode os.FileMode, uid, gid int) {
		t.Helper()
		full := filepath.Join(dir, p)
		must(os.MkdirAll(full, 0o755))
		must(os.Lchown(full, uid, gid))
		must(os.Chmod(full, mode))
	}
	mkdir("tmp", 0o777|os.ModeSticky, 0, 0)
	mkdir("var/mail", 0o775|os.ModeSetgid, 0, 8)
	mkdir("proc", 0o555, 0, 0)
	mkdir("dev", 0o755, 0, 0)
	file("usr/bin/passwd", "passwd program", 0o755|os.ModeSetuid, 0, 0)
	file("etc/shadow", "root:*:3652:0:99999:7:::\n", 0o640, 0, 42)
	file("etc/os-release", "ID=debian\n", 0o644, 0, 0)
	file("usr/lib/os-release", "ID=debian\n", 0o644, 0, 0)
	file("usr/share/doc/a/copyright", "a", 0o644, 0, 0)
	file("usr/share/doc/a/changelog", "b", 0o644, 0, 0)
	file("home/nonroot/.profile", "# profile\n", 0o644, 65532, 65532)
	must(os.Link(filepath.Join(dir, "usr/bin/passwd"), filepath.Join(dir, "usr/bin/passwd.hardlink")))
	must(os.Symlink("/usr/share/zoneinfo/Etc/UTC", filepath.Join(dir, "etc/localtime")))
	must(os.Symlink("usr/bin", filepath.Join(dir, "bin")))
	must(syscall.Mknod(filepath.Join(dir, "dev/null"), syscall.S_IFCHR|0o666, int(unix.Mkdev(1, 3))))
	must(syscall.Mkfifo(filepath.Join(dir, "run-fifo"), 0o600))
}

type entry struct {
	Name, Link string
	Type       byte
	Mode       int64
	UID, GID   int
	Content    string
}

func readTar(t *testing.T, data []byte) []entry {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(data))
	var out []entry
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		if !hdr.ModTime.Equal(image.DefaultEpoch) {
			t.Errorf("%s: mtime %s, want the epoch", hdr.Name, hdr.ModTime)
		}
		if hdr.Uname != "" || hdr.Gname != "" {
			t.Errorf("%s: owner names %q/%q, want numeric owners only", hdr.Name, hdr.Uname, hdr.Gname)
		}
		content, _ := io.ReadAll(tr)
		out = append(out, entry{Name: hdr.Name, Link: hdr.Linkname, Type: hdr.Typeflag, Mode: hdr.Mode, UID: hdr.Uid, GID: hdr.Gid, Content: string(content)})
	}
}

func writeLayer(t *testing.T, dir string, lower tree) []byte {
	t.Helper()
	var buf bytes.Buffer
	if _, err := writeRootfsLayer(context.Background(), dir, lower, image.DefaultEpoch, &buf); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRootfsLayer(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	makeRootfs(t, dir)
	data := writeLayer(t, dir, nil)
	got := readTar(t, data)
	want := []entry{
		{Name: "bin", Type: tar.TypeSymlink, Link: "usr/bin", Mode: 0o777},
		{Name: "dev/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "etc/localtime", Type: tar.TypeSymlink, Link: "/usr/share/zoneinfo/Etc/UTC", Mode: 0o777},
		{Name: "etc/os-release", Type: tar.TypeReg, Mode: 0o644, Content: "ID=debian\n"},
		{Name: "etc/shadow", Type: tar.TypeReg, Mode: 0o640, GID: 42, Content: "root:*:3652:0:99999:7:::\n"},
		{Name: "home/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "home/nonroot/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "home/nonroot/.profile", Type: tar.TypeReg, Mode: 0o644, UID: 65532, GID: 65532, Content: "# profile\n"},
		{Name: "proc/", Type: tar.TypeDir, Mode: 0o555},
		{Name: "tmp/", Type: tar.TypeDir, Mode: 0o1777},
		{Name: "usr/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/bin/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/bin/passwd", Type: tar.TypeReg, Mode: 0o4755, Content: "passwd program"},
		{Name: "usr/bin/passwd.hardlink", Type: tar.TypeLink, Link: "usr/bin/passwd", Mode: 0o4755},
		{Name: "usr/lib/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/lib/os-release", Type: tar.TypeReg, Mode: 0o644, Content: "ID=debian\n"},
		{Name: "usr/share/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/share/doc/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/share/doc/a/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "usr/share/doc/a/changelog", Type: tar.TypeReg, Mode: 0o644, Content: "b"},
		{Name: "usr/share/doc/a/copyright", Type: tar.TypeReg, Mode: 0o644, Content: "a"},
		{Name: "var/", Type: tar.TypeDir, Mode: 0o755},
		{Name: "var/mail/", Type: tar.TypeDir, Mode: 0o2775, GID: 8},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("layer entries:\n got  %+v\n want %+v", got, want)
	}

	// Timestamps do not matter: the same tree later gives the same bytes.
	later := time.Now().Add(time.Hour)
	if err := os.Chtimes(filepath.Join(dir, "etc/os-release"), later, later); err != nil {
		t.Fatal(err)
	}
	if again := writeLayer(t, dir, nil); !bytes.Equal(again, data) {
		t.Fatal("the same tree with other timestamps gave another layer")
	}
}

// A layer written from a tree, unpacked elsewhere and written again is the same layer: unpacking
// keeps what a layer records (owners, modes with special bits, links).
func TestUnpackLayerRoundTrip(t *testing.T) {
	needRoot(t)
	src := t.TempDir()
	makeRootfs(t, src)
	data := writeLayer(t, src, nil)
	dst := t.TempDir()
	idx := tree{}
	if err := unpackLayer(context.Background(), dst, bytes.NewReader(data), idx); err != nil {
		t.Fatal(err)
	}
	if again := writeLayer(t, dst, nil); !bytes.Equal(again, data) {
		t.Fatalf("round trip changed the layer:\n%+v\n%+v", readTar(t, again), readTar(t, data))
	}
	if n := idx["usr/bin/passwd"]; n.typ != tar.TypeReg || n.mode != 0o4755 || n.sum != sha256.Sum256([]byte("passwd program")) {
		t.Errorf("index of usr/bin/passwd = %+v", n)
	}
	if idx["usr/bin/passwd.hardlink"] != idx["usr/bin/passwd"] {
		t.Error("the hard link's index entry differs from its target's")
	}
	a, _ := os.Stat(filepath.Join(dst, "usr/bin/passwd"))
	b, _ := os.Stat(filepath.Join(dst, "usr/bin/passwd.hardlink"))
	if !os.SameFile(a, b) {
		t.Error("the hard link was unpacked as a copy")
	}
}

// The layer of a changed tree holds exactly what changed, with whiteouts for what went, and
// applying it to the lower tree gives the changed tree.
func TestDiffLayer(t *testing.T) {
	needRoot(t)
	base := writeLayer(t, func() string { d := t.TempDir(); makeRootfs(t, d); return d }(), nil)
	upper := t.TempDir()
	lower := tree{}
	if err := unpackLayer(context.Background(), upper, bytes.NewReader(base), lower); err != nil {
		t.Fatal(err)
	}
	// What apt and useradd do to a tree: change, add, remove, chmod, chown, replace.
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(os.WriteFile(filepath.Join(upper, "etc/os-release"), []byte("ID=debian\nVERSION_ID=12\n"), 0o644))
	must(os.MkdirAll(filepath.Join(upper, "usr/lib/python3.11"), 0o755))
	must(os.WriteFile(filepath.Join(upper, "usr/lib/python3.11/os.py"), []byte("import sys\n"), 0o644))
	must(os.RemoveAll(filepath.Join(upper, "usr/share/doc/a")))
	must(os.Remove(filepath.Join(upper, "usr/lib/os-release")))
	must(os.Mkdir(filepath.Join(upper, "usr/lib/os-release"), 0o755)) // a file became a directory
	must(os.Chmod(filepath.Join(upper, "etc/shadow"), 0o600))
	must(os.Lchown(filepath.Join(upper, "home/nonroot/.profile"), 0, 0))
	// Touched but unchanged: not in the layer.
	later := time.Now().Add(time.Hour)
	must(os.Chtimes(filepath.Join(upper, "usr/bin/passwd"), later, later))

	diff := writeLayer(t, upper, lower)
	var names []string
	for _, e := range readTar(t, diff) {
		names = append(names, e.Name)
	}
	want := []string{
		"etc/os-release", "etc/shadow", "home/nonroot/.profile",
		"usr/lib/.wh.os-release", "usr/lib/os-release/", "usr/lib/python3.11/", "usr/lib/python3.11/os.py",
		"usr/share/doc/.wh.a",
	}
	if !reflect.DeepEqual(names, want) {
		t.Fatalf("diff layer entries:\n got  %q\n want %q", names, want)
	}

	// Lower + diff = upper.
	applied := t.TempDir()
	idx := tree{}
	for _, layer := range [][]byte{base, diff} {
		if err := unpackLayer(context.Background(), applied, bytes.NewReader(layer), idx); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := writeLayer(t, applied, nil), writeLayer(t, upper, nil); !bytes.Equal(got, want) {
		t.Fatalf("lower + diff differs from the changed tree:\n%+v\n%+v", readTar(t, got), readTar(t, want))
	}
	if _, err := os.Stat(filepath.Join(applied, "usr/share/doc/a")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the whiteout left usr/share/doc/a: %v", err)
	}
	for p := range idx {
		if strings.HasPrefix(p, "usr/share/doc/a") {
			t.Errorf("the index still has %s", p)
		}
	}
}

// Entries that would leave the root are refused, and links do not lead writes out of it.
func TestUnpackLayerStaysInside(t *testing.T) {
	needRoot(t)
	outside := t.TempDir()
	for name, entries := range map[string][]*tar.Header{
		"dot-dot": {{Name: "../escaped", Typeflag: tar.TypeReg, Mode: 0o644}},
		"through a symbolic link": {
			{Name: "etc", Typeflag: tar.TypeSymlink, Linkname: outside, Mode: 0o777},
			{Name: "etc/escaped", Typeflag: tar.TypeReg, Mode: 0o644},
		},
	} {
		t.Run(name, func(t *testing.T) {
			var buf bytes.Buffer
			tw := tar.NewWriter(&buf)
			for _, h := range entries {
				if err := tw.WriteHeader(h); err != nil {
					t.Fatal(err)
				}
			}
			if err := tw.Close(); err != nil {
				t.Fatal(err)
			}
			err := unpackLayer(context.Background(), t.TempDir(), &buf, tree{})
			if err == nil {
				t.Fatal("unpackLayer succeeded, want an error")
			}
			if _, err := os.Stat(filepath.Join(outside, "escaped")); err == nil {
				t.Fatal("a file was written outside the root")
			}
		})
	}
}

func TestNormaliseShadow(t *testing.T) {
	p := filepath.Join(t.TempDir(), "shadow")
	in := "root:*:20791:0:99999:7:::\nnonroot:!:20791::::::\nnobody:*::0:99999:7:::\n"
	if err := os.WriteFile(p, []byte(in), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := normaliseShadow(p, image.DefaultEpoch); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(p)
	want := "root:*:3652:0:99999:7:::\nnonroot:!:3652::::::\nnobody:*::0:99999:7:::\n"
	if string(got) != want {
		t.Fatalf("got %q, want %q", got, want)
	}
}
