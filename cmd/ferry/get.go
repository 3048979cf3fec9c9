package main

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/standing"
	"github.com/ferryci/ferry/internal/text"
)

// getKinds are the resources `ferry get` lists, with the singular and short names it accepts.
var getKinds = map[string]string{
	"builds": "builds", "build": "builds", "fb": "builds",
	"releases": "releases", "release": "releases", "frel": "releases",
	"approvals": "approvals", "approval": "approvals", "fapr": "approvals",
	"windows": "windows", "window": "windows",
	"freezes": "freezes", "freeze": "freezes",
	"previews": "previews", "preview": "previews", "fprev": "previews",
}

func newGetCommand(g *globalFlags) *cobra.Command {
	k := &kubeFlags{}
	var output string
	var allNamespaces bool
	cmd := &cobra.Command{
		Use:   "get builds|releases|approvals|windows|freezes|previews [NAME]",
		Short: "List Builds, Releases, Approvals, Freezes, or the deploy windows of Environments",
		Long: `List Builds, Releases or Approvals in a namespace, as a table or as JSON or YAML.

A Release's table shows each environment of its path: ok, waiting for approvals (given/needed),
rolling out, rolled back, rejected, expired, locked, frozen, waiting for a deploy window (with
when it opens) or pending.
-o wide adds what the supply-chain gates found: who signed the image, the repository and commit
its provenance names, its SBOM (with the number of packages), each environment's gate result, and
the packages that change from the image running there (+added −removed ↑upgraded).

"windows" shows, per Environment (they are cluster-wide: -n does not apply), whether a rollout
may start now, what keeps it closed (deny windows, being outside the allow windows, freezes, the
lock) and when that changes next. "freezes" lists the cluster-wide Freezes (-n does not apply): whether
each stops rollouts now, from when until when, which Environments it selects and why.
"previews" lists the live preview environments of merge requests: where each runs, whether it is
ready, and a namespace that failed to delete (NamespaceDeleteFailed, retried).`,
		Example: `  ferry get releases -n team-shop
  ferry get approvals -n team-shop -o yaml
  ferry get release shop-api-main-42 -o json
  ferry get release shop-api-main-42 -o wide
  ferry get windows
  ferry get windows prod -o yaml
  ferry get freezes
  ferry get previews -n team-shop`,
		Args:      cobra.RangeArgs(1, 2),
		ValidArgs: []string{"builds", "releases", "approvals", "windows", "freezes", "previews"},
		RunE: func(cmd *cobra.Command, args []string) error {
			kind, ok := getKinds[strings.ToLower(args[0])]
			if !ok {
				return fmt.Errorf("unknown resource %q: ferry get lists builds, releases or approvals (or windows, freezes, previews)", args[0])
			}
			if output == "wide" && kind != "releases" {
				return fmt.Errorf("-o wide is for releases: use -o json or -o yaml for %s", kind)
			}
			if output != "" && output != "json" && output != "yaml" && output != "wide" {
				return fmt.Errorf("unknown output format %q: use -o json or -o yaml (or nothing for a table)", output)
			}
			c, ns, err := k.client(g)
			if err != nil {
				return err
			}
			name := ""
			if len(args) == 2 {
				name = args[1]
			}
			opts := []client.ListOption{}
			if !allNamespaces {
				opts = append(opts, client.InNamespace(ns))
			}
			return runGet(cmd.Context(), c, cmd.OutOrStdout(), kind, ns, name, output, allNamespaces, opts)
		},
	}
	k.bind(cmd)
	cmd.Flags().StringVarP(&output, "output", "o", "", "output format: json or yaml, or wide for releases (default: a table)")
	cmd.Flags().BoolVarP(&allNamespaces, "all-namespaces", "A", false, "list in every namespace")
	return cmd
}

