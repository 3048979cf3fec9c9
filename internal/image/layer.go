package image

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// DefaultEpoch is the timestamp of every entry of an application layer and of the image config
// when SOURCE_DATE_EPOCH is not set: 1980-01-01, the earliest time zip files (Python wheels, Java
// jars) can hold, so tools that repackage files from the image do not choke on 1970.
var DefaultEpoch = time.Date(1980, 1, 1, 0, 0, 0, 0, time.UTC)

// EpochFromEnv returns SOURCE_DATE_EPOCH (seconds since 1970) when it is set, else DefaultEpoch.
func EpochFromEnv() (time.Time, error) {
	v := os.Getenv("SOURCE_DATE_EPOCH")
	if v == "" {
		return DefaultEpoch, nil
	}
	sec, err := strconv.ParseInt(v, 10, 64)
	if err != nil || sec < 0 {
		return time.Time{}, fmt.Errorf("SOURCE_DATE_EPOCH=%q: want a number of seconds since 1970-01-01", v)
	}
	return time.Unix(sec, 0).UTC(), nil
}

// LayerOptions say what goes into an application layer and where.
type LayerOptions struct {
	// Dir is the directory the artifacts are read from (the repository's checkout).
	Dir string
	// Root, when set, is Dir opened already: the artifacts are read through it, and Dir only
	// names them in messages. A caller that lets others write above Dir (a build step could put
	// a link in the checkout's place) opens Root through a root of its own.
	Root *os.Root
	// Owner, when set, is the only user whose regular files the layer takes: another user's file
	// among the artifacts (a hard link to a file the artifacts' writer could not read) fails it.
	Owner *int
	// Artifacts are the files and directories, relative to Dir, that go into the layer; empty
	// means all of Dir. A `.git` entry is never included, at any depth.
	Artifacts []string
	// Workdir is the absolute directory of the image where Dir's content goes (/app).
	Workdir string
	// Epoch is the timestamp of every entry; zero means DefaultEpoch.
	Epoch time.Time
	// MediaType is the layer's media type; default types.OCILayer.
	MediaType types.MediaType
	// Level is the gzip level; 0 means gzip.BestSpeed.
	Level int
	// TempDir is where a large layer is kept while it is pushed; default os.TempDir().
	TempDir string
	// Log is told about files that are left out; nil discards.
	Log io.Writer
}

// Layer is an application layer made reproducibly from a directory: entries sorted by path,
// every timestamp the epoch, owner 0:0 with no user or group names, permission bits kept (setuid,
// setgid and sticky bits dropped), the workdir and its parents 0755, regular files, directories
// and symbolic links whose targets stay inside the artifacts; sockets, pipes and devices are left
// out (reported in Dropped). The compressed bytes are kept (in memory, or in a temporary file when
// large) so that they are compressed and hashed once. Close releases them.
type Layer struct {
	// Entries is how many entries (directories, files, links) the layer holds.
	Entries int
	// Files is how many regular files it holds.
	Files int
	// UncompressedSize is the size of the tar stream.
	UncompressedSize int64
	// Dropped are the paths (relative to Dir) of special files that were left out.
	Dropped []string

	digest, diffID v1.Hash
	size           int64
	mediaType      types.MediaType
	data           *spill
}

var _ v1.Layer = (*Layer)(nil)

// Digest is the sha256 of the compressed layer.
func (l *Layer) Digest() (v1.Hash, error) { return l.digest, nil }

// DiffID is the sha256 of the uncompressed layer.
func (l *Layer) DiffID() (v1.Hash, error) { return l.diffID, nil }

// Size is the compressed size.
func (l *Layer) Size() (int64, error) { return l.size, nil }

// MediaType is the layer's media type.
func (l *Layer) MediaType() (types.MediaType, error) { return l.mediaType, nil }

// Compressed returns the gzip stream.
func (l *Layer) Compressed() (io.ReadCloser, error) { return l.data.open() }

// Uncompressed returns the tar stream.
func (l *Layer) Uncompressed() (io.ReadCloser, error) {
	rc, err := l.data.open()
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(rc)
	if err != nil {
		_ = rc.Close()
		return nil, err
	}
	return readCloser{Reader: zr, close: rc.Close}, nil
}

