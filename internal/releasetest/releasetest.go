// Package releasetest builds the objects that Release, Approval and CLI tests share: Projects with
// a promotion path, Environments with gates, Builds that already succeeded (status set directly,
// no image is built), Releases, and the release-manager role from config/rbac bound to test users.
package releasetest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
)

// Repository is the image repository of test Projects.
const Repository = "harbor.example.com/team/app"

// Image returns a digest-pinned image of Repository that differs for every seed.
func Image(seed string) string {
	sum := sha256.Sum256([]byte(seed))
	return Repository + "@sha256:" + hex.EncodeToString(sum[:])
}

// Revision returns a 40-hex commit SHA that differs for every seed.
func Revision(seed string) string {
	sum := sha256.Sum256([]byte("commit " + seed))
	return hex.EncodeToString(sum[:20])
}

// Project returns a Project whose promotion path is path.
func Project(ns, name string, path ...string) *ferryv1.Project {
	return &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: ferryv1.ProjectSpec{
			GitLab:     ferryv1.GitLabProject{URL: "https://gitlab.example.com", ProjectPath: "team/" + name, WebhookSecretRef: ferryv1.LocalObjectReference{Name: name + "-webhook"}},
			Repository: ferryv1.Repository{CloneURL: "https://gitlab.example.com/team/" + name + ".git"},
			Image:      ferryv1.ImageRepository{Repository: Repository},
			Promotion:  ferryv1.Promotion{Environments: path},
		},
	}
}

// Gate returns an approval policy: the named users and groups, a minimum, and self-approval
// forbidden (the default).
func Gate(minApprovals int32, users, groups []string) *ferryv1.ApprovalPolicy {
	return &ferryv1.ApprovalPolicy{Users: users, Groups: groups, MinApprovals: minApprovals, ForbidSelfApproval: ptr.To(true)}
}

// Environment returns an Environment that deploys to clusters with a Rolling strategy.
func Environment(name string, gate *ferryv1.ApprovalPolicy, clusters ...string) *ferryv1.Environment {
	return &ferryv1.Environment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: ferryv1.EnvironmentSpec{
			Clusters:          clusters,
			NamespaceTemplate: ferryv1.DefaultNamespaceTemplate,
			Approval:          gate,
			Rollout:           ferryv1.RolloutStrategy{Type: ferryv1.RollingStrategy},
		},
	}
}

// Deploy returns deploy settings with replicas, one port and a health check.
func Deploy(replicas int32, podAnnotations map[string]string) *ferryv1.DeploySpec {
	return &ferryv1.DeploySpec{
		Replicas:       ptr.To(replicas),
		Ports:          []int32{8080},
		HealthCheck:    &ferryv1.HealthCheck{Path: "/healthz", Port: 8080},
		PodAnnotations: podAnnotations,
	}
}

// UnreadyDeploy returns deploy settings whose pods never become ready on a simulated cluster.
func UnreadyDeploy(replicas int32) *ferryv1.DeploySpec {
	return Deploy(replicas, map[string]string{controlplane.UnreadyAnnotation: "true"})
}

// CreateBuild creates a Build of ref that already succeeded with image and deploy settings,
// triggered by triggerUser.
func CreateBuild(t testing.TB, c client.Client, ns, name, project, ref, image, triggerUser string, deploy *ferryv1.DeploySpec) *ferryv1.Build {
	t.Helper()
	ctx := context.Background()
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec: ferryv1.BuildSpec{
			Project: project, Revision: Revision(name), Ref: ref,
			Trigger: ferryv1.BuildTrigger{Kind: ferryv1.TriggerPush, User: triggerUser},
		},
	}
	if err := c.Create(ctx, b); err != nil {
		t.Fatalf("failed to create Build %s: %v", name, err)
	}
	now := metav1.Now()
	b.Status = ferryv1.BuildStatus{
		ObservedGeneration: b.Generation,
		Image:              image,
		Deploy:             deploy,
		StartTime:          &now,
		CompletionTime:     &now,
	}
	meta.SetStatusCondition(&b.Status.Conditions, metav1.Condition{Type: ferryv1.ReadyCondition, Status: metav1.ConditionTrue, Reason: ferryv1.SucceededReason, Message: "image pushed"})
	if err := c.Status().Update(ctx, b); err != nil {
		t.Fatalf("failed to set the status of Build %s: %v", name, err)
	}
	return b
}

