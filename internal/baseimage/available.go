package baseimage

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	goruntime "runtime"
	"strings"
	"syscall"
)

// host is what Available looks at, so that tests can describe other machines.
type host struct {
	goos     string
	euid     int
	lookPath func(name string) string
	exists   func(path string) bool
	// mountNS reports whether a process can get its own mount namespace here.
	mountNS func() error
}

func thisHost() host {
	return host{
		goos:     goruntime.GOOS,
		euid:     os.Geteuid(),
		lookPath: lookSbin,
		exists: func(p string) bool {
			_, err := os.Stat(p)
			return err == nil
		},
		mountNS: tryMountNamespace,
	}
}

// Available reports whether this machine can build the base images: nil when it can (Linux,
// root, debootstrap, Debian's archive keyring, chroot, mount, a go command, and mount
// namespaces), else an error naming everything that is missing and how to install it.
func Available() error {
	return thisHost().check()
}

func (h host) check() error {
	if h.goos != "linux" {
		return fmt.Errorf("the base images are built with debootstrap and chroot, which need Linux (this is %s)", h.goos)
	}
	var missing []string
	var packages []string
	if h.euid != 0 {
		missing = append(missing, "root: debootstrap, chroot and files owned by other users need it (run as root)")
	}
	if h.lookPath("debootstrap") == "" {
		missing = append(missing, "debootstrap")
		packages = append(packages, "debootstrap")
	}
	if !h.exists(debianKeyring) {
		missing = append(missing, "Debian's archive keyring "+debianKeyring+", which authenticates the packages")
		packages = append(packages, "debian-archive-keyring")
	}
	if h.lookPath("chroot") == "" {
		missing = append(missing, "chroot")
		packages = append(packages, "coreutils")
	}
	if h.lookPath("mount") == "" {
		missing = append(missing, "mount")
		packages = append(packages, "mount")
	}
	if h.lookPath("go") == "" {
		missing = append(missing, "a go command on PATH: the golang builder's toolchain comes from the Go module proxy through it (https://go.dev/dl)")
	}
	if len(missing) == 0 && h.mountNS != nil {
		if err := h.mountNS(); err != nil {
			missing = append(missing, fmt.Sprintf("mount namespaces (%v): a container needs CAP_SYS_ADMIN to build them", err))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := "this machine cannot build the base images; missing: " + strings.Join(missing, "; ")
	if len(packages) > 0 {
		msg += fmt.Sprintf(". Install with: apt-get install %s (or hack/deps.sh debootstrap)", strings.Join(packages, " "))
	}
	return errors.New(msg)
}

// tryMountNamespace starts /bin/true in a mount namespace of its own, as the builds do.
func tryMountNamespace() error {
	cmd := exec.Command("/bin/true")
	cmd.SysProcAttr = &syscall.SysProcAttr{Unshareflags: syscall.CLONE_NEWNS}
	return cmd.Run()
}
