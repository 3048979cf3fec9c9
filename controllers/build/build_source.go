package build

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

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
// A terminal one fails the Build; others are retried: after wait when it is set (waiting for a
// git server), else with the controller's backoff.
type sourceError struct {
	reason   string
	err      error
	terminal bool
	wait     time.Duration
}

func (e *sourceError) Error() string { return e.err.Error() }
func (e *sourceError) Unwrap() error { return e.err }

// waitMessage is the condition message of a Build that waits for a git server.
type waitMessage string

func (m waitMessage) Error() string { return string(m) }

// fileCache keeps pipeline files by Project, URL, commit and path: a commit never changes, so many
// Builds of one commit (retries, rebuilds, a benchmark) read it from git once. Keying by the
// Project's UID keeps one Project from reading a file another Project's credentials fetched.
type fileCache struct {
	mu       sync.Mutex
	entries  map[string][]byte
	order    []string
	inflight map[string]*fileFetch
}

// fileFetch is a read in progress; data and err are set when done is closed.
type fileFetch struct {
	done chan struct{}
	data []byte
	err  error
}

const fileCacheSize = 512

// errFetchInProgress: another Build is reading the same file and did not finish within
// followerWait.
var errFetchInProgress = errors.New("another Build is reading the same file")

// get returns the cached file or reads it. A Build that finds another one reading the same file
// waits for it, but at most followerWait: a read from a hung server must not hold a worker of
// every Build of that commit.
func (c *fileCache) get(ctx context.Context, key string, fetch func(context.Context) ([]byte, error)) ([]byte, error) {
	c.mu.Lock()
	if data, ok := c.entries[key]; ok {
		c.mu.Unlock()
		return data, nil
	}
	if f, ok := c.inflight[key]; ok {
		c.mu.Unlock()
		timer := time.NewTimer(followerWait)
		defer timer.Stop()
		select {
		case <-f.done:
			return f.data, f.err
		case <-timer.C:
			return nil, errFetchInProgress
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
	if c.inflight == nil {
		c.inflight = map[string]*fileFetch{}
	}
	f := &fileFetch{done: make(chan struct{})}
	c.inflight[key] = f
	c.mu.Unlock()

	f.data, f.err = fetch(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.inflight, key)
	close(f.done)
	if f.err != nil {
		return nil, f.err
	}
	if c.entries == nil {
		c.entries = map[string][]byte{}
	}
	if _, ok := c.entries[key]; !ok {
		c.entries[key] = f.data
		c.order = append(c.order, key)
		if len(c.order) > fileCacheSize {
			delete(c.entries, c.order[0])
			c.order = c.order[1:]
		}
	}
	return f.data, nil
}

// readPipelineFile reads and parses the Project's pipeline file at the Build's commit. A missing or
// invalid file is a *pipelinefile.Error (or ErrorList); failing to fetch, or waiting for a turn
// to, is a *sourceError.
func (r *Reconciler) readPipelineFile(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (*pipelinefile.File, error) {
	path, data, err := r.readPipelineData(ctx, b, p)
	if err != nil {
		return nil, err
	}
	return pipelinefile.Parse(path, data)
}

// readPipelineData reads the pipeline file's bytes at the Build's commit, through the cache, with
// readPipelineFile's errors.
func (r *Reconciler) readPipelineData(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (string, []byte, error) {
	path := p.Spec.PipelineFile
	if path == "" {
		path = ferryv1.DefaultPipelineFile
	}
	req := gitsource.Request{URL: p.Spec.Repository.CloneURL, Revision: b.Spec.Revision, Ref: b.Spec.Ref, Limits: r.GitLimits}
	host, err := gitsource.Host(req.URL)
	if err != nil {
		return "", nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: fmt.Errorf("cannot fetch from Project %s: %w", p.Name, err)}
	}
	if ref := p.Spec.Repository.CredentialsSecretRef; ref != nil {
		creds, err := r.credentials(ctx, p.Namespace, ref.Name)
		if err != nil {
			return "", nil, err
		}
		req.Credentials = creds
	}
	key := strings.Join([]string{string(p.UID), req.URL, req.Revision, path}, "\x00")
	data, err := r.files.get(ctx, key, func(ctx context.Context) ([]byte, error) {
		release, wait := r.slots.acquire(host, b.Namespace, r.fetchShare(), r.now().Time)
		if wait != nil {
			return nil, &sourceError{reason: ferryv1.WaitingForGitServerReason, err: waitMessage(wait.message), wait: wait.after}
		}
		defer release()
		data, err := r.readSource(ctx, req, path)
		switch {
		case errors.Is(err, gitsource.ErrTimeout):
			// This Build shows the timeout until its next attempt, after the server's backoff;
			// other Builds of the server wait without trying.
			backoff := r.slots.timedOut(host, r.hostBackoff(), r.now().Time)
			return nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: err, wait: backoff}
		case ctx.Err() == nil:
			r.slots.answered(host)
		}
		return data, err
	})
	var se *sourceError
	var missing *gitsource.FileNotFoundError
	switch {
	case err == nil:
		return path, data, nil
	case errors.As(err, &se):
		return "", nil, se
	case errors.Is(err, errFetchInProgress):
		return "", nil, &sourceError{reason: ferryv1.WaitingForGitServerReason, wait: jitter(fetchWait),
			err: waitMessage(fmt.Sprintf("waiting for another Build that reads %s at %s from git server %s", path, shortSHA(b.Spec.Revision), host))}
	case errors.As(err, &missing):
		return "", nil, pipelinefile.ErrorList{{File: path, Message: fmt.Sprintf("no pipeline file in the repository at %s: add one, or set the Project's pipelineFile", shortSHA(b.Spec.Revision))}}
	case errors.Is(err, gitsource.ErrTooLarge):
		err = fmt.Errorf("%w (the manager's --git-max-fetch-bytes raises the limit)", err)
	}
	return "", nil, &sourceError{reason: ferryv1.SourceUnavailableReason, err: err}
}

// fetchShare is how many workers may fetch from one git server, or for one namespace, at once.
func (r *Reconciler) fetchShare() int {
	if r.FetchShare > 0 {
		return r.FetchShare
	}
	return max(1, r.concurrency()/2)
}

func (r *Reconciler) hostBackoff() time.Duration {
	if r.HostBackoff > 0 {
		return r.HostBackoff
	}
	return DefaultHostBackoff
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
	if now := r.now().Time; now.Before(r.catalogExpiry) {
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
	r.catalogExpiry = r.now().Add(catalogTTL)
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
