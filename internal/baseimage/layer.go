package baseimage

import (
	"archive/tar"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// A layer of a root file system is made the way internal/image makes application layers, with
// what an operating system needs on top: entries depth first in name order (parents before
// children), every timestamp the epoch, numeric owners without names, permission bits with
// setuid, setgid and sticky kept (/tmp is 1777, passwd is setuid), symbolic links as they are
// (absolute targets are normal in a root file system), hard links as links to the first path of
// the inode, and the security.capability extended attribute. Devices, sockets and pipes are left
// out, and so is everything below dev, proc and sys: the container runtime mounts those.

// capabilityXattr is the only extended attribute kept: others (security.selinux, user.*) say more
// about the machine that built the image than about the image.
const capabilityXattr = "security.capability"

// mountedDirs are the directories whose contents never go into a layer.
var mountedDirs = map[string]bool{"dev": true, "proc": true, "sys": true}

// node is what a layer records of a path, and what decides whether a path changed.
type node struct {
	typ      byte // tar.TypeReg, TypeDir, TypeSymlink
	mode     int64
	uid, gid int
	size     int64
	link     string
	sum      [sha256.Size]byte // regular files
	caps     string
}

// same reports whether two nodes are the same file as far as an image is concerned
// (timestamps are not).
func (n node) same(o node) bool { return n == o }

// tree indexes a root file system by path (slash-separated, relative, no trailing slash).
type tree map[string]node

// children returns the names directly under dir ("" is the root), sorted.
func (t tree) children() map[string][]string {
	out := map[string][]string{}
	for p := range t {
		dir, base := path.Split(p)
		out[strings.TrimSuffix(dir, "/")] = append(out[strings.TrimSuffix(dir, "/")], base)
	}
	for _, names := range out {
		slices.Sort(names)
	}
	return out
}

// removeUnder deletes p and everything below it from the index.
func (t tree) removeUnder(p string) {
	for q := range t {
		if q == p || strings.HasPrefix(q, p+"/") {
			delete(t, q)
		}
	}
}

// layerStats are the figures of a written layer.
type layerStats struct {
	Entries, Whiteouts int
	Bytes              int64 // uncompressed bytes of the files' contents
}

// layerWriter writes the tar stream of a root directory: everything (lower == nil), or what
// differs from lower, with OCI whiteouts for what was removed.
type layerWriter struct {
	root          *os.Root
	lower         tree
	lowerChildren map[string][]string
	epoch         time.Time
	tw            *tar.Writer
	// links maps an inode of this layer to the first path written for it.
	links map[[2]uint64]string
	buf   []byte
	stats layerStats
}

// writeRootfsLayer writes the layer of dir to w; see layerWriter.
func writeRootfsLayer(ctx context.Context, dir string, lower tree, epoch time.Time, w io.Writer) (layerStats, error) {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return layerStats{}, fmt.Errorf("failed to open the root file system %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }()
	lw := &layerWriter{root: root, lower: lower, epoch: epoch, tw: tar.NewWriter(w), links: map[[2]uint64]string{}, buf: make([]byte, 256<<10)}
	if lower != nil {
		lw.lowerChildren = lower.children()
	}
	if err := lw.walk(ctx, ""); err != nil {
		return layerStats{}, err
	}
	if err := lw.tw.Close(); err != nil {
		return layerStats{}, err
	}
	return lw.stats, nil
}

// walk writes the entries under dir (relative; "" is the root), depth first in name order.
func (lw *layerWriter) walk(ctx context.Context, dir string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	open := dir
	if open == "" {
		open = "."
	}
	f, err := lw.root.Open(open)
	if err != nil {
		return fmt.Errorf("failed to read the directory /%s: %w", dir, err)
	}
	names, err := f.Readdirnames(-1)
	_ = f.Close()
	if err != nil {
		return fmt.Errorf("failed to read the directory /%s: %w", dir, err)
	}
	slices.Sort(names)
	// Whiteouts for what the lower layers have here and this directory no longer has.
	if lw.lower != nil {
		for _, gone := range lw.lowerChildren[dir] {
			if !slices.Contains(names, gone) {
				if err := lw.whiteout(join(dir, gone)); err != nil {
					return err
				}
			}
		}
	}
	for _, name := range names {
		rel := join(dir, name)
		info, err := lw.root.Lstat(rel)
		if err != nil {
			return fmt.Errorf("failed to read /%s: %w", rel, err)
		}
		isDir, err := lw.entry(rel, info)
		if err != nil {
			return err
		}
		if isDir && !mountedDirs[rel] {
			if err := lw.walk(ctx, rel); err != nil {
				return err
			}
		}
	}
	return nil
}

func join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// entry writes one path when it is new or changed, and reports whether it is a directory to
// descend into.
func (lw *layerWriter) entry(rel string, info fs.FileInfo) (bool, error) {
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return false, fmt.Errorf("failed to read the owner of /%s", rel)
	}
	n := node{mode: tarMode(info.Mode()), uid: int(st.Uid), gid: int(st.Gid)}
	switch {
	case info.Mode().IsDir():
		n.typ = tar.TypeDir
	case info.Mode()&fs.ModeSymlink != 0:
		n.typ = tar.TypeSymlink
		link, err := lw.root.Readlink(rel)
		if err != nil {
			return false, fmt.Errorf("failed to read the symbolic link /%s: %w", rel, err)
		}
		n.link, n.mode = link, 0o777
	case info.Mode().IsRegular():
		n.typ, n.size = tar.TypeReg, info.Size()
		caps, err := readCaps(lw.root.Name(), rel)
		if err != nil {
			return false, err
		}
		n.caps = caps
	default:
		// Devices, sockets and pipes: the runtime provides what a container needs.
		return false, nil
	}

	old, existed := lw.lower[rel]
	if lw.lower != nil && existed {
		if n.typ == tar.TypeReg && old.typ == tar.TypeReg && n.size == old.size {
			sum, err := lw.hash(rel)
			if err != nil {
				return false, err
			}
			n.sum = sum
		}
		if n.same(old) {
			return n.typ == tar.TypeDir, nil
		}
		// A directory replaced by something else (or the reverse) is hidden first, so that
		// nothing of the old one shows through.
		if (old.typ == tar.TypeDir) != (n.typ == tar.TypeDir) {
			if err := lw.whiteout(rel); err != nil {
				return false, err
			}
		}
	}

	hdr := &tar.Header{Name: rel, Typeflag: n.typ, Mode: n.mode, Uid: n.uid, Gid: n.gid, ModTime: lw.epoch}
	if n.caps != "" {
		hdr.PAXRecords = map[string]string{"SCHILY.xattr." + capabilityXattr: n.caps}
	}
	switch n.typ {
	case tar.TypeDir:
		hdr.Name += "/"
	case tar.TypeSymlink:
		hdr.Linkname = n.link
	case tar.TypeReg:
		if st.Nlink > 1 {
			key := [2]uint64{uint64(st.Dev), st.Ino} //nolint:unconvert // Dev is not uint64 on every platform
			if first, ok := lw.links[key]; ok {
				hdr.Typeflag, hdr.Linkname = tar.TypeLink, first
				if err := lw.tw.WriteHeader(hdr); err != nil {
					return false, fmt.Errorf("failed to add /%s to the layer: %w", rel, err)
				}
				lw.stats.Entries++
				return false, nil
			}
			lw.links[key] = rel
		}
		hdr.Size = n.size
		if err := lw.tw.WriteHeader(hdr); err != nil {
			return false, fmt.Errorf("failed to add /%s to the layer: %w", rel, err)
		}
		if err := lw.copy(rel, n.size); err != nil {
			return false, err
		}
		lw.stats.Entries++
		lw.stats.Bytes += n.size
		return false, nil
	}
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return false, fmt.Errorf("failed to add /%s to the layer: %w", rel, err)
	}
	lw.stats.Entries++
	return n.typ == tar.TypeDir, nil
}

