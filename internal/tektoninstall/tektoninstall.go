// Package tektoninstall installs Tekton Pipelines on a cluster with a real node the way Tekton's
// users install a release: its controller, webhook and events controller run as pods, from images
// of the binaries hack/controlplane/build.sh builds from Tekton's module (cached per version),
// packed ko-style (the binary at /ko-app/<command>), and Tekton's own manifests (its module's
// config/) are applied with their ko:// image references resolved to those images by digest, as
// `ko resolve` does for a release. The webhook then validates, defaults and converts Tekton's
// objects as in any real installation.
package tektoninstall

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	appsv1 "k8s.io/api/apps/v1"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/deployments"
)

// Namespace is where Tekton Pipelines runs.
const Namespace = "tekton-pipelines"

// koPrefix marks an image reference that `ko resolve` replaces with a built image.
const koPrefix = "ko://"

// commandPackage is the import path of Tekton's commands; a ko:// reference names one of them.
const commandPackage = "github.com/tektoncd/pipeline/cmd/"

// Commands are the Tekton commands packed into images: the controller, the webhook and the events
// controller run as Deployments; the others are the helper images the controller puts into every
// TaskRun's pod.
var Commands = []string{"controller", "webhook", "events", "entrypoint", "nop", "workingdirinit", "sidecarlogresults"}

// shellApplets are the commands of the shell image, links to busybox: what Tekton's init
// containers run in it (writing a step's script, preparing workspaces).
var shellApplets = []string{"sh", "cat", "chmod", "cp", "echo", "ls", "mkdir", "mv", "rm", "touch", "base64", "env", "test"}

// fieldManager owns what the installation applies.
const fieldManager = "ferry-tekton-install"

// Options configure Install.
type Options struct {
	// Config reaches the cluster's API server as an administrator.
	Config *rest.Config
	// Registry is host:port of the registry the images are pushed to and the node pulls from over
	// plain HTTP, without credentials: Repository must be a public repository prefix there.
	Registry string
	// Repository prefixes the images' repositories. Default "ferry/tekton".
	Repository string
	// Remote are the registry client's options for pushing (credentials, context).
	Remote []remote.Option
	// Busybox is a static busybox binary, packed as Tekton's shell image (in the release,
	// cgr.dev/chainguard/busybox). Default /bin/busybox (Debian's busybox-static).
	Busybox string
	// Progress, when set, is told what the installation is doing.
	Progress func(string)
	// Timeout bounds the wait for Tekton to serve. Default 5 minutes.
	Timeout time.Duration
}

// Installed describes an installation.
type Installed struct {
	// Version is Tekton's release.
	Version string
	// Images are the images by digest, by command ("controller", …, and "shell").
	Images map[string]string
	// Objects is the number of objects applied.
	Objects int
}

// Install pushes Tekton's images, applies its manifests and waits until its controller, webhook
// and events controller run and the webhook answers for Tekton's kinds. Installing again is cheap:
// unchanged images are not uploaded again and unchanged objects are not changed.
func Install(ctx context.Context, opts Options) (*Installed, error) {
	if opts.Repository == "" {
		opts.Repository = "ferry/tekton"
	}
	if opts.Busybox == "" {
		opts.Busybox = "/bin/busybox"
	}
	if opts.Timeout == 0 {
		opts.Timeout = 5 * time.Minute
	}
	progress := func(format string, args ...any) {
		if opts.Progress != nil {
			opts.Progress(fmt.Sprintf(format, args...))
		}
	}
	version := controlplane.TektonVersion()
	assets, err := controlplane.AssetsDir()
	if err != nil {
		return nil, err
	}
	configDir, err := controlplane.TektonConfigDir()
	if err != nil {
		return nil, err
	}
	progress("pushing Tekton %s's images (%s, shell) to %s", version, strings.Join(Commands, ", "), opts.Registry)
	images, err := PushImages(ctx, assets, opts.Busybox, opts.Registry+"/"+opts.Repository, version, opts.Remote)
	if err != nil {
		return nil, err
	}
	objs, err := Manifests(configDir, images)
	if err != nil {
		return nil, err
	}
	c, err := newClient(opts.Config)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	progress("applying %d objects of Tekton's config/ (CRDs, RBAC, ConfigMaps, webhooks, Deployments)", len(objs))
	if err := apply(ctx, c, objs); err != nil {
		return nil, err
	}
	progress("waiting for Tekton's controller, webhook and events controller to run")
	if err := waitDeployments(ctx, c, objs); err != nil {
		return nil, err
	}
	progress("waiting for Tekton's webhook to answer")
	if err := waitWebhook(ctx, c); err != nil {
		return nil, err
	}
	return &Installed{Version: version, Images: images, Objects: len(objs)}, nil
}

