// Package e2e runs Ferry's whole flow headless, the way a person runs it: the ferry binary starts
// `ferry dev` on a fresh data directory, `ferry dev push` pushes a change, Ferry builds, pushes
// the image, releases it to dev, and waits for approvals before staging and prod, which the
// release manager gives with `ferry approve` (staging) and in the UI, in headless Chromium (prod);
// then ferry dev is stopped with SIGINT and started again on the same data directory, which keeps
// the history. Run it with `make e2e`.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/dev"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/supplychain"
	"github.com/ferryci/ferry/internal/testutil"
)

// Bounds of the steps; the whole test stays well under make e2e's timeout.
const (
	startTimeout = 5 * time.Minute
	// A first Build through Tekton compiles Go's standard library into the Project's new step
	// cache: about 2-3 minutes on 2 cores, more when the machine is shared.
	buildTimeout   = 10 * time.Minute
	rolloutTimeout = 2 * time.Minute
	stopTimeout    = time.Minute
)

func TestPushToProductionAndRestart(t *testing.T) {
	if os.Getenv("FERRY_E2E") == "" {
		t.Skip("the end-to-end test runs with make e2e (FERRY_E2E=1)")
	}
	ctrllog.SetLogger(logr.Discard())
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ferry := buildFerry(t, root)
	dataDir := filepath.Join(t.TempDir(), "data")

	// First start: a fresh data directory.
	d := startDev(t, ferry, root, dataDir)
	ep := d.endpoints
	if !ep.FirstStart {
		t.Errorf("endpoints say firstStart=false on a fresh data directory")
	}
	t.Logf("first start of ferry dev: %.1fs", ep.StartSeconds)
	hub := kubeClient(t, ep.Kubeconfig)
	nonprod := kubeClient(t, ep.Clusters["nonprod"].Kubeconfig)
	prod := kubeClient(t, ep.Clusters["prod"].Kubeconfig)
	alice, bob := ep.Users["alice"].Kubeconfig, ep.Users["bob"].Kubeconfig
	const project = "go-hello"
	p := ep.Projects[project]

	// A push as the developer becomes a Build of exactly that commit.
	pushed := time.Now()
	out := runFerry(t, ferry, root, "dev", "push", project, "--data-dir", dataDir, "-m", "e2e: change go-hello")
	sha := remoteHead(t, p.RepoURL)
	if !strings.Contains(out, sha[:8]) {
		t.Errorf("ferry dev push did not name the pushed commit %s:\n%s", sha, out)
	}
	b := onlyBuild(t, hub, project)
	if b.Spec.Revision != sha || b.Spec.Ref != "refs/heads/main" || b.Spec.Trigger.User != "bob" || b.Spec.Trigger.Kind != ferryv1.TriggerPush {
		t.Fatalf("Build spec = %+v, want a push of %s to main by bob", b.Spec, sha)
	}
	if !strings.Contains(out, b.Name) {
		t.Errorf("ferry dev push did not name Build %s:\n%s", b.Name, out)
	}
	b = waitBuildSucceeded(t, hub, b)
	t.Logf("push to image: %s", time.Since(pushed).Round(100*time.Millisecond))
	repository, _, ok := strings.Cut(b.Status.Image, "@")
	if !ok || repository != p.Image {
		t.Fatalf("Build image %q is not a digest of %s", b.Status.Image, p.Image)
	}
	checkImage(t, hub, ep, b.Status.Image, sha)
	waitCommitStatus(t, ep, p.GitLabProjectID, sha, "success")

	// The Release named after the Build rolls out to dev at once, with exactly that digest.
	rel := waitEnvironment(t, hub, b.Name, "dev", ferryv1.SucceededReason)
	if rel.Spec.Image != b.Status.Image {
		t.Fatalf("Release image %s, Build image %s", rel.Spec.Image, b.Status.Image)
	}
	waitDeployment(t, nonprod, p.Namespaces["dev"], project, b.Status.Image)
	t.Logf("push to dev rollout: %s", time.Since(pushed).Round(100*time.Millisecond))

	// staging waits for an approval, and the author may not give it.
	waitEnvironment(t, hub, rel.Name, "staging", ferryv1.WaitingForApprovalReason)
	noDeployment(t, nonprod, p.Namespaces["staging"], project)
	noDeployment(t, prod, p.Namespaces["prod"], project)
	refused := runFerryFails(t, ferry, root, "approve", rel.Name, "--env", "staging", "-m", "my own change", "--kubeconfig", bob)
	if !strings.Contains(refused, "self-approval") {
		t.Errorf("bob approving his own Release was refused for another reason:\n%s", refused)
	}
	runFerry(t, ferry, root, "approve", rel.Name, "--env", "staging", "-m", "looks good", "--kubeconfig", alice)
	waitEnvironment(t, hub, rel.Name, "staging", ferryv1.SucceededReason)
	waitDeployment(t, nonprod, p.Namespaces["staging"], project, b.Status.Image)

	// prod waits for a release manager: the Release is at its gate and nothing runs in prod.
	rel = waitEnvironment(t, hub, rel.Name, "prod", ferryv1.WaitingForApprovalReason)
	if gate := envStatus(rel, "prod").Gate; gate == nil || gate.RequiredApprovals != 1 || len(gate.Approvals) != 0 || gate.WaitingSince == nil {
		t.Fatalf("prod gate = %+v, want waiting for 1 approval with none given", gate)
	}
	noDeployment(t, prod, p.Namespaces["prod"], project)
	refused = runFerryFails(t, ferry, root, "approve", rel.Name, "--env", "prod", "-m", "ship it", "--kubeconfig", bob)
	if !strings.Contains(refused, "not eligible") && !strings.Contains(refused, "self-approval") {
		t.Errorf("bob approving prod was refused for another reason:\n%s", refused)
	}
	noDeployment(t, prod, p.Namespaces["prod"], project)

	// alice decides prod in the UI: she follows her sign-in link, finds the gate waiting for her,
	// approves it with a comment, and watches the rollout finish on the Release's page.
	if ep.UIURL == "" || ep.Users["alice"].UISignInURL == "" {
		t.Fatalf("ferry dev did not print the UI and alice's sign-in link: %+v", ep)
	}
	ui := newBrowser(t, ep.UIURL)
	ui.signIn(ep.Users["alice"].UISignInURL)
	gate := fmt.Sprintf("gate-%s-%s-prod-0", ep.Namespace, rel.Name)
	ui.waitText("#mine", project+" → prod", rolloutTimeout)
	ui.screenshot(root, "waiting")
	approvedAt := time.Now().Truncate(time.Second)
	ui.do(
		chromedp.SendKeys(chromedp.ID("comment-"+gate), "CHG-1: e2e"),
		chromedp.Click(chromedp.CSS("#form-"+gate+" button.approve")),
		chromedp.WaitVisible(chromedp.ID("flash")),
	)
	ui.waitText("#flash", "You approved prod for Release "+rel.Name, time.Minute)
	ui.do(chromedp.Navigate(ep.UIURL + "/releases/" + ep.Namespace + "/" + rel.Name))
	ui.waitText("#env-prod", "Rolled out", rolloutTimeout)
	ui.waitText("li.stage-ok > #env-prod", "Rolled out", time.Minute) // the timeline follows, too
	ui.waitText("#env-prod", "alice", time.Minute)
	ui.screenshot(root, "release")
	rel = waitEnvironment(t, hub, rel.Name, "prod", ferryv1.SucceededReason)
	dep := waitDeployment(t, prod, p.Namespaces["prod"], project, b.Status.Image)
	if dep.CreationTimestamp.Time.Before(approvedAt) {
		t.Errorf("the prod Deployment was created at %s, before the approval at %s", dep.CreationTimestamp, approvedAt)
	}
	if gate := envStatus(rel, "prod").Gate; gate == nil || len(gate.Approvals) != 1 || gate.Approvals[0].User != "alice" {
		t.Errorf("prod gate = %+v, want alice's approval", gate)
	}
	var approvals ferryv1.ApprovalList
	if err := hub.List(context.Background(), &approvals, client.InNamespace(ep.Namespace)); err != nil {
		t.Fatal(err)
	}
	var fromUI *ferryv1.Approval
	for i, a := range approvals.Items {
		if a.Spec.Release == rel.Name && a.Spec.Environment == "prod" {
			fromUI = &approvals.Items[i]
		}
	}
	if fromUI == nil || fromUI.Spec.Approver == nil || fromUI.Spec.Approver.Username != "alice" || fromUI.Spec.Comment != "CHG-1: e2e" {
		t.Errorf("the prod Approval made in the UI = %+v, want alice's with her comment", fromUI)
	}

	if ep.Nodes == dev.NodesReal {
		// The app really runs in prod, on the prod cluster's node: it answers with the pushed commit.
		waitAppAnswers(t, p.AppURLs["prod"], "(commit "+sha[:8]+")")
	} else {
		t.Logf("nodes are simulated here: apps are not asked for an answer")
	}

	// Ctrl-C stops everything.
	d.stop(t)

	// A second start on the same data directory is a later start and keeps the history.
	d = startDev(t, ferry, root, dataDir)
	ep = d.endpoints
	if ep.FirstStart {
		t.Errorf("endpoints say firstStart=true on the second start")
	}
	t.Logf("second start of ferry dev: %.1fs", ep.StartSeconds)
	hub = kubeClient(t, ep.Kubeconfig)
	prod = kubeClient(t, ep.Clusters["prod"].Kubeconfig)
	if got := onlyBuild(t, hub, project); got.UID != b.UID || got.Status.Image != b.Status.Image {
		t.Errorf("after the restart the Build is %s %s, want %s %s", got.UID, got.Status.Image, b.UID, b.Status.Image)
	}
	kept := &ferryv1.Release{}
	if err := hub.Get(context.Background(), client.ObjectKeyFromObject(rel), kept); err != nil {
		t.Fatalf("the Release is gone after the restart: %v", err)
	}
	if ready := meta.FindStatusCondition(kept.Status.Conditions, ferryv1.ReadyCondition); ready == nil || ready.Status != metav1.ConditionTrue {
		t.Errorf("after the restart the Release is not Ready: %+v", kept.Status.Conditions)
	}
	approvals = ferryv1.ApprovalList{}
	if err := hub.List(context.Background(), &approvals, client.InNamespace(ep.Namespace)); err != nil || len(approvals.Items) != 2 {
		t.Errorf("after the restart %d Approvals (%v), want 2", len(approvals.Items), err)
	}
	checkImage(t, hub, ep, b.Status.Image, sha)
	if head := remoteHead(t, p.RepoURL); head != sha {
		t.Errorf("after the restart main is at %s, want the pushed %s", head, sha)
	}
	waitDeployment(t, prod, p.Namespaces["prod"], project, b.Status.Image)

	// And the flow still runs: the Python app, pushed after the restart, reaches dev.
	py := ep.Projects["python-web"]
	runFerry(t, ferry, root, "dev", "push", "python-web", "--data-dir", dataDir, "--wait")
	pb := waitBuildSucceeded(t, hub, onlyBuild(t, hub, "python-web"))
	if !strings.HasPrefix(pb.Status.Image, py.Image+"@sha256:") {
		t.Errorf("python-web image %s is not in %s", pb.Status.Image, py.Image)
	}
	waitEnvironment(t, hub, pb.Name, "dev", ferryv1.SucceededReason)
	waitDeployment(t, kubeClient(t, ep.Clusters["nonprod"].Kubeconfig), py.Namespaces["dev"], "python-web", pb.Status.Image)
	if ep.Nodes == dev.NodesReal {
		// Python runs in the python-3.11 runtime and says which commit it is.
		waitAppAnswers(t, py.AppURLs["dev"]+"version", "commit "+pb.Spec.Revision[:8])
	}
	// A merge request of the Python app gets a preview, answers /retest and is merged.
	mergeRequestPreview(t, ferry, root, dataDir, hub, ep)
	if ep.Nodes == dev.NodesReal {
		// A commit that breaks go-hello's health check fails in dev and is rolled back, while the
		// version that ran keeps answering every request.
		brokenCommitRollsBack(t, ferry, root, dataDir, hub, ep, project, b)
	}
	d.stop(t)
}

