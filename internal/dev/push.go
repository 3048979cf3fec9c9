package dev

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/go-git/go-billy/v5"
	"github.com/go-git/go-billy/v5/memfs"
	"github.com/go-git/go-billy/v5/util"
	"github.com/go-git/go-git/v5"
	"github.com/go-git/go-git/v5/config"
	"github.com/go-git/go-git/v5/plumbing"
	"github.com/go-git/go-git/v5/plumbing/object"
	githttp "github.com/go-git/go-git/v5/plumbing/transport/http"
	"github.com/go-git/go-git/v5/storage/memory"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
)

// changelog is the file `ferry dev push` adds a line to: a change that is the developer's, in
// the repository, with nothing else touched.
const changelog = "CHANGELOG.md"

// PushOptions configure Push.
type PushOptions struct {
	// DataDir is the running local environment's data directory. Default DefaultDataDir.
	DataDir string
	// Project is the example app to change.
	Project string
	// Message is the commit message. Default "Change PROJECT (ferry dev push)".
	Message string
	// Out receives what happened and what to run next. Default os.Stdout.
	Out io.Writer
	// Command is how the output names the ferry binary. Default "ferry".
	Command string
	// Wait follows the Build and its Release until the Release rolled out to the first
	// environment (or failed), and says how long each took.
	Wait bool
	// Timeout bounds the wait for the Build to appear and, with Wait, for the rollout. Default 10m.
	Timeout time.Duration
	// Health, when set, also changes the app's health check: HealthBroken makes /healthz answer 500
	// (a commit whose rollout must fail and be rolled back), HealthOK repairs it.
	Health string
}

// What PushOptions.Health does to the app's health check.
const (
	HealthBroken = "broken"
	HealthOK     = "ok"
)

// PushResult is what a push started.
type PushResult struct {
	// Revision is the pushed commit.
	Revision string
	// Pushed is when the push began.
	Pushed time.Time
	// Build is the Build the receiver created for it.
	Build string
	// Release is the Release that carries the Build's image (with Wait).
	Release string
	// Image is the Build's image, repository@sha256:… (with Wait).
	Image string
	// BuildDuration is from the push to the image (with Wait); DevDuration from the push to the
	// rollout in the first environment.
	BuildDuration, DevDuration time.Duration
}

// Push commits a change to an example app's repository on the git server of a running local
// environment and pushes it as the developer. The git server tells the fake GitLab, which sends
// GitLab's Push Hook to Ferry's receiver: the push becomes a Build, an image, a Release that rolls
// out to dev, and gates that wait in staging and prod.
func Push(ctx context.Context, opts PushOptions) (*PushResult, error) {
	if opts.DataDir == "" {
		opts.DataDir = DefaultDataDir
	}
	if opts.Out == nil {
		opts.Out = os.Stdout
	}
	if opts.Command == "" {
		opts.Command = "ferry"
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Minute
	}
	if opts.Message == "" {
		opts.Message = "Change " + opts.Project + " (ferry dev push)"
		switch opts.Health {
		case HealthBroken:
			opts.Message = "Break the health check of " + opts.Project + " (ferry dev push --unhealthy)"
		case HealthOK:
			opts.Message = "Repair the health check of " + opts.Project + " (ferry dev push --healthy)"
		}
	}
	ep, err := ReadEndpoints(opts.DataDir)
	if err != nil {
		return nil, err
	}
	proj, err := ep.project(opts.Project)
	if err != nil {
		return nil, err
	}
	auth, err := ep.developerGitAuth()
	if err != nil {
		return nil, err
	}
	pushed := time.Now()
	sha, err := commitAndPush(ctx, proj.RepoURL, "main", opts.Message, opts.Health, auth)
	if err != nil {
		return nil, err
	}
	res := &PushResult{Revision: sha, Pushed: pushed}
	fmt.Fprintf(opts.Out, "Pushed %s to %s (main) as %s: %q.\n", short(sha), proj.GitLabProject, developer, opts.Message)

	c, err := hubClient(ep.Kubeconfig)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	b, err := waitFor(ctx, "the Build of "+short(sha), func() (*ferryv1.Build, error) {
		return buildOf(ctx, c, ep.Namespace, opts.Project, sha)
	})
	if err != nil {
		return nil, err
	}
	res.Build = b.Name
	kubeconfig := rel(ep.Kubeconfig)
	fmt.Fprintf(opts.Out, "GitLab sent its Push Hook; Ferry's receiver created Build %s in namespace %s.\n", b.Name, ep.Namespace)
	if !opts.Wait {
		fmt.Fprintf(opts.Out, "Follow it:\n")
		fmt.Fprintf(opts.Out, "  %s get builds --kubeconfig %s          # READY True when the image is pushed\n", opts.Command, kubeconfig)
		fmt.Fprintf(opts.Out, "  tail -f %s/%s-%s.log\n", rel(ep.BuildLogs), b.Name, b.UID)
		fmt.Fprintf(opts.Out, "  %s get releases --kubeconfig %s        # then the Release %s: dev, then staging and prod wait for approvals\n", opts.Command, kubeconfig, b.Name)
		if ep.UIURL != "" {
			fmt.Fprintf(opts.Out, "  %s/builds/%s/%s\n", ep.UIURL, ep.Namespace, b.Name)
		}
		return res, nil
	}
	return res, follow(ctx, c, ep, opts, b, pushed, res)
}