func newClient(cfg *rest.Config) (client.Client, error) {
	scheme := runtime.NewScheme()
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	return client.New(cfg, client.Options{Scheme: scheme})
}

// PushImages packs each of Commands (assets/tekton-<command>) ko-style, at /ko-app/<command>, and
// busybox as the shell image, pushes them to repository/<command>:version and returns them by
// digest. The same binaries give the same digests.
func PushImages(ctx context.Context, assets, busybox, repository, version string, opts []remote.Option) (map[string]string, error) {
	images := map[string]string{}
	push := func(command string, img v1.Image) error {
		tag, err := name.NewTag(repository+"/"+command+":"+version, name.Insecure)
		if err != nil {
			return fmt.Errorf("invalid image reference for Tekton's %s: %w", command, err)
		}
		if err := remote.Write(tag, img, append([]remote.Option{remote.WithContext(ctx)}, opts...)...); err != nil {
			return fmt.Errorf("failed to push Tekton's %s image to %s: %w", command, tag, err)
		}
		digest, err := img.Digest()
		if err != nil {
			return err
		}
		images[command] = tag.Context().Digest(digest.String()).String()
		return nil
	}
	for _, command := range Commands {
		binary := filepath.Join(assets, "tekton-"+command)
		if _, err := os.Stat(binary); err != nil {
			return nil, fmt.Errorf("tekton's %s is not built (%w): run `make controlplane`", command, err)
		}
		img, err := controlplane.BinaryImage(binary, "/ko-app/"+command)
		if err != nil {
			return nil, err
		}
		if err := push(command, img); err != nil {
			return nil, err
		}
	}
	links := make([]string, len(shellApplets))
	for i, a := range shellApplets {
		links[i] = "/bin/" + a
	}
	shell, err := controlplane.BinaryImage(busybox, "/bin/busybox", links...)
	if err != nil {
		return nil, fmt.Errorf("the shell image needs a static busybox (Debian's busybox-static): %w", err)
	}
	if err := push("shell", shell); err != nil {
		return nil, err
	}
	return images, nil
}

// skipped are the files of config/ a release leaves out or that this installation does not run:
// the package's Go file, and the resolvers, which live in a directory of their own (Ferry's
// PipelineRuns embed their pipeline, so nothing needs resolving).
func skipped(rel string) bool {
	return !strings.HasSuffix(rel, ".yaml") || strings.HasPrefix(rel, "resolvers/")
}

