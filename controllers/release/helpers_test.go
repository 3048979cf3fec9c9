package release_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/testutil"
)

// Target clusters shared by the tests of this package. They are started once, with an audit log
// that records every write, and can be halted and restarted.
var clusterNames = []string{"east", "west", "north"}

type target struct {
	*controlplane.Cluster
	dir    string
	client client.Client
}

var (
	targetsOnce sync.Once
	targets     map[string]*target
	targetsErr  error
)

const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete]
  resources:
  - group: apps
    resources: [deployments]
  - group: ""
    resources: [services, namespaces, secrets, serviceaccounts]
- level: None
`

// startTargets starts the simulated clusters (once) and registers them as Clusters on the hub.
func startTargets(t testing.TB) map[string]*target {
	t.Helper()
	targetsOnce.Do(func() {
		targets = map[string]*target{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		errs := make([]error, len(clusterNames))
		for i, name := range clusterNames {
			wg.Go(func() {
				dir, err := os.MkdirTemp("", "ferry-release-"+name+"-")
				if err != nil {
					errs[i] = err
					return
				}
				policy := filepath.Join(dir, "audit-policy.yaml")
				if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
					errs[i] = err
					return
				}
				c, err := controlplane.StartCluster(context.Background(), controlplane.ClusterOptions{
					APIServer: controlplane.APIServerOptions{
						Name: name, Dir: filepath.Join(dir, "cluster"), Restartable: true,
						APIServerFlags: map[string]string{"audit-policy-file": policy, "audit-log-path": filepath.Join(dir, "audit.log")},
					},
				})
				if err != nil {
					errs[i] = err
					return
				}
				cl, err := client.New(c.Config, client.Options{Scheme: manager.Scheme()})
				if err != nil {
					errs[i] = err
					return
				}
				mu.Lock()
				targets[name] = &target{Cluster: c, dir: dir, client: cl}
				mu.Unlock()
			})
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				targetsErr = err
				return
			}
		}
		hub := testutil.CurrentHub(t).Client
		ctx := context.Background()
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
		if err := hub.Create(ctx, ns); client.IgnoreAlreadyExists(err) != nil {
			targetsErr = err
			return
		}
		for _, name := range clusterNames {
			kubeconfig, err := os.ReadFile(targets[name].KubeconfigPath)
			if err != nil {
				targetsErr = err
				return
			}
			secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: name + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
			if err := hub.Create(ctx, secret); err != nil {
				targetsErr = err
				return
			}
			cl := &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: secret.Name}}}
			if err := hub.Create(ctx, cl); err != nil {
				targetsErr = err
				return
			}
		}
	})
	if targetsErr != nil {
		t.Fatalf("failed to start the target clusters: %v", targetsErr)
	}
	return targets
}

// stopTargets stops the clusters; TestMain calls it.
func stopTargets() {
	for _, tg := range targets {
		_ = tg.Stop()
		_ = os.RemoveAll(tg.dir)
	}
}

// auditEvent is the part of an audit event the tests read.
type auditEvent struct {
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	ObjectRef  struct {
		Resource  string `json:"resource"`
		Namespace string `json:"namespace"`
		Name      string `json:"name"`
	} `json:"objectRef"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
}