// waitAppAnswers waits until an app URL of ferry dev answers 200 with want in its body.
func waitAppAnswers(t testing.TB, appURL, want string) {
	t.Helper()
	var last string
	testutil.EventuallyWithin(t, rolloutTimeout, appURL+" answering "+want, func() (bool, error) {
		status, body, err := getApp(context.Background(), appURL)
		last = fmt.Sprintf("%d %q %v", status, body, err)
		return err == nil && status == http.StatusOK && strings.Contains(body, want), nil
	})
	t.Logf("%s answers: %s", appURL, strings.TrimSpace(last))
}

// getApp GETs an app URL of ferry dev (http://PROJECT.ENVIRONMENT.localhost:PORT/…): its host
// name goes to loopback as the Host header, so no resolver has to know *.localhost.
func getApp(ctx context.Context, appURL string) (int, string, error) {
	u, err := url.Parse(appURL)
	if err != nil {
		return 0, "", err
	}
	dialer := &net.Dialer{}
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return dialer.DialContext(ctx, network, net.JoinHostPort("127.0.0.1", u.Port()))
		},
	}}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, appURL, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// brokenCommitRollsBack pushes a commit whose health check answers 500 and checks that its
// rollout in dev fails and is rolled back to the running image, and that the running version
// answered every request meanwhile (a Rolling rollout never removes a ready pod first).
func brokenCommitRollsBack(t testing.TB, ferry, root, dataDir string, hub client.Client, ep *dev.Endpoints, project string, running *ferryv1.Build) {
	t.Helper()
	appURL := ep.Projects[project].AppURLs["dev"]
	want := "(commit " + running.Spec.Revision[:8] + ")"
	waitAppAnswers(t, appURL, want)
	ctx, cancel := context.WithCancel(context.Background())
	type result struct{ ok, failed int }
	done := make(chan result, 1)
	var failures []string
	go func() {
		var r result
		for ctx.Err() == nil {
			status, body, err := getApp(ctx, appURL)
			switch {
			case ctx.Err() != nil:
			case err == nil && status == http.StatusOK && strings.Contains(body, want):
				r.ok++
			default:
				r.failed++
				if len(failures) < 5 {
					failures = append(failures, fmt.Sprintf("%d %q %v", status, body, err))
				}
			}
			time.Sleep(20 * time.Millisecond)
		}
		done <- r
	}()
	out := runFerry(t, ferry, root, "dev", "push", project, "--unhealthy", "--wait", "--data-dir", dataDir)
	cancel()
	r := <-done
	if !strings.Contains(out, "rolled back") {
		t.Errorf("ferry dev push --unhealthy --wait did not report the rollback:\n%s", out)
	}
	t.Logf("while the broken commit rolled out and back: %d requests answered by the running version, %d failed", r.ok, r.failed)
	if r.failed > 0 || r.ok == 0 {
		t.Errorf("%d of %d requests failed while the broken commit rolled out and back (first: %v)", r.failed, r.ok+r.failed, failures)
	}
	broken := remoteHead(t, ep.Projects[project].RepoURL)
	var rel *ferryv1.Release
	testutil.EventuallyWithin(t, rolloutTimeout, "the broken commit's Release", func() (bool, error) {
		var list ferryv1.ReleaseList
		if err := hub.List(context.Background(), &list, client.InNamespace(ep.Namespace)); err != nil {
			return false, err
		}
		for i := range list.Items {
			if list.Items[i].Spec.Revision == broken {
				rel = &list.Items[i]
			}
		}
		return rel != nil, nil
	})
	rel = waitEnvironment(t, hub, rel.Name, "dev", ferryv1.RolledBackReason)
	// On real nodes the Build ran through Tekton (the default there), with the Project's step
	// cache, warm from the earlier Build.
	b := &ferryv1.Build{}
	if err := hub.Get(context.Background(), client.ObjectKey{Namespace: rel.Namespace, Name: rel.Spec.Build}, b); err != nil {
		t.Fatal(err)
	}
	if ep.Nodes == dev.NodesReal {
		if b.Status.Executor != "tekton" {
			t.Errorf("Build %s ran on %q, want tekton, the default on real nodes", b.Name, b.Status.Executor)
		}
		var pvc corev1.PersistentVolumeClaim
		if err := hub.Get(context.Background(), client.ObjectKey{Namespace: b.Namespace, Name: "ferry-cache-" + project}, &pvc); err != nil || pvc.Status.Phase != corev1.ClaimBound {
			t.Errorf("the step cache of %s: %v %s", project, err, pvc.Status.Phase)
		}
	}
	if b.Status.CompletionTime != nil {
		t.Logf("the broken commit's Build (%s executor, warm step cache) took %s", b.Status.Executor, b.Status.CompletionTime.Sub(b.CreationTimestamp.Time))
	}
	waitDeployment(t, kubeClient(t, ep.Clusters["nonprod"].Kubeconfig), ep.Projects[project].Namespaces["dev"], project, running.Status.Image)
	waitAppAnswers(t, appURL, want)
}

