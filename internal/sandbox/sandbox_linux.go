package sandbox

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// init turns this binary into a sandbox's first process when it was started as one. It runs
// before the packages that sort after this one are initialised (most of a manager's), and never
// returns then.
func init() {
	if len(os.Args) == 2 && os.Args[0] == initName {
		os.Exit(runInit(os.Args[1]))
	}
}

// statusFD is the pipe on which the first process says whether the step started: "ok", or why not.
const statusFD = 3

// Command returns the step to run in a sandbox.
func Command(spec Spec) *Cmd {
	// /proc/self/exe: this binary, even when its file was replaced since it started.
	cmd := &exec.Cmd{Path: "/proc/self/exe", Dir: "/", Env: spec.Env}
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Cloneflags: syscall.CLONE_NEWPID | syscall.CLONE_NEWNS | syscall.CLONE_NEWIPC,
		// Its own process group: the step's processes are in it too unless they leave it.
		Setpgid: true,
	}
	return &Cmd{Cmd: cmd, spec: spec}
}

// Start starts the sandbox and returns once the step runs, or with the reason it could not start.
func (c *Cmd) Start() error {
	if err := c.spec.Validate(); err != nil {
		return err
	}
	data, err := json.Marshal(c.spec)
	if err != nil {
		return err
	}
	c.Args = []string{initName, string(data)}
	status, statusW, err := os.Pipe()
	if err != nil {
		return err
	}
	defer func() { _ = status.Close() }()
	c.ExtraFiles = append([]*os.File{statusW}, c.spec.Hold...)
	err = c.Cmd.Start()
	_ = statusW.Close()
	if err != nil {
		return fmt.Errorf("failed to start the step's sandbox: %w", err)
	}
	msg, _ := io.ReadAll(io.LimitReader(status, 64<<10))
	if s := strings.TrimSpace(string(msg)); s != "ok" {
		_ = c.Process.Kill()
		_ = c.Wait()
		if s == "" {
			s = "its first process ended before it said why"
		}
		return fmt.Errorf("failed to set up the step's sandbox: %s", s)
	}
	return nil
}

var check struct {
	once sync.Once
	err  error
}

// Check runs an empty step in a sandbox as uid and gid (once per process; later calls return the
// first answer) and returns nil when this machine can run sandboxes, else an error wrapping
// ErrUnavailable that says why.
func Check(uid, gid int) error {
	check.once.Do(func() {
		check.err = probe(uid, gid)
		if check.err != nil {
			check.err = fmt.Errorf("%w: %w", ErrUnavailable, check.err)
		}
	})
	return check.err
}

func probe(uid, gid int) error {
	if euid := os.Geteuid(); euid != 0 {
		return fmt.Errorf("they need root, and this process runs as uid %d", euid)
	}
	dir, err := os.MkdirTemp("", "ferry-sandbox-check-")
	if err != nil {
		return err
	}
	defer func() { _ = os.RemoveAll(dir) }()
	if dir, err = filepath.EvalSymlinks(dir); err != nil {
		return err
	}
	if err := os.Chown(dir, uid, gid); err != nil {
		return err
	}
	// The step checks that it is who it should be and writes to its workspace.
	script := fmt.Sprintf(`test "$(id -u):$(id -g)" = "%d:%d" && : > %s/ok`, uid, gid, dir)
	cmd := Command(Spec{UID: uid, GID: gid, Args: []string{"/bin/sh", "-c", script}, Dir: dir, Mounts: []Mount{{Path: dir, Writable: true}}})
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		return err
	}
	if err := cmd.Wait(); err != nil {
		return fmt.Errorf("a test step failed (%w): %s", err, strings.TrimSpace(out.String()))
	}
	if _, err := os.Stat(filepath.Join(dir, "ok")); err != nil {
		return fmt.Errorf("a test step did not write to its workspace: %s", strings.TrimSpace(out.String()))
	}
	return nil
}

