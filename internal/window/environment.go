package window

import (
	"fmt"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// ForEnvironment gathers what decides whether env lets a rollout start: its windows, its freezes,
// its lock (a freeze with no end) and the cluster-wide Freezes among clusterFreezes that select
// it. namespaceLabels are the labels of the Release's namespace, for Freezes with a namespace
// selector; nil applies those Freezes to every namespace. A window that cannot be parsed is an
// error naming its field (admission refuses those; the caller keeps the Environment closed).
func ForEnvironment(env *ferryv1.Environment, clusterFreezes []ferryv1.Freeze, namespaceLabels labels.Set) ([]Window, []Freeze, error) {
	windows := make([]Window, 0, len(env.Spec.Windows))
	for i, w := range env.Spec.Windows {
		parsed, err := Parse(w)
		if err != nil {
			return nil, nil, fmt.Errorf("spec.windows[%d] (%s) of environment %s is invalid: %w", i, w.Name, env.Name, err)
		}
		windows = append(windows, parsed)
	}
	var freezes []Freeze
	if env.Spec.Locked {
		freezes = append(freezes, Freeze{Kind: Lock, Name: "locked", Reason: env.Spec.LockReason})
	}
	for _, f := range env.Spec.Freezes {
		freezes = append(freezes, Freeze{Kind: EnvironmentFreeze, Name: f.Name, Start: f.Start.Time, End: timeOf(f.End), Reason: f.Reason})
	}
	for i := range clusterFreezes {
		f := &clusterFreezes[i]
		if !f.DeletionTimestamp.IsZero() || !Selects(f, env, namespaceLabels) {
			continue
		}
		fr := Freeze{Kind: ClusterFreeze, Name: f.Name, Start: f.Spec.Start.Time, End: timeOf(f.Spec.End), Reason: f.Spec.Reason}
		if f.Spec.NamespaceSelector != nil {
			fr.Namespaces = metav1.FormatLabelSelector(f.Spec.NamespaceSelector)
		}
		freezes = append(freezes, fr)
	}
	return windows, freezes, nil
}

// Selects reports whether a cluster-wide Freeze stops env for a Release in a namespace with
// namespaceLabels (nil: any namespace). A selector that cannot be read selects: a freeze fails
// closed.
func Selects(f *ferryv1.Freeze, env *ferryv1.Environment, namespaceLabels labels.Set) bool {
	if !matches(&f.Spec.EnvironmentSelector, labels.Set(env.Labels)) {
		return false
	}
	return f.Spec.NamespaceSelector == nil || namespaceLabels == nil || matches(f.Spec.NamespaceSelector, namespaceLabels)
}

func matches(sel *metav1.LabelSelector, set labels.Set) bool {
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		return true
	}
	return s.Matches(set)
}

func timeOf(t *metav1.Time) (out time.Time) {
	if t == nil {
		return out
	}
	return t.Time
}