// devProcess is a running `ferry dev`.
type devProcess struct {
	cmd       *exec.Cmd
	dataDir   string
	endpoints *dev.Endpoints
	output    *syncBuffer
	done      chan struct{}
	stopped   bool
}

// startDev starts `ferry dev` and waits until it says it is ready.
func startDev(t testing.TB, ferry, root, dataDir string, args ...string) *devProcess {
	t.Helper()
	// The real base images are built once per machine, in the checkout's git-ignored cache that
	// `make run` and the baseimage tests share.
	cmd := exec.Command(ferry, append([]string{"dev", "--data-dir", dataDir, "--image-cache", filepath.Join(root, ".cache", "baseimage")}, args...)...)
	cmd.Dir = root
	out := &syncBuffer{ready: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	d := &devProcess{cmd: cmd, dataDir: dataDir, output: out, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(d.done)
	}()
	t.Cleanup(func() {
		if !d.stopped {
			_ = cmd.Process.Signal(syscall.SIGINT)
			select {
			case <-d.done:
			case <-time.After(stopTimeout):
				_ = cmd.Process.Kill()
			}
		}
		if t.Failed() {
			t.Logf("ferry dev output:\n%s", out.String())
		}
	})
	select {
	case <-out.ready:
	case <-d.done:
		t.Fatalf("ferry dev exited before it was ready:\n%s", out.String())
	case <-time.After(startTimeout):
		t.Fatalf("ferry dev was not ready after %s:\n%s", startTimeout, out.String())
	}
	ep, err := dev.ReadEndpoints(dataDir)
	if err != nil {
		t.Fatal(err)
	}
	d.endpoints = ep
	for _, key := range []string{"kubeconfig", "uiURL", "webhookURL", "registry", "gitURL"} {
		if !strings.Contains(readFile(t, dev.EndpointsPath(dataDir)), `"`+key+`"`) {
			t.Errorf("endpoints.json has no key %s", key)
		}
	}
	for name, p := range ep.Projects {
		if p.WebhookSecret == "" || p.RepoURL == "" {
			t.Errorf("endpoints.json: project %s has no webhookSecret or repoURL: %+v", name, p)
		}
	}
	return d
}

// stop sends SIGINT, as Ctrl-C does, and checks that ferry dev exits cleanly and leaves no
// process behind.
func (d *devProcess) stop(t testing.TB) {
	t.Helper()
	d.stopped = true
	if err := d.cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	select {
	case <-d.done:
	case <-time.After(stopTimeout):
		_ = d.cmd.Process.Kill()
		t.Fatalf("ferry dev did not stop within %s after SIGINT:\n%s", stopTimeout, d.output.String())
	}
	if code := d.cmd.ProcessState.ExitCode(); code != 0 {
		t.Fatalf("ferry dev exited with %d after SIGINT:\n%s", code, d.output.String())
	}
	if !strings.Contains(d.output.String(), "nothing is left running") {
		t.Errorf("ferry dev did not report a clean stop:\n%s", d.output.String())
	}
	if left := dev.LeftoverProcesses(d.dataDir); len(left) > 0 {
		t.Fatalf("processes of ferry dev still run after it stopped:\n%s", strings.Join(left, "\n"))
	}
	if _, err := os.Stat(dev.EndpointsPath(d.dataDir)); !os.IsNotExist(err) {
		t.Errorf("endpoints.json outlived ferry dev (%v)", err)
	}
}

// syncBuffer collects a process's output and closes ready when ferry dev says it is ready.
type syncBuffer struct {
	mu    sync.Mutex
	buf   bytes.Buffer
	ready chan struct{}
	once  sync.Once
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	n, err := b.buf.Write(p)
	if bytes.Contains(b.buf.Bytes(), []byte("ferry dev is ready")) {
		b.once.Do(func() { close(b.ready) })
	}
	return n, err
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// buildFerry builds the ferry binary the way make build does.
func buildFerry(t testing.TB, root string) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "ferry")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/ferry")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build ./cmd/ferry: %v\n%s", err, out)
	}
	return bin
}

