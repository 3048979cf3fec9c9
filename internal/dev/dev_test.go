package dev

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlabsim"
	"github.com/ferryci/ferry/internal/gitserver"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/testutil"
)

func TestRegistryAccessIsHarborLike(t *testing.T) {
	for _, tc := range []struct {
		user, repo string
		want       []string
	}{
		{registryAdmin, "ferry/stacks/debian-12", []string{"pull", "push"}},
		{robotPush, "demo/go-hello", []string{"pull", "push"}},
		{robotPush, "ferry/runtimes/go-static", []string{"pull"}},
		{robotPush, "other/app", nil},
		{robotPull, "demo/go-hello", []string{"pull"}},
		{robotPull, "ferry/stacks/debian-12", []string{"pull"}},
		{"", "demo/go-hello", nil},
		{"mallory", "demo/go-hello", nil},
		// The platform's projects are public: nodes pull the pause and builder images anonymously.
		{"", "ferry/pause", []string{"pull"}},
		{"", "library/golang", []string{"pull"}},
		{"mallory", "library/golang", []string{"pull"}},
		{robotPush, "library/golang", []string{"pull"}},
	} {
		if got := registryAccess(tc.user, tc.repo, []string{"pull", "push"}); !slices.Equal(got, tc.want) {
			t.Errorf("%s on %s: got %v, want %v", tc.user, tc.repo, got, tc.want)
		}
	}
}

func TestSeedBaseImagesFromThisMachine(t *testing.T) {
	if _, err := os.Stat("/etc/os-release"); err != nil {
		t.Skip("no /etc/os-release on this machine")
	}
	reg, err := registry.StartDistribution(registry.DistributionOptions{Users: map[string]string{registryAdmin: "pw"}, Access: registryAccess})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = reg.Close() })
	auth := &authn.Basic{Username: registryAdmin, Password: "pw"}
	ctx := context.Background()
	cat, size, err := seedBaseImages(ctx, reg.Host, auth)
	if err != nil {
		t.Fatal(err)
	}
	if size == 0 || size > 2<<20 {
		t.Errorf("the seeded layers weigh %d bytes, want something small but real", size)
	}
	again, _, err := seedBaseImages(ctx, reg.Host, auth)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cat, again) {
		t.Errorf("seeding twice gave different digests: %v and %v", cat, again)
	}
	if _, err := cat.Resolve("stack", "debian-12"); err != nil {
		t.Error(err)
	}
	stack := image(t, cat.Stacks["debian-12"], auth)
	stackLayers, _ := stack.Layers()
	files := layerFiles(t, stackLayers[len(stackLayers)-1])
	host, _ := os.ReadFile("/etc/os-release")
	if files["etc/os-release"] != string(host) {
		t.Errorf("the stack's /etc/os-release is not this machine's")
	}
	for _, name := range []string{"go-static", "python-3.11"} {
		rt := image(t, cat.Runtimes[name], auth)
		layers, _ := rt.Layers()
		if len(layers) != len(stackLayers)+1 {
			t.Fatalf("runtime %s has %d layers, want the stack's %d and one more", name, len(layers), len(stackLayers))
		}
		for i := range stackLayers {
			a, _ := stackLayers[i].Digest()
			b, _ := layers[i].Digest()
			if a != b {
				t.Errorf("runtime %s layer %d is %s, the stack's is %s", name, i, b, a)
			}
		}
		cf, _ := rt.ConfigFile()
		if cf.Config.Labels["org.opencontainers.image.title"] != name || !slices.Contains(cf.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt") {
			t.Errorf("runtime %s config = %+v", name, cf.Config)
		}
	}
}

