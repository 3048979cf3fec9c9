package image

import (
	"context"
	"fmt"
	"maps"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// RebaseOptions say which application image goes onto which new base.
type RebaseOptions struct {
	// Image is the application image, by tag or digest.
	Image string
	// Stack is the new stack's image reference.
	Stack string
	// StackName is how the stack is known (a catalog name); default Stack.
	StackName string
	// Runtime is the new runtime's image reference, which must sit on the new stack; "" keeps the
	// image's runtime layers and puts them on the new stack.
	Runtime string
	// RuntimeName is how the runtime is known; default Runtime.
	RuntimeName string
	// Tags are pushed for the rebased image; by default it is pushed by digest only.
	Tags []string
}

// RebaseResult is a rebased image.
type RebaseResult struct {
	// Image is repository@sha256:… of the rebased image (the original when Unchanged).
	Image name.Digest
	// Old is the lineage the original image recorded.
	Old ferryv1.ImageLineage
	// New is the lineage of the rebased image.
	New ferryv1.ImageLineage
	// Unchanged is true when the image already sat on that base; nothing was pushed.
	Unchanged bool
}

// Rebase swaps the layers under an application image's application layer for a new stack (and,
// optionally, a new runtime on it) without rebuilding: it reads the lineage from the image's
// labels, checks that the recorded stack's layers are a prefix of the image's and that its top
// layer is the recorded application layer, keeps the application layer (and, without a new
// runtime, the runtime's own layers) byte for byte, keeps the config, records the new lineage in
// the labels and annotations, and pushes the result next to the original. It refuses, saying why,
// images Ferry did not make, images whose layers do not match their lineage, a runtime that does
// not sit on the new stack, and a new base without the image's platform.
func (c *Client) Rebase(ctx context.Context, opts RebaseOptions) (*RebaseResult, error) {
	if err := ValidateTags(opts.Tags); err != nil {
		return nil, err
	}
	app, err := c.Fetch(ctx, opts.Image, opts.Image)
	if err != nil {
		return nil, err
	}
	refuse := func(format string, args ...any) error {
		return fmt.Errorf("refusing to rebase %s: %s", opts.Image, fmt.Sprintf(format, args...))
	}
	platforms, err := app.platforms()
	if err != nil {
		return nil, err
	}
	old, err := imageLineage(platforms[0].image)
	if err != nil {
		return nil, refuse("%v", err)
	}
	oldStack, err := c.Fetch(ctx, old.Stack.Name, old.Stack.Image)
	if err != nil {
		return nil, refuse("its recorded stack cannot be read: %v", err)
	}
	if opts.StackName == "" {
		opts.StackName = opts.Stack
	}
	newStack, err := c.Fetch(ctx, opts.StackName, opts.Stack)
	if err != nil {
		return nil, err
	}
	var newRuntime *Base
	if opts.Runtime != "" {
		if opts.RuntimeName == "" {
			opts.RuntimeName = opts.Runtime
		}
		if newRuntime, err = c.Fetch(ctx, opts.RuntimeName, opts.Runtime); err != nil {
			return nil, err
		}
	}

	lineage := old
	lineage.Stack = &ferryv1.LayerSource{Name: newStack.Name, Image: newStack.Pinned(), Digest: newStack.Digest.String()}
	if newRuntime != nil {
		lineage.Runtime = &ferryv1.LayerSource{Name: newRuntime.Name, Image: newRuntime.Pinned(), Digest: newRuntime.Digest.String()}
	}
	labels := lineageLabels(lineage)
	newBase := newStack
	if newRuntime != nil {
		newBase = newRuntime
	}
	dropBase := newRuntime == nil && old.Runtime != nil

	var adds []mutate.IndexAddendum
	var single v1.Image
	for _, pi := range platforms {
		l, err := imageLineage(pi.image)
		if err != nil {
			return nil, refuse("%s: %v", platformString(pi.platform), err)
		}
		if l.Stack.Image != old.Stack.Image || l.AppLayer != old.AppLayer {
			return nil, refuse("its platform images record different lineages")
		}
		st, err := oldStack.forPlatform(pi.platform)
		if err != nil {
			return nil, refuse("%v", err)
		}
		keep, err := keptLayers(pi, st, old, newRuntime != nil)
		if err != nil {
			return nil, refuse("%s: %v", platformString(pi.platform), err)
		}
		nb, err := newBase.forPlatform(pi.platform)
		if err != nil {
			return nil, refuse("the platform does not match: %v", err)
		}
		if newRuntime != nil {
			ns, err := newStack.forPlatform(pi.platform)
			if err != nil {
				return nil, refuse("%v", err)
			}
			if err := checkSitsOn(newRuntime, newStack, nb, ns); err != nil {
				return nil, refuse("%v", err)
			}
		}
		perPlatform := maps.Clone(labels)
		if !dropBase {
			perPlatform[LabelBaseName] = newBase.Ref.String()
			perPlatform[LabelBaseDigest] = nb.digest.String()
		}
		img, err := rebaseOne(pi.image, nb.image, keep, perPlatform, dropBase)
		if err != nil {
			return nil, fmt.Errorf("failed to rebase %s for %s: %w", opts.Image, platformString(pi.platform), err)
		}
		if !app.IsIndex() {
			single = img
			break
		}
		p := pi.platform
		adds = append(adds, mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &p, Annotations: pi.desc.Annotations}})
	}
	art := &Artifact{Image: single, Lineage: lineage}
	if app.IsIndex() {
		idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, app.MediaType), adds...)
		if app.MediaType == types.OCIImageIndex {
			im, err := app.index.IndexManifest()
			if err != nil {
				return nil, err
			}
			ann := updatedAnnotations(im.Annotations, labels, dropBase)
			if !dropBase {
				ann[LabelBaseName], ann[LabelBaseDigest] = newBase.Ref.String(), newBase.Digest.String()
			}
			idx = mutate.Annotations(idx, ann).(v1.ImageIndex)
		}
		art.Index = idx
	}
	digest, err := art.Digest()
	if err != nil {
		return nil, err
	}
	res := &RebaseResult{Old: old, New: lineage}
	if digest == app.Digest {
		res.Image, res.Unchanged = app.Ref.Context().Digest(digest.String()), true
		return res, nil
	}
	if res.Image, err = c.Push(ctx, app.Ref.Context(), art, opts.Tags); err != nil {
		return nil, err
	}
	return res, nil
}

