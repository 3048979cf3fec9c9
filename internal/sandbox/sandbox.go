// Package sandbox runs one build step of the local executor isolated from the machine it runs on:
// as an unprivileged user and group of its own, in new PID, mount and IPC namespaces.
//
// The namespaces' first process (PID 1) is this binary again, started under the name
// "ferry-step-sandbox" and still root: it makes every mount of the host read-only for the
// namespace, mounts a private /proc (hidepid=2), a private /tmp, /var/tmp and /dev/shm, hides
// /run/secrets (a pod's ServiceAccount token), makes the Spec's directories reachable at their own
// paths (covering a directory the step may not search, such as root's home, with an empty tmpfs),
// mounts the copy-on-write caches, then starts the step with the Spec's user and group, no
// supplementary groups, no capabilities and no_new_privs. It reaps whatever the step leaves
// behind, forwards SIGTERM to every process of the namespace and exits with the step's status as
// soon as the step's own process ends: the kernel then kills everything else in the namespace,
// and a wait for the sandbox returns only once all of it is gone. Nothing a step starts can
// outlive it, see the manager's processes or their environment, or write anything outside its
// writable mounts.
//
// Only Linux can do this, and only as root (CAP_SYS_ADMIN to make namespaces and mounts,
// CAP_SETUID to become the step's user): Check says whether this machine can.
package sandbox

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// initName is the first argument that makes this binary the sandbox's first process.
const initName = "ferry-step-sandbox"

// Spec is one step's sandbox.
type Spec struct {
	// UID and GID are the step's user and group; the step has no supplementary groups. Neither
	// may be 0.
	UID int `json:"uid"`
	GID int `json:"gid"`
	// Args is the step's command; Args[0] is an absolute path.
	Args []string `json:"args"`
	// Env is the step's environment. The sandbox's first process has it too (and hands it on;
	// it is not in its command line, which every user of the host may read), so that a scan of
	// /proc on the host finds the whole sandbox by a variable set here.
	Env []string `json:"-"`
	// Dir is the step's working directory.
	Dir string `json:"dir"`
	// Mounts are the host directories the step sees, at their own paths; everything else of the
	// host it sees read-only, and only where its user may read anyway.
	Mounts []Mount `json:"mounts,omitempty"`
	// Caches are copy-on-write views of host directories.
	Caches []Cache `json:"caches,omitempty"`
	// Hold are files that the sandbox's first process keeps open until the namespace ends, such
	// as the lock that says which step user is taken.
	Hold []*os.File `json:"-"`
}

// Mount is a host directory a step sees at its own path.
type Mount struct {
	// Path is absolute and free of symbolic links.
	Path string `json:"path"`
	// Writable lets the step write there; otherwise the mount is read-only.
	Writable bool `json:"writable,omitempty"`
}

// Cache is a copy-on-write view of a host directory (overlayfs): the step reads what Lower holds
// and what it wrote itself; what it writes goes to Upper. Lower is never written. The view's top
// directory and the directories right below it belong to the step's user, so that it can add
// entries there (Go's build cache keeps its entries in 256 such directories); deeper directories
// of Lower stay read-only to it. When the kernel refuses the mount, the step gets Target as it is
// (an empty directory on the first step) and its output says so.
type Cache struct {
	// Name names the cache in messages, such as GOCACHE.
	Name string `json:"name"`
	// Lower is the host directory the cache starts from.
	Lower string `json:"lower"`
	// Upper and Work are directories on one file system that the step cannot reach: Upper keeps
	// what the step wrote (it belongs to the step's user), Work is overlayfs's own.
	Upper string `json:"upper"`
	Work  string `json:"work"`
	// Target is where the step sees the cache: a directory inside a writable Mount.
	Target string `json:"target"`
}

// Validate checks the spec.
func (s *Spec) Validate() error {
	if s.UID <= 0 || s.GID <= 0 {
		return fmt.Errorf("the step's user and group must not be root (uid %d, gid %d)", s.UID, s.GID)
	}
	if len(s.Args) == 0 || !filepath.IsAbs(s.Args[0]) {
		return fmt.Errorf("the step's command %q must start with an absolute path", s.Args)
	}
	if !filepath.IsAbs(s.Dir) {
		return fmt.Errorf("the step's working directory %q must be absolute", s.Dir)
	}
	for _, m := range s.Mounts {
		if !filepath.IsAbs(m.Path) || filepath.Clean(m.Path) != m.Path || m.Path == "/" {
			return fmt.Errorf("mount %q: want an absolute, clean path other than /", m.Path)
		}
	}
	for _, c := range s.Caches {
		for _, p := range []string{c.Lower, c.Upper, c.Work, c.Target} {
			if !filepath.IsAbs(p) {
				return fmt.Errorf("cache %s: %q is not an absolute path", c.Name, p)
			}
		}
		if s.writableMountOf(c.Target) == nil {
			return fmt.Errorf("cache %s: %s is not inside a writable mount", c.Name, c.Target)
		}
	}
	return nil
}

// writableMountOf is the writable mount that holds path, the deepest one if several do.
func (s *Spec) writableMountOf(path string) *Mount {
	var found *Mount
	for i, m := range s.Mounts {
		if m.Writable && within(m.Path, path) && (found == nil || len(m.Path) > len(found.Path)) {
			found = &s.Mounts[i]
		}
	}
	return found
}

// within reports whether path is dir or lies under it.
func within(dir, path string) bool {
	return path == dir || strings.HasPrefix(path, dir+"/")
}

// Cmd is a step to run in a sandbox. Set Stdout and Stderr (the step's output, and the
// sandbox's own messages) before Start; Wait returns as exec.Cmd's does, the step's exit status
// being the sandbox's (128+n when signal n killed the step). The sandbox's first process is
// Process: SIGTERM to it reaches every process of the sandbox, SIGKILL ends the sandbox.
type Cmd struct {
	*exec.Cmd
	spec Spec
}

// ErrUnavailable wraps the reason this machine cannot run sandboxes.
var ErrUnavailable = errors.New("step sandboxes are not available")
