package ui

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
)

// maxCommitsShown bounds the commit list of one comparison.
const maxCommitsShown = 100

// changesView is what deploying a Release into an environment would change there.
type changesView struct {
	// From is what runs there now (or ran before this Release); To is the Release.
	From, To imageRef
	// Nothing is set when nothing ran there before: a first deployment.
	Nothing bool
	// Same is set when the environment already runs this image.
	Same bool

	Commits     []gitlab.Commit
	MoreCommits int
	CompareURL  string
	// CommitsNote explains why there is no commit list, or that it may be incomplete.
	CommitsNote string

	Layers []layerChange
	// LayersNote explains why the layers cannot be compared.
	LayersNote string
}

// imageRef is an image with what is known of where it came from.
type imageRef struct {
	Image, Revision, Build, Release string
	Lineage                         *ferryv1.ImageLineage
}

// layerChange is one of an image's three parts, before and after.
type layerChange struct {
	Layer    string
	From, To string
	Changed  bool
}

// comparer is what the UI asks GitLab.
type comparer interface {
	Compare(ctx context.Context, project gitlab.ProjectRef, from, to string) (*gitlab.Comparison, error)
}

// changeFinder works out what changes, asking GitLab for the commits and caching its answers.
type changeFinder struct {
	reader    client.Reader
	apiReader client.Reader
	// newComparer makes a GitLab client for a Project's instance and token.
	newComparer func(baseURL, token string) (comparer, error)
	now         func() time.Time

	mu    sync.Mutex
	cache map[string]cachedComparison
}

type cachedComparison struct {
	cmp     *gitlab.Comparison
	err     error
	expires time.Time
}

func newChangeFinder(reader, apiReader client.Reader) *changeFinder {
	return &changeFinder{
		reader: reader, apiReader: apiReader, now: time.Now, cache: map[string]cachedComparison{},
		newComparer: func(baseURL, token string) (comparer, error) {
			return gitlab.New(baseURL, token, gitlab.Options{Timeout: 5 * time.Second, RetryMax: 1})
		},
	}
}

// find says what rel would change in environment env of project p (which may be nil).
func (f *changeFinder) find(ctx context.Context, rel *ferryv1.Release, p *ferryv1.Project, es *ferryv1.ReleaseEnvironmentStatus, env string) *changesView {
	v := &changesView{To: imageRef{Image: rel.Spec.Image, Revision: rel.Spec.Revision, Build: rel.Spec.Build, Release: rel.Name}}
	from := ""
	if es != nil {
		from = es.PreviousImage
	}
	if from == "" && p != nil {
		for _, pe := range p.Status.Environments {
			if pe.Name == env && pe.Image != rel.Spec.Image {
				from = pe.Image
			}
			if pe.Name == env && pe.Image == rel.Spec.Image && pe.Release != rel.Name {
				v.Same = true
			}
		}
	}
	if from == "" {
		v.Nothing = !v.Same
		v.To = f.describe(ctx, rel.Namespace, rel.Spec.Project, v.To)
		return v
	}
	if from == rel.Spec.Image {
		v.Same = true
		return v
	}
	v.From = f.describe(ctx, rel.Namespace, rel.Spec.Project, imageRef{Image: from})
	v.To = f.describe(ctx, rel.Namespace, rel.Spec.Project, v.To)
	f.commits(ctx, p, v)
	v.Layers, v.LayersNote = compareLayers(v.From, v.To)
	return v
}

// describe finds the revision, Build and lineage of an image from the Releases and Builds that
// carry it.
func (f *changeFinder) describe(ctx context.Context, ns, project string, ref imageRef) imageRef {
	if ref.Build == "" || ref.Revision == "" {
		var rels ferryv1.ReleaseList
		if err := f.reader.List(ctx, &rels, client.InNamespace(ns)); err == nil {
			for _, r := range rels.Items {
				if r.Spec.Project == project && r.Spec.Image == ref.Image {
					ref.Revision = cmpOr(ref.Revision, r.Spec.Revision)
					ref.Build = cmpOr(ref.Build, r.Spec.Build)
					ref.Release = cmpOr(ref.Release, r.Name)
				}
			}
		}
	}
	var builds ferryv1.BuildList
	if err := f.reader.List(ctx, &builds, client.InNamespace(ns)); err != nil {
		return ref
	}
	for i := range builds.Items {
		b := &builds.Items[i]
		if b.Spec.Project != project || (b.Name != ref.Build && (ref.Build != "" || b.Status.Image != ref.Image)) {
			continue
		}
		ref.Build = b.Name
		ref.Revision = cmpOr(ref.Revision, b.Spec.Revision)
		ref.Lineage = b.Status.Lineage
	}
	return ref
}

func cmpOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// commits asks the Project's GitLab for the commits between the two revisions.
func (f *changeFinder) commits(ctx context.Context, p *ferryv1.Project, v *changesView) {
	switch {
	case p == nil:
		v.CommitsNote = "The Project is gone: its GitLab project is unknown."
		return
	case v.From.Revision == "" || v.To.Revision == "":
		v.CommitsNote = "The commit of one of the two images is unknown, so the commits between them cannot be listed."
		return
	case v.From.Revision == v.To.Revision:
		v.CommitsNote = "Both images were built from the same commit."
		return
	}
	key := fmt.Sprintf("%s/%s|%s|%s", p.Namespace, p.Name, v.From.Revision, v.To.Revision)
	f.mu.Lock()
	c, ok := f.cache[key]
	f.mu.Unlock()
	if !ok || f.now().After(c.expires) {
		c = cachedComparison{expires: f.now().Add(10 * time.Minute)}
		c.cmp, c.err = f.compare(ctx, p, v.From.Revision, v.To.Revision)
		if c.err != nil {
			c.expires = f.now().Add(30 * time.Second)
		}
		f.mu.Lock()
		if len(f.cache) > 1000 {
			f.cache = map[string]cachedComparison{}
		}
		f.cache[key] = c
		f.mu.Unlock()
	}
	if c.err != nil {
		v.CommitsNote = "GitLab could not list the commits: " + c.err.Error()
		return
	}
	v.CompareURL = c.cmp.WebURL
	v.Commits = c.cmp.Commits
	if len(v.Commits) > maxCommitsShown {
		v.MoreCommits = len(v.Commits) - maxCommitsShown
		v.Commits = v.Commits[len(v.Commits)-maxCommitsShown:]
	}
	switch {
	case c.cmp.Timeout:
		v.CommitsNote = "GitLab timed out comparing the commits: the list may be incomplete."
	case len(v.Commits) == 0:
		v.CommitsNote = "No new commits: the running commit already contains this one (a rollback?)."
	}
}

func (f *changeFinder) compare(ctx context.Context, p *ferryv1.Project, from, to string) (*gitlab.Comparison, error) {
	token := ""
	if ref := p.Spec.GitLab.TokenSecretRef; ref != nil {
		secret := &corev1.Secret{}
		if err := f.apiReader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, secret); err != nil {
			return nil, fmt.Errorf("failed to read the Project's GitLab token Secret %s: %w", ref.Name, err)
		}
		key := ref.Key
		if key == "" {
			key = "token"
		}
		token = strings.TrimSpace(string(secret.Data[key]))
	}
	gl, err := f.newComparer(p.Spec.GitLab.URL, token)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, 8*time.Second)
	defer cancel()
	return gl.Compare(ctx, gitlab.ProjectRefOf(p), from, to)
}

// compareLayers lines up the stack, runtime and application layer of two images.
func compareLayers(from, to imageRef) ([]layerChange, string) {
	if from.Lineage == nil || to.Lineage == nil {
		missing := from
		if from.Lineage != nil {
			missing = to
		}
		if missing.Build == "" {
			return nil, fmt.Sprintf("No Build of %s is left to say how it was made.", shortImage(missing.Image))
		}
		return nil, fmt.Sprintf("Build %s recorded no layer lineage.", missing.Build)
	}
	layer := func(name string, a, b *ferryv1.LayerSource) layerChange {
		lc := layerChange{Layer: name, From: describeLayer(a), To: describeLayer(b)}
		lc.Changed = layerDigest(a) != layerDigest(b)
		return lc
	}
	return []layerChange{
		layer("Stack", from.Lineage.Stack, to.Lineage.Stack),
		layer("Runtime", from.Lineage.Runtime, to.Lineage.Runtime),
		{Layer: "Application", From: shortDigest(from.Lineage.AppLayer), To: shortDigest(to.Lineage.AppLayer), Changed: from.Lineage.AppLayer != to.Lineage.AppLayer},
	}, ""
}

func layerDigest(l *ferryv1.LayerSource) string {
	if l == nil {
		return ""
	}
	if l.Digest != "" {
		return l.Digest
	}
	return l.Image
}

func describeLayer(l *ferryv1.LayerSource) string {
	if l == nil {
		return "none"
	}
	d := shortDigest(layerDigest(l))
	if l.Name != "" {
		return l.Name + " " + d
	}
	return d
}
