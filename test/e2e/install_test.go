//go:build linux

package e2e

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/deployments"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/testutil/realnode"
)

// ferrySystem is the namespace config/default installs Ferry into.
const ferrySystem = "ferry-system"

// TestInstallOnARealCluster installs Ferry the way its users do: the image `make image` builds
// with Ferry's own assembler, pushed to a registry, and `kubectl apply -k` of an overlay of
// config/default that sets it, onto a cluster whose real node pulls and runs it. Two manager
// replicas elect a leader; the admission webhooks answer through their Service, the GitLab
// receiver and the UI through theirs. The leader is killed in the middle of a rollout: the other
// replica takes over and the rollout completes, applied once.
func TestInstallOnARealCluster(t *testing.T) {
	if os.Getenv("FERRY_E2E") == "" {
		t.Skip("the end-to-end test runs with make e2e (FERRY_E2E=1)")
	}
	ctrllog.SetLogger(logr.Discard())
	env := realnode.NewEnv(t)
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	ferry := buildFerry(t, root)
	image := makeImage(t, root, ferry, env)

	// Tekton's CRDs: the manager runs Builds as PipelineRuns and watches them.
	cluster := env.StartCluster(t, controlplane.APIServerOptions{Name: "hub", TektonCRDs: true})
	c, err := client.New(cluster.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()

	applied := time.Now()
	kubectlApply(t, cluster, renderOverlay(t, root, cluster, image))
	for _, name := range []string{"ferry-manager", "ferry-ui"} {
		waitAvailable(t, c, name, 2)
	}
	t.Logf("kubectl apply -k: the manager's and the UI's two replicas each ready in %s", time.Since(applied).Round(100*time.Millisecond))
	leader := leaderPod(t, c, "")
	t.Logf("leader: %s", leader)

	t.Run("PipelineRuns run the manager's own image", func(t *testing.T) {
		cs, err := kubernetes.NewForConfig(cluster.Config)
		if err != nil {
			t.Fatal(err)
		}
		logs, err := cs.CoreV1().Pods(ferrySystem).GetLogs(leader, &corev1.PodLogOptions{Container: "manager"}).DoRaw(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Contains(logs, []byte("PipelineRuns run the manager's own image")) || !bytes.Contains(logs, []byte(image)) {
			t.Fatalf("the manager's log does not say that PipelineRuns run %s:\n%s", image, logs)
		}
	})

	t.Run("admission webhooks through their Service", func(t *testing.T) {
		ns := testutil.Namespace(t, c)
		a := releasetest.Approval(ns, "no-such-release", "prod", ferryv1.DecisionApprove, "lgtm")
		err := c.Create(ctx, a)
		if err == nil || !strings.Contains(err.Error(), "release no-such-release not found in namespace "+ns) {
			t.Fatalf("an Approval of a missing Release: got %v, want Ferry's webhook to refuse it", err)
		}
	})

	t.Run("GitLab receiver through its Service", func(t *testing.T) {
		receiverTakesAPush(t, c, cluster)
	})

	t.Run("UI through its Service", func(t *testing.T) {
		status, body := serviceGet(t, c, cluster, "ferry-ui", "ui", "/")
		if status != http.StatusOK && status != http.StatusFound && status != http.StatusSeeOther {
			t.Fatalf("GET / of the UI Service: %d %s", status, body)
		}
	})

	t.Run("the leader killed in the middle of a rollout", func(t *testing.T) {
		leaderKilledMidRollout(t, c, cluster, env, leader)
	})

	t.Run("an upgrade to the next image loses no push", func(t *testing.T) {
		upgradeLosesNoPush(t, c, cluster, root, nextImage(t, env, image))
	})
}

// makeImage runs `make image` against the test's registry and returns Ferry's image by digest.
func makeImage(t testing.TB, root, ferry string, env *realnode.Env) string {
	t.Helper()
	dockerDir := t.TempDir()
	auth := base64.StdEncoding.EncodeToString([]byte(env.User + ":" + env.Password))
	cfg := fmt.Sprintf(`{"auths":{%q:{"auth":%q}}}`, env.Registry.Host, auth)
	if err := os.WriteFile(filepath.Join(dockerDir, "config.json"), []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	start := time.Now()
	cmd := exec.Command("go", "run", "./hack/image", "-ferry", ferry, "-registry", env.Registry.Host, "-insecure-registry", "-out", out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "DOCKER_CONFIG="+dockerDir)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Run(); err != nil {
		t.Fatalf("make image: %v\n%s", err, log.String())
	}
	var summary struct {
		Image       string `json:"image"`
		BinaryBytes int64  `json:"binaryBytes"`
		ImageBytes  int64  `json:"imageBytes"`
	}
	data, err := os.ReadFile(filepath.Join(out, "image.json"))
	if err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(data, &summary); err != nil {
		t.Fatal(err)
	}
	t.Logf("make image: %s (binary %.1f MB, image %.1f MB compressed) in %s", summary.Image,
		float64(summary.BinaryBytes)/1e6, float64(summary.ImageBytes)/1e6, time.Since(start).Round(100*time.Millisecond))
	return summary.Image
}

// renderOverlay writes a kustomization over config/default that sets Ferry's image, as a user
// does with `kustomize edit set image`, and renders it.
func renderOverlay(t testing.TB, root string, cluster *controlplane.Cluster, image string) []byte {
	t.Helper()
	repo, digest, ok := strings.Cut(image, "@")
	if !ok {
		t.Fatalf("image %s is not pinned by digest", image)
	}
	dir := t.TempDir()
	// kustomize takes a base by a relative path only.
	base, err := filepath.Rel(dir, filepath.Join(root, "config", "default"))
	if err != nil {
		t.Fatal(err)
	}
	k := fmt.Sprintf(`apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
- %s
images:
- name: ghcr.io/ferryci/ferry
  newName: %s
  digest: %s
`, base, repo, digest)
	if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(kubectlPath(t), "kustomize", dir).Output()
	if err != nil {
		t.Fatalf("kubectl kustomize: %v", stderrOf(err))
	}
	if !bytes.Contains(out, []byte(image)) {
		t.Fatalf("the rendered install does not name %s", image)
	}
	return out
}

func kubectlApply(t testing.TB, cluster *controlplane.Cluster, manifests []byte) {
	t.Helper()
	cmd := exec.Command(kubectlPath(t), "--kubeconfig", cluster.KubeconfigPath, "apply", "--server-side", "--field-manager=e2e", "-f", "-")
	cmd.Stdin = bytes.NewReader(manifests)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

func kubectlPath(t testing.TB) string {
	t.Helper()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(assets, "kubectl")
}

func stderrOf(err error) string {
	if ee := (*exec.ExitError)(nil); errors.As(err, &ee) {
		return string(ee.Stderr)
	}
	return err.Error()
}

// waitAvailable waits until a Deployment of ferry-system has n replicas, all of its current
// template and available, saying what its pods wait for when it times out.
func waitAvailable(t testing.TB, c client.Client, name string, n int32) {
	t.Helper()
	testutil.EventuallyWithin(t, 4*time.Minute, "Deployment "+name+" available", func() (bool, error) {
		d := &appsv1.Deployment{}
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: ferrySystem, Name: name}, d); err != nil {
			return false, err
		}
		if d.Spec.Replicas == nil || *d.Spec.Replicas != n {
			t.Fatalf("Deployment %s asks for %v replicas, want %d", name, d.Spec.Replicas, n)
		}
		if why := deployments.NotAvailable(d); why != "" {
			return false, errors.New(why + deployments.PodsSay(t.Context(), c, d))
		}
		return true, nil
	})
}

// leaderPod returns the pod that holds the manager's leader Lease, waiting until one other than
// not does.
func leaderPod(t testing.TB, c client.Client, not string) string {
	t.Helper()
	var holder string
	testutil.EventuallyWithin(t, 2*time.Minute, "a leader other than "+not, func() (bool, error) {
		l := &coordinationv1.Lease{}
		if err := c.Get(t.Context(), client.ObjectKey{Namespace: ferrySystem, Name: manager.DefaultLeaderElectionID}, l); err != nil {
			return false, err
		}
		if l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity == "" {
			return false, fmt.Errorf("the Lease has no holder")
		}
		// controller-runtime's identity is the pod's hostname, then _ and a UUID.
		holder, _, _ = strings.Cut(*l.Spec.HolderIdentity, "_")
		if holder == not {
			return false, fmt.Errorf("%s still holds the Lease", holder)
		}
		return true, nil
	})
	return holder
}

// serviceGet sends GET path to a Service of ferry-system, through the cluster's node as a pod
// would, and follows redirects.
func serviceGet(t testing.TB, c client.Client, cluster *controlplane.Cluster, service, port, path string) (int, string) {
	t.Helper()
	url := serviceURL(t, c, service, port) + path
	var status int
	var body string
	testutil.EventuallyWithin(t, time.Minute, "GET "+url+" of Service "+service, func() (bool, error) {
		var err error
		status, body, err = realnode.Get(t.Context(), cluster, url)
		return err == nil, err
	})
	return status, body
}

// serviceURL is http://<ClusterIP>:<port> of a named port of a Service of ferry-system.
func serviceURL(t testing.TB, c client.Client, service, port string) string {
	t.Helper()
	svc := &corev1.Service{}
	if err := c.Get(t.Context(), client.ObjectKey{Namespace: ferrySystem, Name: service}, svc); err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Spec.Ports {
		if p.Name == port {
			return "http://" + net.JoinHostPort(svc.Spec.ClusterIP, fmt.Sprint(p.Port))
		}
	}
	t.Fatalf("Service %s has no port %s", service, port)
	return ""
}

// gitlabInstance is the GitLab the receiver's test Projects name.
const gitlabInstance = "https://gitlab.example.com"

// pushProject creates a namespace with a Project that builds pushes of team/shop to branches
// matching branches, and its webhook Secret (hook-secret).
func pushProject(t testing.TB, c client.Client, branches ...string) string {
	t.Helper()
	ns := testutil.Namespace(t, c)
	if err := c.Create(t.Context(), &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "shop-webhook"}, Data: map[string][]byte{"token": []byte("hook-secret")}}); err != nil {
		t.Fatal(err)
	}
	p := releasetest.Project(ns, "shop")
	p.Spec.GitLab = ferryv1.GitLabProject{URL: gitlabInstance, ProjectPath: "team/shop", WebhookSecretRef: ferryv1.LocalObjectReference{Name: "shop-webhook"}}
	p.Spec.Repository = ferryv1.Repository{CloneURL: gitlabInstance + "/team/shop.git"}
	p.Spec.Triggers = ferryv1.Triggers{Branches: branches}
	if err := c.Create(t.Context(), p); err != nil {
		t.Fatal(err)
	}
	return ns
}