func runGet(ctx context.Context, c client.Client, w io.Writer, kind, ns, name, output string, all bool, opts []client.ListOption) error {
	switch kind {
	case "windows":
		return runGetWindows(ctx, c, w, name, output)
	case "freezes":
		// Cluster-scoped: no namespace, and -A adds nothing.
		list := &ferryv1.FreezeList{}
		if err := getOrList(ctx, c, "", name, list, &ferryv1.Freeze{}, nil); err != nil {
			return err
		}
		for i := range list.Items {
			tidy(&list.Items[i], "Freeze")
		}
		return printList(w, output, name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, false, freezeTable(list.Items, clock()))
	case "builds":
		list := &ferryv1.BuildList{}
		if err := getOrList(ctx, c, ns, name, list, &ferryv1.Build{}, opts); err != nil {
			return err
		}
		for i := range list.Items {
			tidy(&list.Items[i], "Build")
		}
		return printList(w, output, name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, all, buildTable(list.Items))
	case "previews":
		list := &ferryv1.PreviewList{}
		if err := getOrList(ctx, c, ns, name, list, &ferryv1.Preview{}, opts); err != nil {
			return err
		}
		for i := range list.Items {
			tidy(&list.Items[i], "Preview")
		}
		return printList(w, output, name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, all, previewTable(list.Items))
	case "releases":
		list := &ferryv1.ReleaseList{}
		if err := getOrList(ctx, c, ns, name, list, &ferryv1.Release{}, opts); err != nil {
			return err
		}
		for i := range list.Items {
			tidy(&list.Items[i], "Release")
		}
		if output == "wide" {
			return printList(w, "", name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, all, releaseWideTable(list.Items))
		}
		return printList(w, output, name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, all, releaseTable(list.Items))
	default:
		list := &ferryv1.ApprovalList{}
		if err := getOrList(ctx, c, ns, name, list, &ferryv1.Approval{}, opts); err != nil {
			return err
		}
		for i := range list.Items {
			tidy(&list.Items[i], "Approval")
		}
		return printList(w, output, name, list, len(list.Items), func(i int) client.Object { return &list.Items[i] }, all, approvalTable(list.Items))
	}
}

// getOrList fills list with the named object, or with every object the options select.
func getOrList(ctx context.Context, c client.Client, ns, name string, list client.ObjectList, one client.Object, opts []client.ListOption) error {
	if name == "" {
		return c.List(ctx, list, opts...)
	}
	if err := c.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, one); err != nil {
		return err
	}
	return meta.SetList(list, []runtime.Object{one})
}