// follow waits for the Build's image and its Release's rollout to the first environment.
func follow(ctx context.Context, c client.Client, ep *Endpoints, opts PushOptions, b *ferryv1.Build, pushed time.Time, res *PushResult) error {
	b, err := waitFor(ctx, "Build "+b.Name+" to finish", func() (*ferryv1.Build, error) {
		cur := &ferryv1.Build{}
		if err := c.Get(ctx, client.ObjectKeyFromObject(b), cur); err != nil {
			return nil, err
		}
		if ready := meta.FindStatusCondition(cur.Status.Conditions, ferryv1.ReadyCondition); ready != nil && ready.Status != metav1.ConditionUnknown {
			return cur, nil
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready.Status != metav1.ConditionTrue {
		return fmt.Errorf("build %s failed: %s: %s (log: %s)", b.Name, ready.Reason, ready.Message, b.Status.LogURL)
	}
	res.Image, res.BuildDuration = b.Status.Image, time.Since(pushed)
	fmt.Fprintf(opts.Out, "Build %s succeeded %s after the push: %s\n", b.Name, roundDuration(res.BuildDuration), b.Status.Image)
	r, err := waitFor(ctx, "the Release of "+b.Name+" to roll out to its first environment", func() (*ferryv1.Release, error) {
		var list ferryv1.ReleaseList
		if err := c.List(ctx, &list, client.InNamespace(ep.Namespace), client.MatchingLabels{ferryv1.BuildLabel: b.Name}); err != nil {
			return nil, err
		}
		for i := range list.Items {
			r := &list.Items[i]
			if len(r.Status.Environments) == 0 {
				continue
			}
			first := &r.Status.Environments[0]
			ready := meta.FindStatusCondition(first.Conditions, ferryv1.ReadyCondition)
			if ready != nil && ready.Status == metav1.ConditionTrue {
				return r, nil
			}
			if ready != nil && ready.Status == metav1.ConditionFalse && !inProgress(ready.Reason) {
				if opts.Health == HealthBroken && ready.Reason == ferryv1.RolledBackReason {
					return r, nil
				}
				return nil, &finalError{fmt.Errorf("release %s stopped in %s: %s: %s", r.Name, first.Name, ready.Reason, ready.Message)}
			}
		}
		return nil, nil
	})
	if err != nil {
		return err
	}
	res.Release, res.DevDuration = r.Name, time.Since(pushed)
	first := &r.Status.Environments[0]
	appURL := ep.Projects[opts.Project].AppURLs[first.Name]
	if ready := meta.FindStatusCondition(first.Conditions, ferryv1.ReadyCondition); ready != nil && ready.Reason == ferryv1.RolledBackReason {
		fmt.Fprintf(opts.Out, "Release %s failed in %s and was rolled back %s after the push, as a broken health check should: %s\n", r.Name, first.Name, roundDuration(res.DevDuration), ready.Message)
		if appURL != "" {
			fmt.Fprintf(opts.Out, "The previous version still answers: %s\n", appURL)
		}
		return nil
	}
	fmt.Fprintf(opts.Out, "Release %s rolled out to %s %s after the push.\n", r.Name, first.Name, roundDuration(res.DevDuration))
	if appURL != "" {
		fmt.Fprintf(opts.Out, "It answers at %s\n", appURL)
	}
	for _, es := range r.Status.Environments[1:] {
		fmt.Fprintf(opts.Out, "  %s: %s\n", es.Name, environmentState(&es))
	}
	if alice, ok := ep.Users["alice"]; ok {
		fmt.Fprintf(opts.Out, "Approve it as the release manager:\n  %s approve %s --env staging --kubeconfig %s\n", opts.Command, r.Name, rel(alice.Kubeconfig))
		if ep.UIURL != "" {
			fmt.Fprintf(opts.Out, "  or in the UI: %s/releases/%s/%s (alice's sign-in link is in %s)\n", ep.UIURL, ep.Namespace, r.Name, rel(EndpointsPath(ep.DataDir)))
		}
	}
	return nil
}

// project is the endpoint of a ferry dev project, or an error that lists the projects.
func (ep *Endpoints) project(name string) (ProjectEndpoint, error) {
	proj, ok := ep.Projects[name]
	if !ok {
		known := make([]string, 0, len(ep.Projects))
		for name := range ep.Projects {
			known = append(known, name)
		}
		sort.Strings(known)
		return ProjectEndpoint{}, fmt.Errorf("no project %q in ferry dev (projects: %s)", name, strings.Join(known, ", "))
	}
	return proj, nil
}

// developerGitAuth is how the developer pushes to the git server.
func (ep *Endpoints) developerGitAuth() (*githttp.BasicAuth, error) {
	dev, ok := ep.Users[developer]
	if !ok || dev.GitPassword == "" {
		return nil, fmt.Errorf("%s has no git credentials of the developer %s", EndpointsPath(ep.DataDir), developer)
	}
	return &githttp.BasicAuth{Username: developer, Password: dev.GitPassword}, nil
}

// commitAndPush clones the repository, adds a line to its changelog (and, when health is set,
// breaks or repairs the app's health check) on top of main, commits as the developer and pushes
// the commit to branch (main, or a new branch for a merge request). It returns the new commit.
func commitAndPush(ctx context.Context, repoURL, branch, message, health string, auth *githttp.BasicAuth) (string, error) {
	fs := memfs.New()
	repo, err := git.CloneContext(ctx, memory.NewStorage(), fs, &git.CloneOptions{
		URL: repoURL, ReferenceName: plumbing.NewBranchReferenceName("main"), SingleBranch: true,
	})
	if err != nil {
		return "", fmt.Errorf("failed to clone %s (is ferry dev running?): %w", repoURL, err)
	}
	old := ""
	if f, err := fs.Open(changelog); err == nil {
		data, _ := io.ReadAll(f)
		_ = f.Close()
		old = string(data)
	}
	if old == "" {
		old = "# Changes\n\n"
	}
	f, err := fs.Create(changelog)
	if err != nil {
		return "", err
	}
	if _, err := fmt.Fprintf(f, "%s- %s %s\n", old, time.Now().UTC().Format(time.RFC3339), message); err != nil {
		return "", err
	}
	if err := f.Close(); err != nil {
		return "", err
	}
	wt, err := repo.Worktree()
	if err != nil {
		return "", err
	}
	if _, err := wt.Add(changelog); err != nil {
		return "", err
	}
	if health != "" {
		changed, err := setHealth(fs, health)
		if err != nil {
			return "", fmt.Errorf("%s: %w", repoURL, err)
		}
		for _, p := range changed {
			if _, err := wt.Add(p); err != nil {
				return "", err
			}
		}
	}
	sig := &object.Signature{Name: developer, Email: developer + "@ferry.localhost", When: time.Now()}
	sha, err := wt.Commit(message, &git.CommitOptions{Author: sig, Committer: sig})
	if err != nil {
		return "", fmt.Errorf("failed to commit: %w", err)
	}
	refspec := config.RefSpec("refs/heads/main:refs/heads/" + branch)
	if err := repo.PushContext(ctx, &git.PushOptions{Auth: auth, RefSpecs: []config.RefSpec{refspec}}); err != nil {
		return "", fmt.Errorf("failed to push %s to %s: %w", branch, repoURL, err)
	}
	return sha.String(), nil
}

// hubClient is a client for the hub with the given kubeconfig.
func hubClient(kubeconfig string) (client.Client, error) {
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		return nil, fmt.Errorf("failed to load the hub's kubeconfig %s: %w", kubeconfig, err)
	}
	return client.New(cfg, client.Options{Scheme: manager.Scheme()})
}

// buildOf finds the Build of a project's commit, nil while there is none.
func buildOf(ctx context.Context, c client.Client, ns, project, sha string) (*ferryv1.Build, error) {
	var list ferryv1.BuildList
	if err := c.List(ctx, &list, client.InNamespace(ns), client.MatchingLabels{ferryv1.ProjectLabel: project}); err != nil {
		return nil, err
	}
	for i := range list.Items {
		if list.Items[i].Spec.Revision == sha {
			return &list.Items[i], nil
		}
	}
	return nil, nil
}

// waitFor polls get until it returns an object or an error, or ctx ends.
func waitFor[T any](ctx context.Context, what string, get func() (*T, error)) (*T, error) {
	var last error
	for {
		obj, err := get()
		if obj != nil {
			return obj, nil
		}
		var final *finalError
		if errors.As(err, &final) {
			return nil, err
		}
		if err != nil {
			last = err
		}
		select {
		case <-ctx.Done():
			if last != nil {
				return nil, fmt.Errorf("gave up waiting for %s: %w (last error: %w)", what, ctx.Err(), last)
			}
			return nil, fmt.Errorf("gave up waiting for %s: %w", what, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// inProgress reports an environment's Ready reason that the environment moves on from by itself.
func inProgress(reason string) bool {
	switch reason {
	case ferryv1.WaitingForApprovalReason, ferryv1.WaitingForPreviousEnvironmentReason, ferryv1.RollingOutReason, ferryv1.RollingBackReason:
		return true
	}
	return false
}

// finalError ends a wait at once.
type finalError struct{ error }

// healthMarks are the lines of the example apps' health checks, marked "health: ok", and what
// `ferry dev push --unhealthy` puts in their place: a handler that answers 500.
var healthMarks = []struct{ ok, broken string }{
	{`fmt.Fprintln(w, "ok") // health: ok`, `http.Error(w, "unhealthy on purpose (ferry dev push --unhealthy)", http.StatusInternalServerError) // health: broken`},
	{`self.answer(200, b"ok\n")  # health: ok`, `self.answer(500, b"unhealthy on purpose (ferry dev push --unhealthy)\n")  # health: broken`},
}

// setHealth breaks (HealthBroken) or repairs (HealthOK) the marked health checks of the files in
// fs and returns the files it changed.
func setHealth(fs billy.Filesystem, health string) ([]string, error) {
	var changed []string
	err := util.Walk(fs, "/", func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || strings.HasPrefix(path, "/.git") {
			return err
		}
		data, err := util.ReadFile(fs, path)
		if err != nil {
			return err
		}
		text := string(data)
		for _, m := range healthMarks {
			from, to := m.ok, m.broken
			if health == HealthOK {
				from, to = m.broken, m.ok
			}
			text = strings.ReplaceAll(text, from, to)
		}
		if text == string(data) {
			return nil
		}
		changed = append(changed, strings.TrimPrefix(path, "/"))
		return util.WriteFile(fs, path, []byte(text), info.Mode())
	})
	if err != nil {
		return nil, err
	}
	if len(changed) == 0 {
		want := "health: ok"
		if health == HealthOK {
			want = "health: broken"
		}
		return nil, fmt.Errorf("no health check marked %q to change (the example apps mark theirs)", want)
	}
	return changed, nil
}
