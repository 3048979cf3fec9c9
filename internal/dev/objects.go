package dev

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/registry"
)

// Names of the local environment's objects.
const (
	// FerryNamespace is Ferry's own namespace on the hub.
	FerryNamespace = "ferry-system"
	// Namespace holds the example Projects and their Builds, Releases and Approvals; it is also
	// the GitLab group and the Harbor project of the examples.
	Namespace = "demo"
	// fieldOwner is the server-side apply field manager of what `ferry dev` writes.
	fieldOwner = "ferry-dev"

	// Secrets in Namespace.
	gitlabTokenSecret = "gitlab-token"
	pushSecret        = "harbor-push"
	pullSecret        = "harbor-pull"

	// Groups of the people of the local environment.
	releaseManagersGroup = "release-managers"
	developersGroup      = "developers"
)

// Person is someone who uses the local environment.
type Person struct {
	// Name is the username the hub, the UI and GitLab know.
	Name string
	// Groups are the hub groups the person is in.
	Groups []string
	// Role says what the person does, for people reading the summary.
	Role string
}

// People are the users of the local environment: a release manager, who decides the gates, and
// a developer, who pushes (and so may not approve their own Releases).
var People = []Person{
	{Name: "alice", Groups: []string{releaseManagersGroup}, Role: "release manager"},
	{Name: "bob", Groups: []string{developersGroup}, Role: "developer"},
}

// developer is the person pushes are attributed to.
const developer = "bob"

// ClusterNames are the simulated target clusters: dev and staging share one, prod has its own.
var ClusterNames = []string{"nonprod", "prod"}

// environments are the delivery stages, in promotion order.
func environments() []*ferryv1.Environment {
	env := func(name, cluster, description string, gate *ferryv1.ApprovalPolicy) *ferryv1.Environment {
		return &ferryv1.Environment{
			TypeMeta:   metav1.TypeMeta{APIVersion: ferryv1.GroupVersion.String(), Kind: "Environment"},
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: ferryv1.EnvironmentSpec{
				Description:       description,
				Clusters:          []string{cluster},
				NamespaceTemplate: ferryv1.DefaultNamespaceTemplate,
				// Data directories of earlier versions hold namespaces from before Ferry recorded
				// their owner; on this single-user machine they are adopted.
				ExistingNamespaces: ferryv1.AdoptExistingNamespaces,
				Approval:           gate,
				// Images come from this machine and pods start in seconds: a version that is not
				// healthy within a minute is broken, and is rolled back.
				Rollout: ferryv1.RolloutStrategy{Type: ferryv1.RollingStrategy, ProgressDeadline: &metav1.Duration{Duration: time.Minute}},
			},
		}
	}
	return []*ferryv1.Environment{
		env("dev", "nonprod", "Every build of main, at once", nil),
		env("staging", "nonprod", "One approval from a developer or release manager other than the author",
			&ferryv1.ApprovalPolicy{Groups: []string{developersGroup, releaseManagersGroup}, MinApprovals: 1, ForbidSelfApproval: ptr.To(true)}),
		env("prod", "prod", "Production: a release manager approves, never the author",
			&ferryv1.ApprovalPolicy{Groups: []string{releaseManagersGroup}, MinApprovals: 1, ForbidSelfApproval: ptr.To(true)}),
	}
}

// previewProject is the example whose merge requests get preview environments (on the cluster
// of dev and staging): `ferry dev mr open` shows one. One is enough to see them, and each preview
// runs pods on the nonprod node.
const previewProject = "python-web"

// previewCluster is where previews run.
const previewCluster = "nonprod"

// projectSpec is everything a Project of the local environment needs to know.
type projectSpec struct {
	name       string
	gitlabURL  string
	gitlabID   int64
	cloneURL   string
	repository string
	insecure   bool
}

