package baseimage

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/klauspost/compress/gzip"
)

// The cache directory holds everything expensive, per input:
//
//	lock                    held (flock) by the Build using the directory
//	blobs/sha256/<hex>      compressed layers, content-addressed
//	steps/<key>.json        what a step made from its inputs (key = sha256 of the inputs): its
//	                        layer and the facts the image labels state
//	apt/<key>/              the apt package index a stack was bootstrapped from, so that the
//	                        runtimes on it install from the same snapshot of the archive
//	work/                   trees being built; removed when a step ends and when a Build starts
type cache struct {
	dir string
}

// layerRecord is what a step made: one layer and what is known about it.
type layerRecord struct {
	// Digest, DiffID, Size and UncompressedSize describe the layer blob.
	Digest           v1.Hash `json:"digest"`
	DiffID           v1.Hash `json:"diffID"`
	Size             int64   `json:"size"`
	UncompressedSize int64   `json:"uncompressedSize"`
	// Entries and Whiteouts count the layer's tar entries.
	Entries   int `json:"entries"`
	Whiteouts int `json:"whiteouts,omitempty"`
	// CreatedBy is the history entry of the layer: how it was made.
	CreatedBy string `json:"createdBy"`
	// Facts are what the labels say: package versions, the archive's release date, the
	// toolchain's checksum.
	Facts map[string]string `json:"facts,omitempty"`
	// BuildSeconds is how long the step took when it ran.
	BuildSeconds float64 `json:"buildSeconds"`
}

// cacheKey is the sha256 of a step's inputs.
func cacheKey(inputs any) string {
	data, err := json.Marshal(inputs)
	if err != nil {
		panic(fmt.Sprintf("baseimage: cache key of %T: %v", inputs, err))
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

func openCache(dir string) (*cache, error) {
	if dir == "" {
		return nil, errors.New("baseimage: Options.CacheDir is required (the directory where base images are kept between builds)")
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("failed to resolve the cache directory %s: %w", dir, err)
	}
	for _, d := range []string{"blobs/sha256", "steps", "apt", "work"} {
		if err := os.MkdirAll(filepath.Join(abs, d), 0o750); err != nil {
			return nil, fmt.Errorf("failed to create the cache directory %s: %w", abs, err)
		}
	}
	return &cache{dir: abs}, nil
}

// lock takes the cache's lock, waiting for another Build that holds it (progress says so), and
// returns its release. The lock goes with the process: a killed Build leaves none behind.
func (c *cache) lock(ctx context.Context, waiting func()) (func(), error) {
	f, err := os.OpenFile(filepath.Join(c.dir, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("failed to open the lock of %s: %w", c.dir, err)
	}
	release := func() { _ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN); _ = f.Close() }
	err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
	if err == nil {
		return release, nil
	}
	if !errors.Is(err, syscall.EWOULDBLOCK) {
		_ = f.Close()
		return nil, fmt.Errorf("failed to lock %s: %w", c.dir, err)
	}
	waiting()
	// Polled rather than a blocking flock: a blocking call cannot be cancelled, and one that
	// gets the lock after its caller gave up would hold it, however briefly, from the next.
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, ctx.Err()
		case <-t.C:
		}
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			return release, nil
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("failed to lock %s: %w", c.dir, err)
		}
	}
}

// cleanWork removes what an interrupted Build left in work/. Trees there are only ever mounted
// on inside private mount namespaces, which end with their processes; a mount found there
// anyway stops the removal rather than deleting through it.
func (c *cache) cleanWork() error {
	work := filepath.Join(c.dir, "work")
	entries, err := os.ReadDir(work)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", work, err)
	}
	for _, e := range entries {
		if err := removeTree(filepath.Join(work, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// workDir makes a fresh directory for one step's trees.
func (c *cache) workDir(name string) (string, error) {
	d, err := os.MkdirTemp(filepath.Join(c.dir, "work"), name+"-")
	if err != nil {
		return "", fmt.Errorf("failed to make a work directory in %s: %w", c.dir, err)
	}
	return d, nil
}

// removeTree deletes dir after checking that nothing is mounted below it.
func removeTree(dir string) error {
	mounts, err := mountsUnder(dir)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("refusing to delete %s: %s is still mounted (unmount it with umount -R)", dir, mounts[0])
	}
	if err := os.RemoveAll(dir); err != nil {
		return fmt.Errorf("failed to delete %s: %w", dir, err)
	}
	return nil
}

// mountsUnder lists the mount points of this process's mount namespace at or below dir.
func mountsUnder(dir string) ([]string, error) {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("failed to read the mount table: %w", err)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, err
	}
	if resolved, err := filepath.EvalSymlinks(abs); err == nil {
		abs = resolved
	}
	var out []string
	for line := range strings.SplitSeq(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) < 5 {
			continue
		}
		mp := unescapeMountPath(fields[4])
		if mp == abs || strings.HasPrefix(mp, abs+"/") {
			out = append(out, mp)
		}
	}
	return out, nil
}

