package build

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/catalog"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/pipelinefile"
)

// SourceReader reads one file of one commit. gitsource.ReadFile is the real one.
type SourceReader func(ctx context.Context, req gitsource.Request, path string) ([]byte, error)

// sourceError is a failure to read the source that the Build's condition reports with a reason.
// A terminal one fails the Build; others are retried.
type sourceError struct {
	reason   string
	err      error
	terminal bool
}

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// fileCache keeps pipeline files by Project, URL, commit and path: a commit never changes, so many
// Builds of one commit (retries, rebuilds, a benchmark) read it from git once. Keying by the
// Project's UID keeps one Project from reading a file another Project's credentials fetched.
type fileCache struct {
	mu      sync.Mutex
	entries map[string][]byte
	order   []string
	group   singleflight.Group
}

const fileCacheSize = 512

func (c *fileCache) get(ctx context.Context, key string, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if data, ok := c.entries[key]; ok {
		c.mu.Unlock()
		return data, nil
	}
	c.mu.Unlock()
	v, err, _ := c.group.Do(key, func() (any, error) {
		data, err := fetch(ctx)
		if err != nil {
			return nil, err
		}
		c.mu.Lock()
		defer c.mu.Unlock()
		if c.entries == nil {
			c.entries = map[string][]byte{}
		}
		if _, ok := c.entries[key]; !ok {
			c.entries[key] = data
			c.order = append(c.order, key)
			if len(c.order) > fileCacheSize {
				delete(c.entries, c.order[0])
				c.order = c.order[1:]
			}
		}
		return data, nil
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

// readPipelineFile reads and parses the Project's pipeline file at the Build's commit. A missing or
// invalid file is a *pipelinefile.Error (or ErrorList); failing to fetch is a *sourceError.
func (r *Reconciler) readPipelineFile(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (*pipelinefile.File, error) {
	path := p.Spec.PipelineFile
	if path == "" {
		path = ferryv1.DefaultPipelineFile
	}
	req := gitsource.Request{URL: p.Spec.Repository.CloneURL, Revision: b.Spec.Revision, Ref: b.Spec.Ref}
	if ref := p.Spec.Repository.CredentialsSecretRef; ref != nil {
		creds, err := r.credentials(ctx, p.Namespace, ref.Name)
		if err != nil {
			return nil, err
		}
		req.Credentials = creds
	}
	key := strings.Join([]string{string(p.UID), req.URL, req.Revision, path}, "\x00")
	data, err := r.files.get(ctx, key, func(ctx context.Context) ([]byte, error) {
		return r.readSource(ctx, req, path)
	})
	if err != nil {
		if errors.Is(err, gitsource.ErrNotFound) && strings.HasPrefix(err.Error(), path+" at ") {
			return nil, pipelinefile.ErrorList{{File: path, Message: fmt.Sprintf("no pipeline file in the repository at %s: add one, or set the Project's pipelineFile", shortSHA(b.Spec.Revision))}}
		}
		return nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: err}
	}
	return pipelinefile.Parse(path, data)
}

func (r *Reconciler) readSource(ctx context.Context, req gitsource.Request, path string) ([]byte, error) {
	if r.ReadSource != nil {
		return r.ReadSource(ctx, req, path)
	}
	return gitsource.ReadFile(ctx, req, path)
}

// credentials reads the Project's clone credentials. The Secret is read directly: Ferry caches
// only the Secrets of its own namespace.
func (r *Reconciler) credentials(ctx context.Context, namespace, name string) (*gitsource.Credentials, error) {
	s := &corev1.Secret{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, s); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, &sourceError{reason: ferryv1.SecretNotFoundReason, err: fmt.Errorf("the Project's credentials Secret %s/%s was not found", namespace, name)}
		}
		return nil, fmt.Errorf("failed to read Secret %s/%s: %w", namespace, name, err)
	}
	creds, err := gitsource.CredentialsFromSecret(s)
	if err != nil {
		return nil, &sourceError{reason: ferryv1.SecretNotFoundReason, err: err}
	}
	return creds, nil
}

// catalogTTL is how long a read of the catalog is reused: a change to the ConfigMap reaches new
// Builds within it, and a burst of Builds costs one read.
const catalogTTL = 5 * time.Second

// catalog reads the platform's catalog from Ferry's namespace; without the ConfigMap only image
// references resolve. The ConfigMap is read directly (Ferry does not watch ConfigMaps), at most
// once per catalogTTL, and parsed again only when it changed.
func (r *Reconciler) catalog(ctx context.Context) (*catalog.Catalog, error) {
	r.catalogMu.Lock()
	defer r.catalogMu.Unlock()
	if now := time.Now(); now.Before(r.catalogExpiry) {
		return r.catalogCache, nil
	}
	cm := &corev1.ConfigMap{}
	if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: catalog.ConfigMapName}, cm); err != nil {
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("failed to read the catalog ConfigMap %s/%s: %w", r.Namespace, catalog.ConfigMapName, err)
		}
		r.catalogVersion, r.catalogCache = "", nil
	} else if cm.ResourceVersion != r.catalogVersion || r.catalogCache == nil {
		c, err := catalog.Parse(r.Namespace+"/"+catalog.ConfigMapName, []byte(cm.Data[catalog.ConfigMapKey]))
		if err != nil {
			return nil, fmt.Errorf("the platform's catalog is invalid: %w", err)
		}
		r.catalogVersion, r.catalogCache = cm.ResourceVersion, c
	}
	r.catalogExpiry = time.Now().Add(catalogTTL)
	return r.catalogCache, nil
}