// Release returns a Release of a Build's image.
func Release(ns, name, project string, b *ferryv1.Build) *ferryv1.Release {
	return &ferryv1.Release{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{ferryv1.ProjectLabel: project}},
		Spec:       ferryv1.ReleaseSpec{Project: project, Build: b.Name, Image: b.Status.Image, Revision: b.Spec.Revision},
	}
}

// Approval returns an Approval.
func Approval(ns, release, env string, decision ferryv1.Decision, comment string) *ferryv1.Approval {
	return &ferryv1.Approval{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, GenerateName: release + "-" + env + "-"},
		Spec:       ferryv1.ApprovalSpec{Release: release, Environment: env, Decision: decision, Comment: comment},
	}
}

// CreateCleanly creates a cluster-scoped object and deletes it when the test ends.
func CreateCleanly(t testing.TB, c client.Client, obj client.Object) {
	t.Helper()
	if err := c.Create(context.Background(), obj); err != nil {
		t.Fatalf("failed to create %T %s: %v", obj, obj.GetName(), err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), obj) })
}

// ReleaseManagerRole reads the release-manager ClusterRole from config/rbac, as installed.
func ReleaseManagerRole(t testing.TB) *rbacv1.ClusterRole {
	t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "config", "rbac", "release_manager_role.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	role := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, role); err != nil {
		t.Fatalf("config/rbac/release_manager_role.yaml: %v", err)
	}
	return role
}

// BindReleaseManagers installs the release-manager ClusterRole (once per API server) and binds it,
// in namespace ns, to the given users and groups.
func BindReleaseManagers(t testing.TB, c client.Client, ns string, users, groups []string) {
	t.Helper()
	ctx := context.Background()
	role := ReleaseManagerRole(t)
	if err := c.Create(ctx, role); err != nil && !apierrors.IsAlreadyExists(err) {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "release-managers"},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
	}
	for _, u := range users {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{Kind: rbacv1.UserKind, APIGroup: rbacv1.GroupName, Name: u})
	}
	for _, g := range groups {
		binding.Subjects = append(binding.Subjects, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: g})
	}
	if err := c.Create(ctx, binding); err != nil {
		t.Fatal(err)
	}
}

// Unique returns prefix with a short suffix that differs between calls, for cluster-scoped names
// shared by the tests of one API server.
func Unique(prefix string) string {
	return fmt.Sprintf("%s-%x", prefix, time.Now().UnixNano()&0xffffff)
}

// AppImage pushes an image whose one layer is app/requirements.txt with content (an application
// whose SBOM lists those Python packages) and nothing that refers to it, and returns it by digest.
func AppImage(t testing.TB, repo, content string) name.Digest {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	_ = tw.WriteHeader(&tar.Header{Name: "app/requirements.txt", Mode: 0o644, Size: int64(len(content)), Typeflag: tar.TypeReg})
	_, _ = tw.Write([]byte(content))
	_ = tw.Close()
	return PushImage(t, repo, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
}

// PushImage pushes an OCI image of layers (no config beyond the empty one) to repo and returns it
// by digest.
func PushImage(t testing.TB, repo string, layers ...v1.Layer) name.Digest {
	t.Helper()
	img, err := mutate.AppendLayers(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), layers...)
	if err != nil {
		t.Fatal(err)
	}
	h, _ := img.Digest()
	d, err := name.NewDigest(repo + "@" + h.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(d, img); err != nil {
		t.Fatal(err)
	}
	return d
}