// WithMediaType returns the same layer under another media type (Docker or OCI), sharing its bytes.
func (l *Layer) WithMediaType(mt types.MediaType) *Layer {
	c := *l
	c.mediaType = mt
	return &c
}

// Close releases the compressed bytes.
func (l *Layer) Close() error { return l.data.close() }

type readCloser struct {
	io.Reader
	close func() error
}

func (r readCloser) Close() error { return r.close() }

// entry is one path of the layer, relative to Dir, slash-separated: its type (and a directory's
// permissions), and a link's target.
type entry struct {
	rel  string
	mode fs.FileMode
	link string
}

// BuildLayer makes the application layer from opts.Dir. It refuses artifacts that are absolute or
// leave Dir (`..`), that pass through a symbolic link, and symbolic links whose target is
// absolute or resolves outside Dir; it never follows a link.
func BuildLayer(ctx context.Context, opts LayerOptions) (*Layer, error) {
	workdir, err := cleanWorkdir(opts.Workdir)
	if err != nil {
		return nil, err
	}
	root := opts.Root
	if root == nil {
		if root, err = os.OpenRoot(opts.Dir); err != nil {
			return nil, fmt.Errorf("failed to open the artifacts directory: %w", err)
		}
		defer func() { _ = root.Close() }()
	}
	entries, dropped, err := collect(ctx, root, opts.Artifacts)
	if err != nil {
		return nil, err
	}
	for _, d := range dropped {
		if opts.Log != nil {
			_, _ = fmt.Fprintf(opts.Log, "left out %s: not a regular file, directory or symbolic link\n", d)
		}
	}
	epoch := opts.Epoch
	if epoch.IsZero() {
		epoch = DefaultEpoch
	}
	level := opts.Level
	if level == 0 {
		level = gzip.BestSpeed
	}
	mt := opts.MediaType
	if mt == "" {
		mt = types.OCILayer
	}
	l := &Layer{Dropped: dropped, mediaType: mt, data: &spill{dir: opts.TempDir, limit: spillLimit}}
	if err := l.write(ctx, root, opts.Owner, workdir, entries, epoch, level); err != nil {
		_ = l.data.close()
		return nil, err
	}
	return l, nil
}

// cleanWorkdir checks that the workdir is absolute and not the root, and returns it without the
// leading slash.
func cleanWorkdir(w string) (string, error) {
	if !path.IsAbs(w) {
		return "", fmt.Errorf("workdir %q: must be an absolute path such as /app", w)
	}
	c := path.Clean(w)
	if c == "/" {
		return "", fmt.Errorf("workdir %q: must not be the image's root directory", w)
	}
	return strings.TrimPrefix(c, "/"), nil
}

// excluded reports whether a path is or lies under a .git directory or file.
func excluded(rel string) bool {
	return slices.Contains(strings.Split(rel, "/"), ".git")
}

