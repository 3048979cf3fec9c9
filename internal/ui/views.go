package ui

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/standing"
	"github.com/ferryci/ferry/internal/ui/auth"
)

// snapshot is what pages are made from: objects from the manager's cache, only in the namespaces
// where the signed-in person may list them.
type snapshot struct {
	releases  []ferryv1.Release
	approvals []ferryv1.Approval
	projects  []ferryv1.Project
	builds    []ferryv1.Build
	envs      map[string]*ferryv1.Environment
}

type loadSet struct{ releases, approvals, projects, builds bool }

// load reads what a page needs.
func (s *Server) load(ctx context.Context, id auth.Identity, want loadSet) (*snapshot, error) {
	snap := &snapshot{envs: map[string]*ferryv1.Environment{}}
	var envs ferryv1.EnvironmentList
	if err := s.reader.List(ctx, &envs); err != nil {
		return nil, fmt.Errorf("failed to list Environments: %w", err)
	}
	for i := range envs.Items {
		snap.envs[envs.Items[i].Name] = &envs.Items[i]
	}
	if want.releases {
		var list ferryv1.ReleaseList
		if err := s.reader.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("failed to list Releases: %w", err)
		}
		snap.releases = visibleItems(ctx, s.access, id, "releases", list.Items)
	}
	if want.approvals {
		var list ferryv1.ApprovalList
		if err := s.reader.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("failed to list Approvals: %w", err)
		}
		snap.approvals = visibleItems(ctx, s.access, id, "approvals", list.Items)
	}
	if want.projects {
		var list ferryv1.ProjectList
		if err := s.reader.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("failed to list Projects: %w", err)
		}
		snap.projects = visibleItems(ctx, s.access, id, "projects", list.Items)
	}
	if want.builds {
		var list ferryv1.BuildList
		if err := s.reader.List(ctx, &list); err != nil {
			return nil, fmt.Errorf("failed to list Builds: %w", err)
		}
		snap.builds = visibleItems(ctx, s.access, id, "builds", list.Items)
	}
	return snap, nil
}

// visibleItems keeps the items in namespaces where id may list resource.
func visibleItems[T any, PT interface {
	*T
	client.Object
}](ctx context.Context, a *accessCache, id auth.Identity, resource string, items []T) []T {
	namespaces := make([]string, 0, len(items))
	for i := range items {
		namespaces = append(namespaces, PT(&items[i]).GetNamespace())
	}
	ok := a.visible(ctx, id, resource, namespaces)
	out := items[:0:0]
	for i := range items {
		if ok[PT(&items[i]).GetNamespace()] {
			out = append(out, items[i])
		}
	}
	return out
}

func (snap *snapshot) release(ns, name string) *ferryv1.Release {
	for i := range snap.releases {
		if r := &snap.releases[i]; r.Namespace == ns && r.Name == name {
			return r
		}
	}
	return nil
}

func (snap *snapshot) project(ns, name string) *ferryv1.Project {
	for i := range snap.projects {
		if p := &snap.projects[i]; p.Namespace == ns && p.Name == name {
			return p
		}
	}
	return nil
}

// tone is how a state is shown: ok, wait, busy, bad or idle. Every state also has words, so that
// colour is never the only signal.
type tone string

const (
	toneOK   tone = "ok"
	toneWait tone = "wait"
	toneBusy tone = "busy"
	toneBad  tone = "bad"
	toneIdle tone = "idle"
)

// state is a labelled state.
type state struct {
	Label   string
	Tone    tone
	Message string
}

// gateView is one approval gate: an environment's, or the next batch's of a Batch rollout.
type gateView struct {
	Namespace, Release, Project, Environment string
	Batch                                    int32
	Image, Revision, Build                   string
	RequestedBy, TriggeredBy                 string
	WaitingSince, ExpiresAt                  *metav1.Time
	Required                                 int32
	Counted                                  []ferryv1.ApprovalRecord
	Approvals                                int
	Expired                                  bool

	// CanApprove and CanReject say what the signed-in person may do, by the webhook's rules; Why
	// says why not. The API server has the last word either way.
	CanApprove, CanReject bool
	Why                   string
	// Mine is the person's own decision, when they made one.
	Mine *ferryv1.Approval

	// Error is the API server's answer to a decision that was refused, verbatim; Comment keeps
	// what the person wrote.
	Error, Comment string
}

