//go:build linux

package release_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/testutil"
	"github.com/ferryci/ferry/internal/testutil/realnode"
	"github.com/ferryci/ferry/internal/verify"
)

// TestRealNodeVerification verifies rollouts on a cluster with a real node, through its API
// server's service proxy: a real pod that answers passes the Environment's HTTP check (repeated)
// and a Job check (a real container that exits 0), and the Release records the verified digest;
// a later Release whose own check asks for a page the app does not serve fails, and the
// environment goes back to the verified digest; one whose Job check exits non-zero fails the same
// way, naming the check and what the container said.
func TestRealNodeVerification(t *testing.T) {
	env := realnode.NewEnv(t)
	hub := testutil.CurrentHub(t)
	c := hub.Client
	ctx := context.Background()
	name := releasetest.Unique("realnode")
	cluster := env.StartCluster(t, controlplane.APIServerOptions{Name: name})
	member, err := client.New(cluster.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	// The manager reaches the cluster as config/member's account, as an install does.
	registerRealCluster(t, c, name, memberKubeconfig(t, cluster))
	testutil.StartManager(t, manager.Options{Controllers: []string{"release"}})

	ns := testutil.Namespace(t, c)
	environment := releasetest.Environment(releasetest.Unique("live"), nil, name)
	environment.Spec.Verification = []ferryv1.VerificationCheck{
		{Name: "home", HTTP: &ferryv1.HTTPCheck{Path: "/", BodyMatch: "^hello from ", Times: 3, Interval: &metav1.Duration{Duration: time.Second}, MaxLatency: &metav1.Duration{Duration: 5 * time.Second}}},
		{Name: "smoke-job", Job: &ferryv1.JobCheck{Image: env.Web, Args: []string{"exit", "0"}, Timeout: &metav1.Duration{Duration: 2 * time.Minute}}},
	}
	releasetest.CreateCleanly(t, c, environment)
	project := releasetest.Project(ns, "shop", environment.Name)
	project.Spec.Image.Repository = env.Registry.Host + "/test/web"
	if err := c.Create(ctx, project); err != nil {
		t.Fatal(err)
	}
	target := "shop-" + environment.Name
	deploy := func(checks ...ferryv1.VerificationCheck) *ferryv1.DeploySpec {
		return &ferryv1.DeploySpec{Replicas: ptr.To[int32](1), Ports: []int32{8080}, HealthCheck: &ferryv1.HealthCheck{Path: "/healthz", Port: 8080}, Verification: checks}
	}
	release := func(rname, image string, d *ferryv1.DeploySpec) {
		b := releasetest.CreateBuild(t, c, ns, rname, "shop", "refs/heads/main", image, "dave", d)
		rel := releasetest.Release(ns, rname, "shop", b)
		if err := c.Create(ctx, rel); err != nil {
			t.Fatal(err)
		}
	}
	const timeout = 4 * time.Minute

	// v1 passes: three answers from the real pod, and the Job's container exits 0.
	v1 := env.Web
	release("good", v1, deploy())
	rel := waitReleaseWithin(t, c, ns, "good", timeout, metav1.ConditionTrue, ferryv1.SucceededReason)
	es := envOf(rel, environment.Name)
	v := es.Verification
	if v == nil || v.VerifiedImage != v1 || !meta.IsStatusConditionTrue(es.Conditions, ferryv1.VerifiedCondition) {
		t.Fatalf("verification = %+v, conditions %+v; want %s verified", v, es.Conditions, v1)
	}
	for _, cs := range v.Checks {
		t.Logf("check %s on %s: %s (%s)", cs.Name, cs.Cluster, cs.Result, cs.Message)
		if cs.Result != ferryv1.VerificationPassed {
			t.Errorf("check %s: %s", cs.Name, cs.Result)
		}
		if cs.Name == "home" && (cs.Tries != 3 || !strings.Contains(cs.Message, "try 3 of 3: GET /: 200")) {
			t.Errorf("check home: %d tries, %q", cs.Tries, cs.Message)
		}
	}
	jobs := &batchv1.JobList{}
	if err := member.List(ctx, jobs, client.InNamespace(target), client.MatchingLabels{verify.CheckLabel: "smoke-job"}); err != nil || len(jobs.Items) != 1 {
		t.Fatalf("%d verification Jobs on the node (%v), want 1", len(jobs.Items), err)
	}

	// v2's own check asks for a page the app does not serve: it fails and the environment goes
	// back to v1.
	v2 := env.Push(t, realnode.WebBinary(t), "test/web:2", "/web2")
	release("missing-page", v2, deploy(ferryv1.VerificationCheck{Name: "status-page", HTTP: &ferryv1.HTTPCheck{Path: "/status", Times: 1}}))
	rel = waitReleaseWithin(t, c, ns, "missing-page", timeout, metav1.ConditionFalse, ferryv1.RolledBackReason)
	msg := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message
	for _, want := range []string{"verification check status-page (application) failed", "GET /status: 404", "rolled back to " + rollout.ShortImage(v1)} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	if es := envOf(rel, environment.Name); es.Verification == nil || es.Verification.VerifiedImage != "" ||
		meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition).Reason != ferryv1.VerificationFailedReason {
		t.Errorf("verification = %+v", es.Verification)
	}
	waitNodeImage(t, member, target, v1, timeout)

	// v3's Job check exits 3: it fails the same way, with what the container printed.
	v3 := env.Push(t, realnode.WebBinary(t), "test/web:3", "/web3")
	release("failing-job", v3, deploy(ferryv1.VerificationCheck{Name: "migrations", Job: &ferryv1.JobCheck{Image: env.Web, Args: []string{"exit", "3"}}}))
	rel = waitReleaseWithin(t, c, ns, "failing-job", timeout, metav1.ConditionFalse, ferryv1.RolledBackReason)
	msg = meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition).Message
	for _, want := range []string{"verification check migrations (application) failed: Job ferry-verify-migrations-", "exit code 3", "check exits with 3", "rolled back to " + rollout.ShortImage(v1)} {
		if !strings.Contains(msg, want) {
			t.Errorf("Ready message %q does not say %q", msg, want)
		}
	}
	waitNodeImage(t, member, target, v1, timeout)
}

