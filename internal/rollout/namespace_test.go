package rollout

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// teamB is another team's Project of the same name.
var teamB = Owner{Namespace: "team-b", Name: "shop", UID: "0b9c6a56-0000-4000-8000-00000000000b"}

// namespaceOf returns a namespace with the given labels and annotations.
func namespaceOf(name string, labels, annotations map[string]string) *corev1.Namespace {
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: annotations}}
}

// ownedBy is a namespace whose ownership record names o.
func ownedBy(name string, o Owner) *corev1.Namespace {
	return namespaceOf(name,
		map[string]string{ferryv1.ProjectUIDLabel: string(o.UID), ferryv1.ProjectLabel: o.Name, ferryv1.ProjectNamespaceLabel: o.Namespace, ferryv1.ManagedByLabel: ferryv1.ManagedByValue},
		map[string]string{ferryv1.OwnerAnnotation: o.String()})
}

func TestCheckReserved(t *testing.T) {
	for _, ns := range []string{"default", "kube-system", "kube-public", "kube-node-lease", "kube-anything", "ferry-system"} {
		err := CheckReserved(ns, "ferry-system", "prod")
		ne, ok := IsNamespaceRefused(err)
		if !ok || ne.Reason != ferryv1.NamespaceReservedReason || !strings.Contains(ne.Message, "namespace "+ns+" is") || !strings.Contains(ne.Message, "environment prod") {
			t.Errorf("CheckReserved(%s) = %v", ns, err)
		}
	}
	for _, ns := range []string{"shop-prod", "kubernetes-dashboard-team", "team-kube-system", "ferry-system-2"} {
		if err := CheckReserved(ns, "ferry-system", "prod"); err != nil {
			t.Errorf("CheckReserved(%s) = %v, want nil", ns, err)
		}
	}
	if err := CheckReserved("ferry", "ferry", "prod"); err == nil || !strings.Contains(err.Error(), "Ferry's own namespace") {
		t.Errorf("Ferry's namespace: %v", err)
	}
}

