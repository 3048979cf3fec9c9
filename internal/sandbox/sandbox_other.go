//go:build !linux

package sandbox

import (
	"fmt"
	"os/exec"
	"runtime"
)

// Command returns the step to run in a sandbox; Start refuses on this system.
func Command(spec Spec) *Cmd { return &Cmd{Cmd: &exec.Cmd{}, spec: spec} }

// Start refuses: sandboxes need Linux.
func (c *Cmd) Start() error { return Check(c.spec.UID, c.spec.GID) }

// Check returns why this machine cannot run sandboxes: they need Linux.
func Check(int, int) error {
	return fmt.Errorf("%w: they need Linux, and this is %s", ErrUnavailable, runtime.GOOS)
}