// pushRequest is a GitLab Push Hook delivery of sha to branch of team/shop.
func pushRequest(ctx context.Context, base, token, branch, sha string) (*http.Request, error) {
	body := fmt.Appendf(nil, `{"object_kind":"push","event_name":"push","before":"%s","after":"%s","ref":"refs/heads/%s","checkout_sha":"%s","user_username":"alice","project_id":7,"project":{"path_with_namespace":"team/shop"}}`,
		strings.Repeat("0", 40), sha, branch, sha)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/hooks/gitlab", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("X-Gitlab-Event", "Push Hook")
	req.Header.Set("X-Gitlab-Instance", gitlabInstance)
	req.Header.Set("X-Gitlab-Token", token)
	return req, nil
}

// buildsOf returns the revisions of the Builds in a namespace.
func buildsOf(ctx context.Context, c client.Client, ns string) (map[string]ferryv1.Build, error) {
	builds := &ferryv1.BuildList{}
	if err := c.List(ctx, builds, client.InNamespace(ns)); err != nil {
		return nil, err
	}
	out := map[string]ferryv1.Build{}
	for _, b := range builds.Items {
		out[b.Spec.Revision] = b
	}
	return out, nil
}

// receiverTakesAPush sends a GitLab Push Hook to the receiver's Service: a wrong token is
// refused, the right one makes a Build.
func receiverTakesAPush(t testing.TB, c client.Client, cluster *controlplane.Cluster) {
	ns := pushProject(t, c, "main")
	hc, base := realnode.HTTPClient(cluster), serviceURL(t, c, "ferry-receiver", "receiver")
	sha := strings.Repeat("ab", 20)
	send := func(token string) (int, error) {
		req, err := pushRequest(t.Context(), base, token, "main", sha)
		if err != nil {
			return 0, err
		}
		resp, err := hc.Do(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	// The Project may not be in the receiver's cache yet: a delivery for an unknown project is
	// answered without a Build, so it is sent until one appears.
	testutil.EventuallyWithin(t, time.Minute, "a Build of the push", func() (bool, error) {
		got, err := send("hook-secret")
		if err != nil {
			return false, err
		}
		if got/100 != 2 {
			return false, fmt.Errorf("the receiver answered %d", got)
		}
		builds, err := buildsOf(t.Context(), c, ns)
		if err != nil {
			return false, err
		}
		if _, ok := builds[sha]; !ok {
			return false, fmt.Errorf("%d Builds, none of %s", len(builds), sha)
		}
		return true, nil
	})
	if got, err := send("wrong-secret"); err != nil || got != http.StatusUnauthorized {
		t.Errorf("a push with a wrong token: %d, %v; want 401", got, err)
	}
}

// leaderKilledMidRollout releases the test web app to an environment whose pods take 20 s to be
// ready, kills the leader's pod as soon as the rollout has begun, and checks that the other
// replica finishes it: the Release is Ready there and the app's Deployment was rolled out once.
func leaderKilledMidRollout(t testing.TB, c client.Client, cluster *controlplane.Cluster, env *realnode.Env, leader string) {
	ctx := t.Context()
	kubeconfig, err := os.ReadFile(cluster.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ferrySystem, Name: "self"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: "self"}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: "self"}}}); err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, releasetest.Environment("dev", nil, "self")); err != nil {
		t.Fatal(err)
	}
	ns := testutil.Namespace(t, c)
	web := releasetest.Project(ns, "web", "dev")
	web.Spec.Image.Repository, _, _ = strings.Cut(env.Web, "@")
	if err := c.Create(ctx, web); err != nil {
		t.Fatal(err)
	}
	deploy := releasetest.Deploy(1, nil)
	deploy.HealthCheck.InitialDelaySeconds = 20
	rel := &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "web-1"},
		Spec:       ferryv1.ReleaseSpec{Project: "web", Image: env.Web, Deploy: deploy},
	}
	if err := c.Create(ctx, rel); err != nil {
		t.Fatal(err)
	}
	testutil.EventuallyWithin(t, 2*time.Minute, "the rollout to dev begun", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
			return false, err
		}
		es := envStatus(rel, "dev")
		if es == nil || meta.FindStatusCondition(es.Conditions, ferryv1.RolledOutCondition) == nil {
			return false, fmt.Errorf("the Release has not begun rolling out to dev: %+v", rel.Status.Environments)
		}
		return true, nil
	})
	if cond := meta.FindStatusCondition(envStatus(rel, "dev").Conditions, ferryv1.ReadyCondition); cond != nil && cond.Status == metav1.ConditionTrue {
		t.Fatal("the rollout finished before the leader could be killed; the test's app must take longer to be ready")
	}
	killed := time.Now()
	if err := c.Delete(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ferrySystem, Name: leader}}, client.GracePeriodSeconds(0)); err != nil {
		t.Fatal(err)
	}
	next := leaderPod(t, c, leader)
	t.Logf("leader %s killed mid-rollout; %s leads after %s", leader, next, time.Since(killed).Round(100*time.Millisecond))
	testutil.EventuallyWithin(t, 3*time.Minute, "the rollout to dev completed", func() (bool, error) {
		if err := c.Get(ctx, client.ObjectKeyFromObject(rel), rel); err != nil {
			return false, err
		}
		ready := meta.FindStatusCondition(envStatus(rel, "dev").Conditions, ferryv1.ReadyCondition)
		if ready != nil && ready.Status == metav1.ConditionFalse {
			t.Fatalf("the rollout to dev failed: %s: %s", ready.Reason, ready.Message)
		}
		return ready != nil && ready.Status == metav1.ConditionTrue, fmt.Errorf("%+v", envStatus(rel, "dev").Conditions)
	})
	t.Logf("the rollout completed %s after the kill", time.Since(killed).Round(100*time.Millisecond))

	// Applied once: one Deployment revision, one ReplicaSet.
	deps := &appsv1.DeploymentList{}
	if err := c.List(ctx, deps, client.MatchingLabels{ferryv1.ProjectLabel: "web", ferryv1.EnvironmentLabel: "dev"}); err != nil {
		t.Fatal(err)
	}
	if len(deps.Items) != 1 {
		t.Fatalf("%d Deployments of Project web in dev, want 1", len(deps.Items))
	}
	d := deps.Items[0]
	if d.Generation != 1 {
		t.Errorf("Deployment %s/%s is at generation %d: its spec was changed after the first rollout", d.Namespace, d.Name, d.Generation)
	}
	rss := &appsv1.ReplicaSetList{}
	if err := c.List(ctx, rss, client.InNamespace(d.Namespace)); err != nil {
		t.Fatal(err)
	}
	if len(rss.Items) != 1 {
		t.Errorf("%d ReplicaSets in %s, want 1: the app was rolled out more than once", len(rss.Items), d.Namespace)
	}
	if *d.Spec.Replicas != 1 || d.Spec.Template.Spec.Containers[0].Image != env.Web {
		t.Errorf("Deployment %s runs %s ×%d, want %s ×1", d.Name, d.Spec.Template.Spec.Containers[0].Image, *d.Spec.Replicas, env.Web)
	}
}