func project(p projectSpec) *ferryv1.Project {
	proj := &ferryv1.Project{
		TypeMeta:   metav1.TypeMeta{APIVersion: ferryv1.GroupVersion.String(), Kind: "Project"},
		ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: p.name},
		Spec: ferryv1.ProjectSpec{
			GitLab: ferryv1.GitLabProject{
				URL: p.gitlabURL, ProjectPath: Namespace + "/" + p.name, ProjectID: p.gitlabID,
				TokenSecretRef:   &ferryv1.SecretKeyReference{Name: gitlabTokenSecret},
				WebhookSecretRef: ferryv1.LocalObjectReference{Name: webhookSecretName(p.name)},
			},
			Repository: ferryv1.Repository{CloneURL: p.cloneURL},
			Image: ferryv1.ImageRepository{
				Repository:    p.repository,
				Insecure:      p.insecure,
				PushSecretRef: &ferryv1.LocalObjectReference{Name: pushSecret},
				PullSecretRef: &ferryv1.LocalObjectReference{Name: pullSecret},
			},
			Triggers: ferryv1.Triggers{Branches: []string{"main"}, Tags: []string{"v*"}, MergeRequests: true, Supersede: true},
			Promotion: ferryv1.Promotion{
				Environments: []string{"dev", "staging", "prod"},
				AutoRelease:  &ferryv1.AutoRelease{Branches: []string{"main"}, Tags: []string{"v*"}},
			},
		},
	}
	if p.name == previewProject {
		proj.Spec.Preview = &ferryv1.PreviewSettings{Enabled: true, Cluster: previewCluster}
	}
	return proj
}

func webhookSecretName(project string) string { return project + "-webhook" }

func kubeconfigSecretName(cluster string) string { return cluster + "-kubeconfig" }

func namespace(name string) *corev1.Namespace {
	return &corev1.Namespace{TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Namespace"}, ObjectMeta: metav1.ObjectMeta{Name: name}}
}

func secret(ns, name string, typ corev1.SecretType, data map[string]string) *corev1.Secret {
	return &corev1.Secret{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "Secret"},
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Type:       typ,
		StringData: data,
	}
}

func catalogConfigMap(cat *catalog.Catalog) (*corev1.ConfigMap, error) {
	data, err := yaml.Marshal(cat)
	if err != nil {
		return nil, err
	}
	return &corev1.ConfigMap{
		TypeMeta:   metav1.TypeMeta{APIVersion: "v1", Kind: "ConfigMap"},
		ObjectMeta: metav1.ObjectMeta{Namespace: FerryNamespace, Name: catalog.ConfigMapName},
		Data:       map[string]string{catalog.ConfigMapKey: string(data)},
	}, nil
}

func clusterObject(name string, real bool) *ferryv1.Cluster {
	description := "Simulated cluster " + name + " of ferry dev (kube-apiserver, controller-manager, scheduler and kwok)"
	if real {
		description = "Cluster " + name + " of ferry dev with a real node (kube-apiserver, controller-manager, scheduler; containerd, runc, kubelet, kube-proxy)"
	}
	return &ferryv1.Cluster{
		TypeMeta:   metav1.TypeMeta{APIVersion: ferryv1.GroupVersion.String(), Kind: "Cluster"},
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: ferryv1.ClusterSpec{
			Description:         description,
			KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: kubeconfigSecretName(name)},
			ProbeInterval:       &metav1.Duration{Duration: 30 * time.Second},
		},
	}
}

