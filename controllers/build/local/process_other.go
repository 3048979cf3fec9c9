//go:build !unix

package local

import (
	"errors"
	"os"
	"os/exec"
	"syscall"

	"k8s.io/apimachinery/pkg/types"
)

const (
	sigTerm = syscall.Signal(15)
	sigKill = syscall.Signal(9)
)

func newProcessGroup() *syscall.SysProcAttr { return nil }

func signalGroup(int, syscall.Signal) {}

func signalOf(*exec.ExitError) (syscall.Signal, bool) { return 0, false }

func killMarked(types.UID) int { return 0 }

// lockDir refuses: the local executor runs steps with /bin/sh and needs a Unix-like system.
func lockDir(string) (*os.File, error) {
	return nil, errors.New("the local executor needs a Unix-like system")
}

const noFollow = 0

func tryLock(*os.File) (bool, error) {
	return false, errors.New("the local executor needs a Unix-like system")
}

func ownedBySelf(os.FileInfo) bool { return false }