// collect lists the entries of the artifacts, sorted by path and without duplicates, and the
// special files left out.
func collect(ctx context.Context, root *os.Root, artifacts []string) ([]entry, []string, error) {
	if len(artifacts) == 0 {
		artifacts = []string{"."}
	}
	byPath := map[string]entry{}
	var dropped []string
	// add records one path; info is called only when the type alone is not enough (directories'
	// permissions): a regular file's size and permissions come from the open file later.
	add := func(rel string, typ fs.FileMode, info func() (fs.FileInfo, error)) error {
		if excluded(rel) {
			return nil
		}
		e := entry{rel: rel, mode: typ}
		switch {
		case typ.IsRegular():
		case typ.IsDir():
			fi, err := info()
			if err != nil {
				return fmt.Errorf("failed to read %s: %w", rel, unwrapPathError(err))
			}
			e.mode = fi.Mode()
		case typ&fs.ModeSymlink != 0:
			target, err := root.Readlink(rel)
			if err != nil {
				return fmt.Errorf("failed to read the symbolic link %s: %w", rel, err)
			}
			if err := checkLink(root, rel, target); err != nil {
				return err
			}
			e.link = target
		default:
			dropped = append(dropped, rel)
			return nil
		}
		byPath[rel] = e
		return nil
	}
	statInfo := func(fi fs.FileInfo) func() (fs.FileInfo, error) {
		return func() (fs.FileInfo, error) { return fi, nil }
	}
	for _, a := range artifacts {
		rel, err := cleanArtifact(a)
		if err != nil {
			return nil, nil, err
		}
		if rel != "." && excluded(rel) {
			continue
		}
		// Every parent must be a real directory: an entry under a link would be written through it.
		if rel != "." {
			parts := strings.Split(rel, "/")
			for i := 1; i < len(parts); i++ {
				parent := strings.Join(parts[:i], "/")
				info, err := root.Lstat(parent)
				if err != nil {
					return nil, nil, fmt.Errorf("artifacts: %q: %w", a, unwrapPathError(err))
				}
				if !info.IsDir() {
					return nil, nil, fmt.Errorf("artifacts: %q: %s is a symbolic link or file, not a directory; list the path it points to instead", a, parent)
				}
				if err := add(parent, info.Mode().Type(), statInfo(info)); err != nil {
					return nil, nil, err
				}
			}
		}
		info, err := root.Lstat(rel)
		if err != nil {
			return nil, nil, fmt.Errorf("artifacts: %q: %w", a, unwrapPathError(err))
		}
		if !info.IsDir() {
			if err := add(rel, info.Mode().Type(), statInfo(info)); err != nil {
				return nil, nil, err
			}
			continue
		}
		if rel != "." {
			if err := add(rel, info.Mode().Type(), statInfo(info)); err != nil {
				return nil, nil, err
			}
		}
		if err := walkDir(ctx, root, rel, add); err != nil {
			return nil, nil, err
		}
	}
	out := make([]entry, 0, len(byPath))
	for _, e := range byPath {
		out = append(out, e)
	}
	slices.SortFunc(out, func(a, b entry) int { return strings.Compare(a.rel, b.rel) })
	slices.Sort(dropped)
	return out, slices.Compact(dropped), nil
}

// walkDir lists everything under the directory rel, depth first, without following links and
// without a stat per entry (the directory listing says each entry's type), leaving out .git.
func walkDir(ctx context.Context, root *os.Root, rel string, add func(string, fs.FileMode, func() (fs.FileInfo, error)) error) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	d, err := root.Open(rel)
	if err != nil {
		return fmt.Errorf("failed to read the directory %s: %w", rel, unwrapPathError(err))
	}
	list, err := readDir(d, filepath.Join(root.Name(), filepath.FromSlash(rel)))
	_ = d.Close()
	if err != nil {
		return fmt.Errorf("failed to read the directory %s: %w", rel, unwrapPathError(err))
	}
	for _, e := range list {
		if e.Name() == ".git" {
			continue
		}
		p := e.Name()
		if rel != "." {
			p = rel + "/" + p
		}
		if err := add(p, e.Type(), func() (fs.FileInfo, error) { return root.Lstat(p) }); err != nil {
			return err
		}
		if e.IsDir() {
			if err := walkDir(ctx, root, p, add); err != nil {
				return err
			}
		}
	}
	return nil
}

// unwrapPathError drops the absolute path from os errors: messages name the artifact instead.
func unwrapPathError(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		if errors.Is(pe.Err, fs.ErrNotExist) {
			return errors.New("no such file or directory")
		}
		return pe.Err
	}
	return err
}

// cleanArtifact returns an artifact path relative to the directory, slash-separated and clean,
// or an error when it is absolute or leaves the directory.
func cleanArtifact(a string) (string, error) {
	s := filepath.ToSlash(a)
	if s == "" {
		return "", errors.New("artifacts: an empty path; use \".\" for the whole repository")
	}
	if path.IsAbs(s) || filepath.IsAbs(a) {
		return "", fmt.Errorf("artifacts: %q: must be a path inside the repository, not an absolute path", a)
	}
	c := path.Clean(s)
	if c == ".." || strings.HasPrefix(c, "../") {
		return "", fmt.Errorf("artifacts: %q: leaves the repository (..)", a)
	}
	return c, nil
}

// maxLinkHops bounds symbolic link resolution, as the kernel's ELOOP does.
const maxLinkHops = 40

