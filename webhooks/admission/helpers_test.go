package admission_test

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// grant gives users the rules in namespace ns, with a Role and RoleBinding named name.
func grant(t *testing.T, c client.Client, ns, name string, rules []rbacv1.PolicyRule, users ...string) {
	t.Helper()
	ctx := context.Background()
	role := &rbacv1.Role{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Rules: rules}
	if err := c.Create(ctx, role); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: name},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u})
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
}

// ferryRule is a rule on Ferry's resources.
func ferryRule(resources []string, verbs ...string) rbacv1.PolicyRule {
	return rbacv1.PolicyRule{APIGroups: []string{ferryv1.GroupVersion.Group}, Resources: resources, Verbs: verbs}
}

// pushBuild is a Build as Ferry's receiver records a push by GitLab user triggerUser.
func pushBuild(ns, name, ref string, trigger ferryv1.BuildTrigger) *ferryv1.Build {
	if trigger.Kind == "" {
		trigger.Kind = ferryv1.TriggerPush
	}
	return &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       ferryv1.BuildSpec{Project: "shop", Revision: releasetest.Revision(name), Ref: ref, Trigger: trigger},
	}
}

// succeed records a Build's image as its pipeline would, as the admin.
func succeed(t *testing.T, c client.Client, b *ferryv1.Build, image string) {
	t.Helper()
	now := metav1.Now()
	b.Status = ferryv1.BuildStatus{ObservedGeneration: b.Generation, Image: image, Deploy: releasetest.Deploy(1, nil), StartTime: &now, CompletionTime: &now,
		Conditions: []metav1.Condition{{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "image pushed", LastTransitionTime: now}}}
	if err := c.Status().Update(context.Background(), b); err != nil {
		t.Fatalf("failed to set the status of Build %s: %v", b.Name, err)
	}
}

// startGarbageCollector runs the hub's garbage collector and namespace controller (a
// kube-controller-manager with only those) until the test ends: the hub has no
// controller-manager of its own.
func startGarbageCollector(t *testing.T) {
	t.Helper()
	hub := testutil.CurrentHub(t)
	assets, err := controlplane.AssetsDir()
	if err != nil {
		t.Fatal(err)
	}
	logPath := filepath.Join(t.TempDir(), "kube-controller-manager.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(assets, "kube-controller-manager"),
		"--kubeconfig="+hub.KubeconfigPath,
		"--controllers=garbage-collector-controller,namespace-controller",
		"--leader-elect=false", "--secure-port=0", "--use-service-account-credentials=false")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logFile.Close()
		if t.Failed() {
			if data, err := os.ReadFile(logPath); err == nil {
				t.Logf("kube-controller-manager log (last 4 KiB):\n%s", data[max(0, len(data)-4096):])
			}
		}
	})
}
