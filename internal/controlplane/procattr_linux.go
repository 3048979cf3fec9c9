package controlplane

import (
	"os/exec"
	"syscall"
)

// childProcAttr puts a child in its own process group, so that stopping it stops what it spawned,
// and has the kernel kill it when the parent dies, so that a killed test leaves nothing behind.
func childProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// deathSignalWrapper returns a shell script that execs binary under `setpriv --pdeathsig KILL`, for
// children that another library starts (envtest's etcd and kube-apiserver), or "" when setpriv is
// not installed.
func deathSignalWrapper(binary string) string {
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		return ""
	}
	return "#!/bin/sh\nexec " + setpriv + " --pdeathsig KILL '" + binary + "' \"$@\"\n"
}
