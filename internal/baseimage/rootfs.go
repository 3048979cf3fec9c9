package baseimage

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// rootPATH is the PATH of commands run in a root file system, and of the images.
const rootPATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// debianKeyring authenticates the archive: debootstrap checks the Release file's signature with
// it, and every package against the Release file's checksums.
const debianKeyring = "/usr/share/keyrings/debian-archive-keyring.gpg"

// commandEnv is the environment of debootstrap and of commands in a root file system: nothing of
// the caller's but the proxy settings the archive may need, so that the result does not depend on
// who runs the build. SOURCE_DATE_EPOCH makes the tools that honour it (shadow's pwconv and
// useradd, Python's byte compiler) write the epoch instead of today.
func commandEnv(epoch time.Time) []string {
	env := []string{
		"PATH=" + rootPATH,
		"HOME=/root",
		"LC_ALL=C.UTF-8",
		"DEBIAN_FRONTEND=noninteractive",
		"DEBCONF_NONINTERACTIVE_SEEN=true",
		"SOURCE_DATE_EPOCH=" + strconv.FormatInt(epoch.Unix(), 10),
	}
	for _, k := range []string{"http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY"} {
		if v, ok := os.LookupEnv(k); ok {
			env = append(env, k+"="+v)
		}
	}
	return env
}

// runIsolated runs a command in its own mount namespace (private, so nothing it mounts shows on
// the machine, and everything it mounts is gone when it exits, however it exits) and process
// group (killed as a whole when ctx ends). Output goes to log; on failure the error carries its
// last lines.
func runIsolated(ctx context.Context, log io.Writer, env []string, name string, args ...string) error {
	tail := &tailBuffer{max: 30}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = env
	cmd.Stdin = nil
	cmd.Stdout = io.MultiWriter(log, tail)
	cmd.Stderr = cmd.Stdout
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Unshareflags: syscall.CLONE_NEWNS,
		Setpgid:      true,
		Pdeathsig:    syscall.SIGKILL,
	}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("%s %s: %w; its last output:\n%s", name, strings.Join(args, " "), err, tail.String())
	}
	return nil
}

// chrootScript mounts /proc and the machine's /dev into the root file system ($0) inside the
// private mount namespace of runIsolated, then runs the command in it.
const chrootScript = `set -e
mount -t proc proc "$0/proc"
mount --rbind /dev "$0/dev"
exec chroot "$0" "$@"`

// runInRoot runs a command chrooted into rootfs with /proc and /dev mounted, as apt and dpkg
// maintainer scripts need; the mounts vanish with the command.
func runInRoot(ctx context.Context, log io.Writer, rootfs string, env []string, args ...string) error {
	return runIsolated(ctx, log, env, "/bin/sh", append([]string{"-c", chrootScript, rootfs}, args...)...)
}