// printList prints one object (when a name was given) or the list, or the table.
func printList(w io.Writer, output, name string, list client.ObjectList, n int, item func(int) client.Object, all bool, rows [][]string) error {
	if output != "" {
		if name != "" {
			return printObject(w, output, item(0))
		}
		list.GetObjectKind().SetGroupVersionKind(ferryv1.GroupVersion.WithKind(kindOfList(list)))
		return printObject(w, output, list)
	}
	if n == 0 {
		_, err := fmt.Fprintln(w, "No resources found.")
		return err
	}
	header := rows[0]
	body := rows[1:]
	if all {
		header = append([]string{"NAMESPACE"}, header...)
		for i := range body {
			body[i] = append([]string{item(i).GetNamespace()}, body[i]...)
		}
	}
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	fmt.Fprintln(tw, strings.Join(header, "\t"))
	for _, row := range body {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

func kindOfList(list client.ObjectList) string {
	switch list.(type) {
	case *ferryv1.BuildList:
		return "BuildList"
	case *ferryv1.ReleaseList:
		return "ReleaseList"
	case *ferryv1.FreezeList:
		return "FreezeList"
	case *ferryv1.PreviewList:
		return "PreviewList"
	}
	return "ApprovalList"
}

func buildTable(items []ferryv1.Build) [][]string {
	rows := [][]string{{"NAME", "PROJECT", "REF", "REVISION", "READY", "REASON", "IMAGE", "AGE"}}
	for _, b := range items {
		ready, reason := readyOf(b.Status.Conditions)
		rev := b.Spec.Revision
		if len(rev) > 8 {
			rev = rev[:8]
		}
		rows = append(rows, []string{b.Name, b.Spec.Project, b.Spec.Ref, rev, ready, orNone(reason), orNone(shortDigest(b.Status.Image)), age(b.CreationTimestamp)})
	}
	return rows
}

func releaseTable(items []ferryv1.Release) [][]string {
	rows := [][]string{{"NAME", "PROJECT", "IMAGE", "READY", "REASON", "ENVIRONMENTS", "AGE"}}
	for _, r := range items {
		ready, reason := readyOf(r.Status.Conditions)
		image := shortDigest(r.Spec.Image)
		if r.Spec.Rollback {
			image += " (rollback)"
		}
		var envs []string
		for _, es := range r.Status.Environments {
			state := envState(&es)
			if state == "soaking" && es.SoakEndsAt != nil {
				state += "(" + soakLeft(es.SoakEndsAt.Time, clock()) + " left)"
			}
			if v := verificationState(&es); v != "" {
				state += "," + v
			}
			state += waveState(&es)
			envs = append(envs, es.Name+":"+state)
		}
		rows = append(rows, []string{r.Name, r.Spec.Project, image, ready, orNone(reason), orNone(strings.Join(envs, " ")), age(r.CreationTimestamp)})
	}
	return rows
}

// envState is one word (and a count) for where a Release stands in an environment.
func envState(es *ferryv1.ReleaseEnvironmentStatus) string {
	s := standing.Of(es)
	switch s.State {
	case standing.Pending, standing.WaitingForPreviousEnvironment:
		return "pending"
	case standing.WaitingForApproval:
		if s.Gate != nil {
			return fmt.Sprintf("waiting(%d/%d)", s.Gate.Approved(), s.Gate.RequiredApprovals)
		}
		return "waiting"
	case standing.WaitingBetweenBatches:
		return "waiting"
	case standing.Locked:
		return "locked" + opensAt(s)
	case standing.WaitingForWindow:
		return "waiting-for-window" + opensAt(s)
	case standing.Frozen:
		return "frozen" + opensAt(s)
	case standing.RollingOut:
		return "rolling-out"
	case standing.RollingBack:
		return "rolling-back"
	case standing.RolledOut:
		return "ok"
	case standing.RolledBack:
		return "rolled-back"
	case standing.Rejected:
		return "rejected"
	case standing.Expired:
		return "expired"
	case standing.Superseded:
		return "superseded"
	}
	return strings.ToLower(s.Reason)
}

// opensAt says when a closed environment opens, "(opens 2026-06-02T09:00:00Z)"; "" when unknown.
func opensAt(s standing.Standing) string {
	if s.OpensAt == nil {
		return ""
	}
	return "(opens " + s.OpensAt.UTC().Format(time.RFC3339) + ")"
}

func approvalTable(items []ferryv1.Approval) [][]string {
	slices.SortStableFunc(items, func(a, b ferryv1.Approval) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	rows := [][]string{{"NAME", "RELEASE", "ENVIRONMENT", "BATCH", "DECISION", "APPROVER", "COMMENT", "AGE"}}
	for _, a := range items {
		approver, batch := "", "-"
		if a.Spec.Approver != nil {
			approver = a.Spec.Approver.Username
		}
		if a.Spec.Batch > 0 {
			batch = fmt.Sprint(a.Spec.Batch)
		}
		comment := a.Spec.Comment
		if len(comment) > 60 {
			comment = comment[:57] + "..."
		}
		rows = append(rows, []string{a.Name, a.Spec.Release, a.Spec.Environment, batch, string(a.Spec.Decision), orNone(approver), orNone(comment), age(a.CreationTimestamp)})
	}
	return rows
}

// freezeTable lists Freezes, the soonest start first: whether each stops rollouts at now, its
// period, the Environments (and namespaces) it selects, and its reason.
func freezeTable(items []ferryv1.Freeze, now time.Time) [][]string {
	slices.SortStableFunc(items, func(a, b ferryv1.Freeze) int { return a.Spec.Start.Compare(b.Spec.Start.Time) })
	rows := [][]string{{"NAME", "ACTIVE", "FROM", "UNTIL", "ENVIRONMENTS", "REASON"}}
	for _, f := range items {
		active := "no"
		switch {
		case f.Spec.End != nil && !now.Before(f.Spec.End.Time):
			active = "ended"
		case !now.Before(f.Spec.Start.Time):
			active = "yes"
		}
		until := "its end"
		if f.Spec.End != nil {
			until = f.Spec.End.UTC().Format(time.RFC3339)
		}
		selects := metav1.FormatLabelSelector(&f.Spec.EnvironmentSelector)
		if selects == "<none>" {
			selects = "all"
		}
		if f.Spec.NamespaceSelector != nil {
			selects += " in namespaces " + metav1.FormatLabelSelector(f.Spec.NamespaceSelector)
		}
		rows = append(rows, []string{f.Name, active, f.Spec.Start.UTC().Format(time.RFC3339), until, selects, text.OneLine(f.Spec.Reason, 60)})
	}
	return rows
}

// previewTable lists previews; a namespace that failed to delete shows as NamespaceDeleteFailed.
func previewTable(items []ferryv1.Preview) [][]string {
	rows := [][]string{{"NAME", "PROJECT", "MR", "BUILD", "CLUSTER", "NAMESPACE", "READY", "REASON", "URL", "ACTIVE"}}
	for _, pv := range items {
		ready, reason := readyOf(pv.Status.Conditions)
		if c := meta.FindStatusCondition(pv.Status.Conditions, ferryv1.PreviewDeletedCondition); c != nil && c.Status == metav1.ConditionFalse {
			ready, reason = "False", c.Reason
		}
		active := "<none>"
		if pv.Status.LastActivity != nil {
			active = age(*pv.Status.LastActivity)
		}
		rows = append(rows, []string{pv.Name, pv.Spec.Project, "!" + strconv.FormatInt(pv.Spec.MergeRequestIID, 10), pv.Spec.Build,
			orNone(pv.Status.Cluster), orNone(pv.Status.Namespace), ready, orNone(reason), orNone(pv.Status.URL), active})
	}
	return rows
}