// TestClaim: who may write into which namespace, from the side of a Project that tries.
func TestClaim(t *testing.T) {
	cases := []struct {
		name     string
		existing *corev1.Namespace
		adopt    bool
		owner    Owner
		// wantErr is part of the refusal ("" for none); the rest is checked on the namespace.
		wantErr string
	}{
		{name: "absent: created with the owner", owner: teamA},
		{name: "already ours", existing: ownedBy("shop-prod", teamA), owner: teamA},
		{name: "another team's Project of the same name", existing: ownedBy("shop-prod", teamB), owner: teamA,
			wantErr: "namespace shop-prod on cluster east belongs to Project team-b/shop"},
		{name: "another team's, even when the environment adopts", existing: ownedBy("shop-prod", teamB), adopt: true, owner: teamA,
			wantErr: "belongs to Project team-b/shop"},
		{name: "an earlier Project of the same name", existing: ownedBy("shop-prod", Owner{Namespace: "team-a", Name: "shop", UID: "old"}), owner: teamA,
			wantErr: "created for an earlier Project of the same name"},
		{name: "made by hand", existing: namespaceOf("shop-prod", map[string]string{"team": "ops"}, nil), owner: teamA,
			wantErr: "exists and no Project owns it (it was not created by Ferry)"},
		{name: "made by an older Ferry", existing: namespaceOf("shop-prod", map[string]string{ferryv1.ManagedByLabel: ferryv1.ManagedByValue, ferryv1.ProjectLabel: "shop"}, nil), owner: teamA,
			wantErr: "created by a Ferry that did not record owners yet"},
		{name: "made by hand, adopted", existing: namespaceOf("shop-prod", map[string]string{"team": "ops"}, nil), adopt: true, owner: teamA},
		{name: "a forged owner annotation decides nothing", existing: namespaceOf("shop-prod", nil, map[string]string{ferryv1.OwnerAnnotation: "team-a/shop"}), owner: teamA,
			wantErr: "no Project owns it"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var objs []client.Object
			if tc.existing != nil {
				objs = append(objs, tc.existing)
			}
			c := newCluster(t, objs...)
			w := workload(newImage, 1, "r1")
			w.Owner = tc.owner
			err := Claim(context.Background(), c, "east", w, NamespaceRules{Adopt: tc.adopt, FerryNamespace: "ferry-system"})
			ns := &corev1.Namespace{}
			if getErr := c.Get(context.Background(), client.ObjectKey{Name: "shop-prod"}, ns); getErr != nil {
				t.Fatal(getErr)
			}
			if tc.wantErr != "" {
				ne, ok := IsNamespaceRefused(err)
				if !ok || ne.Reason != ferryv1.NamespaceNotOwnedReason || !strings.Contains(ne.Message, tc.wantErr) {
					t.Fatalf("Claim = %v, want a NamespaceNotOwned refusal saying %q", err, tc.wantErr)
				}
				if c.mutations != 0 {
					t.Errorf("a refused Claim wrote %d times", c.mutations)
				}
				if ns.Labels[ferryv1.ProjectUIDLabel] != tc.existing.Labels[ferryv1.ProjectUIDLabel] {
					t.Errorf("the owner record changed to %v", ns.Labels)
				}
				return
			}
			if err != nil {
				t.Fatalf("Claim = %v", err)
			}
			if ns.Labels[ferryv1.ProjectUIDLabel] != string(tc.owner.UID) || ns.Labels[ferryv1.ProjectNamespaceLabel] != tc.owner.Namespace ||
				ns.Labels[ferryv1.ProjectLabel] != tc.owner.Name || ns.Annotations[ferryv1.OwnerAnnotation] != tc.owner.String() {
				t.Errorf("namespace labels %v annotations %v, want the owner %s recorded", ns.Labels, ns.Annotations, tc.owner)
			}
			if tc.existing != nil && tc.existing.Labels["team"] == "ops" && ns.Labels["team"] != "ops" {
				t.Errorf("adoption lost the namespace's own labels: %v", ns.Labels)
			}
		})
	}

	t.Run("reserved", func(t *testing.T) {
		c := newCluster(t)
		w := workload(newImage, 1, "r1")
		w.Namespace = "kube-system"
		err := Claim(context.Background(), c, "east", w, NamespaceRules{Adopt: true})
		if ne, ok := IsNamespaceRefused(err); !ok || ne.Reason != ferryv1.NamespaceReservedReason {
			t.Fatalf("Claim(kube-system) = %v", err)
		}
		if c.mutations != 0 {
			t.Errorf("wrote %d times", c.mutations)
		}
	})
}

