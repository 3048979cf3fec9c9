package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/dev"
	"github.com/ferryci/ferry/internal/testutil"
)

// previewTimeout bounds a preview's rollout and its removal (a namespace on a real node goes
// when its pods have stopped).
const previewTimeout = 5 * time.Minute

// openedMR is how `ferry dev mr open` names the merge request it opened.
var openedMR = regexp.MustCompile(`Opened merge request !(\d+)`)

// mergeRequestPreview is the merge request phase of the flow, on a project with previews whose
// main already rolled out to dev (its build cache is warm): a developer opens a merge request,
// Ferry builds its head and deploys it to the merge request's preview, which answers on the real
// node with that commit and is announced by a note; a /retest comment is answered by Ferry
// (the commit's Build passed: skipped); a maintainer merges, main moves to the head, the preview
// and its namespace go, and the main Build's rollout to dev is recorded as a GitLab deployment.
func mergeRequestPreview(t *testing.T, ferry, root, dataDir string, hub client.Client, ep *dev.Endpoints) {
	t.Helper()
	started := time.Now()
	project := ""
	for name, p := range ep.Projects {
		if p.Preview {
			project = name
		}
	}
	if project == "" {
		t.Fatalf("no project of ferry dev has previews: %+v", ep.Projects)
	}
	p := ep.Projects[project]
	bob := ep.Users["bob"].GitLabToken

	out := runFerry(t, ferry, root, "dev", "mr", "open", project, "--data-dir", dataDir, "-m", "e2e: a merge request of "+project)
	m := openedMR.FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("ferry dev mr open did not say which merge request it opened:\n%s", out)
	}
	iid, _ := strconv.ParseInt(m[1], 10, 64)
	var mr struct {
		SHA          string `json:"sha"`
		State        string `json:"state"`
		SourceBranch string `json:"source_branch"`
	}
	gitlabGet(t, ep, bob, fmt.Sprintf("/projects/%d/merge_requests/%d", p.GitLabProjectID, iid), &mr)
	if mr.State != "opened" || len(mr.SHA) != 40 || mr.SourceBranch == "main" {
		t.Fatalf("merge request !%d = %+v, want an opened one from a new branch", iid, mr)
	}
	if p.PreviewURLTemplate != "" && !strings.Contains(out, p.PreviewURL(iid)) {
		t.Errorf("ferry dev mr open did not print the preview URL %s:\n%s", p.PreviewURL(iid), out)
	}

	// The Merge Request Hook becomes a Build of the head, and its image a preview.
	var b *ferryv1.Build
	testutil.EventuallyWithin(t, time.Minute, "the Build of !"+m[1], func() (bool, error) {
		b = buildOfKind(t, hub, ep.Namespace, project, mr.SHA, ferryv1.TriggerMergeRequest)
		return b != nil, nil
	})
	b = waitBuildSucceeded(t, hub, b)
	t.Logf("merge request to image: %s", time.Since(started).Round(100*time.Millisecond))
	pv := &ferryv1.Preview{}
	key := types.NamespacedName{Namespace: ep.Namespace, Name: ferryv1.PreviewName(project, iid)}
	testutil.EventuallyWithin(t, previewTimeout, "preview "+key.Name+" Ready", func() (bool, error) {
		if err := hub.Get(context.Background(), key, pv); err != nil {
			return false, err
		}
		ready := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.ReadyCondition)
		return ready != nil && ready.Status == metav1.ConditionTrue && pv.Spec.Build == b.Name, fmt.Errorf("preview status %+v", pv.Status)
	})
	if pv.Status.Namespace != key.Name {
		t.Errorf("preview namespace %q, want %s", pv.Status.Namespace, key.Name)
	}
	t.Logf("merge request to preview: %s", time.Since(started).Round(100*time.Millisecond))
	if ep.Nodes == dev.NodesReal {
		waitAppAnswers(t, p.PreviewURL(iid)+"version", "commit "+mr.SHA[:8])
	} else {
		t.Logf("nodes are simulated here: the preview %s is not asked for an answer", key.Name)
	}
	notesPath := fmt.Sprintf("/projects/%d/merge_requests/%d/notes?sort=asc&per_page=100", p.GitLabProjectID, iid)
	waitNote(t, ep, bob, notesPath, "the preview note", func(body string) bool {
		return strings.Contains(body, "**Preview** is ready") && strings.Contains(body, "`"+pv.Status.Namespace+"`") && strings.Contains(body, mr.SHA[:12])
	})

	// /retest on a commit whose Build passed is skipped, and Ferry says how to force it.
	runFerry(t, ferry, root, "dev", "mr", "comment", project, m[1], "/retest", "--data-dir", dataDir)
	waitNote(t, ep, bob, notesPath, "Ferry's reply to /retest", func(body string) bool {
		return strings.Contains(body, "skipped") && strings.Contains(body, "/retest force")
	})

	// A maintainer merges: main moves to the head, the preview goes, main rolls out to dev.
	runFerry(t, ferry, root, "dev", "mr", "merge", project, m[1], "--data-dir", dataDir)
	if head := remoteHead(t, p.RepoURL); head != mr.SHA {
		t.Errorf("after the merge main is at %s, want the merge request's head %s", head, mr.SHA)
	}
	nonprod := kubeClient(t, ep.Clusters[pv.Status.Cluster].Kubeconfig)
	testutil.EventuallyWithin(t, previewTimeout, "preview "+key.Name+" and its namespace removed", func() (bool, error) {
		if err := hub.Get(context.Background(), key, &ferryv1.Preview{}); !apierrors.IsNotFound(err) {
			return false, fmt.Errorf("the Preview is still there (%w)", err)
		}
		err := nonprod.Get(context.Background(), types.NamespacedName{Name: pv.Status.Namespace}, &corev1.Namespace{})
		return apierrors.IsNotFound(err), fmt.Errorf("namespace %s: %w", pv.Status.Namespace, err)
	})
	var mb *ferryv1.Build
	testutil.EventuallyWithin(t, time.Minute, "the Build of main after the merge", func() (bool, error) {
		mb = buildOfKind(t, hub, ep.Namespace, project, mr.SHA, ferryv1.TriggerPush)
		return mb != nil, nil
	})
	if mb.Spec.Ref != "refs/heads/main" || mb.Spec.Trigger.User != "alice" {
		t.Errorf("the Build of the merge = %+v, want a push of main by alice", mb.Spec)
	}
	mb = waitBuildSucceeded(t, hub, mb)
	waitEnvironment(t, hub, mb.Name, "dev", ferryv1.SucceededReason)
	testutil.EventuallyWithin(t, time.Minute, "GitLab's deployment of "+mr.SHA[:8]+" to dev", func() (bool, error) {
		var deployments []struct {
			SHA    string `json:"sha"`
			Ref    string `json:"ref"`
			Status string `json:"status"`
		}
		gitlabGet(t, ep, bob, fmt.Sprintf("/projects/%d/deployments?environment=dev&per_page=100", p.GitLabProjectID), &deployments)
		for _, d := range deployments {
			if d.SHA == mr.SHA && d.Ref == "main" && d.Status == "success" {
				return true, nil
			}
		}
		return false, fmt.Errorf("deployments of dev: %+v", deployments)
	})
	t.Logf("merge request opened to merged and in dev: %s", time.Since(started).Round(100*time.Millisecond))
}