// plan reads the pipeline file at the commit, resolves its stack and runtime through the catalog
// and makes the Build's plan.
func (r *Reconciler) plan(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (*buildplan.Plan, error) {
	f, err := r.readPipelineFile(ctx, b, p)
	if err != nil {
		return nil, err
	}
	cat, err := r.catalog(ctx)
	if err != nil {
		return nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: err}
	}
	stack, err := cat.Resolve(catalog.Stack, f.Stack)
	if err != nil {
		return nil, pipelinefile.ErrorList{f.Errorf("stack", "%v", err)}
	}
	var runtime string
	if f.Runtime != "" {
		if runtime, err = cat.Resolve(catalog.Runtime, f.Runtime); err != nil {
			return nil, pipelinefile.ErrorList{f.Errorf("runtime", "%v", err)}
		}
	}
	in := buildplan.Inputs{
		BuildName: b.Name, BuildUID: b.UID, Namespace: b.Namespace, Project: p.Name,
		CloneURL: p.Spec.Repository.CloneURL, Revision: b.Spec.Revision, Ref: b.Spec.Ref, Tag: gitTag(b),
		PipelineFile: f.Name(), Image: p.Spec.Image.Repository, Insecure: p.Spec.Image.Insecure,
		StackImage: stack, RuntimeImage: runtime, ServiceAccountName: p.Spec.ServiceAccountName,
		MaxTimeout: r.MaxBuildTimeout, FerryImage: r.FerryImage,
	}
	if ref := p.Spec.Repository.CredentialsSecretRef; ref != nil {
		in.GitCredentialsSecret = ref.Name
	}
	if ref := p.Spec.Image.PushSecretRef; ref != nil {
		in.PushSecret = ref.Name
	}
	if p.Spec.BuildTimeout != nil {
		in.ProjectTimeout = p.Spec.BuildTimeout.Duration
	}
	plan, err := buildplan.New(f, in)
	if err != nil {
		return nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: fmt.Errorf("cannot build from Project %s: %w", p.Name, err), terminal: true}
	}
	return plan, nil
}

// gitTag is the tag of a tag Build.
func gitTag(b *ferryv1.Build) string {
	if b.Spec.Trigger.Tag != "" {
		return b.Spec.Trigger.Tag
	}
	if tag, ok := strings.CutPrefix(b.Spec.Ref, "refs/tags/"); ok {
		return tag
	}
	return ""
}

func shortSHA(sha string) string {
	if len(sha) > 12 {
		return sha[:12]
	}
	return sha
}
