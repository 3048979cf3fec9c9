package gitlabreceiver

import (
	"crypto/sha256"
	"encoding/hex"
	"regexp"
	"strconv"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/approval"
	"github.com/ferryci/ferry/internal/text"
)

// maxNameLength keeps Build names usable as label values and in the names of what a Build creates.
const maxNameLength = 63

var deliveryIDPattern = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)

// BuildName is the deterministic name of a Build: <project>-<sha[:7]>-<hash8>. The hash covers the
// Project, the event kind, the ref, the commit and a run key. Webhook deliveries use no run key:
// every delivery of one commit to one ref — GitLab's retries and "Resend Request", its "Test"
// button, a re-push of the same commit, a parallel duplicate — names the same Build, which is
// created once and reused after (a Build is as reproducible as its image). What asks to build the
// same commit again names a new run: "/retest force" and "/retest" after a failure use the
// command's note ID, `ferry build rerun` a name of its own.
func BuildName(project string, kind ferryv1.TriggerKind, ref, revision, deliveryKey string) string {
	h := sha256.New()
	for _, part := range []string{"ferry-build/v1", project, string(kind), ref, revision, deliveryKey} {
		h.Write([]byte(part))
		h.Write([]byte{0})
	}
	suffix := "-" + revision[:7] + "-" + hex.EncodeToString(h.Sum(nil))[:8]
	prefix := strings.ReplaceAll(strings.ToLower(project), ".", "-")
	if room := maxNameLength - len(suffix); len(prefix) > room {
		prefix = prefix[:room]
	}
	prefix = strings.TrimRight(prefix, "-")
	if prefix == "" {
		prefix = "build"
	}
	return prefix + suffix
}

// deliveryID is what the Build records as trigger.deliveryID: the delivery's key (its signed
// webhook-id, else its Idempotency-Key) when it is a plain token, else a digest of it, else (older
// GitLab) a digest of what named the Build. It tells a redelivery (the same key) from another
// delivery of the same commit.
func deliveryID(deliveryKey, buildName string) string {
	switch {
	case deliveryIDPattern.MatchString(deliveryKey):
		return deliveryKey
	case deliveryKey != "":
		sum := sha256.Sum256([]byte(deliveryKey))
		return "sha256:" + hex.EncodeToString(sum[:16])
	}
	return "derived:" + buildName
}

// newBuild is the Build a delivery with deliveryKey (see deliveryID) makes for Project p: the one
// Build of its commit and ref.
func newBuild(p *ferryv1.Project, t *trigger, deliveryKey string) *ferryv1.Build {
	return newRun(p, t, "", deliveryID(deliveryKey, BuildName(p.Name, t.kind, t.ref, t.revision, "")))
}

// newRun is a Build of Project p for the trigger under run key runKey (see BuildName), recording
// delivery as its trigger.deliveryID.
func newRun(p *ferryv1.Project, t *trigger, runKey, delivery string) *ferryv1.Build {
	name := BuildName(p.Name, t.kind, t.ref, t.revision, runKey)
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{
			Name:      name,
			Namespace: p.Namespace,
			Labels: map[string]string{
				ferryv1.ProjectLabel:     labelValue(p.Name),
				ferryv1.TriggerKindLabel: string(t.kind),
				ferryv1.ManagedByLabel:   ferryv1.ManagedByValue,
			},
			// Deleting a Project deletes its Builds.
			OwnerReferences: []metav1.OwnerReference{{
				APIVersion: ferryv1.GroupVersion.String(),
				Kind:       "Project",
				Name:       p.Name,
				UID:        p.UID,
				Controller: ptr.To(false),
			}},
		},
		Spec: ferryv1.BuildSpec{
			Project:  p.Name,
			Revision: t.revision,
			Ref:      t.ref,
			Trigger: ferryv1.BuildTrigger{
				Kind:       t.kind,
				DeliveryID: delivery,
				User:       text.Truncate(t.user.name, 255),
				UserID:     max(t.user.id, 0),
			},
		},
	}
	if approval.UsableEmail(t.user.email) {
		b.Spec.Trigger.UserEmail = t.user.email
	}
	switch t.kind {
	case ferryv1.TriggerTag:
		b.Spec.Trigger.Tag = text.Truncate(t.name, 255)
	case ferryv1.TriggerMergeRequest:
		b.Spec.Trigger.MergeRequestIID = t.mergeRequestIID
		b.Annotations = map[string]string{ferryv1.GitLabSourceBranchAnnotation: t.sourceBranch}
		if t.sourceProjectID != 0 && t.targetProjectID != 0 && t.sourceProjectID != t.targetProjectID {
			// A fork: GitLab wants the commit status on the source project.
			b.Annotations[ferryv1.GitLabSourceProjectAnnotation] = strconv.FormatInt(t.sourceProjectID, 10)
		}
	}
	return b
}

// labelValue fits a Project name (a DNS subdomain) into a label value.
func labelValue(s string) string {
	if len(s) > 63 {
		s = strings.TrimRight(s[:63], "-.")
	}
	return s
}
