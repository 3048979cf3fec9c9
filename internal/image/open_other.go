//go:build !unix

package image

import (
	"io/fs"
	"os"
)

// fileOpener opens the layer's regular files through the os.Root, which keeps every open inside
// the artifacts directory.
type fileOpener struct {
	root  *os.Root
	owner *int
}

func newFileOpener(root *os.Root) *fileOpener { return &fileOpener{root: root} }

func (o *fileOpener) open(rel string) (*rawFile, error) {
	f, err := o.root.Open(rel)
	if err != nil {
		return nil, err
	}
	owner := 0
	if o.owner != nil {
		owner = *o.owner
	}
	return &rawFile{File: f, owner: owner}, nil
}

func (o *fileOpener) close() {}

// rawFile is an open file.
type rawFile struct {
	*os.File
	owner int
}

// stat returns the open file's size, mode and owner; this system has no owner to check, so the
// owner is whoever LayerOptions.Owner asks for.
func (f *rawFile) stat() (int64, fs.FileMode, int, error) {
	info, err := f.Stat()
	if err != nil {
		return 0, 0, 0, err
	}
	return info.Size(), info.Mode(), f.owner, nil
}

// readDir lists a directory opened through the os.Root.
func readDir(d *os.File, _ string) ([]fs.DirEntry, error) { return d.ReadDir(-1) }