// checkLink refuses a symbolic link at rel whose target is absolute or, resolved inside the
// directory (following further links found there), leaves it.
func checkLink(root *os.Root, rel, target string) error {
	if target == "" {
		return fmt.Errorf("symbolic link %s has an empty target", rel)
	}
	if path.IsAbs(target) || filepath.IsAbs(target) {
		return fmt.Errorf("symbolic link %s points to the absolute path %q: only relative links that stay inside the artifacts are allowed", rel, target)
	}
	// Resolve component by component from the link's directory.
	stack := strings.Split(path.Dir(rel), "/")
	if path.Dir(rel) == "." {
		stack = nil
	}
	pending := strings.Split(target, "/")
	hops := 0
	for len(pending) > 0 {
		c := pending[0]
		pending = pending[1:]
		switch c {
		case "", ".":
			continue
		case "..":
			if len(stack) == 0 {
				return fmt.Errorf("symbolic link %s points to %q, outside the artifacts", rel, target)
			}
			stack = stack[:len(stack)-1]
			continue
		}
		stack = append(stack, c)
		cur := strings.Join(stack, "/")
		info, err := root.Lstat(cur)
		if err != nil || info.Mode()&fs.ModeSymlink == 0 {
			// A missing path or a non-link: nothing more to follow here.
			continue
		}
		hops++
		if hops > maxLinkHops {
			return fmt.Errorf("symbolic link %s: too many levels of symbolic links", rel)
		}
		next, err := root.Readlink(cur)
		if err != nil {
			return fmt.Errorf("failed to read the symbolic link %s: %w", cur, err)
		}
		if path.IsAbs(next) || filepath.IsAbs(next) {
			return fmt.Errorf("symbolic link %s points through %s to the absolute path %q, outside the artifacts", rel, cur, next)
		}
		stack = stack[:len(stack)-1]
		pending = append(strings.Split(next, "/"), pending...)
	}
	return nil
}

// copyBufPool holds the buffers regular files are copied through.
var copyBufPool = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// write streams the entries as tar → (diffID) → gzip → (digest, bytes), once: this goroutine
// reads the files and writes the tar, compression runs in blocks on every core, and the
// compressed bytes are hashed and kept by another goroutine.
func (l *Layer) write(ctx context.Context, root *os.Root, owner *int, workdir string, entries []entry, epoch time.Time, level int) error {
	compressedHash := sha256.New()
	compressed := &countWriter{w: io.MultiWriter(compressedHash, l.data)}
	zw, err := newParallelGzip(compressed, level, runtime.GOMAXPROCS(0))
	if err != nil {
		return err
	}
	uncompressedHash := sha256.New()
	uncompressed := &countWriter{w: io.MultiWriter(uncompressedHash, zw)}
	if err := l.writeTar(ctx, uncompressed, root, owner, workdir, entries, epoch); err != nil {
		zw.abort()
		return err
	}
	if err := zw.Close(); err != nil {
		return err
	}
	l.UncompressedSize = uncompressed.n
	l.size = compressed.n
	l.diffID = hashOf(uncompressedHash)
	l.digest = hashOf(compressedHash)
	return l.data.finish()
}

// writeTar writes the workdir, its parents and the entries as a tar stream.
func (l *Layer) writeTar(ctx context.Context, w io.Writer, root *os.Root, owner *int, workdir string, entries []entry, epoch time.Time) error {
	tw := tar.NewWriter(w)
	parts := strings.Split(workdir, "/")
	for i := range parts {
		hdr := &tar.Header{Typeflag: tar.TypeDir, Name: strings.Join(parts[:i+1], "/") + "/", Mode: 0o755, ModTime: epoch}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		l.Entries++
	}
	bufp := copyBufPool.Get().(*[]byte)
	defer copyBufPool.Put(bufp)
	files := newFileOpener(root)
	files.owner = owner
	defer files.close()
	for _, e := range entries {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr := &tar.Header{Name: workdir + "/" + e.rel, Mode: int64(e.mode.Perm()), ModTime: epoch}
		switch {
		case e.mode.IsDir():
			hdr.Typeflag = tar.TypeDir
			hdr.Name += "/"
		case e.link != "":
			hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, e.link
			hdr.Mode = 0o777
		default:
			hdr.Typeflag = tar.TypeReg
			if err := copyFile(tw, hdr, files, e.rel, *bufp); err != nil {
				return err
			}
			l.Entries++
			l.Files++
			continue
		}
		if err := tw.WriteHeader(hdr); err != nil {
			return fmt.Errorf("failed to add %s to the layer: %w", e.rel, err)
		}
		l.Entries++
	}
	return tw.Close()
}

