package sandbox

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Step users of these tests: far above every account and from the local executor's default range.
const (
	testUID = 2099990
	testGID = 2099990
)

// needSandbox skips the test where this machine cannot run sandboxes (not Linux, not root).
func needSandbox(t *testing.T) {
	t.Helper()
	if err := Check(testUID, testGID); err != nil {
		t.Skipf("this machine cannot run step sandboxes: %v", err)
	}
}

// workspace is a directory the step user owns, under a directory it may not search.
func workspace(t *testing.T) string {
	t.Helper()
	dir, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	ws := filepath.Join(dir, "ws")
	if err := os.Mkdir(ws, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(ws, testUID, testGID); err != nil {
		t.Fatal(err)
	}
	return ws
}

// run runs script with /bin/sh in a sandbox on ws and returns its output and Wait's error.
func run(t *testing.T, ws, script string, mutate ...func(*Spec)) (string, error) {
	t.Helper()
	spec := Spec{
		UID: testUID, GID: testGID, Args: []string{"/bin/sh", "-c", script}, Dir: ws,
		Env:    []string{"PATH=/usr/local/bin:/usr/bin:/bin", "HOME=" + ws},
		Mounts: []Mount{{Path: ws, Writable: true}},
	}
	for _, m := range mutate {
		m(&spec)
	}
	cmd := Command(spec)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatalf("start: %v", err)
	}
	err := cmd.Wait()
	return out.String(), err
}

// hostProcesses are the PIDs (in this process's namespace) whose command line contains token.
func hostProcesses(token string) []int {
	var pids []int
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, dir := range dirs {
		cmdline, err := os.ReadFile(filepath.Join(dir, "cmdline"))
		if err != nil || !bytes.Contains(cmdline, []byte(token)) {
			continue
		}
		var pid int
		if _, err := fmt.Sscan(filepath.Base(dir), &pid); err == nil && pid != os.Getpid() {
			pids = append(pids, pid)
		}
	}
	return pids
}

// waitFor polls cond until it holds (this package's tests import nothing heavy: the test binary
// is also the sandbox's first process).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// TestStepIdentity: the step runs as its user and group with no other group, no capability and
// no_new_privs, in its working directory with exactly its environment.
func TestStepIdentity(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	out, err := run(t, ws, `echo "id=$(id -u):$(id -g) groups=$(id -G) pwd=$(pwd)"
grep -E '^(CapEff|CapPrm|NoNewPrivs):' /proc/self/status | tr -s '\t' ' '
env | sort | tr '\n' ' '`)
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	for _, want := range []string{
		fmt.Sprintf("id=%d:%d groups=%d pwd=%s\n", testUID, testGID, testGID, ws),
		"CapEff: 0000000000000000", "CapPrm: 0000000000000000", "NoNewPrivs: 1",
		"HOME=" + ws + " ", "PATH=/usr/local/bin:/usr/bin:/bin PWD=" + ws + " ",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

// TestNothingOutlivesTheStep: what a step starts in a new session, without the variables it
// was given, or double-forked, is gone when Wait returns, and its exit status is the step's.
func TestNothingOutlivesTheStep(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	token := fmt.Sprintf("ferry-escape-%d", time.Now().UnixNano())
	out, err := run(t, ws, fmt.Sprintf(`setsid sh -c 'sleep 300' %[1]s-a &
setsid env -u HOME sh -c 'sleep 300' %[1]s-b &
( ( setsid sh -c 'trap "" TERM HUP; sleep 300' %[1]s-c & ) & )
nohup sh -c 'sleep 300' %[1]s-d >/dev/null 2>&1 &
while [ "$(ps -e -o args | grep -c '%[1]s-[a-d]$')" -lt 4 ]; do sleep 0.05; done
exit 7`, token), func(s *Spec) { s.Env = append(s.Env, "HOME=/nonexistent") })
	if code := exitCode(err); code != 7 {
		t.Fatalf("exit code %d (%v), want 7: %s", code, err, out)
	}
	if pids := hostProcesses(token); len(pids) != 0 {
		t.Errorf("processes %v outlived the step", pids)
	}
}

// TestSignals: SIGTERM to the sandbox reaches the step and the processes it left in new sessions;
// SIGKILL to the sandbox ends everything in it.
func TestSignals(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	token := fmt.Sprintf("ferry-signal-%d", time.Now().UnixNano())
	for _, tc := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGKILL, -1}} {
		cmd := Command(Spec{
			UID: testUID, GID: testGID, Dir: ws, Env: []string{"PATH=/usr/bin:/bin"},
			Args:   []string{"/bin/sh", "-c", fmt.Sprintf(`setsid sh -c 'trap "" TERM; sleep 300' %[1]s-a & sleep 300 & echo started; wait`, token)},
			Mounts: []Mount{{Path: ws, Writable: true}},
		})
		var out bytes.Buffer
		cmd.Stdout = &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the step to start", func() bool { return len(hostProcesses(token)) > 0 })
		if err := cmd.Process.Signal(tc.sig); err != nil {
			t.Fatal(err)
		}
		err := cmd.Wait()
		if code := exitCode(err); tc.sig == syscall.SIGTERM && code != tc.code {
			t.Errorf("%v: exit code %d (%v), want %d", tc.sig, code, err, tc.code)
		}
		if pids := hostProcesses(token); len(pids) != 0 {
			t.Errorf("%v: processes %v outlived the sandbox", tc.sig, pids)
		}
	}
}