func TestExampleFilesLeaveOutBuildOutput(t *testing.T) {
	dir := t.TempDir()
	write := func(p, content string, mode os.FileMode) {
		t.Helper()
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
	}
	write(".ferry.yaml", "stack: debian-12\n", 0o644)
	write("app.py", "print()\n", 0o644)
	write("run.sh", "#!/bin/sh\n", 0o755)
	write("__pycache__/app.cpython-311.pyc", "x", 0o644)
	write("tests/__pycache__/t.pyc", "x", 0o644)
	write("bin/go-hello", "ELF", 0o755)
	write("lib/old.pyc", "x", 0o644)
	files, executable, err := exampleFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for p := range files {
		names = append(names, p)
	}
	slices.Sort(names)
	if want := []string{".ferry.yaml", "app.py", "run.sh"}; !slices.Equal(names, want) {
		t.Errorf("files %v, want %v", names, want)
	}
	if !slices.Equal(executable, []string{"run.sh"}) {
		t.Errorf("executable %v, want [run.sh]", executable)
	}
	if _, _, err := exampleFiles(t.TempDir()); err == nil {
		t.Error("an empty example app was accepted")
	}
}

// hookRecorder is a webhook receiver that records what GitLab sent.
type hookRecorder struct {
	mu       sync.Mutex
	requests []recordedHook
}

type recordedHook struct {
	header http.Header
	body   map[string]any
}

func (h *hookRecorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var body map[string]any
	data, _ := io.ReadAll(r.Body)
	_ = json.Unmarshal(data, &body)
	h.mu.Lock()
	h.requests = append(h.requests, recordedHook{header: r.Header.Clone(), body: body})
	h.mu.Unlock()
	w.WriteHeader(http.StatusCreated)
	_, _ = w.Write([]byte(`{"result":"created","builds":["demo/app-1"]}`))
}

func (h *hookRecorder) all() []recordedHook {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]recordedHook(nil), h.requests...)
}

// TestGitPushesBecomeGitLabWebhooks pushes to the git server over HTTP, as ferry dev push and a
// person with git do, and checks that the fake GitLab delivers the Push Hook GitLab would: the
// right token and headers, the pushed commit as after and checkout_sha, the developer as the
// pusher, the new commit in the list. A restart delivers nothing again.
func TestGitPushesBecomeGitLabWebhooks(t *testing.T) {
	const password = "bobs-git-password"
	rec := &hookRecorder{}
	receiver := httptest.NewServer(rec)
	t.Cleanup(receiver.Close)
	dir := t.TempDir()
	var logged []string
	var logMu sync.Mutex
	logf := func(format string, args ...any) {
		logMu.Lock()
		defer logMu.Unlock()
		logged = append(logged, strings.TrimSpace(fmt.Sprintf(format, args...)))
	}

	start := func() (*gitserver.Server, *gitlabsim.Server) {
		gl := gitlabsim.New()
		t.Cleanup(gl.Close)
		var m *mirror
		git, err := gitserver.Start(gitserver.Options{Dir: dir, Users: map[string]string{developer: password}, OnPush: func(repo string) { m.onPush(repo) }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = git.Close() })
		if _, err := importExample(git, "demo/app", filepath.Join("..", "..", "examples", "go-hello")); err != nil {
			t.Fatal(err)
		}
		m = newMirror(git, gl, developer, logf)
		if err := m.add("demo/app", 101); err != nil {
			t.Fatal(err)
		}
		if err := gl.AddHook(101, gitlabsim.Hook{URL: receiver.URL + "/hooks/gitlab", Token: "hook-secret", PushEvents: true, TagPushEvents: true}); err != nil {
			t.Fatal(err)
		}
		return git, gl
	}
	git, _ := start()
	initial, err := git.Head("demo/app", "main")
	if err != nil {
		t.Fatal(err)
	}
	if len(rec.all()) != 0 {
		t.Fatalf("importing the example sent %d webhooks", len(rec.all()))
	}

	ctx := context.Background()
	if _, err := commitAndPush(ctx, git.RepoURL("demo/app"), "main", "a change", "", &githttp.BasicAuth{Username: developer, Password: "wrong"}); err == nil {
		t.Fatal("a push with a wrong password was accepted")
	}
	sha, err := commitAndPush(ctx, git.RepoURL("demo/app"), "main", "a change", "", &githttp.BasicAuth{Username: developer, Password: password})
	if err != nil {
		t.Fatal(err)
	}
	hooks := rec.all()
	if len(hooks) != 1 {
		t.Fatalf("%d webhooks after one push, want 1", len(hooks))
	}
	h := hooks[0]
	for k, want := range map[string]string{"X-Gitlab-Event": "Push Hook", "X-Gitlab-Token": "hook-secret", "User-Agent": gitlabsim.UserAgent} {
		if got := h.header.Get(k); got != want {
			t.Errorf("header %s = %q, want %q", k, got, want)
		}
	}
	if h.header.Get("Idempotency-Key") == "" {
		t.Error("no Idempotency-Key")
	}
	b := h.body
	if b["object_kind"] != "push" || b["ref"] != "refs/heads/main" || b["before"] != initial || b["after"] != sha || b["checkout_sha"] != sha || b["user_username"] != developer {
		t.Errorf("push payload = %v", b)
	}
	if commits, _ := b["commits"].([]any); len(commits) != 1 || commits[0].(map[string]any)["id"] != sha || commits[0].(map[string]any)["message"] != "a change" {
		t.Errorf("commits = %v", b["commits"])
	}
	if project, _ := b["project"].(map[string]any); project["path_with_namespace"] != "demo/app" {
		t.Errorf("project = %v", b["project"])
	}
	if len(logged) != 1 || !strings.Contains(logged[0], "receiver 201 created: Build demo/app-1") || strings.Contains(logged[0], "hook-secret") {
		t.Errorf("logged %q", logged)
	}

	// A tag push is GitLab's Tag Push Hook.
	if err := git.Tag("demo/app", "v1.0.0", sha, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := commitAndPush(ctx, git.RepoURL("demo/app"), "main", "another change", "", &githttp.BasicAuth{Username: developer, Password: password}); err != nil {
		t.Fatal(err)
	}
	events := map[string]int{}
	for _, h := range rec.all()[1:] {
		events[h.header.Get("X-Gitlab-Event")]++
	}
	if events["Push Hook"] != 1 || events["Tag Push Hook"] != 1 {
		t.Errorf("after a tag and a push: %v", events)
	}

	// After a restart the history is known and nothing is delivered again.
	_ = git.Close()
	before := len(rec.all())
	git, gl := start()
	head, _ := git.Head("demo/app", "main")
	if len(rec.all()) != before {
		t.Errorf("the restart delivered %d webhooks", len(rec.all())-before)
	}
	req, _ := http.NewRequest(http.MethodGet, gl.APIURL()+"/projects/101/repository/commits/"+head, nil)
	gl.AddUser("reader", "reader-token")
	req.Header.Set("PRIVATE-TOKEN", "reader-token")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("GitLab does not know the head commit after a restart: %d", resp.StatusCode)
	}
}

