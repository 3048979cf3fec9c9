package image

import (
	"context"
	"maps"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/ferryci/ferry/internal/registry"
)

// rebaseFixture has an application built on stack A and runtime A, and a patched stack B with a
// runtime B built on it.
type rebaseFixture struct {
	*fixture
	app      name.Digest
	art      *Artifact
	patched  *registry.Seeded
	original v1.Image
}

func newRebaseFixture(t *testing.T, platforms ...string) *rebaseFixture {
	t.Helper()
	f := newFixture(t, registry.SeedOptions{Platforms: platforms})
	patched := f.seed(t, registry.SeedOptions{Stack: "team-a/stack", Runtime: "team-a/runtime", Tag: "patched", Salt: "patched", Platforms: platforms})
	spec := Spec{Entrypoint: []string{"python", "main.py"}, Env: map[string]string{"PORT": "8080"}, Ports: []int32{8080}, Workdir: "/app", Revision: strings.Repeat("e", 40)}
	app, art, err := f.build(t, f.client(t), appDir(t), f.stack, f.runtime, spec, strings.Repeat("e", 40))
	if err != nil {
		t.Fatal(err)
	}
	rf := &rebaseFixture{fixture: f, app: app, art: art, patched: patched}
	if art.Index == nil {
		rf.original = f.pull(t, app.String())
	}
	f.proxy.Reset()
	return rf
}

func (rf *rebaseFixture) rebase(t *testing.T, opts RebaseOptions) (*RebaseResult, error) {
	t.Helper()
	if opts.Image == "" {
		opts.Image = rf.app.String()
	}
	return rf.client(t).Rebase(context.Background(), opts)
}

// configWithoutLineage is an image config without its root filesystem, history and lineage
// labels: what must not change in a rebase.
func configWithoutLineage(t *testing.T, img v1.Image) v1.Config {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := *cf.Config.DeepCopy()
	c.Labels = maps.Clone(c.Labels)
	for k := range c.Labels {
		if strings.HasPrefix(k, "dev.ferry.stack.") || strings.HasPrefix(k, "dev.ferry.runtime.") || strings.HasPrefix(k, "org.opencontainers.image.base.") {
			delete(c.Labels, k)
		}
	}
	return c
}

func TestRebaseOntoPatchedStackKeepsRuntimeAndApp(t *testing.T) {
	rf := newRebaseFixture(t)
	res, err := rf.rebase(t, RebaseOptions{Stack: rf.patched.Stack, StackName: "debian-12"})
	if err != nil {
		t.Fatal(err)
	}
	if res.Unchanged || res.Image == rf.app {
		t.Fatalf("rebase changed nothing: %+v", res)
	}
	img := rf.pull(t, res.Image.String())
	newStack := digests(t, rf.pull(t, rf.patched.Stack))
	oldStack := digests(t, rf.pull(t, rf.stack))
	orig := digests(t, rf.original)
	got := digests(t, img)
	// New stack layers, then the runtime's own layer and the app layer, byte for byte.
	want := append(slices.Clone(newStack), orig[len(oldStack):]...)
	if !slices.Equal(got, want) {
		t.Fatalf("layers %q, want %q", got, want)
	}
	if got[len(got)-1] != rf.art.Lineage.AppLayer {
		t.Fatalf("top layer %s, want the app layer %s", got[len(got)-1], rf.art.Lineage.AppLayer)
	}
	if a, b := configWithoutLineage(t, rf.original), configWithoutLineage(t, img); !reflect.DeepEqual(a, b) {
		t.Fatalf("config changed:\n was %+v\n now %+v", a, b)
	}
	cf, _ := img.ConfigFile()
	labels := cf.Config.Labels
	stDigest, _ := rf.pull(t, rf.patched.Stack).Digest()
	if labels[LabelStackImage] != rf.patched.Stack || labels[LabelStackDigest] != stDigest.String() || labels[LabelStackName] != "debian-12" {
		t.Errorf("stack labels %v", labels)
	}
	if labels[LabelRuntimeImage] != rf.runtime || labels[LabelAppLayer] != rf.art.Lineage.AppLayer {
		t.Errorf("runtime and app labels %v", labels)
	}
	if _, ok := labels[LabelBaseDigest]; ok {
		t.Errorf("base digest %s kept, but no single image is the base any more", labels[LabelBaseDigest])
	}
	if len(cf.RootFS.DiffIDs) != len(got) || len(cf.History) == 0 {
		t.Errorf("rootfs %d diff IDs for %d layers", len(cf.RootFS.DiffIDs), len(got))
	}
	if res.New.Stack.Image != rf.patched.Stack || res.Old.Stack.Image != rf.stack || res.New.AppLayer != rf.art.Lineage.AppLayer {
		t.Errorf("result lineage old %+v new %+v", res.Old, res.New)
	}
	// No layer travelled: the stack's layers were mounted or present, only the config and the
	// manifest were uploaded.
	st := rf.proxy.Stats()
	cfgName, _ := img.ConfigName()
	if !slices.Equal(st.UploadedDigests(), []string{cfgName.String()}) || len(st.StoredManifests()) != 1 {
		t.Errorf("rebase sent %+v, want only the config and the manifest", st)
	}
}