// TestStepSeesOnlyItsOwnProcesses: the step's /proc lists its own processes, not this process
// (which holds a secret in its environment) nor the sandbox's first process (root).
func TestStepSeesOnlyItsOwnProcesses(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	out, err := run(t, ws, fmt.Sprintf(`ls /proc | grep -E '^[0-9]+$' | tr '\n' ' '; echo
cat /proc/%d/environ /proc/1/environ 2>&1 | tr '\0' '\n' | grep -c PATH= || true`, os.Getpid()))
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || lines[1] != "0" {
		t.Errorf("the step read another process's environment:\n%s", out)
	}
	for _, pid := range strings.Fields(lines[0]) {
		if pid == "1" || pid == fmt.Sprint(os.Getpid()) {
			t.Errorf("the step sees process %s: %s", pid, lines[0])
		}
	}
}

// TestFileSystem: the host is read-only to the step, even where its mode lets everyone write;
// /tmp is private; a directory the step may not search on the way to its workspace is covered
// (its other entries are invisible); read-only mounts stay read-only; /run/secrets is empty.
func TestFileSystem(t *testing.T) {
	needSandbox(t)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	// base is 0700 root: the step may not search it.
	private := filepath.Join(base, "private.txt")
	open := filepath.Join(base, "open")
	ws := filepath.Join(base, "ws")
	for _, d := range []string{open, ws} {
		if err := os.Mkdir(d, 0o777); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(private, []byte("private"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(open, "tool"), []byte("tool"), 0o644); err != nil {
		t.Fatal(err)
	}
	hostTmp := fmt.Sprintf("/tmp/ferry-sandbox-test-%d", time.Now().UnixNano())
	out, err := run(t, ws, fmt.Sprintf(`
exec 2>/dev/null
cat %[1]s && echo "read private"
ls %[2]s | tr '\n' ' '; echo
cat %[3]s/tool && echo " read tool"
echo x > %[3]s/new && echo "wrote open"
echo x > %[4]s && echo "wrote tmp"
echo x > /var/tmp/x && echo "wrote var tmp"
echo x > %[5]s/new && echo "wrote workspace"
for d in /etc /usr /root /var/lib; do echo x > $d/ferry-test && echo "wrote $d"; done
ls /run/secrets | wc -l`, private, base, open, hostTmp, ws), func(s *Spec) {
		s.Mounts = append(s.Mounts, Mount{Path: open})
	})
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	want := "open ws \ntool read tool\nwrote tmp\nwrote var tmp\nwrote workspace\n0\n"
	if out != want {
		t.Errorf("output:\n%s\nwant:\n%s", out, want)
	}
	if _, err := os.Stat(hostTmp); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the step's /tmp is the host's: %v", err)
		_ = os.Remove(hostTmp)
	}
	if _, err := os.Stat(filepath.Join(open, "new")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the step wrote into a read-only mount: %v", err)
	}
	if data, err := os.ReadFile(filepath.Join(ws, "new")); err != nil || string(data) != "x\n" {
		t.Errorf("the step's file in its workspace: %q, %v", data, err)
	}
}

// TestCache: the step reads the lower directory's entries and adds its own next to them; the
// lower directory is never changed, the upper one keeps what the step wrote.
func TestCache(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	base, err := filepath.EvalSymlinks(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{filepath.Join(lower, "ab"), upper, work} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "ab", "entry"), []byte("cached"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(upper, testUID, testGID); err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(ws, "cache")
	if err := os.Mkdir(target, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(target, testUID, testGID); err != nil {
		t.Fatal(err)
	}
	out, err := run(t, ws, `cat cache/ab/entry && echo && echo mine > cache/ab/new && echo top > cache/top && { echo changed > cache/ab/entry; } 2>/dev/null; cat cache/ab/new`,
		func(s *Spec) {
			s.Caches = []Cache{{Name: "GOCACHE", Lower: lower, Upper: upper, Work: work, Target: target}}
		})
	if err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	if out != "cached\nmine\n" {
		t.Errorf("output %q", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(lower, "ab")); len(entries) != 1 {
		t.Errorf("the lower directory changed: %v", entries)
	}
	if data, _ := os.ReadFile(filepath.Join(lower, "ab", "entry")); string(data) != "cached" {
		t.Errorf("the lower entry changed: %q", data)
	}
	if data, err := os.ReadFile(filepath.Join(upper, "ab", "new")); err != nil || string(data) != "mine\n" {
		t.Errorf("upper: %q, %v", data, err)
	}
}

// TestSetupFailure: a sandbox that cannot be set up says why, and no step runs.
func TestSetupFailure(t *testing.T) {
	needSandbox(t)
	ws := workspace(t)
	cmd := Command(Spec{
		UID: testUID, GID: testGID, Dir: ws, Args: []string{"/bin/sh", "-c", "touch ran"},
		Mounts: []Mount{{Path: ws, Writable: true}, {Path: filepath.Join(ws, "missing")}},
	})
	err := cmd.Start()
	if err == nil || !strings.Contains(err.Error(), "failed to set up the step's sandbox: mount "+filepath.Join(ws, "missing")) {
		t.Errorf("Start: %v", err)
	}
	if _, err := os.Stat(filepath.Join(ws, "ran")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the step ran: %v", err)
	}
	if err := Command(Spec{UID: 0, GID: 0, Dir: ws, Args: []string{"/bin/true"}}).Start(); err == nil || !strings.Contains(err.Error(), "must not be root") {
		t.Errorf("a root step: %v", err)
	}
}