// whiteout writes the OCI whiteout that removes rel of the lower layers.
func (lw *layerWriter) whiteout(rel string) error {
	dir, base := path.Split(rel)
	hdr := &tar.Header{Name: dir + ".wh." + base, Typeflag: tar.TypeReg, Mode: 0o644, ModTime: lw.epoch}
	if err := lw.tw.WriteHeader(hdr); err != nil {
		return fmt.Errorf("failed to add the whiteout of /%s to the layer: %w", rel, err)
	}
	lw.stats.Whiteouts++
	return nil
}

// hash returns the sha256 of a regular file's content.
func (lw *layerWriter) hash(rel string) ([sha256.Size]byte, error) {
	f, err := lw.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("failed to read /%s: %w", rel, err)
	}
	defer func() { _ = f.Close() }()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, lw.buf); err != nil {
		return [sha256.Size]byte{}, fmt.Errorf("failed to read /%s: %w", rel, err)
	}
	var sum [sha256.Size]byte
	copy(sum[:], h.Sum(nil))
	return sum, nil
}

// copy writes a regular file's content, which must still be size bytes long.
func (lw *layerWriter) copy(rel string, size int64) error {
	f, err := lw.root.OpenFile(rel, os.O_RDONLY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return fmt.Errorf("failed to read /%s: %w", rel, err)
	}
	defer func() { _ = f.Close() }()
	n, err := io.CopyBuffer(lw.tw, io.LimitReader(f, size), lw.buf)
	if err != nil {
		return fmt.Errorf("failed to add /%s to the layer: %w", rel, err)
	}
	if n != size {
		return fmt.Errorf("/%s changed while the layer was being made", rel)
	}
	return nil
}

