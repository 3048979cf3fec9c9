package local

import (
	"io/fs"
	"os"
	"path/filepath"

	"github.com/ferryci/ferry/internal/sandbox"
)

// stepOwner is who a Build's steps run as.
type stepOwner struct {
	// uid and gid are the step user and group; -1 when the steps run as the manager's user.
	uid, gid int
	lease    *uidLease
}

// unisolatedOwner runs the steps as the manager's user.
var unisolatedOwner = stepOwner{uid: -1, gid: -1}

func (o stepOwner) isolated() bool { return o.uid >= 0 }

// Who owns a workspace directory.
const (
	// ownedByStep: the step user's alone.
	ownedByStep = iota
	// ownedByGroup: the manager's; the step's group may read and search it.
	ownedByGroup
	// ownedByManager: the manager's alone.
	ownedByManager
)

// mkdir makes a directory of the workspace. Unisolated, every directory is the manager's alone.
func (o stepOwner) mkdir(path string, who int) error {
	mode := os.FileMode(0o700)
	if o.isolated() && who == ownedByGroup {
		mode = 0o750
	}
	if err := os.Mkdir(path, mode); err != nil {
		return err
	}
	return o.chown(path, who)
}

func (o stepOwner) chown(path string, who int) error {
	if !o.isolated() {
		return nil
	}
	switch who {
	case ownedByStep:
		return os.Lchown(path, o.uid, o.gid)
	case ownedByGroup:
		return os.Lchown(path, -1, o.gid)
	}
	return nil
}

// chownTree gives a tree the manager made (the checkout) to the step user, never following a link.
func (o stepOwner) chownTree(dir string) error {
	if !o.isolated() {
		return nil
	}
	return filepath.WalkDir(dir, func(path string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		// Nothing of the step's user has run yet: nobody but root can change the tree under the walk.
		return os.Lchown(path, o.uid, o.gid) //nolint:gosec // G122: see above
	})
}

// writeScript writes a step's script, which isolated only the step's group may read.
func (o stepOwner) writeScript(path string, data []byte) error {
	if !o.isolated() {
		return os.WriteFile(path, data, 0o700)
	}
	if err := os.WriteFile(path, data, 0o640); err != nil {
		return err
	}
	return o.chown(path, ownedByGroup)
}

// artifactOwner is the only user whose files the image may take: the step user. Nil
// (unisolated) takes every file.
func (o stepOwner) artifactOwner() *int {
	if !o.isolated() {
		return nil
	}
	uid := o.uid
	return &uid
}

// workspace is a run's temporary directories:
//
//	<log-dir>/.work/                  the manager's; isolated steps pass through, cannot list it (0711)
//	  build-*/                        root: the manager's; only the step's group passes through (0710)
//	    ws/                           dir: the step user's alone (0700)
//	      source/ home/ tmp/ caches/  the checkout, HOME, TMPDIR, the caches' views
//	    steps/                        scripts: the step's group may read them (0750)
//	    results/ layers/              the Tekton results, the caches' overlay directories: the manager's alone
//
// Unisolated, it is all the manager's alone.
type workspace struct {
	owner                            stepOwner
	root                             string
	dir, source, home, tmp, cacheDir string
	scripts, results, layers         string
	caches                           []sandbox.Cache
}

// newWorkspace makes a run's workspace for owner.
func (e *Executor) newWorkspace(owner stepOwner) (*workspace, error) {
	root, err := os.MkdirTemp(e.workDir, "build-")
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(root, "ws")
	ws := &workspace{
		owner: owner, root: root, dir: dir,
		source: filepath.Join(dir, "source"), home: filepath.Join(dir, "home"), tmp: filepath.Join(dir, "tmp"), cacheDir: filepath.Join(dir, "caches"),
		scripts: filepath.Join(root, "steps"), results: filepath.Join(root, "results"), layers: filepath.Join(root, "layers"),
	}
	fail := func(err error) (*workspace, error) {
		_ = removeAll(root)
		return nil, err
	}
	if owner.isolated() {
		if err := os.Chmod(root, 0o710); err != nil { //nolint:gosec // G302: the step's group passes through to its workspace
			return fail(err)
		}
		if err := owner.chown(root, ownedByGroup); err != nil {
			return fail(err)
		}
	}
	for _, d := range []struct {
		path string
		who  int
	}{
		{ws.dir, ownedByStep}, {ws.home, ownedByStep}, {ws.tmp, ownedByStep}, {ws.cacheDir, ownedByStep},
		{ws.scripts, ownedByGroup}, {ws.results, ownedByManager}, {ws.layers, ownedByManager},
	} {
		if err := owner.mkdir(d.path, d.who); err != nil {
			return fail(err)
		}
	}
	if !owner.isolated() {
		return ws, nil
	}
	for _, c := range e.caches {
		cache := sandbox.Cache{
			Name: c.name, Lower: c.dir, Target: filepath.Join(ws.cacheDir, c.name),
			Upper: filepath.Join(ws.layers, c.name, "upper"), Work: filepath.Join(ws.layers, c.name, "work"),
		}
		for _, d := range []struct {
			path string
			who  int
		}{
			{cache.Target, ownedByStep}, {filepath.Dir(cache.Upper), ownedByManager}, {cache.Upper, ownedByStep}, {cache.Work, ownedByManager},
		} {
			if err := owner.mkdir(d.path, d.who); err != nil {
				return fail(err)
			}
		}
		ws.caches = append(ws.caches, cache)
	}
	return ws, nil
}
