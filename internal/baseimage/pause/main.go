// Command pause is the first process of a pod sandbox on Ferry's real nodes (containerd's
// sandbox_image): it holds the pod's namespaces open, reaps the orphaned processes the kernel
// hands to PID 1 (without it they would stay zombies), and exits 0 on SIGTERM or SIGINT, as the
// kubelet expects of a sandbox it stops.
//
// It uses nothing but the standard library and is built statically (CGO_ENABLED=0): the
// baseimage package builds it into Ferry's pause image, and `go build ./internal/baseimage/pause`
// makes the same program as a binary.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

// version is printed by -v.
const version = "ferry-pause 1"

func main() {
	if len(os.Args) > 1 {
		if os.Args[1] == "-v" || os.Args[1] == "--version" {
			fmt.Println(version)
			return
		}
		fmt.Fprintf(os.Stderr, "pause: no arguments expected (got %q); -v prints the version\n", os.Args[1:])
		os.Exit(2)
	}
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "pause: warning: not PID 1, so orphaned processes are not handed to this process")
	}
	// Handlers, not the default actions: PID 1 ignores signals it has no handler for, and
	// SIGCHLD is how the kernel says a child (an adopted orphan) has exited.
	signals := make(chan os.Signal, 32)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT, syscall.SIGCHLD)
	// Children that ended before the handler was installed.
	reap()
	for s := range signals {
		if s == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "pause: shutting down on %s\n", s)
		os.Exit(0)
	}
}

// reap collects every child that has exited. Several exits may come with one SIGCHLD (signals
// of a kind do not queue), so it waits until none is left.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}