// tarMode converts a file mode to the tar header's permission and special bits.
func tarMode(m fs.FileMode) int64 {
	mode := int64(m.Perm())
	if m&fs.ModeSetuid != 0 {
		mode |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		mode |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		mode |= 0o1000
	}
	return mode
}

// fileMode converts a tar header's mode bits back.
func fileMode(mode int64) fs.FileMode {
	m := fs.FileMode(mode & 0o777)
	if mode&0o4000 != 0 {
		m |= fs.ModeSetuid
	}
	if mode&0o2000 != 0 {
		m |= fs.ModeSetgid
	}
	if mode&0o1000 != 0 {
		m |= fs.ModeSticky
	}
	return m
}

// readCaps returns a file's file capabilities, "" when it has none.
func readCaps(root, rel string) (string, error) {
	p := root + "/" + rel
	buf := make([]byte, 64)
	n, err := unix.Lgetxattr(p, capabilityXattr, buf)
	switch {
	case errors.Is(err, unix.ENODATA), errors.Is(err, unix.ENOTSUP):
		return "", nil
	case errors.Is(err, unix.ERANGE):
		buf = make([]byte, 4096)
		if n, err = unix.Lgetxattr(p, capabilityXattr, buf); err != nil {
			return "", fmt.Errorf("failed to read the capabilities of /%s: %w", rel, err)
		}
	case err != nil:
		return "", fmt.Errorf("failed to read the capabilities of /%s: %w", rel, err)
	}
	return string(buf[:n]), nil
}

// unpackLayer applies a layer's tar stream to the root file system in dir, as a container
// runtime does (whiteouts remove, opaque whiteouts empty a directory, entries replace), and
// records every path in idx. It runs as root: owners are set. Paths never leave dir.
func unpackLayer(ctx context.Context, dir string, r io.Reader, idx tree) error {
	root, err := os.OpenRoot(dir)
	if err != nil {
		return fmt.Errorf("failed to open %s: %w", dir, err)
	}
	defer func() { _ = root.Close() }()
	tr := tar.NewReader(r)
	buf := make([]byte, 256<<10)
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("failed to read the layer: %w", err)
		}
		rel, err := cleanEntry(hdr.Name)
		if err != nil {
			return err
		}
		if rel == "" {
			continue
		}
		if err := applyEntry(root, rel, hdr, tr, idx, buf); err != nil {
			return err
		}
	}
}

// cleanEntry returns a tar entry's path relative to the root, or an error when it leaves it.
func cleanEntry(name string) (string, error) {
	if slices.Contains(strings.Split(name, "/"), "..") {
		return "", fmt.Errorf("layer entry %q leaves the root file system", name)
	}
	return strings.TrimPrefix(path.Clean("/"+name), "/"), nil
}