// runInit is the sandbox's first process: PID 1 of the new namespaces, root.
func runInit(arg string) int {
	status := os.NewFile(statusFD, "status")
	fail := func(err error) int {
		_, _ = fmt.Fprintf(status, "%v\n", err)
		return 125
	}
	var spec Spec
	if err := json.Unmarshal([]byte(arg), &spec); err != nil {
		return fail(fmt.Errorf("bad spec: %w", err))
	}
	spec.Env = os.Environ()
	if err := spec.Validate(); err != nil {
		return fail(err)
	}
	if os.Getpid() != 1 {
		return fail(errors.New("not the first process of a new PID namespace"))
	}
	// Whatever this process was given (the status pipe, the held files) stays out of the step.
	if err := closeOnExecFrom(statusFD); err != nil {
		return fail(err)
	}
	if err := setup(&spec, os.Stderr); err != nil {
		return fail(err)
	}
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, unix.SIGTERM, unix.SIGINT, unix.SIGHUP, unix.SIGQUIT)

	// The step is forked from this thread, which gets the settings the step inherits.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		return fail(fmt.Errorf("failed to set no_new_privs: %w", err))
	}
	// A session keyring of its own, not the manager's.
	_, _ = unix.KeyctlJoinSessionKeyring("")
	devNull, err := os.Open(os.DevNull)
	if err != nil {
		return fail(err)
	}
	groups := []uint32{}
	p, err := os.StartProcess(spec.Args[0], spec.Args, &os.ProcAttr{
		Dir:   spec.Dir,
		Env:   spec.Env,
		Files: []*os.File{devNull, os.Stdout, os.Stderr},
		Sys: &syscall.SysProcAttr{
			Credential: &syscall.Credential{Uid: uint32(spec.UID), Gid: uint32(spec.GID), Groups: groups}, //nolint:gosec // G115: Validate checked they are positive ints
		},
	})
	_ = devNull.Close()
	if err != nil {
		return fail(fmt.Errorf("failed to start the step: %w", err))
	}
	_, _ = status.WriteString("ok\n")
	_ = status.Close()

	go func() {
		for s := range sigs {
			// -1 from PID 1: every other process of the namespace.
			_ = unix.Kill(-1, s.(syscall.Signal))
		}
	}()
	for {
		var ws unix.WaitStatus
		pid, err := unix.Wait4(-1, &ws, 0, nil)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			_, _ = fmt.Fprintf(os.Stderr, "ferry-step-sandbox: %v\n", err)
			return 125
		}
		if pid != p.Pid {
			continue // an orphan the step left: reaped
		}
		if ws.Signaled() {
			return 128 + int(ws.Signal())
		}
		return ws.ExitStatus()
	}
}

// closeOnExecFrom marks every open file descriptor from fd on close-on-exec.
func closeOnExecFrom(fd int) error {
	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return err
	}
	for _, e := range entries {
		if n, err := strconv.Atoi(e.Name()); err == nil && n >= fd {
			unix.CloseOnExec(n)
		}
	}
	return nil
}

// privateTemp are the host's world-writable directories a step gets empty and private instead.
var privateTemp = []string{"/tmp", "/var/tmp", "/dev/shm"}

// masked are directories a step sees empty: a pod's ServiceAccount token and other Secrets.
var masked = []string{"/run/secrets", "/var/run/secrets"}