func TestRebaseOntoNewRuntime(t *testing.T) {
	rf := newRebaseFixture(t)
	res, err := rf.rebase(t, RebaseOptions{Stack: rf.patched.Stack, Runtime: rf.patched.Runtime})
	if err != nil {
		t.Fatal(err)
	}
	img := rf.pull(t, res.Image.String())
	rt := rf.pull(t, rf.patched.Runtime)
	want := append(digests(t, rt), rf.art.Lineage.AppLayer)
	if got := digests(t, img); !slices.Equal(got, want) {
		t.Fatalf("layers %q, want the new runtime's and the app layer %q", got, want)
	}
	if a, b := configWithoutLineage(t, rf.original), configWithoutLineage(t, img); !reflect.DeepEqual(a, b) {
		t.Fatalf("config changed:\n was %+v\n now %+v", a, b)
	}
	cf, _ := img.ConfigFile()
	rtDigest, _ := rt.Digest()
	if cf.Config.Labels[LabelRuntimeImage] != rf.patched.Runtime || cf.Config.Labels[LabelBaseDigest] != rtDigest.String() {
		t.Errorf("labels %v", cf.Config.Labels)
	}
	m, _ := img.Manifest()
	if m.Annotations[LabelRuntimeDigest] != rtDigest.String() || m.Annotations[LabelRevision] != strings.Repeat("e", 40) {
		t.Errorf("annotations %v", m.Annotations)
	}

	// Rebasing the result again onto the same bases changes nothing.
	again, err := rf.rebase(t, RebaseOptions{Image: res.Image.String(), Stack: rf.patched.Stack, Runtime: rf.patched.Runtime})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Unchanged || again.Image != res.Image {
		t.Fatalf("second rebase: %+v, want unchanged %s", again, res.Image)
	}
}

func TestRebaseRefuses(t *testing.T) {
	rf := newRebaseFixture(t)
	auth := remote.WithAuth(&authn.Basic{Username: robot, Password: secret})

	// An image that claims the patched stack but sits on the original one.
	cf, _ := rf.original.ConfigFile()
	cf = cf.DeepCopy()
	cf.Config.Labels[LabelStackImage] = rf.patched.Stack
	liar, err := mutate.ConfigFile(rf.original, cf)
	if err != nil {
		t.Fatal(err)
	}
	liarRef, _ := name.ParseReference(rf.proxy.Ref("team-a/app:liar"))
	if err := remote.Write(liarRef, liar, auth); err != nil {
		t.Fatal(err)
	}
	arm := rf.seed(t, registry.SeedOptions{Stack: "team-a/stack-arm", Platforms: []string{"linux/arm64"}})
	rtDigest, _ := rf.pull(t, rf.runtime).Digest()
	patchedDigest, _ := rf.pull(t, rf.patched.Stack).Digest()

	for _, tc := range []struct {
		name string
		opts RebaseOptions
		want []string
	}{
		{name: "runtime not on the new stack", opts: RebaseOptions{Stack: rf.patched.Stack, Runtime: rf.runtime},
			want: []string{"does not sit on stack", rtDigest.String(), patchedDigest.String()}},
		{name: "image not made by Ferry", opts: RebaseOptions{Image: rf.runtime, Stack: rf.patched.Stack},
			want: []string{"records no lineage", "only images that Ferry assembled"}},
		{name: "old base not a prefix", opts: RebaseOptions{Image: liarRef.String(), Stack: rf.stack},
			want: []string{"the old base is not a prefix"}},
		{name: "platform does not match", opts: RebaseOptions{Stack: arm.Stack},
			want: []string{"the platform does not match", "no image for linux/amd64", "linux/arm64"}},
		{name: "latest", opts: RebaseOptions{Stack: rf.patched.Stack, Tags: []string{"latest"}},
			want: []string{"never pushes latest"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rf.proxy.Reset()
			_, err := rf.rebase(t, tc.opts)
			if err == nil {
				t.Fatal("rebase succeeded")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if st := rf.proxy.Stats(); len(st.Manifests) != 0 || len(st.Uploads) != 0 {
				t.Errorf("a refused rebase pushed %+v", st)
			}
		})
	}
}

func TestRebaseMultiPlatform(t *testing.T) {
	rf := newRebaseFixture(t, "linux/amd64", "linux/arm64")
	res, err := rf.rebase(t, RebaseOptions{Stack: rf.patched.Stack, Runtime: rf.patched.Runtime, Tags: []string{"rebased"}})
	if err != nil {
		t.Fatal(err)
	}
	idx, err := remote.Index(mustParse(t, res.Image.String()), remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	if err != nil {
		t.Fatal(err)
	}
	rtIdx, _ := remote.Index(mustParse(t, rf.patched.Runtime), remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	im, _ := idx.IndexManifest()
	if len(im.Manifests) != 2 || im.Annotations[LabelRuntimeImage] != rf.patched.Runtime {
		t.Fatalf("index %+v", im)
	}
	for _, d := range im.Manifests {
		img, _ := idx.Image(d.Digest)
		rt, err := platformOf(rtIdx, *d.Platform)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := digests(t, img), append(digests(t, rt), rf.art.Lineage.AppLayer); !slices.Equal(got, want) {
			t.Errorf("%s: layers %q, want %q", d.Platform, got, want)
		}
	}
	desc, err := remote.Get(mustParse(t, rf.proxy.Ref("team-a/app:rebased")), remote.WithAuth(&authn.Basic{Username: robot, Password: secret}))
	if err != nil || desc.Digest.String() != res.Image.DigestStr() {
		t.Errorf("tag rebased: %v %v, want %s", desc, err, res.Image.DigestStr())
	}
}