func applyEntry(root *os.Root, rel string, hdr *tar.Header, r io.Reader, idx tree, buf []byte) error {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if base == ".wh..wh..opq" {
		open := dir
		if open == "" {
			open = "."
		}
		f, err := root.Open(open)
		if err != nil {
			return fmt.Errorf("failed to apply the opaque whiteout of /%s: %w", dir, err)
		}
		names, err := f.Readdirnames(-1)
		_ = f.Close()
		if err != nil {
			return fmt.Errorf("failed to apply the opaque whiteout of /%s: %w", dir, err)
		}
		for _, n := range names {
			if err := root.RemoveAll(join(dir, n)); err != nil {
				return fmt.Errorf("failed to apply the opaque whiteout of /%s: %w", dir, err)
			}
			idx.removeUnder(join(dir, n))
		}
		return nil
	}
	if gone, ok := strings.CutPrefix(base, ".wh."); ok {
		target := join(dir, gone)
		if err := root.RemoveAll(target); err != nil {
			return fmt.Errorf("failed to apply the whiteout of /%s: %w", target, err)
		}
		idx.removeUnder(target)
		return nil
	}

	n := node{mode: hdr.Mode & 0o7777, uid: hdr.Uid, gid: hdr.Gid}
	existing, err := root.Lstat(rel)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to unpack /%s: %w", rel, err)
	}
	// Anything but a directory over a directory replaces what was there.
	if exists && (!existing.IsDir() || hdr.Typeflag != tar.TypeDir) {
		if err := root.RemoveAll(rel); err != nil {
			return fmt.Errorf("failed to unpack /%s: %w", rel, err)
		}
		idx.removeUnder(rel)
		exists = false
	}
	switch hdr.Typeflag {
	case tar.TypeDir:
		n.typ = tar.TypeDir
		if !exists {
			if err := root.Mkdir(rel, 0o700); err != nil {
				return fmt.Errorf("failed to unpack /%s: %w", rel, err)
			}
		}
	case tar.TypeReg:
		n.typ, n.size = tar.TypeReg, hdr.Size
		f, err := root.OpenFile(rel, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
		if err != nil {
			return fmt.Errorf("failed to unpack /%s: %w", rel, err)
		}
		h := sha256.New()
		_, err = io.CopyBuffer(io.MultiWriter(f, h), r, buf)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("failed to unpack /%s: %w", rel, err)
		}
		copy(n.sum[:], h.Sum(nil))
		if v, ok := hdr.PAXRecords["SCHILY.xattr."+capabilityXattr]; ok {
			n.caps = v
		}
	case tar.TypeSymlink:
		n.typ, n.link, n.mode = tar.TypeSymlink, hdr.Linkname, 0o777
		if err := root.Symlink(hdr.Linkname, rel); err != nil {
			return fmt.Errorf("failed to unpack /%s: %w", rel, err)
		}
		if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
			return fmt.Errorf("failed to unpack /%s: %w", rel, err)
		}
		idx[rel] = n
		return nil
	case tar.TypeLink:
		target, err := cleanEntry(hdr.Linkname)
		if err != nil {
			return err
		}
		if err := root.Link(target, rel); err != nil {
			return fmt.Errorf("failed to unpack /%s (a hard link to /%s): %w", rel, target, err)
		}
		idx[rel] = idx[target]
		return nil
	default:
		// Devices, pipes: never in the layers made here; a container runtime would make them.
		return nil
	}
	if err := root.Lchown(rel, hdr.Uid, hdr.Gid); err != nil {
		return fmt.Errorf("failed to unpack /%s: %w", rel, err)
	}
	// After chown, which clears setuid and setgid.
	if err := root.Chmod(rel, fileMode(hdr.Mode)); err != nil {
		return fmt.Errorf("failed to unpack /%s: %w", rel, err)
	}
	if n.caps != "" {
		if err := unix.Lsetxattr(root.Name()+"/"+rel, capabilityXattr, []byte(n.caps), 0); err != nil {
			return fmt.Errorf("failed to set the capabilities of /%s: %w", rel, err)
		}
	}
	idx[rel] = n
	return nil
}