// setup makes the namespace's mounts. Messages for the step's log go to log.
func setup(spec *Spec, log io.Writer) error {
	// Nothing mounted here reaches the host.
	if err := unix.Mount("", "/", "", unix.MS_REC|unix.MS_PRIVATE, ""); err != nil {
		return fmt.Errorf("failed to make the mounts private: %w", err)
	}
	// Handles on what the step will see, taken before anything covers their paths.
	mountFDs := make([]int, len(spec.Mounts))
	for i, m := range spec.Mounts {
		fd, err := openDir(m.Path)
		if err != nil {
			return fmt.Errorf("mount %s: %w", m.Path, err)
		}
		mountFDs[i] = fd
	}
	// The caches first, while the file system of their upper directories is writable here: the
	// overlay keeps its own writable handle on it. The mounts made afterwards carry them along.
	var cacheTargets []string
	for _, c := range spec.Caches {
		if err := mountCache(spec, c); err != nil {
			_, _ = fmt.Fprintf(log, "The cache %s starts empty for this step: %v\n", c.Name, err)
			continue
		}
		cacheTargets = append(cacheTargets, c.Target)
	}

	if err := remountReadOnly(cacheTargets); err != nil {
		return err
	}
	if err := mountProc(); err != nil {
		return err
	}
	for _, d := range privateTemp {
		if isDir(d) {
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=1777"); err != nil {
				return fmt.Errorf("failed to mount a private %s: %w", d, err)
			}
		}
	}
	for _, d := range masked {
		if isDir(d) {
			if err := unix.Mount("tmpfs", d, "tmpfs", unix.MS_RDONLY|unix.MS_NOSUID|unix.MS_NODEV|unix.MS_NOEXEC, "mode=0755"); err != nil {
				return fmt.Errorf("failed to hide %s: %w", d, err)
			}
		}
	}

	// Shallow mounts first: a deeper one goes on top of the one that holds it.
	order := make([]int, len(spec.Mounts))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return len(spec.Mounts[a].Path) - len(spec.Mounts[b].Path) })
	for _, i := range order {
		if err := coverUnsearchable(spec.Mounts[i].Path, spec.UID, spec.GID); err != nil {
			return err
		}
	}
	for _, i := range order {
		m := spec.Mounts[i]
		if err := os.MkdirAll(m.Path, 0o755); err != nil { //nolint:gosec // G301: directories of an empty tmpfs, on the way to the mount
			return fmt.Errorf("mount %s: %w", m.Path, err)
		}
		if err := unix.Mount(fdPath(mountFDs[i]), m.Path, "", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("failed to mount %s: %w", m.Path, err)
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_NOSUID | unix.MS_NODEV)
		if !m.Writable {
			flags |= unix.MS_RDONLY
		}
		if err := unix.Mount("", m.Path, "", flags, ""); err != nil {
			return fmt.Errorf("failed to mount %s: %w", m.Path, err)
		}
	}
	for _, fd := range mountFDs {
		_ = unix.Close(fd)
	}
	return nil
}

// openDir opens a directory for use as a mount's source; its path must be free of symbolic links.
func openDir(path string) (int, error) {
	resolved, err := filepath.EvalSymlinks(path)
	if err != nil {
		return -1, err
	}
	if resolved != path {
		return -1, fmt.Errorf("the path goes through a symbolic link (to %s)", resolved)
	}
	fd, err := unix.Open(path, unix.O_PATH|unix.O_DIRECTORY|unix.O_NOFOLLOW|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, &os.PathError{Op: "open", Path: path, Err: err}
	}
	return fd, nil
}

func fdPath(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

func isDir(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.IsDir()
}

// remountReadOnly makes every mount of the namespace read-only (never the host's: a bind
// remount changes this namespace's mount only), but for the caches' views. /proc is replaced next.
func remountReadOnly(keep []string) error {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	type mnt struct {
		path  string
		flags uintptr
	}
	var mounts []mnt
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mount-point options ...
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 {
			continue
		}
		path := unescapeMountinfo(fields[4])
		if within("/proc", path) || slices.ContainsFunc(keep, func(k string) bool { return within(k, path) }) {
			continue
		}
		flags := uintptr(unix.MS_REMOUNT | unix.MS_BIND | unix.MS_RDONLY)
		for _, o := range strings.Split(fields[5], ",") {
			switch o {
			case "nosuid":
				flags |= unix.MS_NOSUID
			case "nodev":
				flags |= unix.MS_NODEV
			case "noexec":
				flags |= unix.MS_NOEXEC
			}
		}
		mounts = append(mounts, mnt{path, flags})
	}
	if err := sc.Err(); err != nil {
		return err
	}
	for _, m := range mounts {
		if err := unix.Mount("", m.path, "", m.flags, ""); err != nil {
			// A mount point that another mount hides cannot be reached by its path, by the
			// step either.
			if m.path != "/" && (errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EACCES)) {
				continue
			}
			return fmt.Errorf("failed to make %s read-only: %w", m.path, err)
		}
	}
	return nil
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mountProc mounts the namespace's own /proc: it lists the sandbox's processes only, and with
// hidepid=2 only those of the step's user to the step.
func mountProc() error {
	flags := uintptr(unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC)
	if err := unix.Mount("proc", "/proc", "proc", flags, "hidepid=2"); err == nil {
		return nil
	}
	if err := unix.Mount("proc", "/proc", "proc", flags, ""); err != nil {
		return fmt.Errorf("failed to mount /proc: %w", err)
	}
	return nil
}

