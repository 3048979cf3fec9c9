//go:build unix

package image

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path"
	"strings"

	"golang.org/x/sys/unix"
)

// fileOpener opens the layer's regular files relative to a handle on their directory, with one
// openat of one name (O_NOFOLLOW: a link put in a file's place is not followed; O_NONBLOCK: a pipe
// put there does not hang), and reads them with plain system calls: for trees of many small files
// the os package's bookkeeping (poller registration, mode changes) costs more than the reading.
// Directory handles come from the os.Root, so they never leave the artifacts directory.
type fileOpener struct {
	root  *os.Root
	owner *int
	dirs  map[string]*os.File
}

// maxOpenDirs bounds the directory handles kept open.
const maxOpenDirs = 64

func newFileOpener(root *os.Root) *fileOpener {
	return &fileOpener{root: root, dirs: map[string]*os.File{}}
}

func (o *fileOpener) open(rel string) (*rawFile, error) {
	dir, base := path.Split(rel)
	dir = strings.TrimSuffix(dir, "/")
	if dir == "" {
		dir = "."
	}
	d, ok := o.dirs[dir]
	if !ok {
		if len(o.dirs) >= maxOpenDirs {
			o.close()
		}
		var err error
		if d, err = o.root.Open(dir); err != nil {
			return nil, err
		}
		o.dirs[dir] = d
	}
	rc, err := d.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var openErr error
	err = rc.Control(func(dfd uintptr) {
		for {
			fd, openErr = unix.Openat(int(dfd), base, unix.O_RDONLY|unix.O_NOFOLLOW|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if !errors.Is(openErr, unix.EINTR) {
				return
			}
		}
	})
	if err == nil {
		err = openErr
	}
	if err != nil {
		return nil, &fs.PathError{Op: "open", Path: rel, Err: err}
	}
	return &rawFile{fd: fd}, nil
}

func (o *fileOpener) close() {
	for k, d := range o.dirs {
		_ = d.Close()
		delete(o.dirs, k)
	}
}

// rawFile is an open regular file read with system calls.
type rawFile struct {
	fd int
}

// stat returns the open file's size, permissions (irregular unless a regular file) and owner.
func (f *rawFile) stat() (int64, fs.FileMode, int, error) {
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return 0, 0, 0, err
	}
	mode := fs.FileMode(st.Mode & 0o777)
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		mode |= fs.ModeIrregular
	}
	return st.Size, mode, int(st.Uid), nil
}

func (f *rawFile) Read(p []byte) (int, error) {
	for {
		n, err := unix.Read(f.fd, p)
		switch {
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return 0, err
		case n == 0 && len(p) > 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

func (f *rawFile) Close() error { return unix.Close(f.fd) }

// readDir lists a directory opened through the os.Root; name is its path. The listing says each
// entry's type; reading it through a duplicate handle avoids the stat per entry that listing a
// root's file costs. Where the file system does not say (DT_UNKNOWN), the os package stats
// name/entry: the type is then only a hint, as every use checks it again through the root or on
// the opened file.
func readDir(d *os.File, name string) ([]fs.DirEntry, error) {
	rc, err := d.SyscallConn()
	if err != nil {
		return nil, err
	}
	fd := -1
	var openErr error
	err = rc.Control(func(dfd uintptr) {
		for {
			fd, openErr = unix.Openat(int(dfd), ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			if !errors.Is(openErr, unix.EINTR) {
				return
			}
		}
	})
	if err == nil {
		err = openErr
	}
	if err != nil {
		return nil, err
	}
	dup := os.NewFile(uintptr(fd), name)
	defer func() { _ = dup.Close() }()
	return dup.ReadDir(-1)
}
