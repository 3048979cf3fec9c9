package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/duration"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/window"
)

// windowState is where one Environment's deploy windows and freezes stand now, as `ferry get
// windows -o json|yaml` prints it.
type windowState struct {
	// Environment is the Environment's name.
	Environment string `json:"environment"`
	// Open says whether a rollout may start now.
	Open bool `json:"open"`
	// Reasons say what keeps it closed.
	Reasons []string `json:"reasons,omitempty"`
	// OpensAt is when a closed Environment opens, if known.
	OpensAt *metav1.Time `json:"opensAt,omitempty"`
	// ClosesAt is when an open Environment closes next, if known.
	ClosesAt *metav1.Time `json:"closesAt,omitempty"`
	// Windows describe the Environment's deploy windows.
	Windows []string `json:"windows,omitempty"`
	// Freezes name the freezes in force or to come.
	Freezes []string `json:"freezes,omitempty"`
}

// runGetWindows prints, per Environment (or the one named), whether a rollout may start now, why
// not, and when that changes. Cluster-wide Freezes with a namespace selector are counted as if
// they applied: whether they do depends on the Release's namespace.
func runGetWindows(ctx context.Context, c client.Client, w io.Writer, name, output string) error {
	envs := &ferryv1.EnvironmentList{}
	if name != "" {
		env := &ferryv1.Environment{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return err
		}
		envs.Items = []ferryv1.Environment{*env}
	} else if err := c.List(ctx, envs); err != nil {
		return err
	}
	freezes := &ferryv1.FreezeList{}
	if err := c.List(ctx, freezes); err != nil {
		return fmt.Errorf("failed to list Freezes: %w", err)
	}
	now := clock()
	states := make([]windowState, 0, len(envs.Items))
	for i := range envs.Items {
		states = append(states, windowsOf(&envs.Items[i], freezes.Items, now))
	}
	switch output {
	case "":
	case "json":
		data, err := json.MarshalIndent(states, "", "    ")
		if err != nil {
			return err
		}
		_, err = w.Write(append(data, '\n'))
		return err
	case "yaml":
		data, err := yaml.Marshal(states)
		if err != nil {
			return err
		}
		_, err = w.Write(data)
		return err
	default:
		return fmt.Errorf("unknown output format %q: use -o json or -o yaml (or nothing for a table)", output)
	}
	if len(states) == 0 {
		_, err := fmt.Fprintln(w, "No resources found.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, "ENVIRONMENT\tNOW\tNEXT CHANGE\tWHY\tWINDOWS\tFREEZES")
	for _, s := range states {
		now, next := "open", "-"
		switch {
		case s.Open && s.ClosesAt != nil:
			next = "closes " + at(s.ClosesAt.Time, clock())
		case !s.Open && s.OpensAt != nil:
			now, next = "closed", "opens "+at(s.OpensAt.Time, clock())
		case !s.Open:
			now, next = "closed", "when a freeze is ended"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Environment, now, next, orNone(strings.Join(s.Reasons, "; ")), orNone(strings.Join(s.Windows, ", ")), orNone(strings.Join(s.Freezes, ", ")))
	}
	return tw.Flush()
}

// at is a time and how far it is from now: "2026-06-02T09:00:00Z (in 3h)".
func at(t, now time.Time) string {
	return t.UTC().Format(time.RFC3339) + " (in " + duration.HumanDuration(t.Sub(now)) + ")"
}

// windowsOf evaluates one Environment at now.
func windowsOf(env *ferryv1.Environment, freezes []ferryv1.Freeze, now time.Time) windowState {
	s := windowState{Environment: env.Name}
	for _, dw := range env.Spec.Windows {
		zone := dw.TimeZone
		if zone == "" {
			zone = "UTC"
		}
		s.Windows = append(s.Windows, fmt.Sprintf("%s %s (%s %s, %s)", strings.ToLower(string(dw.Kind)), dw.Name, dw.Schedule, zone, dw.Duration.Duration))
	}
	windows, frozen, err := window.ForEnvironment(env, freezes, nil)
	if err != nil {
		s.Reasons = []string{err.Error()}
		return s
	}
	for _, f := range frozen {
		if f.End.IsZero() || f.End.After(now) {
			s.Freezes = append(s.Freezes, describeFreeze(f))
		}
	}
	st := window.Evaluate(windows, frozen, now)
	s.Open = st.Open
	for _, b := range st.Blockers {
		s.Reasons = append(s.Reasons, b.Describe())
	}
	if !st.OpensAt.IsZero() {
		s.OpensAt = &metav1.Time{Time: st.OpensAt}
	}
	if !st.ClosesAt.IsZero() {
		s.ClosesAt = &metav1.Time{Time: st.ClosesAt}
	}
	return s
}

func describeFreeze(f window.Freeze) string {
	switch {
	case f.Kind == window.Lock:
		return "locked"
	case f.Kind == window.ClusterFreeze && f.Namespaces != "":
		return "freeze/" + f.Name + " (namespaces " + f.Namespaces + ")"
	case f.Kind == window.ClusterFreeze:
		return "freeze/" + f.Name
	}
	return f.Name
}
