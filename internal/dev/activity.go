package dev

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	toolscache "k8s.io/client-go/tools/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/standing"
)

// watchActivity prints one line whenever a Build or Release of the examples' namespace changes
// in a way a person cares about: a Build starts, succeeds or fails; a Release reaches, waits at or
// leaves an environment. It reads the manager's cache, so it costs the API server nothing.
func (e *env) watchActivity(ctx context.Context) {
	a := &activity{out: e.out, seen: map[string]string{}}
	for _, obj := range []client.Object{&ferryv1.Build{}, &ferryv1.Release{}} {
		inf, err := e.mgr.GetCache().GetInformer(ctx, obj)
		if err != nil {
			e.out.printf("  (no activity lines: %v)", err)
			return
		}
		_, _ = inf.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
			AddFunc:    func(o any) { a.observe(o, true) },
			UpdateFunc: func(_, o any) { a.observe(o, false) },
		})
	}
}

type activity struct {
	out  *progress
	mu   sync.Mutex
	seen map[string]string
}

// observe prints what changed since the object was last seen. Objects that already existed when
// ferry dev started are remembered, not printed.
func (a *activity) observe(o any, initial bool) {
	var key, line string
	switch obj := o.(type) {
	case *ferryv1.Build:
		if obj.Namespace != Namespace {
			return
		}
		key, line = "build/"+obj.Name, buildLine(obj)
	case *ferryv1.Release:
		if obj.Namespace != Namespace {
			return
		}
		key, line = "release/"+obj.Name, releaseLine(obj)
	default:
		return
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	prev, known := a.seen[key]
	a.seen[key] = line
	if line == prev || (initial && known) || line == "" {
		return
	}
	if initial && time.Since(objectCreated(o)) > time.Minute {
		return
	}
	a.out.printf("  %s %s", time.Now().Format("15:04:05"), line)
}

func objectCreated(o any) time.Time {
	if obj, ok := o.(metav1.Object); ok {
		return obj.GetCreationTimestamp().Time
	}
	return time.Time{}
}

// buildLine says where a Build stands.
func buildLine(b *ferryv1.Build) string {
	ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	head := fmt.Sprintf("Build %s (%s %s)", b.Name, strings.TrimPrefix(b.Spec.Ref, "refs/heads/"), short(b.Spec.Revision))
	switch {
	case ready == nil:
		return head + ": created"
	case ready.Status == metav1.ConditionTrue:
		took := ""
		if b.Status.StartTime != nil && b.Status.CompletionTime != nil {
			took = fmt.Sprintf(" in %s", b.Status.CompletionTime.Sub(b.Status.StartTime.Time))
		}
		return fmt.Sprintf("%s: succeeded%s, image %s", head, took, b.Status.Image)
	case ready.Status == metav1.ConditionFalse:
		return fmt.Sprintf("%s: %s: %s", head, ready.Reason, firstLine(ready.Message))
	}
	step := ""
	for _, s := range b.Status.Steps {
		if s.State == "Running" {
			step = ", step " + s.Name
		}
	}
	return fmt.Sprintf("%s: %s%s", head, ready.Reason, step)
}

// releaseLine says where a Release stands in each environment.
func releaseLine(r *ferryv1.Release) string {
	var envs []string
	for i := range r.Status.Environments {
		es := &r.Status.Environments[i]
		envs = append(envs, es.Name+" "+environmentState(es))
	}
	if len(envs) == 0 {
		return ""
	}
	return fmt.Sprintf("Release %s: %s", r.Name, strings.Join(envs, ", "))
}

// environmentState is a few words for where a Release stands in one environment.
func environmentState(es *ferryv1.ReleaseEnvironmentStatus) string {
	s := standing.Of(es)
	switch s.State {
	case standing.WaitingForApproval:
		if s.Gate != nil {
			return fmt.Sprintf("waiting for approval (%d/%d)", s.Gate.Approved(), s.Gate.RequiredApprovals)
		}
		return "waiting for approval"
	case standing.Other:
		return s.Reason
	}
	return stateWords[s.State]
}

// stateWords say the other states in words.
var stateWords = map[standing.State]string{
	standing.Pending:                       "pending",
	standing.WaitingForPreviousEnvironment: "pending",
	standing.WaitingBetweenBatches:         "waiting for approval",
	standing.Locked:                        "locked",
	standing.RollingOut:                    "rolling out",
	standing.RollingBack:                   "rolling back",
	standing.RolledOut:                     "rolled out",
	standing.RolledBack:                    "rolled back",
	standing.RolloutFailed:                 "rollout failed",
	standing.Rejected:                      "rejected",
	standing.Expired:                       "approval expired",
	standing.Superseded:                    "superseded",
	standing.Paused:                        "paused",
	standing.WaitingForWindow:              "waiting for a deploy window",
	standing.Frozen:                        "frozen",
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return line
}