// registerRealCluster makes a Cluster of a kubeconfig on the hub.
func registerRealCluster(t *testing.T, c client.Client, name string, kubeconfig []byte) {
	t.Helper()
	ctx := context.Background()
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: name + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	cl := &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: secret.Name}}}
	if err := c.Create(ctx, cl); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Delete(context.Background(), cl)
		_ = c.Delete(context.Background(), secret)
	})
}

// waitReleaseWithin waits for the Release's Ready condition, longer than waitRelease: real pods.
func waitReleaseWithin(t *testing.T, c client.Client, ns, name string, d time.Duration, status metav1.ConditionStatus, reason string) *ferryv1.Release {
	t.Helper()
	var rel *ferryv1.Release
	within(t, d, "Release "+name+" Ready="+string(status)+" "+reason, func() (bool, error) {
		rel = getRelease(t, c, ns, name)
		ready := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition)
		if ready != nil && ready.Status == metav1.ConditionFalse && rel.Status.CompletionTime != nil && (status != ready.Status || reason != ready.Reason) {
			t.Fatalf("Release %s ended %s %s: %s", name, ready.Status, ready.Reason, ready.Message)
		}
		return ready != nil && ready.Status == status && ready.Reason == reason, nil
	})
	return rel
}

// waitNodeImage waits until the node's stable Deployment of shop runs image and is available.
func waitNodeImage(t *testing.T, c client.Client, ns, image string, d time.Duration) {
	t.Helper()
	within(t, d, "shop back on "+rollout.ShortImage(image)+" on the node", func() (bool, error) {
		dep := &appsv1.Deployment{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: "shop"}, dep); err != nil {
			return false, client.IgnoreNotFound(err)
		}
		return dep.Spec.Template.Spec.Containers[0].Image == image && dep.Status.AvailableReplicas == 1 && dep.Status.UpdatedReplicas == 1, nil
	})
}

// memberKubeconfig applies config/member to a cluster as its admin and returns a kubeconfig of
// the account it makes, after checking from the attacker's side that the account cannot read the
// cluster's Secrets, exec into pods or grant itself more.
func memberKubeconfig(t *testing.T, cluster *controlplane.Cluster) []byte {
	t.Helper()
	ctx := context.Background()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	admin, err := client.New(cluster.Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"namespace.yaml", "service_account.yaml", "role.yaml", "role_binding.yaml"} {
		data, err := os.ReadFile(filepath.Join(root, "config", "member", f))
		if err != nil {
			t.Fatal(err)
		}
		obj := &unstructured.Unstructured{}
		if err := yaml.Unmarshal(data, &obj.Object); err != nil {
			t.Fatalf("config/member/%s: %v", f, err)
		}
		if err := admin.Create(ctx, obj); client.IgnoreAlreadyExists(err) != nil {
			t.Fatalf("config/member/%s: %v", f, err)
		}
	}
	cs, err := kubernetes.NewForConfig(cluster.Config)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := cs.CoreV1().ServiceAccounts("ferry-system").CreateToken(ctx, "ferry-member", &authenticationv1.TokenRequest{
		Spec: authenticationv1.TokenRequestSpec{ExpirationSeconds: ptr.To[int64](3600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(cluster.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	cfg.AuthInfos = map[string]*clientcmdapi.AuthInfo{"ferry-member": {Token: tok.Status.Token}}
	for _, kc := range cfg.Contexts {
		kc.AuthInfo = "ferry-member"
	}
	kubeconfig, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}

	restricted := rest.CopyConfig(cluster.Config)
	restricted.CertData, restricted.KeyData, restricted.CertFile, restricted.KeyFile = nil, nil, "", ""
	restricted.BearerToken = tok.Status.Token
	rc, err := kubernetes.NewForConfig(restricted)
	if err != nil {
		t.Fatal(err)
	}
	forbidden := func(what string, err error) {
		t.Helper()
		if !apierrors.IsForbidden(err) {
			t.Errorf("config/member's account %s: %v, want Forbidden", what, err)
		}
	}
	_, err = rc.CoreV1().Secrets("kube-system").List(ctx, metav1.ListOptions{})
	forbidden("lists Secrets", err)
	_, err = rc.CoreV1().Secrets("ferry-system").Get(ctx, "none", metav1.GetOptions{})
	if !apierrors.IsNotFound(err) { // get by name is granted (the pull Secret's copy), list is not
		t.Errorf("config/member's account reads a Secret by name: %v, want NotFound", err)
	}
	err = rc.CoreV1().RESTClient().Post().Namespace("kube-system").Resource("pods").Name("any").SubResource("exec").Do(ctx).Error()
	forbidden("execs into pods", err)
	_, err = rc.RbacV1().ClusterRoleBindings().Create(ctx, &rbacv1.ClusterRoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "escalate"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: "cluster-admin"},
		Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Namespace: "ferry-system", Name: "ferry-member"}},
	}, metav1.CreateOptions{})
	forbidden("binds itself to cluster-admin", err)
	_, err = rc.CoreV1().Pods("kube-system").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "escape"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "x"}}}}, metav1.CreateOptions{})
	forbidden("creates pods itself", err)
	return kubeconfig
}