// runFerry runs a ferry command that must succeed and returns its output.
func runFerry(t testing.TB, ferry, root string, args ...string) string {
	t.Helper()
	out, err := ferryCommand(ferry, root, args...)
	if err != nil {
		t.Fatalf("ferry %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// runFerryFails runs a ferry command that must fail and returns its output.
func runFerryFails(t testing.TB, ferry, root string, args ...string) string {
	t.Helper()
	out, err := ferryCommand(ferry, root, args...)
	if err == nil {
		t.Fatalf("ferry %s succeeded, want a refusal:\n%s", strings.Join(args, " "), out)
	}
	return out
}

func ferryCommand(ferry, root string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, ferry, args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	return string(out), err
}

func kubeClient(t testing.TB, kubeconfig string) client.Client {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(cfg, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// remoteHead is the commit main points at on the git server.
func remoteHead(t testing.TB, repoURL string) string {
	t.Helper()
	out, err := exec.Command("git", "ls-remote", repoURL, "refs/heads/main").Output()
	if err != nil {
		t.Fatalf("git ls-remote %s: %v", repoURL, err)
	}
	sha, _, _ := strings.Cut(string(out), "\t")
	if len(sha) != 40 {
		t.Fatalf("git ls-remote %s: %q", repoURL, out)
	}
	return sha
}

// onlyBuild is the one Build of a project.
func onlyBuild(t testing.TB, c client.Client, project string) *ferryv1.Build {
	t.Helper()
	var b *ferryv1.Build
	testutil.EventuallyWithin(t, time.Minute, "one Build of "+project, func() (bool, error) {
		var list ferryv1.BuildList
		if err := c.List(context.Background(), &list, client.InNamespace(dev.Namespace), client.MatchingLabels{ferryv1.ProjectLabel: project}); err != nil {
			return false, err
		}
		if len(list.Items) > 1 {
			t.Fatalf("%d Builds of %s, want 1", len(list.Items), project)
		}
		if len(list.Items) == 1 {
			b = &list.Items[0]
		}
		return b != nil, nil
	})
	return b
}

func waitBuildSucceeded(t testing.TB, c client.Client, b *ferryv1.Build) *ferryv1.Build {
	t.Helper()
	cur := &ferryv1.Build{}
	testutil.EventuallyWithin(t, buildTimeout, "Build "+b.Name+" to succeed", func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKeyFromObject(b), cur); err != nil {
			return false, err
		}
		ready := meta.FindStatusCondition(cur.Status.Conditions, ferryv1.ReadyCondition)
		if ready != nil && ready.Status == metav1.ConditionFalse {
			t.Fatalf("Build %s failed: %s: %s (log %s)", b.Name, ready.Reason, ready.Message, cur.Status.LogURL)
		}
		return ready != nil && ready.Status == metav1.ConditionTrue, fmt.Errorf("%+v", cur.Status.Conditions)
	})
	return cur
}

// waitEnvironment waits until a Release's environment is Ready with reason (Succeeded), or not
// Ready with that reason (WaitingForApproval).
func waitEnvironment(t testing.TB, c client.Client, release, env, reason string) *ferryv1.Release {
	t.Helper()
	r := &ferryv1.Release{}
	testutil.EventuallyWithin(t, rolloutTimeout, "Release "+release+" in "+env+": "+reason, func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: dev.Namespace, Name: release}, r); err != nil {
			return false, err
		}
		es := envStatus(r, env)
		if es == nil {
			return false, fmt.Errorf("no status for %s yet", env)
		}
		ready := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition)
		if ready != nil && ready.Status == metav1.ConditionFalse && ready.Reason != reason && (ready.Reason == ferryv1.RolloutFailedReason || ready.Reason == ferryv1.RejectedReason || ready.Reason == ferryv1.RolledBackReason) {
			t.Fatalf("Release %s stopped in %s: %s: %s", release, env, ready.Reason, ready.Message)
		}
		return ready != nil && ready.Reason == reason, fmt.Errorf("%+v", es.Conditions)
	})
	return r
}