// applies counts the successful server-side applies by Ferry's field manager to the resource
// (deployments, services, namespaces) named name in namespace ns, read from the cluster's audit log.
func (tg *target) applies(t testing.TB, resource, ns, name string) int {
	t.Helper()
	f, err := os.Open(filepath.Join(tg.dir, "audit.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	n := 0
	scanner := bufio.NewScanner(f)
	scanner.Buffer(make([]byte, 1<<20), 1<<24)
	for scanner.Scan() {
		var e auditEvent
		if err := json.Unmarshal(scanner.Bytes(), &e); err != nil {
			continue
		}
		if e.Verb == "patch" && strings.Contains(e.RequestURI, "fieldManager="+ferryv1.FieldManager) &&
			e.ObjectRef.Resource == resource && (resource == "namespaces" || e.ObjectRef.Namespace == ns) && e.ObjectRef.Name == name && e.ResponseStatus.Code < 300 {
			n++
		}
	}
	return n
}

// deployment reads a Deployment from a target cluster; nil when it does not exist.
func (tg *target) deployment(t testing.TB, ns, name string) *appsv1.Deployment {
	t.Helper()
	d := &appsv1.Deployment{}
	if err := tg.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, d); err != nil {
		if apierrors.IsNotFound(err) {
			return nil
		}
		t.Fatal(err)
	}
	return d
}

// waitAvailable waits until the project's stable Deployment in ns runs image with every replica
// updated and available.
func (tg *target) waitAvailable(t testing.TB, ns, project, image string, replicas int32) *appsv1.Deployment {
	t.Helper()
	var d *appsv1.Deployment
	within(t, rolloutTimeout, fmt.Sprintf("Deployment %s/%s on %s available with %s", ns, project, tg.Name, rollout.ShortImage(image)), func() (bool, error) {
		d = &appsv1.Deployment{}
		if err := tg.client.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: project}, d); err != nil {
			return false, err
		}
		got := d.Spec.Template.Spec.Containers[0].Image
		return got == image && d.Status.UpdatedReplicas == replicas && d.Status.AvailableReplicas == replicas && d.Status.Replicas == replicas,
			fmt.Errorf("image %s, %d updated, %d available, %d total", got, d.Status.UpdatedReplicas, d.Status.AvailableReplicas, d.Status.Replicas)
	})
	return d
}

// getRelease reads a Release from the hub.
func getRelease(t testing.TB, c client.Client, ns, name string) *ferryv1.Release {
	t.Helper()
	rel := &ferryv1.Release{}
	if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, rel); err != nil {
		t.Fatal(err)
	}
	return rel
}

// envCondition returns a condition of a Release environment, nil when absent.
func envCondition(rel *ferryv1.Release, env, condType string) *metav1.Condition {
	for _, es := range rel.Status.Environments {
		if es.Name == env {
			return meta.FindStatusCondition(es.Conditions, condType)
		}
	}
	return nil
}

func envOf(rel *ferryv1.Release, env string) *ferryv1.ReleaseEnvironmentStatus {
	for i := range rel.Status.Environments {
		if rel.Status.Environments[i].Name == env {
			return &rel.Status.Environments[i]
		}
	}
	return nil
}

// waitEnv waits until a condition of a Release environment has the status and reason.
func waitEnv(t testing.TB, c client.Client, ns, name, env, condType string, status metav1.ConditionStatus, reason string) *ferryv1.Release {
	t.Helper()
	var rel *ferryv1.Release
	within(t, rolloutTimeout, fmt.Sprintf("Release %s environment %s %s=%s (%s)", name, env, condType, status, reason), func() (bool, error) {
		rel = &ferryv1.Release{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, rel); err != nil {
			return false, err
		}
		cond := envCondition(rel, env, condType)
		if cond == nil {
			return false, fmt.Errorf("no %s condition; release conditions %+v", condType, rel.Status.Conditions)
		}
		return cond.Status == status && cond.Reason == reason, fmt.Errorf("%s=%s %s: %s", condType, cond.Status, cond.Reason, cond.Message)
	})
	return rel
}

// waitRelease waits until the Release's Ready condition has the status and reason.
func waitRelease(t testing.TB, c client.Client, ns, name string, status metav1.ConditionStatus, reason string) *ferryv1.Release {
	t.Helper()
	var rel *ferryv1.Release
	within(t, rolloutTimeout, fmt.Sprintf("Release %s Ready=%s (%s)", name, status, reason), func() (bool, error) {
		rel = &ferryv1.Release{}
		if err := c.Get(context.Background(), client.ObjectKey{Namespace: ns, Name: name}, rel); err != nil {
			return false, err
		}
		cond := meta.FindStatusCondition(rel.Status.Conditions, ferryv1.ReadyCondition)
		if cond == nil {
			return false, fmt.Errorf("no Ready condition")
		}
		return cond.Status == status && cond.Reason == reason, fmt.Errorf("Ready=%s %s: %s", cond.Status, cond.Reason, cond.Message)
	})
	return rel
}

