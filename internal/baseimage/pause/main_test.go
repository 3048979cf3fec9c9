package main

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/ferryci/ferry/internal/testutil"
)

// buildPause compiles this package the way the pause image has it (static).
func buildPause(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "pause")
	cmd := exec.Command("go", "build", "-trimpath", "-o", bin, ".")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// procStat returns the state and parent of a process, as this process's PID namespace sees it.
func procStat(pid int) (state string, ppid int, err error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", 0, err
	}
	// pid (comm) state ppid ...; comm may hold spaces and parentheses.
	rest := string(data[bytes.LastIndexByte(data, ')')+2:])
	fields := strings.Fields(rest)
	ppid, err = strconv.Atoi(fields[1])
	return fields[0], ppid, err
}

// As PID 1 of a PID namespace (a pod sandbox), pause reaps the orphans the kernel hands it, and
// exits 0 on SIGTERM.
func TestPauseReapsOrphansAndStopsOnSIGTERM(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a PID namespace")
	}
	nsenter, err := exec.LookPath("nsenter")
	if err != nil {
		t.Skip("needs nsenter (util-linux)")
	}
	pause := exec.Command(buildPause(t))
	var stderr bytes.Buffer
	pause.Stderr = &stderr
	pause.SysProcAttr = &syscall.SysProcAttr{Cloneflags: syscall.CLONE_NEWPID}
	if err := pause.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- pause.Wait() }()
	defer func() { _ = pause.Process.Kill() }()

	// A shell in the pause's namespace starts a sleep and exits: the sleep's parent is gone, so
	// the kernel makes PID 1 of the namespace (pause) its parent.
	out, err := exec.Command(nsenter, "--target", strconv.Itoa(pause.Process.Pid), "--pid", "--",
		"/bin/sh", "-c", "sleep 600 >/dev/null 2>&1 & echo $!").Output()
	if err != nil {
		t.Fatalf("nsenter: %v", err)
	}
	// The shell printed the sleep's PID inside the namespace; find it on this side.
	innerPID := strings.TrimSpace(string(out))
	var orphan int
	testutil.Eventually(t, "the orphaned sleep to be adopted by pause", func() (bool, error) {
		entries, err := os.ReadDir("/proc")
		if err != nil {
			return false, err
		}
		for _, e := range entries {
			pid, err := strconv.Atoi(e.Name())
			if err != nil {
				continue
			}
			_, ppid, err := procStat(pid)
			if err != nil || ppid != pause.Process.Pid {
				continue
			}
			status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
			if err != nil {
				continue
			}
			for _, line := range strings.Split(string(status), "\n") {
				if f := strings.Fields(line); len(f) >= 3 && f[0] == "NSpid:" && f[len(f)-1] == innerPID {
					orphan = pid
					return true, nil
				}
			}
		}
		return false, fmt.Errorf("no child of pause with PID %s in its namespace", innerPID)
	})

	// When the orphan dies, pause must collect it; a zombie would stay in /proc.
	if err := syscall.Kill(orphan, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, "pause to reap the killed orphan", func() (bool, error) {
		state, _, err := procStat(orphan)
		if os.IsNotExist(err) {
			return true, nil
		}
		return false, fmt.Errorf("the orphan is still there in state %s", state)
	})

	if err := pause.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := <-exited; err != nil {
		t.Fatalf("pause exited with %v after SIGTERM, want 0 (stderr: %s)", err, stderr.String())
	}
}

func TestPauseVersionAndArguments(t *testing.T) {
	bin := buildPause(t)
	out, err := exec.Command(bin, "-v").Output()
	if err != nil || strings.TrimSpace(string(out)) != version {
		t.Fatalf("pause -v = %q, %v", out, err)
	}
	err = exec.Command(bin, "unexpected").Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("pause with an argument: %v, want exit status 2", err)
	}
}
