package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// clock is the CLI's clock; tests set it.
var clock = time.Now

// freezeFlags are the flags of `ferry freeze start` and `ferry freeze end`.
type freezeFlags struct {
	kubeFlags
	env               string
	reason            string
	selector          string
	namespaceSelector string
	start             string
	end               string
	duration          time.Duration
}

func newFreezeCommand(g *globalFlags) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "freeze start|end",
		Short: "Stop rollouts into Environments (a deploy freeze), and let them go again",
		Long: `Stop new rollouts into Environments, and let them go again. Rollouts already running finish;
Releases about to start wait, and say which freeze holds them and until when.

Without --env, a cluster-wide Freeze stops every Environment its --selector selects (all of them
when there is no selector: "stop the line"). With --env, the freeze is written into that
Environment's spec.freezes.`,
	}
	cmd.AddCommand(newFreezeStartCommand(g), newFreezeEndCommand(g))
	return cmd
}

func newFreezeStartCommand(g *globalFlags) *cobra.Command {
	f := &freezeFlags{}
	cmd := &cobra.Command{
		Use:   "start [NAME] --reason REASON [--selector SELECTOR | --env ENV] [--end TIME | --for DURATION]",
		Short: "Start a freeze",
		Example: `  ferry freeze start incident-4711 --reason "INC-4711: payment provider down"
  ferry freeze start --reason "INC-4712" --selector ferry.dev/tier=production --for 2h
  ferry freeze start quarter-end --env prod --reason "books close" --start 2026-12-21T00:00:00Z --end 2027-01-04T00:00:00Z`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if strings.TrimSpace(f.reason) == "" {
				return errors.New("a freeze needs a reason: --reason REASON")
			}
			c, _, err := f.client(g)
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 1 {
				name = args[0]
			}
			return runFreezeStart(cmd.Context(), c, cmd.OutOrStdout(), name, f)
		},
	}
	f.bind(cmd)
	cmd.Flags().StringVar(&f.reason, "reason", "", "why rollouts are frozen (required)")
	cmd.Flags().StringVarP(&f.selector, "selector", "l", "", "the Environments to freeze, by label (default: every Environment)")
	cmd.Flags().StringVar(&f.namespaceSelector, "namespace-selector", "", "only Releases in namespaces with these labels")
	cmd.Flags().StringVar(&f.start, "start", "", "when the freeze begins, RFC 3339 (default: now)")
	cmd.Flags().StringVar(&f.end, "end", "", "when the freeze ends, RFC 3339 (default: when it is ended with `ferry freeze end`)")
	cmd.Flags().DurationVar(&f.duration, "for", 0, "how long the freeze lasts from its start")
	return cmd
}

func newFreezeEndCommand(g *globalFlags) *cobra.Command {
	f := &freezeFlags{}
	cmd := &cobra.Command{
		Use:   "end NAME [--env ENV]",
		Short: "End a freeze now",
		Long: `End a freeze now: its end is set to now and the Releases it held start (a freeze that has not
begun is removed). The Freeze object stays as the record of the freeze.`,
		Example: `  ferry freeze end incident-4711
  ferry freeze end quarter-end --env prod`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, _, err := f.client(g)
			if err != nil {
				return err
			}
			return runFreezeEnd(cmd.Context(), c, cmd.OutOrStdout(), args[0], f.env)
		},
	}
	f.bind(cmd)
	return cmd
}

func (f *freezeFlags) bind(cmd *cobra.Command) {
	f.kubeFlags.bind(cmd)
	cmd.Flags().StringVar(&f.env, "env", "", "freeze this Environment only, in its spec.freezes (default: a cluster-wide Freeze)")
}

// period is the freeze's start and end from the flags.
func (f *freezeFlags) period(now time.Time) (metav1.Time, *metav1.Time, error) {
	start := now.Truncate(time.Second)
	if f.start != "" {
		t, err := time.Parse(time.RFC3339, f.start)
		if err != nil {
			return metav1.Time{}, nil, fmt.Errorf("--start %q is not an RFC 3339 time such as 2026-12-21T00:00:00Z", f.start)
		}
		start = t
	}
	var end *metav1.Time
	switch {
	case f.end != "" && f.duration != 0:
		return metav1.Time{}, nil, errors.New("--end and --for say the same thing: give one")
	case f.end != "":
		t, err := time.Parse(time.RFC3339, f.end)
		if err != nil {
			return metav1.Time{}, nil, fmt.Errorf("--end %q is not an RFC 3339 time such as 2027-01-04T00:00:00Z", f.end)
		}
		end = &metav1.Time{Time: t}
	case f.duration < 0:
		return metav1.Time{}, nil, fmt.Errorf("--for %s must be positive", f.duration)
	case f.duration > 0:
		end = &metav1.Time{Time: start.Add(f.duration)}
	}
	if end != nil && !end.After(start) {
		return metav1.Time{}, nil, fmt.Errorf("the freeze must end after it starts (%s)", start.UTC().Format(time.RFC3339))
	}
	return metav1.Time{Time: start}, end, nil
}

