package buildreport

import (
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/gitlab"
	"github.com/ferryci/ferry/internal/text"
)

// StatusName is the name of Ferry's commit status in GitLab.
const StatusName = "ferry"

// DesiredState maps a Build's conditions to the GitLab commit status that describes it:
// Ready=True is success; Ready=False is canceled when the Build was cancelled or superseded and
// failed otherwise; a running pipeline (PipelineSucceeded=Unknown, PipelineRunning) is running;
// anything else is pending.
func DesiredState(b *ferryv1.Build) gitlab.State {
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready != nil {
		switch ready.Status {
		case metav1.ConditionTrue:
			return gitlab.StateSuccess
		case metav1.ConditionFalse:
			if ready.Reason == ferryv1.CancelledReason || ready.Reason == ferryv1.SupersededReason {
				return gitlab.StateCanceled
			}
			return gitlab.StateFailed
		}
	}
	if ps := meta.FindStatusCondition(b.Status.Conditions, ferryv1.PipelineSucceededCondition); ps != nil &&
		ps.Status == metav1.ConditionUnknown && ps.Reason == ferryv1.PipelineRunningReason {
		return gitlab.StateRunning
	}
	return gitlab.StatePending
}

// Description is the one line shown next to the commit status.
func Description(b *ferryv1.Build, state gitlab.State) string {
	msg := ""
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready != nil {
		msg = ready.Message
	}
	var d string
	switch state {
	case gitlab.StatePending:
		d = "Build queued"
	case gitlab.StateRunning:
		d = "Pipeline running"
	case gitlab.StateSuccess:
		d = "Build succeeded"
		if b.Status.Image != "" {
			d = "Image pushed: " + b.Status.Image
		}
	case gitlab.StateFailed:
		d = "Build failed"
		if msg != "" {
			d += ": " + msg
		}
	case gitlab.StateCanceled:
		d = "Build cancelled"
		if msg != "" {
			d += ": " + msg
		} else if b.Spec.CancelReason != "" {
			d += ": " + b.Spec.CancelReason
		}
	}
	return text.OneLine(d, 255)
}

// StatusRef is the branch or tag the commit status is for: GitLab would otherwise pick the first
// branch that contains the commit, which may be the wrong one.
func StatusRef(b *ferryv1.Build) string {
	if branch, ok := strings.CutPrefix(b.Spec.Ref, "refs/heads/"); ok {
		return branch
	}
	if tag, ok := strings.CutPrefix(b.Spec.Ref, "refs/tags/"); ok {
		return tag
	}
	return b.Annotations[ferryv1.GitLabSourceBranchAnnotation]
}

// BuildURL is the Build's page in Ferry's UI, "" without a UI base URL.
func BuildURL(uiBaseURL string, b *ferryv1.Build) string {
	if uiBaseURL == "" {
		return ""
	}
	return strings.TrimSuffix(uiBaseURL, "/") + "/builds/" + b.Namespace + "/" + b.Name
}

// noteMarker identifies Ferry's note for one Build, so that it is never posted twice.
func noteMarker(b *ferryv1.Build) string {
	return fmt.Sprintf("<!-- ferry:build %s/%s -->", b.Namespace, b.Name)
}

// NoteBody is the merge request note for a finished Build. No line starts with "/": GitLab would
// run it as a quick action with the token's rights.
func NoteBody(b *ferryv1.Build, state gitlab.State, url string) string {
	outcome := map[gitlab.State]string{
		gitlab.StateSuccess:  "succeeded",
		gitlab.StateFailed:   "failed",
		gitlab.StateCanceled: "was cancelled",
	}[state]
	var sb strings.Builder
	fmt.Fprintf(&sb, "**Ferry build `%s`** of %s %s.\n", b.Name, short(b.Spec.Revision), outcome)
	if ready := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition); ready != nil && ready.Message != "" && state != gitlab.StateSuccess {
		sb.WriteString("\n")
		for line := range strings.SplitSeq(strings.TrimSpace(ready.Message), "\n") {
			sb.WriteString("> " + line + "\n")
		}
	}
	if state == gitlab.StateSuccess && b.Status.Image != "" {
		fmt.Fprintf(&sb, "\nImage: `%s`\n", b.Status.Image)
	}
	if url != "" {
		fmt.Fprintf(&sb, "\n[View the build in Ferry](%s)\n", url)
	}
	sb.WriteString("\n" + noteMarker(b) + "\n")
	return sb.String()
}

func short(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	return sha
}
