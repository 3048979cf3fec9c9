//go:build linux

package rollout

import (
	"context"
	"strings"
	"testing"
	"time"

	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil/realnode"
)

// TestRealNodeSaysWhyARolloutDoesNotProgress rolls out on a real node an image that does not exist
// and an app whose health check fails: the cluster's rollout status says so in the kubelet's words,
// and the rollout fails by its deadline.
func TestRealNodeSaysWhyARolloutDoesNotProgress(t *testing.T) {
	env := realnode.NewEnv(t)
	cluster := env.StartCluster(t, controlplane.APIServerOptions{Name: "rollout"})
	c, err := client.New(cluster.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	owner := Owner{Namespace: "team-a", Name: "shop", UID: "0b9c6a56-0000-4000-8000-00000000000b"}
	for _, tc := range []struct {
		name, env, image, healthPath string
		want                         []string
	}{
		{"an image that cannot be pulled", "pull", env.Registry.Host + "/test/web@sha256:" + strings.Repeat("0", 64), "/healthz",
			[]string{"ErrImagePull", "ImagePullBackOff"}},
		{"a failing health check", "health", env.Web, "/no-such-page",
			[]string{"running but not ready: Readiness probe failed: HTTP probe failed with statuscode: 404"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w := &Workload{
				Project: "shop", Environment: tc.env, Release: "r1",
				Namespace: "shop-" + tc.env, Image: tc.image, Owner: owner,
				Deploy: ferryv1.DeploySpec{
					Replicas:    ptr.To[int32](1),
					Ports:       []int32{8080},
					HealthCheck: &ferryv1.HealthCheck{Path: tc.healthPath, Port: 8080},
				},
			}
			st := &ferryv1.ClusterRolloutStatus{Cluster: "rollout"}
			deadline := time.Now().Add(3 * time.Minute)
			var msg string
			for time.Now().Before(deadline) {
				in := Input{Cluster: "rollout", Workload: w, Strategy: Strategy{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Hour}, Now: time.Now()}
				if _, err := Step(context.Background(), c, in, st); err != nil {
					t.Fatal(err)
				}
				msg = cond(st).Message
				for _, want := range tc.want {
					if strings.Contains(msg, want) {
						t.Logf("the cluster's rollout says: %s", msg)
						return
					}
				}
				time.Sleep(time.Second)
			}
			t.Fatalf("the rollout never said %q; last: %s", tc.want, msg)
		})
	}
}