// tailBuffer keeps the last lines written to it.
type tailBuffer struct {
	mu    sync.Mutex
	max   int
	lines []string
	part  string
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := t.part + string(p)
	parts := strings.Split(s, "\n")
	t.part = parts[len(parts)-1]
	t.lines = append(t.lines, parts[:len(parts)-1]...)
	if len(t.lines) > t.max {
		t.lines = t.lines[len(t.lines)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := t.lines
	if t.part != "" {
		lines = append(slices.Clip(lines), t.part)
	}
	return strings.Join(lines, "\n")
}

// debootstrapPhases turns debootstrap's "I: Retrieving Release" lines into progress: the first
// line of each phase (retrieving, validating, extracting, installing, unpacking, configuring),
// not one per package.
type debootstrapPhases struct {
	report func(string)
	seen   map[string]bool
	part   string
}

func (d *debootstrapPhases) Write(p []byte) (int, error) {
	s := d.part + string(p)
	lines := strings.Split(s, "\n")
	d.part = lines[len(lines)-1]
	for _, l := range lines[:len(lines)-1] {
		msg, ok := strings.CutPrefix(l, "I: ")
		if !ok {
			continue
		}
		verb, _, _ := strings.Cut(msg, " ")
		if !d.seen[verb] {
			if d.seen == nil {
				d.seen = map[string]bool{}
			}
			d.seen[verb] = true
			d.report(strings.TrimSpace(strings.TrimSuffix(msg, "...")))
		}
	}
	return len(p), nil
}

// debootstrap installs Debian's minimal base system (the minbase variant: essential and
// required packages, and apt) for suite into target from archive.
func debootstrap(ctx context.Context, log io.Writer, env []string, arch, suite, target, archive string) error {
	err := runIsolated(ctx, log, env, debootstrapPath(),
		"--variant=minbase", "--arch="+arch, "--keyring="+debianKeyring, suite, target, archive)
	if err != nil {
		return fmt.Errorf("failed to bootstrap Debian %s from %s: %w", suite, redactURI(archive), err)
	}
	return nil
}

// debootstrapPath finds debootstrap, which lives in /usr/sbin (not on every user's PATH).
func debootstrapPath() string {
	return lookSbin("debootstrap")
}

// lookSbin finds a command on PATH or in the sbin directories.
func lookSbin(name string) string {
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/bin", "/bin"} {
		p := filepath.Join(d, name)
		if info, err := os.Stat(p); err == nil && info.Mode().IsRegular() && info.Mode().Perm()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// prepareRoot makes a root file system ready for apt in a chroot: the machine's resolver
// configuration (to reach the archive), a policy that keeps maintainer scripts from starting
// services, and the package index saved with the stack. finishRoot undoes it.
func prepareRoot(rootfs, aptLists string) error {
	resolv, err := os.ReadFile("/etc/resolv.conf")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to read /etc/resolv.conf: %w", err)
	}
	if err := replaceFile(filepath.Join(rootfs, "etc/resolv.conf"), resolv, 0o644); err != nil {
		return err
	}
	if err := replaceFile(filepath.Join(rootfs, "usr/sbin/policy-rc.d"), []byte("#!/bin/sh\n# Added while Ferry builds the image: no service starts.\nexit 101\n"), 0o755); err != nil {
		return err
	}
	return copyDir(aptLists, filepath.Join(rootfs, "var/lib/apt/lists"))
}

// replaceFile writes a file in a root file system, removing a symbolic link that may be there
// rather than writing through it.
func replaceFile(p string, data []byte, mode os.FileMode) error {
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("failed to replace %s: %w", p, err)
	}
	if err := os.WriteFile(p, data, mode); err != nil {
		return fmt.Errorf("failed to write %s: %w", p, err)
	}
	return os.Chmod(p, mode)
}

// copyDir copies the regular files of src (one level) into dst.
func copyDir(src, dst string) error {
	entries, err := os.ReadDir(src)
	if err != nil {
		return fmt.Errorf("failed to read %s: %w", src, err)
	}
	if err := os.MkdirAll(dst, 0o750); err != nil {
		return err
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		data, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", e.Name(), err)
		}
		if err := replaceFile(filepath.Join(dst, e.Name()), data, 0o644); err != nil {
			return err
		}
	}
	return nil
}

// saveAptLists keeps the package index debootstrap fetched (the Release files and Packages of the
// suite) so that later steps install from the same snapshot of the archive.
func saveAptLists(rootfs, dst string) error {
	tmp := dst + ".tmp"
	_ = os.RemoveAll(tmp)
	if err := copyDir(filepath.Join(rootfs, "var/lib/apt/lists"), tmp); err != nil {
		return err
	}
	_ = os.RemoveAll(dst)
	if err := os.Rename(tmp, dst); err != nil {
		return fmt.Errorf("failed to keep the package index: %w", err)
	}
	return nil
}

// releaseDate reads the Date of the archive's Release file in an apt lists directory: it names
// the snapshot of the archive a stack was made from.
func releaseDate(lists string) string {
	matches, _ := filepath.Glob(filepath.Join(lists, "*_Release"))
	slices.Sort(matches)
	for _, m := range matches {
		data, err := os.ReadFile(m)
		if err != nil {
			continue
		}
		for line := range strings.SplitSeq(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "Date:"); ok {
				return strings.TrimSpace(v)
			}
		}
	}
	return ""
}

// installedPackages reads the installed packages (name → version) from a root file system's
// dpkg status file.
func installedPackages(rootfs string) (map[string]string, error) {
	f, err := os.Open(filepath.Join(rootfs, "var/lib/dpkg/status"))
	if err != nil {
		return nil, fmt.Errorf("failed to read the dpkg status: %w", err)
	}
	defer func() { _ = f.Close() }()
	out := map[string]string{}
	var pkg, version, status string
	flush := func() {
		if pkg != "" && strings.HasSuffix(status, " installed") {
			out[pkg] = version
		}
		pkg, version, status = "", "", ""
	}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 0, 64<<10), 4<<20)
	for sc.Scan() {
		line := sc.Text()
		switch {
		case line == "":
			flush()
		case strings.HasPrefix(line, "Package: "):
			pkg = strings.TrimPrefix(line, "Package: ")
		case strings.HasPrefix(line, "Version: "):
			version = strings.TrimPrefix(line, "Version: ")
		case strings.HasPrefix(line, "Status: "):
			status = strings.TrimPrefix(line, "Status: ")
		}
	}
	flush()
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the dpkg status: %w", err)
	}
	return out, nil
}