// imageLineage reads the lineage labels of one platform image.
func imageLineage(img v1.Image) (ferryv1.ImageLineage, error) {
	cf, err := img.ConfigFile()
	if err != nil {
		return ferryv1.ImageLineage{}, fmt.Errorf("its config cannot be read: %w", err)
	}
	l, ok := LineageFromLabels(cf.Config.Labels)
	if !ok {
		return l, fmt.Errorf("it records no lineage (labels %s and %s): only images that Ferry assembled can be rebased", LabelStackImage, LabelAppLayer)
	}
	return l, nil
}

// keptLayer is a layer of the original image that goes onto the new base, with its history.
type keptLayer struct {
	layer   v1.Layer
	history v1.History
	desc    v1.Descriptor
}

// keptLayers checks an image's layers against its lineage — the recorded stack is a prefix, the
// top layer is the application layer — and returns those that stay: the application layer, and
// the runtime's own layers above the stack unless the runtime is replaced too.
func keptLayers(pi, stack platformImage, l ferryv1.ImageLineage, newRuntime bool) ([]keptLayer, error) {
	m, err := pi.image.Manifest()
	if err != nil {
		return nil, err
	}
	layers, err := pi.image.Layers()
	if err != nil {
		return nil, err
	}
	stackLayers, err := layerDigests(stack.image)
	if err != nil {
		return nil, err
	}
	all, err := layerDigests(pi.image)
	if err != nil {
		return nil, err
	}
	if !hasPrefix(all, stackLayers) || len(all) <= len(stackLayers) {
		return nil, fmt.Errorf("its layers do not start with those of its recorded stack %s (%s): the old base is not a prefix of the image", l.Stack.Image, stack.digest)
	}
	if top := all[len(all)-1].String(); top != l.AppLayer {
		return nil, fmt.Errorf("its top layer %s is not the recorded application layer %s", top, l.AppLayer)
	}
	cf, err := pi.image.ConfigFile()
	if err != nil {
		return nil, err
	}
	var history []v1.History
	for _, h := range cf.History {
		if !h.EmptyLayer {
			history = append(history, h)
		}
	}
	from := len(stackLayers)
	if newRuntime {
		from = len(all) - 1
	}
	var out []keptLayer
	for i := from; i < len(all); i++ {
		h := v1.History{CreatedBy: "ferry rebase: kept layer"}
		if len(history) == len(all) {
			h = history[i]
		}
		out = append(out, keptLayer{layer: layers[i], history: h, desc: m.Layers[i]})
	}
	return out, nil
}

// rebaseOne puts the kept layers on a new base image and gives the result the original config
// with the new root filesystem, history and lineage labels.
func rebaseOne(orig, base v1.Image, keep []keptLayer, labels map[string]string, dropBase bool) (v1.Image, error) {
	mt, err := base.MediaType()
	if err != nil {
		return nil, err
	}
	oci := mt == types.OCIManifestSchema1
	img := base
	for _, k := range keep {
		lt := k.desc.MediaType
		switch {
		case oci && lt == types.DockerLayer:
			lt = types.OCILayer
		case !oci && lt == types.OCILayer:
			lt = types.DockerLayer
		}
		if img, err = mutate.Append(img, mutate.Addendum{Layer: k.layer, History: k.history, MediaType: lt}); err != nil {
			return nil, err
		}
	}
	rebased, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf, err := orig.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.RootFS = rebased.RootFS
	cf.History = rebased.History
	cf.Config.Labels = updatedAnnotations(cf.Config.Labels, labels, dropBase)
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		return nil, err
	}
	if oci {
		om, err := orig.Manifest()
		if err != nil {
			return nil, err
		}
		img = mutate.Annotations(img, updatedAnnotations(om.Annotations, labels, dropBase)).(v1.Image)
	}
	return img, nil
}

// updatedAnnotations returns old with the lineage keys replaced by those of labels; with dropBase
// the base image keys go (a runtime's layers on a new stack have no single base image).
func updatedAnnotations(old, labels map[string]string, dropBase bool) map[string]string {
	out := maps.Clone(old)
	if out == nil {
		out = map[string]string{}
	}
	for _, k := range []string{LabelStackName, LabelStackImage, LabelStackDigest, LabelRuntimeName, LabelRuntimeImage, LabelRuntimeDigest} {
		delete(out, k)
	}
	if dropBase {
		delete(out, LabelBaseName)
		delete(out, LabelBaseDigest)
	}
	maps.Copy(out, labels)
	return out
}