// approve creates an Approval as the given user.
func approve(t testing.TB, c client.Client, ns, release, env string, batch int32) {
	t.Helper()
	a := &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: release + "-"},
		Spec:       ferryv1.ApprovalSpec{Release: release, Environment: env, Decision: ferryv1.DecisionApprove, Batch: batch},
	}
	if err := c.Create(context.Background(), a); err != nil {
		t.Fatalf("approval of %s/%s (batch %d): %v", release, env, batch, err)
	}
}

// metricValue sums a metric's samples whose labels include the given ones.
func metricValue(t testing.TB, name string, labels map[string]string) float64 {
	t.Helper()
	families, err := metrics.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	sum := 0.0
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			match := true
			for k, v := range labels {
				found := false
				for _, lp := range m.GetLabel() {
					if lp.GetName() == k && lp.GetValue() == v {
						found = true
					}
				}
				match = match && found
			}
			if !match {
				continue
			}
			switch {
			case m.GetCounter() != nil:
				sum += m.GetCounter().GetValue()
			case m.GetHistogram() != nil:
				sum += float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	return sum
}

// eventReasons lists the reasons of the events about an object.
func eventReasons(t testing.TB, c client.Client, ns, name string) []string {
	t.Helper()
	list := &corev1.EventList{}
	if err := c.List(context.Background(), list, client.InNamespace(ns)); err != nil {
		t.Fatal(err)
	}
	var reasons []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			reasons = append(reasons, e.Reason)
		}
	}
	return reasons
}

// rolloutTimeout bounds waits that include rollouts on simulated clusters, which take longer
// than API round trips on a busy machine.
const rolloutTimeout = 3 * time.Minute

// within is a longer Eventually for rollouts on a busy machine.
func within(t testing.TB, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	testutil.EventuallyWithin(t, d, what, cond)
}

// dumpOnFailure logs the nodes, and the pods and Deployments of namespace ns, of each target
// cluster when the test fails, to tell a slow cluster from a wrong rollout.
func dumpOnFailure(t *testing.T, ns string, clusters ...string) {
	t.Helper()
	t.Cleanup(func() {
		if !t.Failed() {
			return
		}
		ctx := context.Background()
		for _, name := range clusters {
			tg := targets[name]
			if tg == nil {
				continue
			}
			nodes := &corev1.NodeList{}
			if err := tg.client.List(ctx, nodes); err != nil {
				t.Logf("%s: nodes: %v", name, err)
				continue
			}
			for _, n := range nodes.Items {
				t.Logf("%s: node %s taints %v conditions %v", name, n.Name, n.Spec.Taints, nodeReady(&n))
			}
			pods := &corev1.PodList{}
			_ = tg.client.List(ctx, pods, client.InNamespace(ns))
			for _, p := range pods.Items {
				t.Logf("%s: pod %s phase %s node %q deleting %v conditions %+v", name, p.Name, p.Status.Phase, p.Spec.NodeName, p.DeletionTimestamp != nil, p.Status.Conditions)
			}
			deps := &appsv1.DeploymentList{}
			_ = tg.client.List(ctx, deps, client.InNamespace(ns))
			for _, d := range deps.Items {
				t.Logf("%s: deployment %s generation %d status %+v", name, d.Name, d.Generation, d.Status)
			}
		}
	})
}

func nodeReady(n *corev1.Node) string {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return string(c.Status) + " " + c.Reason + " " + c.LastHeartbeatTime.String()
		}
	}
	return "no Ready condition"
}
