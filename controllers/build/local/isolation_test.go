package local_test

import (
	"archive/tar"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/testutil"
)

// The attacker's tests: a repository's author writes the pipeline file, so its steps are the
// attacker. They run against real processes and need a machine that isolates steps (Linux, as
// root); elsewhere they are skipped, saying why. With FERRY_LOCAL_TEST_ISOLATION=off they show
// what an unisolated step gets away with.

// needIsolation skips the test unless this machine isolates build steps (or the test runs with
// isolation off on purpose, to see the attacks succeed).
func needIsolation(t *testing.T) {
	t.Helper()
	if os.Getenv(isolationEnv) == "off" {
		return
	}
	if os.Geteuid() != 0 {
		t.Skipf("the local executor isolates build steps only as root (this test runs as uid %d): on this machine steps run unisolated, as the README says", os.Geteuid())
	}
}

// splitQuoted is s as two single-quoted shell words that the shell joins: a script that carries
// it never holds s itself, so a step that searches for s does not find its own script.
func splitQuoted(s string) string {
	return fmt.Sprintf("'%s''%s'", s[:len(s)/2], s[len(s)/2:])
}

// leaked lists what the step found and wrote to path; the file holds one finding a line.
func leaked(t *testing.T, path string) []string {
	t.Helper()
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	return strings.Fields(string(data))
}