// packageList formats packages as "name=version" words in name order.
func packageList(pkgs map[string]string) string {
	names := make([]string, 0, len(pkgs))
	for n := range pkgs {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for i, n := range names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(n + "=" + pkgs[n])
	}
	return b.String()
}

// addedPackages returns what after has that before lacks or has in another version.
func addedPackages(before, after map[string]string) map[string]string {
	out := map[string]string{}
	for n, v := range after {
		if before[n] != v {
			out[n] = v
		}
	}
	return out
}

// normalise removes from a root file system what differs between two builds from the same
// inputs, or belongs to the machine that built it rather than to the image: logs, the package
// index and package caches, ldconfig's auxiliary cache, the build machine's host name and
// resolver, backup files of the account databases, temporary files, and the days since 1970 in
// /etc/shadow (set to the epoch's). Timestamps are dealt with when the layer is written. It
// refuses to touch a tree with anything mounted in it.
func normalise(rootfs string, epoch time.Time) error {
	mounts, err := mountsUnder(rootfs)
	if err != nil {
		return err
	}
	if len(mounts) > 0 {
		return fmt.Errorf("refusing to clean %s: %s is mounted", rootfs, mounts[0])
	}
	remove := []string{
		"etc/hostname", "etc/resolv.conf", "etc/machine-id", "var/lib/dbus/machine-id",
		"usr/sbin/policy-rc.d", "var/cache/ldconfig/aux-cache",
		"etc/passwd-", "etc/group-", "etc/shadow-", "etc/gshadow-", "etc/subuid-", "etc/subgid-",
	}
	for _, p := range remove {
		if err := os.Remove(filepath.Join(rootfs, p)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("failed to remove /%s: %w", p, err)
		}
	}
	globs := []string{
		"var/lib/dpkg/*-old", "var/cache/debconf/*-old", "var/cache/apt/*.bin",
		"var/cache/apt/archives/*.deb", "var/cache/apt/archives/partial/*",
		"var/lib/apt/lists/*", "tmp/*", "tmp/.*", "var/tmp/*", "var/tmp/.*", "root/.cache",
	}
	for _, g := range globs {
		matches, err := filepath.Glob(filepath.Join(rootfs, g))
		if err != nil {
			return err
		}
		for _, m := range matches {
			if filepath.Base(m) == "." || filepath.Base(m) == ".." || m == filepath.Join(rootfs, "var/lib/apt/lists/partial") {
				continue
			}
			if err := os.RemoveAll(m); err != nil {
				return fmt.Errorf("failed to remove %s: %w", strings.TrimPrefix(m, rootfs), err)
			}
		}
	}
	// Logs keep their files (some have owners and modes packages expect) but not their lines.
	err = filepath.WalkDir(filepath.Join(rootfs, "var/log"), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return nil
			}
			return err
		}
		if d.Type().IsRegular() {
			return os.Truncate(p, 0)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("failed to empty the logs: %w", err)
	}
	return normaliseShadow(filepath.Join(rootfs, "etc/shadow"), epoch)
}

// normaliseShadow sets the date of the last password change (days since 1970) of every account
// in a shadow file to the epoch's day: tools write today's date there.
func normaliseShadow(p string, epoch time.Time) error {
	info, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	data, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("failed to read /etc/shadow: %w", err)
	}
	day := strconv.FormatInt(epoch.Unix()/86400, 10)
	lines := bytes.Split(data, []byte("\n"))
	for i, l := range lines {
		fields := bytes.Split(l, []byte(":"))
		if len(fields) >= 3 && len(fields[2]) > 0 {
			fields[2] = []byte(day)
			lines[i] = bytes.Join(fields, []byte(":"))
		}
	}
	out := bytes.Join(lines, []byte("\n"))
	if bytes.Equal(out, data) {
		return nil
	}
	// Write in place: the file keeps its owner (root:shadow) and mode.
	if err := os.WriteFile(p, out, info.Mode().Perm()); err != nil {
		return fmt.Errorf("failed to write /etc/shadow: %w", err)
	}
	return nil
}