// unescapeMountPath undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountPath(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, ch := range s[i+1 : i+4] {
				if ch < '0' || ch > '7' {
					ok = false
					break
				}
				v = v*8 + byte(ch-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// step returns the cached record of key, or nil when there is none (or its blob is gone).
func (c *cache) step(key string) (*layerRecord, error) {
	data, err := os.ReadFile(filepath.Join(c.dir, "steps", key+".json"))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("failed to read the cache entry %s: %w", key, err)
	}
	rec := &layerRecord{}
	if err := json.Unmarshal(data, rec); err != nil {
		// A damaged entry is rebuilt, not fatal.
		return nil, nil //nolint:nilerr // the entry is rebuilt
	}
	info, err := os.Stat(c.blobPath(rec.Digest))
	if err != nil || info.Size() != rec.Size {
		return nil, nil //nolint:nilerr // a missing or truncated blob is rebuilt
	}
	return rec, nil
}

// putStep records what a step made.
func (c *cache) putStep(key string, rec *layerRecord) error {
	data, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(c.dir, "steps", key+".json"), data)
}

func (c *cache) blobPath(h v1.Hash) string {
	return filepath.Join(c.dir, "blobs", h.Algorithm, h.Hex)
}

// gzipLevel is the compression of the layers: they are compressed once and kept, so a good ratio
// is worth its time.
const gzipLevel = gzip.DefaultCompression

// writeBlob compresses the tar stream that write produces into a blob of the cache and returns
// the layer's description (Digest, DiffID, sizes). The gzip header has no name and no time, so
// the same tar stream always gives the same blob.
func (c *cache) writeBlob(write func(io.Writer) error) (*layerRecord, error) {
	tmp, err := os.CreateTemp(filepath.Join(c.dir, "blobs"), "layer-*.tmp")
	if err != nil {
		return nil, fmt.Errorf("failed to create a layer file in %s: %w", c.dir, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	defer func() { _ = tmp.Close() }()
	compressed := &hashCounter{h: sha256.New()}
	zw, err := gzip.NewWriterLevel(io.MultiWriter(tmp, compressed), gzipLevel)
	if err != nil {
		return nil, err
	}
	uncompressed := &hashCounter{h: sha256.New()}
	if err := write(io.MultiWriter(zw, uncompressed)); err != nil {
		return nil, err
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("failed to compress the layer: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		return nil, fmt.Errorf("failed to write the layer: %w", err)
	}
	rec := &layerRecord{
		Digest:           v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(compressed.h.Sum(nil))},
		DiffID:           v1.Hash{Algorithm: "sha256", Hex: hex.EncodeToString(uncompressed.h.Sum(nil))},
		Size:             compressed.n,
		UncompressedSize: uncompressed.n,
	}
	if err := os.Rename(tmp.Name(), c.blobPath(rec.Digest)); err != nil {
		return nil, fmt.Errorf("failed to store the layer: %w", err)
	}
	return rec, nil
}

type hashCounter struct {
	h interface {
		io.Writer
		Sum([]byte) []byte
	}
	n int64
}

func (w *hashCounter) Write(p []byte) (int, error) {
	n, err := w.h.Write(p)
	w.n += int64(n)
	return n, err
}

// layer returns the cached blob of rec as a v1.Layer.
func (c *cache) layer(rec *layerRecord) v1.Layer {
	return &blobLayer{path: c.blobPath(rec.Digest), rec: rec}
}

// blobLayer is a layer of the cache; its digests are those recorded when it was written (the
// registry checks the digest of what it receives).
type blobLayer struct {
	path string
	rec  *layerRecord
}

var _ v1.Layer = (*blobLayer)(nil)

func (l *blobLayer) Digest() (v1.Hash, error)             { return l.rec.Digest, nil }
func (l *blobLayer) DiffID() (v1.Hash, error)             { return l.rec.DiffID, nil }
func (l *blobLayer) Size() (int64, error)                 { return l.rec.Size, nil }
func (l *blobLayer) MediaType() (types.MediaType, error)  { return types.OCILayer, nil }
func (l *blobLayer) Compressed() (io.ReadCloser, error)   { return os.Open(l.path) }
func (l *blobLayer) Uncompressed() (io.ReadCloser, error) { return gunzipFile(l.path) }

// gunzipFile opens a gzip file for reading its content.
func gunzipFile(p string) (io.ReadCloser, error) {
	f, err := os.Open(p)
	if err != nil {
		return nil, err
	}
	zr, err := gzip.NewReader(f)
	if err != nil {
		_ = f.Close()
		return nil, fmt.Errorf("failed to read the layer %s: %w", p, err)
	}
	return struct {
		io.Reader
		io.Closer
	}{zr, closerFunc(func() error { _ = zr.Close(); return f.Close() })}, nil
}

type closerFunc func() error

func (f closerFunc) Close() error { return f() }

// writeFileAtomic writes a file through a temporary file and a rename, so readers never see
// half of it.
func writeFileAtomic(p string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(p), filepath.Base(p)+".*.tmp")
	if err != nil {
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	defer func() { _ = os.Remove(tmp.Name()) }()
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	if err := os.Rename(tmp.Name(), p); err != nil {
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	return nil
}

// since returns the seconds elapsed since t, rounded to tenths, for the records.
func since(t time.Time) float64 {
	return float64(time.Since(t).Round(100*time.Millisecond)) / float64(time.Second)
}
