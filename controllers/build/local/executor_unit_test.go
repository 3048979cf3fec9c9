package local

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// TestNewTakesTheLogDirectory: one executor uses a log directory at a time, and a new one removes
// the workspaces a stopped one left behind.
func TestNewTakesTheLogDirectory(t *testing.T) {
	dir := t.TempDir()
	stale := filepath.Join(dir, workDir, "build-123", "source")
	if err := os.MkdirAll(stale, 0o700); err != nil {
		t.Fatal(err)
	}
	// Read-only directories, as Go's module cache leaves them, are removed too.
	if err := os.Chmod(filepath.Dir(stale), 0o500); err != nil {
		t.Fatal(err)
	}
	reader := fake.NewClientBuilder().Build()
	first, err := New(Options{APIReader: reader, LogDir: dir, AllowInCluster: true})
	if err != nil {
		t.Fatal(err)
	}
	if entries, err := os.ReadDir(filepath.Join(dir, workDir)); err != nil || len(entries) != 0 {
		t.Errorf("workspaces left: %v, %v", entries, err)
	}
	if _, err := New(Options{APIReader: reader, LogDir: dir, AllowInCluster: true}); err == nil || !strings.Contains(err.Error(), "another Ferry manager with the local executor uses it") {
		t.Errorf("a second executor on the same directory: %v", err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := New(Options{APIReader: reader, LogDir: dir, AllowInCluster: true})
	if err != nil {
		t.Fatalf("after Close: %v", err)
	}
	_ = second.Close()
}

func TestNewRefuses(t *testing.T) {
	reader := fake.NewClientBuilder().Build()
	for name, opts := range map[string]Options{
		"no log directory":     {APIReader: reader},
		"no reader":            {LogDir: t.TempDir()},
		"negative parallelism": {APIReader: reader, LogDir: t.TempDir(), Parallelism: -1},
		"empty env name":       {APIReader: reader, LogDir: t.TempDir(), StepEnv: []string{"=x"}},
		"unknown isolation":    {APIReader: reader, LogDir: t.TempDir(), Isolation: "maybe"},
		"bad step users":       {APIReader: reader, LogDir: t.TempDir(), StepUIDs: "0-100"},
		"relative cache":       {APIReader: reader, LogDir: t.TempDir(), StepCaches: []string{"GOCACHE=cache"}},
		"missing cache":        {APIReader: reader, LogDir: t.TempDir(), StepCaches: []string{"GOCACHE=/nonexistent/ferry"}},
		"cache in the env too": {APIReader: reader, LogDir: t.TempDir(), StepCaches: []string{"GOCACHE=/tmp"}, StepEnv: []string{"GOCACHE=/x"}},
		"mount mode":           {APIReader: reader, LogDir: t.TempDir(), StepMounts: []string{"/usr:rx"}},
		"mount of /":           {APIReader: reader, LogDir: t.TempDir(), StepMounts: []string{"/"}},
	} {
		opts.AllowInCluster = true
		if e, err := New(opts); err == nil {
			_ = e.Close()
			t.Errorf("%s: accepted", name)
		}
	}
}

// TestNewRefusesInCluster: in a Kubernetes pod (its service variables set, or its ServiceAccount
// token mounted) the executor refuses to start, naming what it found and the flag that allows
// it; with the flag it starts.
func TestNewRefusesInCluster(t *testing.T) {
	reader := fake.NewClientBuilder().Build()
	token := filepath.Join(t.TempDir(), "token")
	for name, setup := range map[string]func(){
		"KUBERNETES_SERVICE_HOST is set": func() { t.Setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1") },
		"KUBERNETES_SERVICE_PORT is set": func() { t.Setenv("KUBERNETES_SERVICE_PORT", "443") },
		"the ServiceAccount token " + token + " exists": func() {
			if err := os.WriteFile(token, []byte("eyJ..."), 0o600); err != nil {
				t.Fatal(err)
			}
		},
	} {
		t.Run(name, func(t *testing.T) {
			for _, v := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
				t.Setenv(v, "")
				_ = os.Unsetenv(v)
			}
			saved := serviceAccountTokenPath
			serviceAccountTokenPath = token
			t.Cleanup(func() { serviceAccountTokenPath = saved; _ = os.Remove(token) })
			if e, err := New(Options{APIReader: reader, LogDir: t.TempDir()}); err != nil {
				t.Fatalf("outside a pod: %v", err)
			} else {
				_ = e.Close()
			}
			setup()
			e, err := New(Options{APIReader: reader, LogDir: t.TempDir()})
			if err == nil {
				_ = e.Close()
				t.Fatal("started in a pod")
			}
			if !errors.Is(err, ErrInCluster) || !strings.Contains(err.Error(), "("+name+")") || !strings.Contains(err.Error(), "--allow-local-executor-in-cluster") {
				t.Errorf("error %q", err)
			}
			e, err = New(Options{APIReader: reader, LogDir: t.TempDir(), AllowInCluster: true})
			if err != nil {
				t.Fatalf("with AllowInCluster: %v", err)
			}
			_ = e.Close()
		})
	}
}

func TestParseUIDRange(t *testing.T) {
	for in, want := range map[string]string{
		"2000000-2065535": "2000000-2065535", "1000-1000": "1000-1000",
		"": "FIRST-LAST", "2000000": "FIRST-LAST", "a-b": "FIRST-LAST", "999-2000": "from 1000 up",
		"3000-2000": "from 1000 up", "60000-70000": "without 65534", "2000000-4294967295": "from 1000 up",
	} {
		p, err := parseUIDRange(in)
		got := ""
		if err != nil {
			got = err.Error()
		} else {
			got = p.String()
		}
		if !strings.Contains(got, want) {
			t.Errorf("%q: %q, want %q", in, got, want)
		}
	}
}

// TestUIDPool: running Builds never share a step user, not even Builds of two managers on one
// machine; a user is free again once its lease is released.
func TestUIDPool(t *testing.T) {
	saved := uidLockDir
	uidLockDir = filepath.Join(t.TempDir(), "uids")
	t.Cleanup(func() { uidLockDir = saved })
	first, _ := parseUIDRange("3000000-3000002")
	second, _ := parseUIDRange("3000000-3000002")
	a, err := first.take()
	if err != nil {
		t.Fatal(err)
	}
	b, err := second.take()
	if err != nil {
		t.Fatal(err)
	}
	c, err := first.take()
	if err != nil {
		t.Fatal(err)
	}
	if a.uid != 3000000 || b.uid != 3000001 || c.uid != 3000002 {
		t.Errorf("users %d, %d, %d", a.uid, b.uid, c.uid)
	}
	if _, err := second.take(); err == nil || !strings.Contains(err.Error(), "every step user of 3000000-3000002 is taken") {
		t.Errorf("a fourth Build: %v", err)
	}
	b.release()
	d, err := first.take()
	if err != nil || d.uid != 3000001 {
		t.Errorf("after a release: %v, %v", d, err)
	}
	for _, l := range []*uidLease{a, c, d} {
		l.release()
	}
	// Someone else's lock directory is refused.
	if err := os.Chmod(uidLockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := first.take(); err == nil || !strings.Contains(err.Error(), "nobody else may write") {
		t.Errorf("a lock directory everyone may write: %v", err)
	}
}

// TestWorkspaceLayout: an isolated Build's workspace is its user's alone under directories the
// steps may pass through but not list, its scripts readable by its group only, its results and
// overlay directories the manager's alone; the checkout is given to the step user without
// following the links in it.
func TestWorkspaceLayout(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("isolated workspaces need root (they belong to the step users)")
	}
	saved := uidLockDir
	uidLockDir = filepath.Join(t.TempDir(), "uids")
	t.Cleanup(func() { uidLockDir = saved })
	cache := t.TempDir()
	e, err := New(Options{APIReader: fake.NewClientBuilder().Build(), LogDir: t.TempDir(), AllowInCluster: true, StepCaches: []string{"GOCACHE=" + cache}, StepUIDs: "3000010-3000019"})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close() }()
	if e.uids == nil {
		t.Skipf("this machine cannot isolate steps: %s", e.unisolated)
	}
	lease, err := e.uids.take()
	if err != nil {
		t.Fatal(err)
	}
	defer lease.release()
	owner := stepOwner{uid: lease.uid, gid: lease.uid, lease: lease}
	ws, err := e.newWorkspace(owner)
	if err != nil {
		t.Fatal(err)
	}
	u := lease.uid
	for path, want := range map[string]string{
		e.workDir: "0:0 711", ws.root: fmt.Sprintf("0:%d 710", u), ws.dir: fmt.Sprintf("%d:%d 700", u, u),
		ws.home: fmt.Sprintf("%d:%d 700", u, u), ws.tmp: fmt.Sprintf("%d:%d 700", u, u),
		ws.scripts: fmt.Sprintf("0:%d 750", u), ws.results: "0:0 700", ws.layers: "0:0 700",
		ws.caches[0].Target: fmt.Sprintf("%d:%d 700", u, u), ws.caches[0].Upper: fmt.Sprintf("%d:%d 700", u, u), ws.caches[0].Work: "0:0 700",
	} {
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		st := fi.Sys().(*syscall.Stat_t)
		if got := fmt.Sprintf("%d:%d %o", st.Uid, st.Gid, fi.Mode().Perm()); got != want {
			t.Errorf("%s: %s, want %s", path, got, want)
		}
	}
	// The clone (as root) and a link in it to a file outside.
	outside := filepath.Join(t.TempDir(), "outside")
	if err := os.WriteFile(outside, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(ws.source, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(ws.source, "sub", "link")); err != nil {
		t.Fatal(err)
	}
	if err := owner.chownTree(ws.source); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{ws.source, filepath.Join(ws.source, "sub"), filepath.Join(ws.source, "sub", "link")} {
		fi, _ := os.Lstat(p)
		if st := fi.Sys().(*syscall.Stat_t); int(st.Uid) != u {
			t.Errorf("%s belongs to %d", p, st.Uid)
		}
	}
	fi, _ := os.Stat(outside)
	if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("the file a link in the checkout points to was given away: %d", st.Uid)
	}
	if err := removeAll(ws.root); err != nil {
		t.Fatal(err)
	}
}

func TestLogPath(t *testing.T) {
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app-main-1", UID: "0f1e"}}
	if got := LogPath("/var/lib/ferry/builds", b); got != "/var/lib/ferry/builds/team/app-main-1-0f1e.log" {
		t.Errorf("LogPath = %s", got)
	}
	b.Name = strings.Repeat("a", 253)
	if got := filepath.Base(LogPath("/logs", b)); len(got) > 255 || !strings.HasSuffix(got, "-0f1e.log") {
		t.Errorf("LogPath of a long name = %s (%d bytes)", got, len(got))
	}
	if got := logURL("/var/lib/ferry/builds/team/a b.log"); got != "file:///var/lib/ferry/builds/team/a%20b.log" {
		t.Errorf("logURL = %s", got)
	}
}