// TestStepWritesNothingIntoAnotherProjectsNamespace: team A's Project "shop" tries to roll out,
// and roll back, into the namespace where team B's Project "shop" runs: nothing of team B's
// changes, and the cluster's rollout says why.
func TestStepWritesNothingIntoAnotherProjectsNamespace(t *testing.T) {
	theirs := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop-prod", Name: "shop", Labels: map[string]string{"team": "b"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](3),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "shop"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "shop"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: ContainerName, Image: oldImage}}},
			},
		},
	}
	canary := theirs.DeepCopy()
	canary.Name = "shop-canary"
	start := time.Date(2026, 11, 23, 10, 0, 0, 0, time.UTC)
	for _, strategy := range []Strategy{
		{Type: ferryv1.RollingStrategy, ProgressDeadline: time.Minute},
		{Type: ferryv1.BatchStrategy, Batches: 2, Between: ferryv1.BatchGateNone, ProgressDeadline: time.Minute},
	} {
		t.Run(string(strategy.Type), func(t *testing.T) {
			c := newCluster(t, ownedBy("shop-prod", teamB), theirs.DeepCopy(), canary.DeepCopy())
			in := Input{Cluster: "east", Workload: workload(newImage, 2, "r2"), Previous: workload(oldImage, 2, "r1"), Strategy: strategy, Now: start,
				Namespaces: NamespaceRules{Adopt: true}}
			st := &ferryv1.ClusterRolloutStatus{Cluster: "east"}
			res := step(t, c, in, st)
			got := cond(st)
			if !Failed(st) || !Refused(st) || got.Reason != ferryv1.NamespaceNotOwnedReason || !strings.Contains(got.Message, "belongs to Project team-b/shop") {
				t.Fatalf("condition = %+v, want NamespaceNotOwned", got)
			}
			// The rollback the controller would start writes nothing either, and ends.
			in.Rollback = true
			res2 := step(t, c, in, st)
			if st.CompletionTime == nil || cond(st).Reason != ferryv1.NamespaceNotOwnedReason {
				t.Errorf("rollback: condition %+v, completion %v", cond(st), st.CompletionTime)
			}
			if c.mutations != 0 || res.Writes+res2.Writes != 0 {
				t.Errorf("%d writes into team B's namespace", c.mutations)
			}
			for _, name := range []string{"shop", "shop-canary"} {
				d := c.deployment(name)
				if d == nil || d.Spec.Template.Spec.Containers[0].Image != oldImage || d.Labels["team"] != "b" {
					t.Errorf("team B's Deployment %s changed: %+v", name, d)
				}
			}
		})
	}
}

func TestMatchPattern(t *testing.T) {
	cases := []struct {
		pattern, s string
		want       bool
	}{
		{"prometheus.io/*", "prometheus.io/scrape", true},
		{"prometheus.io/*", "prometheus.io/", true},
		{"prometheus.io/*", "xprometheus.io/scrape", false},
		{"prometheus.io/scrape", "prometheus.io/scrape", true},
		{"prometheus.io/scrape", "prometheus.io/scraper", false},
		{"*", "sidecar.istio.io/inject", true},
		{"*.example.com/*", "team.example.com/owner", true},
		{"*.example.com/*", "example.com/owner", false},
		{"a*b*c", "abcbc", true},
		{"a*b*c", "acb", false},
		{"*/port", "prometheus.io/port", true},
	}
	for _, tc := range cases {
		if got := MatchPattern(tc.pattern, tc.s); got != tc.want {
			t.Errorf("MatchPattern(%q, %q) = %v, want %v", tc.pattern, tc.s, got, tc.want)
		}
	}
}

// TestAllowPodAnnotations: what a repository asks for reaches pods only where the platform's
// patterns allow it; no pattern allows nothing; Ferry's own keys never pass.
func TestAllowPodAnnotations(t *testing.T) {
	asked := map[string]string{
		"prometheus.io/scrape":                  "true",
		"sidecar.istio.io/inject":               "false",
		"traffic.sidecar.istio.io/excludePorts": "0-65535",
		"ferry.dev/track":                       "stable",
	}
	allowed, dropped := AllowPodAnnotations(asked, nil)
	if len(allowed) != 0 || !slices.Equal(dropped, []string{"ferry.dev/track", "prometheus.io/scrape", "sidecar.istio.io/inject", "traffic.sidecar.istio.io/excludePorts"}) {
		t.Errorf("no patterns: allowed %v, dropped %v", allowed, dropped)
	}
	allowed, dropped = AllowPodAnnotations(asked, []string{"prometheus.io/*", "*"})
	if len(allowed) != 3 || !slices.Equal(dropped, []string{"ferry.dev/track"}) {
		t.Errorf(`"*": allowed %v, dropped %v`, allowed, dropped)
	}
	allowed, dropped = AllowPodAnnotations(asked, []string{"prometheus.io/*"})
	if len(allowed) != 1 || allowed["prometheus.io/scrape"] != "true" || len(dropped) != 3 {
		t.Errorf("prometheus only: allowed %v, dropped %v", allowed, dropped)
	}
}
