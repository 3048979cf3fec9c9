//go:build !linux

package controlplane

import "syscall"

// childProcAttr puts a child in its own process group, so that stopping it stops what it spawned.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true}
}

// deathSignalWrapper returns "": only Linux has a parent-death signal.
func deathSignalWrapper(string) string { return "" }
