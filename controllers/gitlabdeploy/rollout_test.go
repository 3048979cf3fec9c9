package gitlabdeploy_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestReleaseControllerRollouts runs the release controller and the deployment reporter together
// on a simulated cluster: a healthy Release's rollout is a running deployment that succeeds, and
// the next Release, whose workload never becomes healthy, is a failed one — both in the same
// GitLab environment, one record each.
func TestReleaseControllerRollouts(t *testing.T) {
	hub := testutil.CurrentHub(t)
	ctx := context.Background()
	dir := t.TempDir()
	cluster, err := controlplane.StartCluster(ctx, controlplane.ClusterOptions{
		APIServer: controlplane.APIServerOptions{Name: "deploys", Dir: filepath.Join(dir, "cluster")},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cluster.Stop() })
	kubeconfig, err := os.ReadFile(cluster.KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
	if err := hub.Client.Create(ctx, ns); client.IgnoreAlreadyExists(err) != nil {
		t.Fatal(err)
	}
	clusterName := releasetest.Unique("deploys")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: clusterName + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := hub.Client.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hub.Client.Delete(ctx, secret) })
	releasetest.CreateCleanly(t, hub.Client, &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: clusterName}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: secret.Name}}})

	e := newEnv(t, nil)
	environment := &ferryv1.Environment{}
	if err := e.c.Get(ctx, client.ObjectKey{Name: e.envName}, environment); err != nil {
		t.Fatal(err)
	}
	environment.Spec.Clusters = []string{clusterName}
	environment.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 3 * time.Second}
	// The simulated cluster keeps pods that carry this annotation unready.
	environment.Spec.AllowedPodAnnotations = []string{"sim.ferry.dev/*"}
	if err := e.c.Update(ctx, environment); err != nil {
		t.Fatal(err)
	}
	e.start("release", "gitlabdeploy")

	healthy := e.release("shop-1", nil, releasetest.Deploy(1, nil))
	e.waitDeployments("success")
	testutil.Eventually(t, "the success recorded on the healthy Release", func() (bool, error) {
		rec := e.records(healthy)[e.envName]
		return rec.Status == "success" && rec.ID != 0, fmt.Errorf("record %+v", rec)
	})
	// The second image is not a Build's, so the release controller only lets it replace the first
	// as a rollback.
	e.build.Status.Image = releasetest.Image(e.ns + "-unready")
	unready := releasetest.Release(e.ns, "shop-2", "shop", e.build)
	unready.Spec.Deploy = releasetest.UnreadyDeploy(1)
	unready.Spec.Rollback = true
	if err := e.c.Create(ctx, unready); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			cur := &ferryv1.Release{}
			_ = e.c.Get(ctx, client.ObjectKeyFromObject(unready), cur)
			t.Logf("Release shop-2: %+v", cur.Status)
		}
	})
	got := e.waitDeployments("success", "failed")
	if got[0].Environment.ID != got[1].Environment.ID || got[1].SHA != e.sha || got[1].Ref != "main" {
		t.Errorf("deployments %+v: want both in one environment, of main at %s", got, e.sha)
	}
	for _, c := range e.fake.Calls() {
		if c.Method == "PUT" && c.Status >= 400 {
			t.Errorf("GitLab refused %s %s: %d", c.Method, c.Path, c.Status)
		}
	}
}