// coverUnsearchable makes path's directories searchable by uid and gid: the first one on the way
// that they may not search is covered with an empty tmpfs, inside which the rest of the way is
// made. The step then sees that directory empty but for the way to path.
func coverUnsearchable(path string, uid, gid int) error {
	cur := "/"
	for _, name := range strings.Split(strings.TrimPrefix(path, "/"), "/") {
		var st unix.Stat_t
		if err := unix.Stat(cur, &st); err != nil {
			return fmt.Errorf("mount %s: %w", path, &os.PathError{Op: "stat", Path: cur, Err: err})
		}
		if !searchable(&st, uid, gid) {
			if cur == "/" {
				return errors.New("the step's user may not search /")
			}
			if err := unix.Mount("tmpfs", cur, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "mode=0755"); err != nil {
				return fmt.Errorf("failed to cover %s: %w", cur, err)
			}
			return nil
		}
		next := filepath.Join(cur, name)
		if _, err := os.Lstat(next); err != nil {
			// Inside a tmpfs this sandbox mounted: made later.
			return nil //nolint:nilerr // a missing directory is made by the caller
		}
		cur = next
	}
	return nil
}

// searchable reports whether uid (with gid and no other group) may search the directory st.
func searchable(st *unix.Stat_t, uid, gid int) bool {
	switch {
	case int(st.Uid) == uid:
		return st.Mode&0o100 != 0
	case int(st.Gid) == gid:
		return st.Mode&0o010 != 0
	}
	return st.Mode&0o001 != 0
}

// mountCache mounts the copy-on-write view c.Target and gives its top directories to the step.
func mountCache(spec *Spec, c Cache) error {
	var fds [3]int
	for i, dir := range []string{c.Lower, c.Upper, c.Work} {
		fd, err := openDir(dir)
		if err != nil {
			return err
		}
		defer func() { _ = unix.Close(fd) }()
		fds[i] = fd
	}
	m := spec.writableMountOf(c.Target)
	rel, err := filepath.Rel(m.Path, c.Target)
	if err != nil {
		return err
	}
	// Through a root at the mount: whatever an earlier step made of the path stays inside it.
	root, err := os.OpenRoot(m.Path)
	if err != nil {
		return err
	}
	defer func() { _ = root.Close() }()
	target, err := root.Open(rel)
	if err != nil {
		return err
	}
	defer func() { _ = target.Close() }()
	if fi, err := target.Stat(); err != nil || !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", c.Target)
	}
	opts := fmt.Sprintf("lowerdir=%s,upperdir=%s,workdir=%s", fdPath(fds[0]), fdPath(fds[1]), fdPath(fds[2]))
	if err := unix.Mount("overlay", fdPath(int(target.Fd())), "overlay", unix.MS_NOSUID|unix.MS_NODEV, opts); err != nil {
		return fmt.Errorf("the copy-on-write mount of %s failed: %w", c.Lower, err)
	}
	view, err := root.Open(rel)
	if err != nil {
		return err
	}
	defer func() { _ = view.Close() }()
	fd := int(view.Fd())
	if err := unix.Fchown(fd, spec.UID, spec.GID); err != nil {
		return err
	}
	entries, err := view.ReadDir(-1)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if !e.IsDir() {
			continue
		}
		// Copies the directory up with the step's user as its owner; never follows a link.
		if err := unix.Fchownat(fd, e.Name(), spec.UID, spec.GID, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("failed to give %s/%s to the step's user: %w", c.Target, e.Name(), err)
		}
	}
	return nil
}