// Manifests reads Tekton's manifests in configDir (namespace, CRDs, then the other files in name
// order, as a release lists them) and resolves their image references: every ko:// reference to
// the image of that command, and the controller's -shell-image and -shell-image-win flags to the
// shell image. A ko:// reference to an image that was not built is an error.
func Manifests(configDir string, images map[string]string) ([]*unstructured.Unstructured, error) {
	var files []string
	err := filepath.WalkDir(configDir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(configDir, p)
		if d.IsDir() || skipped(filepath.ToSlash(rel)) {
			return nil
		}
		files = append(files, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("failed to read Tekton's manifests in %s: %w", configDir, err)
	}
	// Directories (100-namespace/, 300-crds/) sort by their number with the files; a release puts
	// the namespace first and the CRDs before anything that uses them.
	slices.SortFunc(files, func(a, b string) int { return strings.Compare(order(a), order(b)) })
	var objs []*unstructured.Unstructured
	for _, f := range files {
		docs, err := readYAML(filepath.Join(configDir, f))
		if err != nil {
			return nil, err
		}
		for _, u := range docs {
			if err := resolve(u, images); err != nil {
				return nil, fmt.Errorf("%s: %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
			if err := configure(u); err != nil {
				return nil, fmt.Errorf("%s: %s %s: %w", f, u.GetKind(), u.GetName(), err)
			}
			objs = append(objs, u)
		}
	}
	return objs, nil
}

// featureFlags is the ConfigMap of Tekton's feature flags.
const featureFlags = "feature-flags"

// configure sets what Ferry changes in Tekton's configuration. coschedule is "disabled": by
// default ("workspaces") Tekton runs an affinity assistant pod, a StatefulSet, beside every
// PipelineRun with a claim as a workspace (a Build with a step cache), to put the TaskRuns that
// share the claim on one node; a Ferry pipeline has one task, whose pod the claim's own node
// affinity places, so the assistant would only cost a pod per Build.
func configure(u *unstructured.Unstructured) error {
	if u.GetKind() != "ConfigMap" || u.GetName() != featureFlags {
		return nil
	}
	return unstructured.SetNestedField(u.Object, "disabled", "data", "coschedule")
}

// order is a file's place: the namespace, CRDs, then the rest by name.
func order(f string) string {
	switch {
	case strings.HasPrefix(f, "100-namespace/"):
		return "0" + f
	case strings.HasPrefix(f, "300-crds/"):
		return "1" + f
	}
	return "2" + f
}

// resolve replaces the image references of a manifest.
func resolve(u *unstructured.Unstructured, images map[string]string) error {
	var errs []error
	var walk func(v any) any
	walk = func(v any) any {
		switch t := v.(type) {
		case map[string]any:
			for k, e := range t {
				t[k] = walk(e)
			}
		case []any:
			for i, e := range t {
				if s, ok := e.(string); ok && (s == "-shell-image" || s == "-shell-image-win") && i+1 < len(t) {
					// The controller refuses to start without both; no Windows node ever runs one.
					t[i+1] = koPrefix + "shell"
				}
			}
			for i, e := range t {
				t[i] = walk(e)
			}
		case string:
			if !strings.HasPrefix(t, koPrefix) {
				return t
			}
			ref := strings.TrimPrefix(t, koPrefix)
			if strings.Contains(ref, "/") && !strings.HasPrefix(ref, commandPackage) {
				errs = append(errs, fmt.Errorf("%s is not one of Tekton's commands", t))
				return t
			}
			img, ok := images[path.Base(ref)]
			if !ok {
				errs = append(errs, fmt.Errorf("no image was built for %s", t))
				return t
			}
			return img
		}
		return v
	}
	u.Object = walk(u.Object).(map[string]any)
	return errors.Join(errs...)
}

// apply applies the objects in order with server-side apply. The CRDs must be established before
// the objects after them; an admission webhook that does not answer yet (Tekton's own, on a later
// installation whose webhook pod is starting) is waited for until ctx ends.
func apply(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	var crds []string
	for i, u := range objs {
		if u.GetKind() != "CustomResourceDefinition" && len(crds) > 0 {
			if err := waitEstablished(ctx, c, crds); err != nil {
				return err
			}
			crds = nil
		}
		if u.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, u.GetName())
		}
		var last error
		for {
			last = c.Apply(ctx, client.ApplyConfigurationFromUnstructured(u.DeepCopy()), client.FieldOwner(fieldManager), client.ForceOwnership)
			if last == nil {
				break
			}
			if ctx.Err() != nil || !retriable(last) {
				return fmt.Errorf("failed to apply Tekton's %s %s (%d of %d): %w", u.GetKind(), u.GetName(), i+1, len(objs), last)
			}
			if err := sleep(ctx, 500*time.Millisecond); err != nil {
				return fmt.Errorf("failed to apply Tekton's %s %s (%d of %d): %w", u.GetKind(), u.GetName(), i+1, len(objs), last)
			}
		}
	}
	return nil
}

// retriable says whether an apply may succeed later: a webhook that does not answer yet, a kind
// not served yet, the API server busy.
func retriable(err error) bool {
	return apierrors.IsInternalError(err) || apierrors.IsServiceUnavailable(err) || apierrors.IsTimeout(err) ||
		apierrors.IsServerTimeout(err) || apierrors.IsTooManyRequests(err) || apierrors.IsNotFound(err) ||
		strings.Contains(err.Error(), "failed calling webhook") || strings.Contains(err.Error(), "no matches for kind")
}

func sleep(ctx context.Context, d time.Duration) error {
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(d):
		return nil
	}
}