// ID is the gate's HTML id.
func (g gateView) ID() string {
	return fmt.Sprintf("gate-%s-%s-%s-%d", g.Namespace, g.Release, g.Environment, g.Batch)
}

// Key identifies the gate in forms.
func (g gateView) key() string {
	return fmt.Sprintf("%s/%s/%s/%d", g.Namespace, g.Release, g.Environment, g.Batch)
}

// openGates lists the gates of a Release that wait for decisions, and expired ones that wait to be
// re-requested.
func openGates(rel *ferryv1.Release) []gateView {
	if rel.Status.CompletionTime != nil {
		return nil
	}
	var out []gateView
	for i := range rel.Status.Environments {
		es := &rel.Status.Environments[i]
		base := gateView{Namespace: rel.Namespace, Release: rel.Name, Project: rel.Spec.Project, Environment: es.Name, Image: rel.Spec.Image, Revision: rel.Spec.Revision, Build: rel.Spec.Build, RequestedBy: rel.Spec.RequestedBy}
		c := meta.FindStatusCondition(es.Conditions, ferryv1.ApprovedCondition)
		waiting := c != nil && c.Status == metav1.ConditionUnknown && c.Reason == ferryv1.WaitingForApprovalReason
		expired := c != nil && c.Status == metav1.ConditionFalse && c.Reason == ferryv1.ExpiredReason && es.CompletionTime == nil
		if waiting || expired {
			g := base
			g.Expired = expired
			if es.Gate != nil {
				g.WaitingSince, g.ExpiresAt, g.Required, g.Counted = es.Gate.WaitingSince, es.Gate.ExpiresAt, es.Gate.RequiredApprovals, es.Gate.Approvals
			}
			if g.WaitingSince == nil {
				g.WaitingSince = &c.LastTransitionTime
			}
			out = append(out, g)
		}
		seen := map[int32]bool{}
		for _, cl := range es.Clusters {
			c := meta.FindStatusCondition(cl.Conditions, ferryv1.RolledOutCondition)
			if c == nil || c.Status != metav1.ConditionUnknown || c.Reason != ferryv1.WaitingForApprovalReason || seen[cl.Batch+1] {
				continue
			}
			seen[cl.Batch+1] = true
			g := base
			g.Batch, g.Required, g.WaitingSince = cl.Batch+1, 1, &c.LastTransitionTime
			out = append(out, g)
		}
	}
	return out
}

// decorate fills in what a gate looks like to id: counted approvals, their own decision, what they
// may do.
func (snap *snapshot) decorate(g *gateView, id auth.Identity, now metav1.Time) {
	env := snap.envs[g.Environment]
	var policy *ferryv1.ApprovalPolicy
	if env != nil {
		policy = env.Spec.Approval
	}
	if g.Required == 0 {
		g.Required = approval.MinApprovals(policy)
	}
	for _, rec := range g.Counted {
		if rec.Decision == ferryv1.DecisionApprove {
			g.Approvals++
		}
	}
	for i := range snap.approvals {
		a := &snap.approvals[i]
		if a.Namespace == g.Namespace && a.Spec.Release == g.Release && a.Spec.Environment == g.Environment && a.Spec.Batch == g.Batch && !a.Spec.BreakGlass && a.Spec.Approver != nil && a.Spec.Approver.Username == id.User {
			g.Mine = a
		}
	}
	for i := range snap.builds {
		if b := &snap.builds[i]; b.Namespace == g.Namespace && b.Name == g.Build {
			g.TriggeredBy = b.Spec.Trigger.User
		}
	}
	g.Expired = g.Expired || (g.ExpiresAt != nil && now.After(g.ExpiresAt.Time))
	if g.Batch > 0 && (env == nil || env.Spec.Approval == nil) {
		// A batch gate without a policy: whoever RBAC lets create Approvals decides.
		policy = nil
	}
	g.CanApprove, g.CanReject, g.Why = mayDecide(policy, g.Environment, id, approval.Subject{RequestedBy: g.RequestedBy, Triggers: []approval.Trigger{{Build: g.Build, Named: true, User: g.TriggeredBy}}})
	switch {
	case g.Expired:
		g.CanApprove, g.CanReject, g.Why = false, false, "The gate expired: re-request it on the Release's page"
	case g.Mine != nil:
		g.CanApprove, g.CanReject, g.Why = false, false, fmt.Sprintf("You decided already: %s", strings.ToLower(string(g.Mine.Spec.Decision)))
	}
}