func envStatus(r *ferryv1.Release, env string) *ferryv1.ReleaseEnvironmentStatus {
	for i := range r.Status.Environments {
		if r.Status.Environments[i].Name == env {
			return &r.Status.Environments[i]
		}
	}
	return nil
}

// waitDeployment waits until the app's Deployment in a namespace of a target cluster runs exactly
// image, every replica updated and available.
func waitDeployment(t testing.TB, c client.Client, ns, app, image string) *appsv1.Deployment {
	t.Helper()
	dep := &appsv1.Deployment{}
	testutil.EventuallyWithin(t, rolloutTimeout, "Deployment "+ns+"/"+app+" to run "+image, func() (bool, error) {
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: app}, dep); err != nil {
			return false, err
		}
		containers := dep.Spec.Template.Spec.Containers
		if len(containers) != 1 || containers[0].Image != image {
			return false, fmt.Errorf("containers %+v", containers)
		}
		want := int32(1)
		if dep.Spec.Replicas != nil {
			want = *dep.Spec.Replicas
		}
		s := dep.Status
		return s.ObservedGeneration == dep.Generation && s.UpdatedReplicas == want && s.AvailableReplicas == want && s.Replicas == want,
			fmt.Errorf("status %+v", s)
	})
	return dep
}

// noDeployment checks that the app does not run in a namespace of a target cluster.
func noDeployment(t testing.TB, c client.Client, ns, app string) {
	t.Helper()
	err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: app}, &appsv1.Deployment{})
	if !apierrors.IsNotFound(err) {
		t.Fatalf("Deployment %s/%s: %v, want none", ns, app, err)
	}
	var pods corev1.PodList
	if err := c.List(context.Background(), &pods, client.InNamespace(ns)); err != nil || len(pods.Items) > 0 {
		t.Fatalf("%d pods in %s (%v), want none", len(pods.Items), ns, err)
	}
}

