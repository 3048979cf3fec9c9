package image

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// Labels (in the image config) and annotations (on OCI manifests and indexes) that Ferry sets.
// The dev.ferry.* ones record the lineage, so that rebase finds it from the image alone.
const (
	LabelSource        = "org.opencontainers.image.source"
	LabelRevision      = "org.opencontainers.image.revision"
	LabelBaseName      = "org.opencontainers.image.base.name"
	LabelBaseDigest    = "org.opencontainers.image.base.digest"
	LabelStackName     = "dev.ferry.stack.name"
	LabelStackImage    = "dev.ferry.stack.image"
	LabelStackDigest   = "dev.ferry.stack.digest"
	LabelRuntimeName   = "dev.ferry.runtime.name"
	LabelRuntimeImage  = "dev.ferry.runtime.image"
	LabelRuntimeDigest = "dev.ferry.runtime.digest"
	LabelAppLayer      = "dev.ferry.app.layer"
)

// EnvRevision is set in the environment of every image built from a known commit to that commit's
// hash, so that an application can say which version it is (as Heroku's SOURCE_VERSION does).
const EnvRevision = "FERRY_REVISION"

// Spec is the application's part of the image config, from the pipeline file. Unset fields keep
// the runtime's values.
type Spec struct {
	// Entrypoint replaces the runtime's entrypoint; as with a Dockerfile's ENTRYPOINT, setting it
	// also clears the inherited Cmd unless Cmd is set too.
	Entrypoint []string
	// Cmd replaces the default arguments.
	Cmd []string
	// Env is set on top of the runtime's environment.
	Env map[string]string
	// Workdir is the working directory (where the artifacts are).
	Workdir string
	// Ports are exposed as <port>/tcp.
	Ports []int32
	// User is the user the process runs as.
	User string
	// Source is the repository's URL (without credentials), the org.opencontainers.image.source.
	Source string
	// Revision is the commit, the org.opencontainers.image.revision.
	Revision string
	// Created is the image's creation time; zero means DefaultEpoch.
	Created time.Time
}

// Artifact is an assembled image: one image, or an index with one image per platform.
type Artifact struct {
	// Image is set for a single-platform image.
	Image v1.Image
	// Index is set for a multi-platform image.
	Index v1.ImageIndex
	// Lineage is the stack, runtime and application layer it is made of.
	Lineage ferryv1.ImageLineage
}

// Digest returns the digest of the image or index manifest.
func (a *Artifact) Digest() (v1.Hash, error) {
	if a.Index != nil {
		return a.Index.Digest()
	}
	return a.Image.Digest()
}

// taggable is what gets pushed.
func (a *Artifact) taggable() remote.Taggable {
	if a.Index != nil {
		return a.Index
	}
	return a.Image
}

// Compose puts the application layer on the runtime (or on the stack when there is no runtime)
// for every platform of that base, after checking that the runtime sits on the stack, and sets
// the config, labels and annotations. A multi-platform base gives an index.
func Compose(stack, runtime *Base, layer *Layer, spec Spec) (*Artifact, error) {
	base := stack
	if runtime != nil {
		base = runtime
	}
	lineage := ferryv1.ImageLineage{
		Stack:    &ferryv1.LayerSource{Name: stack.Name, Image: stack.Pinned(), Digest: stack.Digest.String()},
		AppLayer: layer.digest.String(),
	}
	if runtime != nil {
		lineage.Runtime = &ferryv1.LayerSource{Name: runtime.Name, Image: runtime.Pinned(), Digest: runtime.Digest.String()}
	}
	labels := lineageLabels(lineage)
	if spec.Source != "" {
		labels[LabelSource] = spec.Source
	}
	if spec.Revision != "" {
		labels[LabelRevision] = spec.Revision
	}
	labels[LabelBaseName] = base.Ref.String()
	labels[LabelBaseDigest] = base.Digest.String()

	platforms, err := base.platforms()
	if err != nil {
		return nil, err
	}
	var adds []mutate.IndexAddendum
	for _, pi := range platforms {
		if runtime != nil {
			st, err := stack.forPlatform(pi.platform)
			if err != nil {
				return nil, fmt.Errorf("runtime %s needs the stack for %s: %w", runtime.Name, platformString(pi.platform), err)
			}
			if err := checkSitsOn(runtime, stack, pi, st); err != nil {
				return nil, err
			}
		}
		perPlatform := maps.Clone(labels)
		if base.IsIndex() {
			// The platform image's own base is the base's image for that platform.
			perPlatform[LabelBaseDigest] = pi.digest.String()
		}
		img, err := appendApp(pi.image, layer, spec, perPlatform)
		if err != nil {
			return nil, fmt.Errorf("failed to assemble the image for %s: %w", platformString(pi.platform), err)
		}
		if !base.IsIndex() {
			return &Artifact{Image: img, Lineage: lineage}, nil
		}
		p := pi.platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p, Annotations: pi.desc.Annotations}})
	}
	idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, base.MediaType), adds...)
	if base.MediaType == types.OCIImageIndex {
		idx = mutate.Annotations(idx, labels).(v1.ImageIndex)
	}
	return &Artifact{Index: idx, Lineage: lineage}, nil
}

