// Command ferry-pause is PID 1 of a namespace: of a real node, where it holds the node's namespaces
// and reaps the processes that end up orphaned there (containerd's shims, exited containers), and of
// a pod sandbox (the pause image). It exits on SIGTERM or SIGINT; as PID 1 of a PID namespace its end
// makes the kernel kill everything else in it.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 8)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		reap()
	}
}

// reap collects every child that has exited.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if pid <= 0 || err != nil {
			return
		}
	}
}