// rbacObjects are the roles of the people: release managers decide gates with the role Ferry
// installs (config/rbac/release_manager_role.yaml); everyone reads Builds, Releases, Approvals,
// Projects, Environments, Clusters and Freezes, and the examples' build logs (get pods/log in their
// namespace, which the UI asks before it shows a Build's log).
func rbacObjects(repoDir string) ([]client.Object, error) {
	data, err := os.ReadFile(filepath.Join(repoDir, "config", "rbac", "release_manager_role.yaml"))
	if err != nil {
		return nil, fmt.Errorf("failed to read the release manager role: %w", err)
	}
	rm := &rbacv1.ClusterRole{}
	if err := yaml.UnmarshalStrict(data, rm); err != nil {
		return nil, fmt.Errorf("config/rbac/release_manager_role.yaml: %w", err)
	}
	// As `kubectl apply -k config/default` names it.
	rm.Name = "ferry-" + rm.Name
	rm.TypeMeta = metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"}
	read := []string{"get", "list", "watch"}
	viewer := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "ferry-dev-viewer"},
		Rules: []rbacv1.PolicyRule{
			{APIGroups: []string{ferryv1.GroupVersion.Group}, Resources: []string{"builds", "releases", "approvals", "projects", "environments", "clusters", "freezes"}, Verbs: read},
			{APIGroups: []string{""}, Resources: []string{"events"}, Verbs: read},
		},
	}
	logReader := &rbacv1.ClusterRole{
		TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRole"},
		ObjectMeta: metav1.ObjectMeta{Name: "ferry-dev-build-log-reader"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"pods/log"}, Verbs: []string{"get"}}},
	}
	groups := func(names ...string) []rbacv1.Subject {
		var out []rbacv1.Subject
		for _, n := range names {
			out = append(out, rbacv1.Subject{Kind: rbacv1.GroupKind, APIGroup: rbacv1.GroupName, Name: n})
		}
		return out
	}
	return []client.Object{
		rm, viewer, logReader,
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "build-log-readers"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: logReader.Name},
			Subjects:   groups(releaseManagersGroup, developersGroup),
		},
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "release-managers"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: rm.Name},
			Subjects:   groups(releaseManagersGroup),
		},
		// Developers approve staging (never their own pushes): they need the same verbs there.
		&rbacv1.RoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "RoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Namespace: Namespace, Name: "developers-decide"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: rm.Name},
			Subjects:   groups(developersGroup),
		},
		&rbacv1.ClusterRoleBinding{
			TypeMeta:   metav1.TypeMeta{APIVersion: rbacv1.SchemeGroupVersion.String(), Kind: "ClusterRoleBinding"},
			ObjectMeta: metav1.ObjectMeta{Name: "ferry-dev-viewers"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: viewer.Name},
			Subjects:   groups(releaseManagersGroup, developersGroup),
		},
	}, nil
}

// apply writes objects with server-side apply as ferry dev's field manager, taking over the fields
// it sets: at every start they become what this version of ferry dev says (addresses and
// credentials change between starts), while fields others set are left alone.
func apply(ctx context.Context, c client.Client, objs ...client.Object) error {
	for _, obj := range objs {
		u, err := toUnstructured(obj)
		if err != nil {
			return err
		}
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u), client.FieldOwner(fieldOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("failed to apply %s %s: %w", u.GetKind(), client.ObjectKeyFromObject(obj), err)
		}
	}
	return nil
}

// toUnstructured turns a typed object into the apply configuration of its spec: no status, no
// empty creation timestamp.
func toUnstructured(obj client.Object) (*unstructured.Unstructured, error) {
	m, err := runtime.DefaultUnstructuredConverter.ToUnstructured(obj)
	if err != nil {
		return nil, err
	}
	delete(m, "status")
	if md, ok := m["metadata"].(map[string]any); ok {
		delete(md, "creationTimestamp")
	}
	u := &unstructured.Unstructured{Object: m}
	if u.GroupVersionKind() == (schema.GroupVersionKind{}) {
		return nil, fmt.Errorf("object %s has no apiVersion and kind", client.ObjectKeyFromObject(obj))
	}
	return u, nil
}

// dockerConfigSecret is a kubernetes.io/dockerconfigjson Secret for one registry account.
func dockerConfigSecret(name, host, user, password string) *corev1.Secret {
	return secret(Namespace, name, corev1.SecretTypeDockerConfigJson, map[string]string{
		corev1.DockerConfigJsonKey: string(registry.DockerConfigJSON(host, user, password)),
	})
}