// copyFile writes one regular file: its header, with the size and permissions of the open file,
// then its content. It fails when the file is no longer a regular file or shrinks while read.
func copyFile(tw *tar.Writer, hdr *tar.Header, files *fileOpener, rel string, buf []byte) error {
	f, err := files.open(rel)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", rel, unwrapPathError(err))
	}
	defer func() { _ = f.Close() }()
	size, mode, uid, err := f.stat()
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", rel, err)
	}
	if files.owner != nil && uid != *files.owner {
		return fmt.Errorf("%s belongs to user %d, not to %d who made the artifacts: a hard link to a file from elsewhere is not taken", rel, uid, *files.owner)
	}
	if !mode.IsRegular() {
		return fmt.Errorf("%s changed while the layer was being made; run the build again", rel)
	}
	hdr.Size, hdr.Mode = size, int64(mode.Perm())
	if err := tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("failed to add %s to the layer: %w", rel, err)
	}
	n, err := io.CopyBuffer(tw, io.LimitReader(f, size), buf)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", rel, err)
	}
	if n != size {
		return fmt.Errorf("%s changed while the layer was being made; run the build again", rel)
	}
	return nil
}

func hashOf(h hash.Hash) v1.Hash {
	return v1.Hash{Algorithm: "sha256", Hex: fmt.Sprintf("%x", h.Sum(nil))}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// spillLimit is how large a layer may get before it moves from memory to a temporary file.
const spillLimit = 64 << 20

// chunkSize is the unit in which spill keeps bytes in memory: chunks are never copied or regrown.
const chunkSize = 1 << 20

// spill keeps bytes in memory up to a limit, then in a temporary file.
type spill struct {
	dir    string
	limit  int
	chunks [][]byte
	n      int
	f      *os.File
	once   sync.Once
}

func (s *spill) Write(p []byte) (int, error) {
	if s.f == nil && s.n+len(p) <= s.limit {
		n := len(p)
		for len(p) > 0 {
			if len(s.chunks) == 0 || len(s.chunks[len(s.chunks)-1]) == chunkSize {
				s.chunks = append(s.chunks, make([]byte, 0, chunkSize))
			}
			last := &s.chunks[len(s.chunks)-1]
			k := min(len(p), chunkSize-len(*last))
			*last = append(*last, p[:k]...)
			p = p[k:]
		}
		s.n += n
		return n, nil
	}
	if s.f == nil {
		f, err := os.CreateTemp(s.dir, "ferry-layer-*.tar.gz")
		if err != nil {
			return 0, fmt.Errorf("failed to make a temporary file for the layer: %w", err)
		}
		s.f = f
		for _, c := range s.chunks {
			if _, err := f.Write(c); err != nil {
				return 0, err
			}
		}
		s.chunks, s.n = nil, 0
	}
	return s.f.Write(p)
}

// finish ends writing.
func (s *spill) finish() error {
	if s.f != nil {
		return s.f.Sync()
	}
	return nil
}

// open returns a reader of everything written; readers may run concurrently.
func (s *spill) open() (io.ReadCloser, error) {
	if s.f == nil {
		readers := make([]io.Reader, len(s.chunks))
		for i, c := range s.chunks {
			readers[i] = bytes.NewReader(c)
		}
		return io.NopCloser(io.MultiReader(readers...)), nil
	}
	info, err := s.f.Stat()
	if err != nil {
		return nil, err
	}
	return io.NopCloser(io.NewSectionReader(s.f, 0, info.Size())), nil
}

func (s *spill) close() error {
	var err error
	s.once.Do(func() {
		if s.f != nil {
			name := s.f.Name()
			err = errors.Join(s.f.Close(), os.Remove(name))
		}
		s.chunks = nil
	})
	return err
}