// waitingData is the Waiting for me page.
type waitingData struct {
	Mine   []gateView
	Others []gateView
}

func (snap *snapshot) waiting(id auth.Identity, now metav1.Time) waitingData {
	var d waitingData
	for i := range snap.releases {
		for _, g := range openGates(&snap.releases[i]) {
			snap.decorate(&g, id, now)
			if g.CanApprove || g.CanReject {
				d.Mine = append(d.Mine, g)
			} else {
				d.Others = append(d.Others, g)
			}
		}
	}
	oldestFirst := func(a, b gateView) int {
		return cmp.Or(a.WaitingSince.Compare(b.WaitingSince.Time), cmp.Compare(a.key(), b.key()))
	}
	slices.SortFunc(d.Mine, oldestFirst)
	slices.SortFunc(d.Others, oldestFirst)
	return d
}

// envState says where a Release stands in one environment.
func envState(es *ferryv1.ReleaseEnvironmentStatus) state {
	s := standing.Of(es)
	switch s.State {
	case standing.Pending:
		return state{"Pending", toneIdle, s.Message}
	case standing.RolledOut:
		return state{"Rolled out", toneOK, s.Message}
	case standing.Rejected:
		return state{"Rejected", toneBad, s.Message}
	case standing.Expired:
		return state{"Approval expired", toneBad, s.Message}
	case standing.WaitingForApproval:
		return state{"Waiting for approval", toneWait, s.Message}
	case standing.WaitingBetweenBatches:
		return state{"Waiting for approval between batches", toneWait, s.Message}
	case standing.RollingOut:
		return state{"Rolling out", toneBusy, s.Message}
	case standing.WaitingForWindow:
		return state{"Waiting for window" + opensAt(s.OpensAt), toneWait, s.Message}
	case standing.Frozen:
		return state{"Frozen" + opensAt(s.OpensAt), toneWait, s.Message}
	}
	if s.Stopped {
		return state{splitCamel(s.Reason), toneBad, s.Message}
	}
	return state{splitCamel(s.Reason), toneIdle, s.Message}
}

// opensAt is ", opens at <time>" for a known opening time, in UTC; "" when it is not known.
func opensAt(t *metav1.Time) string {
	if t == nil {
		return ""
	}
	return ", opens at " + t.UTC().Format("2006-01-02 15:04 MST")
}

// clusterState says where a rollout stands on one cluster.
func clusterState(cl *ferryv1.ClusterRolloutStatus) state {
	c := meta.FindStatusCondition(cl.Conditions, ferryv1.RolledOutCondition)
	switch {
	case c == nil:
		return state{"Pending", toneIdle, ""}
	case c.Status == metav1.ConditionTrue:
		return state{"Healthy", toneOK, c.Message}
	case c.Status == metav1.ConditionUnknown && c.Reason == ferryv1.WaitingForApprovalReason:
		return state{"Waiting for approval", toneWait, c.Message}
	case c.Status == metav1.ConditionUnknown:
		return state{"Rolling out", toneBusy, c.Message}
	}
	return state{splitCamel(c.Reason), toneBad, c.Message}
}

// readyState says where an object stands from its Ready condition.
func readyState(conds []metav1.Condition) state {
	c := meta.FindStatusCondition(conds, ferryv1.ReadyCondition)
	switch {
	case c == nil:
		return state{"Pending", toneIdle, ""}
	case c.Status == metav1.ConditionTrue:
		return state{splitCamel(c.Reason), toneOK, c.Message}
	case c.Status == metav1.ConditionFalse:
		return state{splitCamel(c.Reason), toneBad, c.Message}
	case c.Reason == ferryv1.WaitingForApprovalReason:
		return state{"Waiting for approval", toneWait, c.Message}
	}
	return state{splitCamel(c.Reason), toneBusy, c.Message}
}

// splitCamel turns a condition reason into words: RolloutFailed → "Rollout failed".
func splitCamel(s string) string {
	var b strings.Builder
	for i, r := range s {
		if i > 0 && r >= 'A' && r <= 'Z' {
			b.WriteByte(' ')
			r += 'a' - 'A'
		}
		b.WriteRune(r)
	}
	return b.String()
}