// nextImage pushes the next version of Ferry's image: the same binary with another version
// label, so another digest, as an upgrade brings.
func nextImage(t testing.TB, env *realnode.Env, image string) string {
	t.Helper()
	ref, err := name.NewDigest(image, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(ref, env.Remote...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	if cf.Config.Labels == nil {
		cf.Config.Labels = map[string]string{}
	}
	cf.Config.Labels["org.opencontainers.image.version"] = "next"
	next, err := mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	tag := ref.Context().Tag("next")
	if err := remote.Write(tag, next, env.Remote...); err != nil {
		t.Fatal(err)
	}
	d, err := next.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return ref.Context().Digest(d.String()).String()
}

// upgradeLosesNoPush applies the install again with the next image while GitLab pushes arrive
// at the receiver's Service: the managers roll over to it one by one, every delivery is answered,
// every answered push has its Build, and the new managers reconcile every Build.
func upgradeLosesNoPush(t testing.TB, c client.Client, cluster *controlplane.Cluster, root, next string) {
	ns := pushProject(t, c, "up-*")
	hc, base := realnode.HTTPClient(cluster), serviceURL(t, c, "ferry-receiver", "receiver")
	type delivery struct {
		sha    string
		status int
		err    error
	}
	var (
		mu         sync.Mutex
		deliveries []delivery
	)
	sent := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(deliveries)
	}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(250 * time.Millisecond):
			}
			d := delivery{sha: fmt.Sprintf("%040x", 0xfe000+i)}
			req, err := pushRequest(context.Background(), base, "hook-secret", fmt.Sprintf("up-%d", i), d.sha)
			if err == nil {
				var resp *http.Response
				if resp, err = hc.Do(req); err == nil {
					d.status = resp.StatusCode
					_ = resp.Body.Close()
				}
			}
			d.err = err
			mu.Lock()
			deliveries = append(deliveries, d)
			mu.Unlock()
		}
	}()
	// The Project must be in every receiver's cache before the upgrade begins.
	testutil.EventuallyWithin(t, time.Minute, "a Build of the first push", func() (bool, error) {
		builds, err := buildsOf(t.Context(), c, ns)
		return len(builds) > 0, err
	})
	upgraded := time.Now()
	kubectlApply(t, cluster, renderOverlay(t, root, cluster, next))
	waitAvailable(t, c, "ferry-manager", 2)
	waitAvailable(t, c, "ferry-ui", 2)
	t.Logf("the managers and the UI rolled over to %s in %s", next, time.Since(upgraded).Round(100*time.Millisecond))
	after := sent()
	testutil.EventuallyWithin(t, time.Minute, "five more pushes to the upgraded managers", func() (bool, error) {
		return sent() >= after+5, nil
	})
	close(stop)
	<-done

	answered, failed := 0, 0
	for _, d := range deliveries {
		switch {
		case d.err != nil:
			failed++
			t.Errorf("push %s during the upgrade: %v", d.sha, d.err)
		case d.status/100 != 2:
			failed++
			t.Errorf("push %s during the upgrade: answered %d", d.sha, d.status)
		default:
			answered++
		}
	}
	t.Logf("%d pushes during the upgrade: %d answered 2xx, %d not", len(deliveries), answered, failed)
	testutil.EventuallyWithin(t, 2*time.Minute, "a Build of every push, reconciled", func() (bool, error) {
		builds, err := buildsOf(t.Context(), c, ns)
		if err != nil {
			return false, err
		}
		for _, d := range deliveries {
			if d.err != nil || d.status/100 != 2 {
				continue
			}
			b, ok := builds[d.sha]
			if !ok {
				t.Fatalf("push %s was answered %d but has no Build: lost in the upgrade", d.sha, d.status)
			}
			if b.Status.ObservedGeneration != b.Generation || meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition) == nil {
				return false, fmt.Errorf("Build %s is not reconciled: %+v", b.Name, b.Status.Conditions)
			}
		}
		if len(builds) != answered {
			return false, fmt.Errorf("%d Builds of %d answered pushes", len(builds), answered)
		}
		return true, nil
	})
	pods := &corev1.PodList{}
	if err := c.List(t.Context(), pods, client.InNamespace(ferrySystem)); err != nil {
		t.Fatal(err)
	}
	for _, p := range pods.Items {
		if p.DeletionTimestamp == nil && p.Spec.Containers[0].Image != next {
			t.Errorf("pod %s runs %s after the upgrade, want %s", p.Name, p.Spec.Containers[0].Image, next)
		}
	}
}
