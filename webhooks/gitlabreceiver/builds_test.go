package gitlabreceiver

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func TestBuildName(t *testing.T) {
	base := BuildName("shop", ferryv1.TriggerPush, "refs/heads/main", sha1, "key-1")
	if !strings.HasPrefix(base, "shop-da15608-") || len(base) != len("shop-da15608-")+8 {
		t.Errorf("name %q lacks the readable prefix", base)
	}
	if again := BuildName("shop", ferryv1.TriggerPush, "refs/heads/main", sha1, "key-1"); again != base {
		t.Errorf("not deterministic: %s vs %s", base, again)
	}
	variants := map[string]string{
		"other key":     BuildName("shop", ferryv1.TriggerPush, "refs/heads/main", sha1, "key-2"),
		"no key":        BuildName("shop", ferryv1.TriggerPush, "refs/heads/main", sha1, ""),
		"other ref":     BuildName("shop", ferryv1.TriggerPush, "refs/heads/dev", sha1, "key-1"),
		"other kind":    BuildName("shop", ferryv1.TriggerTag, "refs/heads/main", sha1, "key-1"),
		"other project": BuildName("shop2", ferryv1.TriggerPush, "refs/heads/main", sha1, "key-1"),
		"other commit":  BuildName("shop", ferryv1.TriggerPush, "refs/heads/main", sha2, "key-1"),
	}
	seen := map[string]string{base: "base"}
	for what, name := range variants {
		if prev, dup := seen[name]; dup {
			t.Errorf("%s and %s share the name %s", what, prev, name)
		}
		seen[name] = what
	}
	for _, project := range []string{"a", strings.Repeat("x", 63), "my.project.with.dots", strings.Repeat("ab-", 80) + "c", "p-" + strings.Repeat("-", 60)} {
		name := BuildName(project, ferryv1.TriggerMergeRequest, "refs/merge-requests/1/head", sha1, "k")
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("BuildName(%q) = %q is not a DNS-1123 label: %v", project, name, errs)
		}
	}
}

func TestDeliveryID(t *testing.T) {
	if got := deliveryID("b2eecd3a-3ac9-489b-81d6-462ec4881ea5", "n"); got != "b2eecd3a-3ac9-489b-81d6-462ec4881ea5" {
		t.Errorf("a UUID key must be kept: %q", got)
	}
	if got := deliveryID(strings.Repeat("k", 200), "n"); !strings.HasPrefix(got, "sha256:") || len(got) > 128 {
		t.Errorf("a long key must be digested: %q", got)
	}
	if got := deliveryID("key with spaces\n", "n"); !strings.HasPrefix(got, "sha256:") {
		t.Errorf("a key with odd characters must be digested: %q", got)
	}
	if got := deliveryID("", "shop-da15608-12345678"); got != "derived:shop-da15608-12345678" {
		t.Errorf("without a key: %q", got)
	}
}

func TestNewBuild(t *testing.T) {
	p := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop", UID: "uid-1"}}
	mr := &trigger{kind: ferryv1.TriggerMergeRequest, ref: "refs/merge-requests/7/head", name: "main", revision: sha1, user: gitlabUser{"bob", 9, "[REDACTED]"},
		mergeRequestIID: 7, sourceBranch: "feat/x", sourceProjectID: 12, targetProjectID: 5}
	b := newBuild(p, mr, "key")
	if b.Namespace != "team" || b.Spec.Project != "shop" || b.Spec.Revision != sha1 || b.Spec.Ref != mr.ref {
		t.Errorf("spec = %+v", b.Spec)
	}
	// GitLab's placeholder is no address: the Build records none.
	if b.Spec.Trigger != (ferryv1.BuildTrigger{Kind: ferryv1.TriggerMergeRequest, DeliveryID: "key", User: "bob", UserID: 9, MergeRequestIID: 7}) {
		t.Errorf("trigger = %+v", b.Spec.Trigger)
	}
	mr.user.email = "bob@example.com"
	if got := newBuild(p, mr, "key").Spec.Trigger.UserEmail; got != "bob@example.com" {
		t.Errorf("userEmail = %q, want bob@example.com", got)
	}
	if b.Labels[ferryv1.ProjectLabel] != "shop" || b.Labels[ferryv1.TriggerKindLabel] != "MergeRequest" {
		t.Errorf("labels = %v", b.Labels)
	}
	if b.Annotations[ferryv1.GitLabSourceBranchAnnotation] != "feat/x" || b.Annotations[ferryv1.GitLabSourceProjectAnnotation] != "12" {
		t.Errorf("annotations = %v", b.Annotations)
	}
	if len(b.OwnerReferences) != 1 || b.OwnerReferences[0].UID != "uid-1" || *b.OwnerReferences[0].Controller {
		t.Errorf("owner = %+v", b.OwnerReferences)
	}
	sameProject := *mr
	sameProject.sourceProjectID = 5
	if _, fork := newBuild(p, &sameProject, "key").Annotations[ferryv1.GitLabSourceProjectAnnotation]; fork {
		t.Error("an MR from the project itself is not a fork")
	}
	tag := newBuild(p, &trigger{kind: ferryv1.TriggerTag, ref: "refs/tags/v1", name: "v1", revision: sha2}, "")
	if tag.Spec.Trigger.Tag != "v1" || tag.Spec.Trigger.DeliveryID != "derived:"+tag.Name || tag.Annotations != nil {
		t.Errorf("tag build = %+v %v", tag.Spec.Trigger, tag.Annotations)
	}
}