// checkImage checks that the registry serves the image by digest, that it records the commit it
// was built from, that it sits on the catalog's stack, and that Ferry vouches for it as a
// supply-chain gate would: signed with ferry dev's key, with an SBOM and signed provenance naming
// the Project's repository and the commit.
func checkImage(t testing.TB, hub client.Client, ep *dev.Endpoints, image, sha string) {
	t.Helper()
	ref, err := name.NewDigest(image, name.Insecure) // ferry dev's registry speaks plain HTTP, on loopback or on the host's address for nodes
	if err != nil {
		t.Fatal(err)
	}
	pull := "robot$" + dev.Namespace + "+pull"
	auth := remote.WithAuth(&authn.Basic{Username: pull, Password: ep.RegistryAccounts[pull]})
	img, err := remote.Image(ref, auth)
	if err != nil {
		t.Fatalf("the registry does not serve %s: %v", image, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if got := cf.Config.Labels["org.opencontainers.image.revision"]; got != sha {
		t.Errorf("image revision label %q, want %s", got, sha)
	}
	stack := cf.Config.Labels["dev.ferry.stack.image"]
	if !strings.HasPrefix(stack, ep.Registry+"/ferry/stacks/debian-12@sha256:") {
		t.Errorf("image stack label %q, want the catalog's debian-12 in %s", stack, ep.Registry)
	}
	ctx := context.Background()
	key := &corev1.Secret{}
	if err := hub.Get(ctx, client.ObjectKey{Namespace: dev.FerryNamespace, Name: manager.DefaultSigningKeySecret}, key); err != nil {
		t.Fatalf("ferry dev's signing key: %v", err)
	}
	pub, err := supplychain.ParsePublicKey(key.Data["cosign.pub"])
	if err != nil {
		t.Fatalf("cosign.pub of %s: %v", manager.DefaultSigningKeySecret, err)
	}
	var projects ferryv1.ProjectList
	if err := hub.List(ctx, &projects, client.InNamespace(dev.Namespace)); err != nil {
		t.Fatal(err)
	}
	repository := ""
	for _, p := range projects.Items {
		if strings.HasPrefix(image, ep.Projects[p.Name].Image+"@") {
			repository = assemble.SanitizeSourceURL(p.Spec.Repository.CloneURL)
		}
	}
	policy := supplychain.Policy{Keys: []supplychain.Key{{Name: "ferry-dev", Key: pub}}, RequireSignature: true, RequireProvenance: true, RequireSBOM: true}
	var verdict *supplychain.Verdict
	// The manager publishes the SBOM, provenance and signature once the image is pushed.
	testutil.EventuallyWithin(t, time.Minute, "the image signed with an SBOM and provenance", func() (bool, error) {
		verdict, err = supplychain.Check(ctx, ref, policy, supplychain.Expect{Repository: repository, Revision: sha}, auth)
		return err == nil && verdict.Refused == "", fmt.Errorf("%+v %w", verdict, err)
	})
	t.Logf("supply chain of %s: %+v", image, verdict)
}

// waitCommitStatus waits until GitLab shows Ferry's commit status in state on a commit.
func waitCommitStatus(t testing.TB, ep *dev.Endpoints, projectID int64, sha, state string) {
	t.Helper()
	u := fmt.Sprintf("%s/api/v4/projects/%d/repository/commits/%s/statuses", ep.GitLabURL, projectID, url.PathEscape(sha))
	testutil.EventuallyWithin(t, time.Minute, "GitLab commit status "+state, func() (bool, error) {
		req, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			return false, err
		}
		req.Header.Set("PRIVATE-TOKEN", ep.Users["bob"].GitLabToken)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, err
		}
		defer func() { _ = resp.Body.Close() }()
		body, _ := io.ReadAll(resp.Body)
		var rows []struct {
			Name   string `json:"name"`
			Status string `json:"status"`
		}
		if err := json.Unmarshal(body, &rows); err != nil {
			return false, fmt.Errorf("%d %s", resp.StatusCode, body)
		}
		return len(rows) > 0 && rows[0].Name == "ferry" && rows[0].Status == state, fmt.Errorf("%s", body)
	})
}

func readFile(t testing.TB, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}