func runFreezeStart(ctx context.Context, c client.Client, w io.Writer, name string, f *freezeFlags) error {
	start, end, err := f.period(clock())
	if err != nil {
		return err
	}
	until := "until it is ended"
	if end != nil {
		until = "until " + end.UTC().Format(time.RFC3339)
	}
	if f.env != "" {
		if f.selector != "" || f.namespaceSelector != "" {
			return errors.New("--env freezes one Environment: --selector and --namespace-selector are for cluster-wide Freezes")
		}
		if name == "" {
			name = "freeze-" + start.UTC().Format("20060102-150405")
		}
		err := updateEnvironment(ctx, c, f.env, func(env *ferryv1.Environment) error {
			if slices.ContainsFunc(env.Spec.Freezes, func(x ferryv1.EnvironmentFreeze) bool { return x.Name == name }) {
				return fmt.Errorf("environment %s already has a freeze %s", f.env, name)
			}
			env.Spec.Freezes = append(env.Spec.Freezes, ferryv1.EnvironmentFreeze{Name: name, Start: start, End: end, Reason: f.reason})
			return nil
		})
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(w, "environment/%s frozen (freeze %s) from %s %s: %s\n", f.env, name, start.UTC().Format(time.RFC3339), until, f.reason)
		return err
	}
	sel, err := metav1.ParseToLabelSelector(f.selector)
	if err != nil {
		return fmt.Errorf("--selector %q: %w", f.selector, err)
	}
	fr := &ferryv1.Freeze{Spec: ferryv1.FreezeSpec{Start: start, End: end, Reason: f.reason, EnvironmentSelector: *sel}}
	if f.namespaceSelector != "" {
		if fr.Spec.NamespaceSelector, err = metav1.ParseToLabelSelector(f.namespaceSelector); err != nil {
			return fmt.Errorf("--namespace-selector %q: %w", f.namespaceSelector, err)
		}
	}
	if name == "" {
		fr.GenerateName = "freeze-"
	} else {
		fr.Name = name
	}
	if err := c.Create(ctx, fr); err != nil {
		return err
	}
	which := "every Environment"
	if f.selector != "" {
		which = "the Environments labelled " + f.selector
	}
	if f.namespaceSelector != "" {
		which += ", for Releases in namespaces labelled " + f.namespaceSelector
	}
	_, err = fmt.Fprintf(w, "freeze/%s created: no rollout starts in %s from %s %s: %s\n", fr.Name, which, start.UTC().Format(time.RFC3339), until, f.reason)
	return err
}

// updateEnvironment changes an Environment, reading it again when someone else changed it first.
func updateEnvironment(ctx context.Context, c client.Client, name string, change func(*ferryv1.Environment) error) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		env := &ferryv1.Environment{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, env); err != nil {
			return err
		}
		if err := change(env); err != nil {
			return err
		}
		return c.Update(ctx, env)
	})
}

// endOf is the end a freeze gets when it is ended at now: now, or a second after its start when
// it started this very second (the API wants the end after the start). ok is false for a freeze
// that has not begun: it is removed instead.
func endOf(start metav1.Time, now time.Time) (end metav1.Time, ok bool) {
	now = now.Truncate(time.Second)
	if now.Before(start.Time) {
		return metav1.Time{}, false
	}
	if !now.After(start.Time) {
		now = start.Add(time.Second)
	}
	return metav1.Time{Time: now}, true
}

func runFreezeEnd(ctx context.Context, c client.Client, w io.Writer, name, envName string) error {
	now := clock()
	if envName != "" {
		var msg string
		err := updateEnvironment(ctx, c, envName, func(env *ferryv1.Environment) error {
			i := slices.IndexFunc(env.Spec.Freezes, func(x ferryv1.EnvironmentFreeze) bool { return x.Name == name })
			if i < 0 {
				return fmt.Errorf("environment %s has no freeze %s", envName, name)
			}
			fz := &env.Spec.Freezes[i]
			if fz.End != nil && !fz.End.After(now) {
				msg = fmt.Sprintf("freeze %s of environment %s had ended at %s\n", name, envName, fz.End.UTC().Format(time.RFC3339))
				return nil
			}
			end, ok := endOf(fz.Start, now)
			if !ok {
				env.Spec.Freezes = slices.Delete(env.Spec.Freezes, i, i+1)
				msg = fmt.Sprintf("freeze %s of environment %s had not begun: removed\n", name, envName)
				return nil
			}
			fz.End = &end
			msg = fmt.Sprintf("freeze %s of environment %s ended at %s\n", name, envName, end.UTC().Format(time.RFC3339))
			return nil
		})
		if err != nil {
			return err
		}
		_, err = io.WriteString(w, msg)
		return err
	}
	var msg string
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		fr := &ferryv1.Freeze{}
		if err := c.Get(ctx, client.ObjectKey{Name: name}, fr); err != nil {
			if apierrors.IsNotFound(err) {
				return fmt.Errorf("freeze %s not found (an Environment's own freeze is ended with --env ENV)", name)
			}
			return err
		}
		if fr.Spec.End != nil && !fr.Spec.End.After(now) {
			msg = fmt.Sprintf("freeze/%s had ended at %s\n", name, fr.Spec.End.UTC().Format(time.RFC3339))
			return nil
		}
		end, ok := endOf(fr.Spec.Start, now)
		if !ok {
			msg = fmt.Sprintf("freeze/%s had not begun: deleted\n", name)
			return c.Delete(ctx, fr)
		}
		fr.Spec.End = &end
		msg = fmt.Sprintf("freeze/%s ended at %s\n", name, end.UTC().Format(time.RFC3339))
		return c.Update(ctx, fr)
	})
	if err != nil {
		return err
	}
	_, err = io.WriteString(w, msg)
	return err
}