// TestEscapedProcessesDie: a step starts processes that leave its process group and session
// (setsid, nohup, a double fork, ignoring SIGTERM and SIGHUP) and drop the executor's marker
// (env -u FERRY_LOCAL_RUN), then ends. None of them outlives the step: while the next step runs,
// no process of the escape is left on this machine.
func TestEscapedProcessesDie(t *testing.T) {
	needIsolation(t)
	e := newEnv(t)
	dir := e.sharedDir()
	token := fmt.Sprintf("ferry-escape-%d", time.Now().UnixNano())
	sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": shellApp(fmt.Sprintf(`    - name: escape
      run: |
        setsid env -u FERRY_LOCAL_RUN sh -c 'trap "" TERM HUP INT; while :; do sleep 1; done' %[1]s-a &
        ( ( setsid nohup env -u FERRY_LOCAL_RUN sh -c 'sleep 300' %[1]s-b >/dev/null 2>&1 & ) & )
        setsid env -u FERRY_LOCAL_RUN sleep 300.%[2]d &
        while [ "$(ps -e -o args | grep -c -e '%[1]s-[ab]$' -e '^sleep 300.%[2]d$')" -lt 3 ]; do sleep 0.05; done
        echo "escaped"
    - name: after
      run: |
        umask 0
        : > %[3]s/after-started
        while [ -d %[3]s ] && [ ! -e %[3]s/release ]; do sleep 0.1; done
`, token, time.Now().Nanosecond(), dir))}})
	e.startManager(1)
	e.createBuild("escape", sha, "refs/heads/main")
	e.waitStep("escape", "after", "Running")
	testutil.Eventually(t, "the step after the escape to start", func() (bool, error) {
		_, err := os.Stat(filepath.Join(dir, "after-started"))
		return err == nil, err
	})
	left := hostProcesses(func(cmdline, _ string) bool {
		return strings.Contains(cmdline, token) || strings.HasPrefix(cmdline, "sleep 300.")
	})
	if err := os.WriteFile(filepath.Join(dir, "release"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	b := e.waitReady("escape", metav1.ConditionTrue, ferryv1.SucceededReason)
	if log := readLog(t, b); !strings.Contains(log, "escaped") {
		t.Fatalf("the escape did not run:\n%s", log)
	}
	if len(left) != 0 {
		for _, pid := range left {
			cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
			t.Errorf("process %d (%s) outlived the step that started it", pid, strings.ReplaceAll(string(cmdline), "\x00", " "))
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// TestStepsCannotReadCredentials: a step looks for the Project's credentials (the registry
// password and auth string, the git password) and for a secret in the manager's environment,
// while it runs and, from a process it leaves behind in a new session, while assemble pushes the
// image: in every file it can reach in its workspace (but the caches) and above it, in every process's environment
// and command line it can see (the manager's by its PID), in Docker configs. It finds nothing.
// The manager runs in a child process here, started with the secret in its environment.
func TestStepsCannotReadCredentials(t *testing.T) {
	needIsolation(t)
	e := newEnv(t)
	dir := e.sharedDir()
	managerSecret := "manager-env-s3cret-that-must-never-leak"
	needles := append(secretValues(), managerSecret)
	var printNeedles []string
	for _, n := range needles {
		printNeedles = append(printNeedles, splitQuoted(n))
	}
	// snoop.sh defines snoop NAME: every file that holds a needle goes to dir/found-NAME. The
	// manager's PID is in dir/manager.
	snoop := fmt.Sprintf(`MANAGER=$(cat %[2]s/manager)
        snoop() {
          printf '%%s\n' %[1]s | grep -rlsF --exclude-dir=caches -f - \
            "$HOME/.." "$HOME/../.." "$HOME/../../.." "$HOME/../../../.." \
            /proc/[0-9]*/environ /proc/[0-9]*/cmdline /proc/$MANAGER/environ /proc/$MANAGER/cmdline \
            /root/.docker "$HOME/.docker" /var/tmp /dev/shm /etc/docker >> %[2]s/found-$1
          cat /proc/$MANAGER/environ > /dev/null 2>&1 && echo "/proc/$MANAGER/environ" >> %[2]s/found-$1
          true
        }
        # quick NAME: the same, only in JSON files near the workspace (where a push config would be), fast.
        quick() {
          find "$HOME/.." "$HOME/../.." -maxdepth 4 -path '*/caches' -prune -o -type f \( -name '*.json' -o -name '.dockerconfigjson' \) -print 2>/dev/null |
            while read -r f; do printf '%%s\n' %[1]s | grep -lsF -f - "$f" >> %[2]s/found-$1; done
          true
        }`, strings.Join(printNeedles, " "), dir)
	sha := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": shellApp(fmt.Sprintf(`    - name: snoop
      run: |
        umask 0
        cat > "$HOME/snoop.sh" <<'EOF'
        %[1]s
        EOF
        . "$HOME/snoop.sh"
        snoop step
        env > %[2]s/step-env
        # Left behind: keeps looking while the next steps and assemble run.
        setsid env -u FERRY_LOCAL_RUN sh -c ". $HOME/snoop.sh; while :; do snoop behind; : > %[2]s/behind-alive; done" > /dev/null 2>&1 &
        setsid env -u FERRY_LOCAL_RUN sh -c ". $HOME/snoop.sh; while :; do quick behind; : > %[2]s/quick-alive; done" > /dev/null 2>&1 &
        while [ ! -e %[2]s/behind-alive ] || [ ! -e %[2]s/quick-alive ]; do sleep 0.05; done
    - name: wait
      run: sleep 1
`, snoop, dir))}})
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := testutil.CurrentHub(t).UserKubeconfig(kubeconfig, "ferry-secret-test", "system:masters"); err != nil {
		t.Fatal(err)
	}
	child := exec.Command(os.Args[0], "-test.run=^$")
	child.Env = append(os.Environ(), childKubeconfigEnv+"="+kubeconfig, childLogDirEnv+"="+e.logDir,
		childMountsEnv+"="+strings.Join(e.mounts, ","), "FERRY_TEST_MANAGER_SECRET="+managerSecret)
	var output strings.Builder
	child.Stdout, child.Stderr = &output, &output
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = child.Process.Signal(syscall.SIGTERM)
		_ = child.Wait()
	})
	if err := os.WriteFile(filepath.Join(dir, "manager"), []byte(fmt.Sprint(child.Process.Pid)), 0o644); err != nil {
		t.Fatal(err)
	}
	e.createBuild("snoop", sha, "refs/heads/main")
	e.waitReady("snoop", metav1.ConditionTrue, ferryv1.SucceededReason)
	if found := leaked(t, filepath.Join(dir, "found-step")); len(found) != 0 {
		t.Errorf("the step found credentials in %v", found)
	}
	if found := leaked(t, filepath.Join(dir, "found-behind")); len(found) != 0 {
		t.Errorf("the process the step left behind found credentials in %v", found)
	}
	env, err := os.ReadFile(filepath.Join(dir, "step-env"))
	if err != nil {
		t.Fatalf("the step did not run (manager output: %s): %v", output.String(), err)
	}
	for _, n := range needles {
		if strings.Contains(string(env), n) {
			t.Errorf("the step's environment holds a secret:\n%s", env)
		}
	}
	e.assertNoLeak("snoop")
}

// layerFile is the content of one file of an image's application layer, and whether it is there.
func layerFile(t *testing.T, ref, name string) (string, bool) {
	t.Helper()
	layers, err := pull(t, ref).Layers()
	if err != nil {
		t.Fatal(err)
	}
	rc, err := layers[len(layers)-1].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return "", false
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == name {
			data, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return string(data), true
		}
	}
}

// TestWorkspacesArePrivate: while Build B's step keeps a file in its workspace, Build A's step
// (another user) tries to read it, list B's workspace and the directory of all workspaces, and
// to write into B's workspace. It cannot.
func TestWorkspacesArePrivate(t *testing.T) {
	needIsolation(t)
	e := newEnv(t)
	dir := e.sharedDir()
	secret := "b-private-" + fmt.Sprint(time.Now().UnixNano())
	victim := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": shellApp(fmt.Sprintf(`    - name: keep
      run: |
        umask 077
        echo %[1]s > private.txt
        echo %[1]s > "$HOME/private.txt"
        (umask 0; cd .. && pwd > %[2]s/b-path)
        while [ -d %[2]s ] && [ ! -e %[2]s/release ]; do sleep 0.1; done
        if [ -e intruder.txt ]; then echo "INTRUDED"; fi
`, secret, dir))}})
	attacker := e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "x\n", ".ferry.yaml": shellApp(fmt.Sprintf(`    - name: pry
      run: |
        umask 0
        while [ ! -s %[1]s/b-path ]; do sleep 0.05; done
        b=$(cat %[1]s/b-path)
        {
          cat "$b/source/private.txt" "$b/home/private.txt"
          ls -a "$b" "$b/source" "$b/.." "$b/../.."
          echo intruder > "$b/source/intruder.txt" && echo "WROTE"
          grep -rs -l --exclude-dir=caches %[2]s "$b/../.." "$(dirname "$HOME")/../.." /var/tmp /dev/shm
        } > %[1]s/a-saw 2>/dev/null
        echo "$(dirname "$HOME")" > %[1]s/a-path
        : > %[1]s/release
`, dir, splitQuoted(secret)))}})
	e.startManager(2)
	e.createBuild("victim", victim, "refs/heads/main")
	e.waitStep("victim", "keep", "Running")
	testutil.Eventually(t, "the victim's workspace path", func() (bool, error) {
		data, err := os.ReadFile(filepath.Join(dir, "b-path"))
		return err == nil && len(data) > 0, err
	})
	e.createBuild("attacker", attacker, "refs/heads/main")
	a := e.waitReady("attacker", metav1.ConditionTrue, ferryv1.SucceededReason)
	v := e.waitReady("victim", metav1.ConditionTrue, ferryv1.SucceededReason)
	saw, err := os.ReadFile(filepath.Join(dir, "a-saw"))
	if err != nil {
		t.Fatal(err)
	}
	aPath, _ := os.ReadFile(filepath.Join(dir, "a-path"))
	bPath, _ := os.ReadFile(filepath.Join(dir, "b-path"))
	if strings.TrimSpace(string(aPath)) == strings.TrimSpace(string(bPath)) {
		t.Fatalf("both Builds ran in %s", bPath)
	}
	bBuildDir := filepath.Base(filepath.Dir(strings.TrimSpace(string(bPath))))
	for _, sign := range []string{secret, "WROTE", bBuildDir, "private.txt", "source"} {
		if strings.Contains(string(saw), sign) {
			t.Errorf("Build A's step reached Build B's workspace (%q):\n%s", sign, saw)
		}
	}
	if log := readLog(t, v); strings.Contains(log, "INTRUDED") {
		t.Errorf("Build A's step wrote into Build B's checkout:\n%s", log)
	}
	if isolated(t, a) == isolated(t, v) && isolated(t, a) {
		if la, lv := readLog(t, a), readLog(t, v); userOf(la) == userOf(lv) {
			t.Errorf("both Builds ran as user %s", userOf(la))
		}
	}
}

// userOf is the step user a Build's log names.
func userOf(log string) string {
	_, rest, _ := strings.Cut(log, "The steps run isolated as user and group ")
	user, _, _ := strings.Cut(rest, ",")
	return user
}

// TestArtifactsStayInTheWorkspace: a step tries to smuggle a file it may not read into the image:
// a link to it as an artifact, its checkout replaced by a link to the file's directory, and a hard
// link to it. The image never holds the file's content (the Build fails, or leaves the link out).
func TestArtifactsStayInTheWorkspace(t *testing.T) {
	needIsolation(t)
	e := newEnv(t)
	hostDir := t.TempDir()
	hostSecret := "host-only-" + fmt.Sprint(time.Now().UnixNano())
	if err := os.WriteFile(filepath.Join(hostDir, "app.txt"), []byte(hostSecret), 0o600); err != nil {
		t.Fatal(err)
	}
	shadow, _ := os.ReadFile("/etc/shadow")
	file := func(artifact, run string) string {
		return strings.Replace(shellApp("    - name: smuggle\n      run: |\n"+run), `["app.txt"]`, `["`+artifact+`"]`, 1)
	}
	cases := map[string]string{
		"absolute-link": file("app.txt", fmt.Sprintf("        rm app.txt && ln -s %s/app.txt app.txt\n", hostDir)),
		"relative-link": file("app.txt", fmt.Sprintf("        rm app.txt && ln -s %s%s/app.txt app.txt\n", strings.Repeat("../", 20), hostDir)),
		"checkout-link": file("app.txt", fmt.Sprintf("        cd .. && mv source checkout && ln -s %s source\n", hostDir)),
		"checkout-etc":  file("shadow", "        cd .. && mv source checkout && ln -s /etc source\n"),
		"hard-link":     file("app.txt", "        rm app.txt && { ln /etc/shadow app.txt || ln "+hostDir+"/app.txt app.txt || echo denied > app.txt; }\n"),
	}
	shas := map[string]string{}
	for name, pipeline := range cases {
		shas[name] = e.commit(gitserver.Commit{Files: map[string]string{"app.txt": "harmless\n", ".ferry.yaml": pipeline}})
	}
	e.startManager(2)
	for name, sha := range shas {
		e.createBuild(name, sha, "refs/heads/main")
	}
	for name := range cases {
		b := e.waitFor(name, "to finish", func(b *ferryv1.Build) (bool, error) {
			return b.Status.CompletionTime != nil, fmt.Errorf("steps %s", steps(b))
		})
		if b.Status.Image == "" {
			if condition(b, ferryv1.ReadyCondition) == "True/Succeeded" {
				t.Errorf("%s: succeeded without an image", name)
			}
			continue
		}
		for _, f := range []string{"app/app.txt", "app/shadow"} {
			content, ok := layerFile(t, b.Status.Image, f)
			if ok && (strings.Contains(content, hostSecret) || (len(shadow) > 0 && content == string(shadow))) {
				t.Errorf("%s: the image holds a file the step could not read: %s = %q", name, f, content)
			}
		}
	}
}