func TestStateKeepsPortsAndSecrets(t *testing.T) {
	dir := t.TempDir()
	st, first, err := loadState(dir)
	if err != nil || !first {
		t.Fatalf("new state: first=%v err=%v", first, err)
	}
	s1 := st.secret("webhook/app", "", 20)
	if len(s1) != 40 || st.secret("webhook/app", "", 20) != s1 || st.secret("other", "glpat-", 10) == s1 {
		t.Fatalf("secrets are not stable per name: %q", s1)
	}
	if err := st.setPort(portGit, "127.0.0.1:43123"); err != nil {
		t.Fatal(err)
	}
	// A save before the first start completed is still a first start.
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	if _, first, _ := loadState(dir); !first {
		t.Error("a data directory that never finished a start is not a first start")
	}
	st.Starts++
	if err := st.save(dir); err != nil {
		t.Fatal(err)
	}
	info, err := os.Stat(statePath(dir))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("state file mode %v (%v), want 0600", info.Mode(), err)
	}
	again, first, err := loadState(dir)
	if err != nil || first {
		t.Fatalf("reloaded state: first=%v err=%v", first, err)
	}
	if again.Secrets["webhook/app"] != s1 || again.Ports[portGit] != 43123 {
		t.Errorf("reloaded state = %+v", again)
	}

	if err := os.WriteFile(statePath(dir), []byte(`{"version": 99}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(dir); err == nil || !strings.Contains(err.Error(), "another version") {
		t.Errorf("a state of another version: %v", err)
	}
	if err := os.WriteFile(statePath(dir), []byte(`{`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := loadState(dir); err == nil || !strings.Contains(err.Error(), statePath(dir)) {
		t.Errorf("a broken state: %v", err)
	}
}

func TestKeptPortMovesWhenTaken(t *testing.T) {
	st := &state{Ports: map[string]int{}}
	if addr, moved := st.addr(portUI); addr != "127.0.0.1:0" || moved {
		t.Errorf("no kept port: %s %v", addr, moved)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	if err := st.setPort(portUI, ln.Addr().String()); err != nil {
		t.Fatal(err)
	}
	if addr, moved := st.addr(portUI); addr != "127.0.0.1:0" || !moved {
		t.Errorf("a taken port: %s %v, want a new one", addr, moved)
	}
	_ = ln.Close()
	if addr, moved := st.addr(portUI); addr != ln.Addr().String() || moved {
		t.Errorf("a free kept port: %s %v, want %s", addr, moved, ln.Addr())
	}
}

func TestOneFerryDevPerDataDirectory(t *testing.T) {
	dir := t.TempDir()
	lock, err := lockDataDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := lockDataDir(dir); err == nil || !strings.Contains(err.Error(), "another ferry dev is running") {
		t.Errorf("a second lock: %v", err)
	}
	_ = lock.Close()
	lock, err = lockDataDir(dir)
	if err != nil {
		t.Fatalf("the lock outlived its holder: %v", err)
	}
	_ = lock.Close()
}

func TestLeftoverProcessesFindsWhatRunsInTheDataDirectory(t *testing.T) {
	dir := t.TempDir()
	cmd := exec.Command("sleep", "60")
	cmd.Dir = dir
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	// The new process's command line shows in /proc once its exec has settled: wait for it.
	testutil.Eventually(t, "the sleep among the leftovers", func() (bool, error) {
		left := LeftoverProcesses(dir)
		if len(left) > 1 {
			return false, fmt.Errorf("leftovers = %q, want only the sleep", left)
		}
		return len(left) == 1 && strings.Contains(left[0], "sleep 60"), nil
	})
	_ = cmd.Process.Kill()
	_ = cmd.Wait()
	if left := LeftoverProcesses(dir); len(left) != 0 {
		t.Errorf("leftovers after the kill = %q", left)
	}
}

func TestPushNeedsARunningFerryDev(t *testing.T) {
	dir := t.TempDir()
	if _, err := Push(context.Background(), PushOptions{DataDir: dir, Project: "go-hello", Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "is it running") {
		t.Errorf("push without ferry dev: %v", err)
	}
	ep := &Endpoints{Projects: map[string]ProjectEndpoint{"go-hello": {}, "python-web": {}}}
	data, _ := json.Marshal(ep)
	if err := os.WriteFile(EndpointsPath(dir), data, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Push(context.Background(), PushOptions{DataDir: dir, Project: "nope", Out: io.Discard}); err == nil || !strings.Contains(err.Error(), "go-hello, python-web") {
		t.Errorf("push of an unknown project: %v", err)
	}
}

func TestActivityLines(t *testing.T) {
	now := metav1.Now()
	later := metav1.NewTime(now.Add(12 * time.Second))
	b := &ferryv1.Build{ObjectMeta: metav1.ObjectMeta{Name: "app-1"}, Spec: ferryv1.BuildSpec{Ref: "refs/heads/main", Revision: "0123456789abcdef0123456789abcdef01234567"}}
	if got := buildLine(b); got != "Build app-1 (main 01234567): created" {
		t.Errorf("new Build: %q", got)
	}
	b.Status.Conditions = []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionUnknown, Reason: ferryv1.PipelineRunningReason}}
	b.Status.Steps = []ferryv1.StepStatus{{Name: "clone", State: "Succeeded"}, {Name: "test", State: "Running"}}
	if got := buildLine(b); got != "Build app-1 (main 01234567): PipelineRunning, step test" {
		t.Errorf("running Build: %q", got)
	}
	b.Status.Conditions[0] = metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason}
	b.Status.StartTime, b.Status.CompletionTime, b.Status.Image = &now, &later, "reg/demo/app@sha256:abc"
	if got := buildLine(b); got != "Build app-1 (main 01234567): succeeded in 12s, image reg/demo/app@sha256:abc" {
		t.Errorf("finished Build: %q", got)
	}
	b.Status.Conditions[0] = metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: ferryv1.PipelineFailedReason, Message: "step test failed\nmore"}
	if got := buildLine(b); got != "Build app-1 (main 01234567): PipelineFailed: step test failed" {
		t.Errorf("failed Build: %q", got)
	}

	r := &ferryv1.Release{ObjectMeta: metav1.ObjectMeta{Name: "app-1"}}
	if got := releaseLine(r); got != "" {
		t.Errorf("Release without status: %q", got)
	}
	cond := func(reason string) []metav1.Condition {
		return []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionFalse, Reason: reason}}
	}
	r.Status.Environments = []ferryv1.ReleaseEnvironmentStatus{
		{Name: "dev", Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason}}},
		{Name: "staging", Conditions: cond(ferryv1.WaitingForApprovalReason), Gate: &ferryv1.GateStatus{RequiredApprovals: 2, Approvals: []ferryv1.ApprovalRecord{{User: "alice", Decision: ferryv1.DecisionApprove}}}},
		{Name: "prod", Conditions: cond(ferryv1.WaitingForPreviousEnvironmentReason)},
		{Name: "qa", Conditions: cond(ferryv1.RolloutFailedReason)},
		{Name: "perf"},
	}
	want := "Release app-1: dev rolled out, staging waiting for approval (1/2), prod pending, qa rollout failed, perf pending"
	if got := releaseLine(r); got != want {
		t.Errorf("Release:\n got %q\nwant %q", got, want)
	}
}

func TestEnvironmentsAndProjectsOfFerryDev(t *testing.T) {
	envs := environments()
	names := []string{}
	for _, e := range envs {
		names = append(names, e.Name)
		for _, c := range e.Spec.Clusters {
			if !slices.Contains(ClusterNames, c) {
				t.Errorf("environment %s deploys to unknown cluster %s", e.Name, c)
			}
		}
	}
	p := project(projectSpec{name: "go-hello", gitlabURL: "http://127.0.0.1:1", gitlabID: 101, cloneURL: "http://127.0.0.1:2/demo/go-hello.git", repository: "127.0.0.1:3/demo/go-hello"})
	if !slices.Equal(p.Spec.Promotion.Environments, names) {
		t.Errorf("promotion %v, environments %v", p.Spec.Promotion.Environments, names)
	}
	if p.Spec.Preview != nil {
		t.Errorf("go-hello has previews: %+v", p.Spec.Preview)
	}
	withPreviews := project(projectSpec{name: previewProject})
	if pv := withPreviews.Spec.Preview; pv == nil || !pv.Enabled || pv.Cluster != previewCluster || !slices.Contains(ClusterNames, pv.Cluster) {
		t.Errorf("%s previews = %+v, want enabled on %s", previewProject, pv, previewCluster)
	}
	prod := envs[len(envs)-1]
	if prod.Name != "prod" || prod.Spec.Approval == nil || !slices.Equal(prod.Spec.Approval.Groups, []string{releaseManagersGroup}) || !*prod.Spec.Approval.ForbidSelfApproval {
		t.Errorf("prod = %+v, want gated by release managers without self-approval", prod.Spec)
	}
	for _, person := range People {
		if person.Name == developer && slices.Contains(person.Groups, releaseManagersGroup) {
			t.Errorf("the developer is a release manager")
		}
	}
}

func image(t *testing.T, ref string, auth authn.Authenticator) v1.Image {
	t.Helper()
	d, err := name.NewDigest(ref)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(d, remote.WithAuth(auth))
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func layerFiles(t *testing.T, l v1.Layer) map[string]string {
	t.Helper()
	rc, err := l.Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = rc.Close() }()
	files := map[string]string{}
	tr := tar.NewReader(rc)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		_, _ = io.Copy(&buf, tr)
		files[hdr.Name] = buf.String()
	}
}