// poll calls check until it says done, ctx ends (its last word is the error) or it fails.
func poll(ctx context.Context, what string, check func() (done bool, waiting string, err error)) error {
	waiting := ""
	for {
		done, w, err := check()
		if err != nil {
			return err
		}
		if done {
			return nil
		}
		waiting = w
		if err := sleep(ctx, 250*time.Millisecond); err != nil {
			return fmt.Errorf("%s: %s: %w", what, waiting, err)
		}
	}
}

// waitEstablished waits until the API server serves the CRDs.
func waitEstablished(ctx context.Context, c client.Client, names []string) error {
	return poll(ctx, "tekton's CRDs are not established", func() (bool, string, error) {
		for _, n := range names {
			crd := &apiextensionsv1.CustomResourceDefinition{}
			if err := c.Get(ctx, client.ObjectKey{Name: n}, crd); err != nil {
				return false, n + ": " + err.Error(), nil
			}
			established := false
			for _, cond := range crd.Status.Conditions {
				if cond.Type == apiextensionsv1.Established && cond.Status == apiextensionsv1.ConditionTrue {
					established = true
				}
			}
			if !established {
				return false, n + " is not established", nil
			}
		}
		return true, "", nil
	})
}

// waitDeployments waits until every Deployment of the manifests has all its replicas updated and
// available.
func waitDeployments(ctx context.Context, c client.Client, objs []*unstructured.Unstructured) error {
	var keys []client.ObjectKey
	for _, u := range objs {
		if u.GetKind() == "Deployment" {
			keys = append(keys, client.ObjectKey{Namespace: u.GetNamespace(), Name: u.GetName()})
		}
	}
	return poll(ctx, "tekton does not run", func() (bool, string, error) {
		var waiting []string
		for _, key := range keys {
			d := &appsv1.Deployment{}
			if err := c.Get(ctx, key, d); err != nil {
				waiting = append(waiting, key.Name+": "+err.Error())
				continue
			}
			if w := deployments.NotAvailable(d); w != "" {
				waiting = append(waiting, key.Name+" "+w+deployments.PodsSay(ctx, c, d))
			}
		}
		return len(waiting) == 0, strings.Join(waiting, "; "), nil
	})
}

// waitWebhook waits until Tekton's webhook defaults, validates and converts: a server-side dry
// run of a v1beta1 Task goes through the mutating and validating webhooks and through the
// conversion to v1, the version Tekton stores.
func waitWebhook(ctx context.Context, c client.Client) error {
	task := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "tekton.dev/v1beta1",
		"kind":       "Task",
		"metadata":   map[string]any{"name": "ferry-install-probe", "namespace": Namespace},
		"spec": map[string]any{"steps": []any{map[string]any{
			"name": "probe", "image": "probe", "script": "true",
		}}},
	}}
	return poll(ctx, "tekton's webhook does not answer", func() (bool, string, error) {
		err := c.Create(ctx, task.DeepCopy(), client.DryRunAll)
		if err == nil {
			return true, "", nil
		}
		return false, err.Error(), nil
	})
}

// readYAML reads the objects of a multi-document YAML file, skipping empty documents.
func readYAML(file string) ([]*unstructured.Unstructured, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		u := &unstructured.Unstructured{}
		if err := dec.Decode(&u.Object); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, fmt.Errorf("failed to read %s: %w", file, err)
		}
		if len(u.Object) == 0 {
			continue
		}
		objs = append(objs, u)
	}
}