// buildOfKind finds the Build of a project's commit with a trigger kind; nil while there is none.
func buildOfKind(t testing.TB, c client.Client, ns, project, sha string, kind ferryv1.TriggerKind) *ferryv1.Build {
	t.Helper()
	var list ferryv1.BuildList
	if err := c.List(context.Background(), &list, client.InNamespace(ns), client.MatchingLabels{ferryv1.ProjectLabel: project}); err != nil {
		t.Fatal(err)
	}
	for i := range list.Items {
		if b := &list.Items[i]; b.Spec.Revision == sha && b.Spec.Trigger.Kind == kind {
			return b
		}
	}
	return nil
}

// waitNote waits for a note of Ferry's bot on a merge request that match accepts.
func waitNote(t testing.TB, ep *dev.Endpoints, token, path, what string, match func(body string) bool) {
	t.Helper()
	testutil.EventuallyWithin(t, 2*time.Minute, what, func() (bool, error) {
		var notes []struct {
			Body   string `json:"body"`
			Author struct {
				Username string `json:"username"`
			} `json:"author"`
		}
		gitlabGet(t, ep, token, path, &notes)
		for _, n := range notes {
			if n.Author.Username == "ferry-bot" && match(n.Body) {
				return true, nil
			}
		}
		return false, fmt.Errorf("notes: %+v", notes)
	})
}

// gitlabGet reads the fake GitLab's REST API.
func gitlabGet(t testing.TB, ep *dev.Endpoints, token, path string, out any) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, ep.GitLabURL+"/api/v4"+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("PRIVATE-TOKEN", token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %s", path, resp.StatusCode, body)
	}
	if err := json.Unmarshal(body, out); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, body)
	}
}