// lineageLabels are the dev.ferry.* labels of a lineage.
func lineageLabels(l ferryv1.ImageLineage) map[string]string {
	out := map[string]string{}
	if l.Stack != nil {
		out[LabelStackName], out[LabelStackImage], out[LabelStackDigest] = l.Stack.Name, l.Stack.Image, l.Stack.Digest
	}
	if l.Runtime != nil {
		out[LabelRuntimeName], out[LabelRuntimeImage], out[LabelRuntimeDigest] = l.Runtime.Name, l.Runtime.Image, l.Runtime.Digest
	}
	if l.AppLayer != "" {
		out[LabelAppLayer] = l.AppLayer
	}
	return out
}

// LineageFromLabels reads the lineage an image's labels record; ok is false for images Ferry did
// not make.
func LineageFromLabels(labels map[string]string) (l ferryv1.ImageLineage, ok bool) {
	if labels[LabelStackImage] == "" || labels[LabelAppLayer] == "" {
		return l, false
	}
	l.Stack = &ferryv1.LayerSource{Name: labels[LabelStackName], Image: labels[LabelStackImage], Digest: labels[LabelStackDigest]}
	if labels[LabelRuntimeImage] != "" {
		l.Runtime = &ferryv1.LayerSource{Name: labels[LabelRuntimeName], Image: labels[LabelRuntimeImage], Digest: labels[LabelRuntimeDigest]}
	}
	l.AppLayer = labels[LabelAppLayer]
	return l, true
}

// appendApp puts the layer on one platform image and sets its config and annotations.
func appendApp(base v1.Image, layer *Layer, spec Spec, labels map[string]string) (v1.Image, error) {
	mt, err := base.MediaType()
	if err != nil {
		return nil, err
	}
	oci := mt == types.OCIManifestSchema1
	layerType := types.DockerLayer
	if oci {
		layerType = types.OCILayer
	}
	created := spec.Created
	if created.IsZero() {
		created = DefaultEpoch
	}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer.WithMediaType(layerType),
		MediaType: layerType,
		History:   v1.History{Created: v1.Time{Time: created}, CreatedBy: "ferry assemble", Comment: "application layer"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = v1.Time{Time: created}
	applySpec(&cf.Config, spec, labels)
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		return nil, err
	}
	if oci {
		img = mutate.Annotations(img, labels).(v1.Image)
	}
	return img, nil
}

// applySpec sets the application's config on top of the runtime's. Labels the runtime set about
// itself (org.opencontainers.image.*, dev.ferry.*) are dropped: they would describe the runtime,
// not the application.
func applySpec(c *v1.Config, spec Spec, labels map[string]string) {
	if spec.Entrypoint != nil {
		c.Entrypoint = slices.Clone(spec.Entrypoint)
		c.Cmd = nil
	}
	if spec.Cmd != nil {
		c.Cmd = slices.Clone(spec.Cmd)
	}
	if spec.Workdir != "" {
		c.WorkingDir = spec.Workdir
	}
	if spec.User != "" {
		c.User = spec.User
	}
	env := maps.Clone(spec.Env)
	if spec.Revision != "" {
		if env == nil {
			env = map[string]string{}
		}
		// The commit is a fact, not a setting: the pipeline file cannot say otherwise.
		env[EnvRevision] = spec.Revision
	}
	for _, k := range slices.Sorted(maps.Keys(env)) {
		kv := k + "=" + env[k]
		i := slices.IndexFunc(c.Env, func(e string) bool { return strings.HasPrefix(e, k+"=") })
		if i >= 0 {
			c.Env[i] = kv
		} else {
			c.Env = append(c.Env, kv)
		}
	}
	if len(spec.Ports) > 0 {
		if c.ExposedPorts == nil {
			c.ExposedPorts = map[string]struct{}{}
		}
		for _, p := range spec.Ports {
			c.ExposedPorts[fmt.Sprintf("%d/tcp", p)] = struct{}{}
		}
	}
	merged := map[string]string{}
	for k, v := range c.Labels {
		if !strings.HasPrefix(k, "org.opencontainers.image.") && !strings.HasPrefix(k, "dev.ferry.") {
			merged[k] = v
		}
	}
	maps.Copy(merged, labels)
	c.Labels = merged
}
