package build

import (
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/google/go-containerregistry/pkg/name"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/conditions"
	"github.com/ferryci/ferry/internal/text"
)

// Phase is where an executor's run of a Build stands.
type Phase string

const (
	// PhaseQueued means the run exists and waits for the executor to have room for it.
	PhaseQueued Phase = "Queued"
	// PhaseRunning means the run exists and has not finished (including pending and cancelling).
	PhaseRunning Phase = "Running"
	// PhaseSucceeded means every step succeeded.
	PhaseSucceeded Phase = "Succeeded"
	// PhaseFailed means a step failed, or the run could not be started.
	PhaseFailed Phase = "Failed"
	// PhaseTimedOut means the run exceeded its timeout.
	PhaseTimedOut Phase = "TimedOut"
	// PhaseCancelled means the run was cancelled.
	PhaseCancelled Phase = "Cancelled"
)

// RunState is what an executor reports about a Build's run.
type RunState struct {
	// Exists is false when the Build has no run yet.
	Exists bool
	// Name is the run's name (the PipelineRun's).
	Name string
	// Kind names what the run is in messages: "PipelineRun" (recorded as the Build's
	// pipelineRunRef) or "Local run".
	Kind string
	// Phase is where the run stands.
	Phase Phase
	// Message explains a failure (or a cancellation in progress), from the executor.
	Message string
	// StartTime and CompletionTime are the run's.
	StartTime, CompletionTime *metav1.Time
	// Results are the run's results: IMAGE_URL, IMAGE_DIGEST, FERRY_LINEAGE.
	Results map[string]string
	// Steps are the steps' states, in order; nil when unknown.
	Steps []ferryv1.StepStatus
	// Deploy is the pipeline file's deploy settings the run was made from, when the run records them.
	Deploy *ferryv1.DeploySpec
	// LogURL is where the run's logs can be read, when the executor keeps them.
	LogURL string
	// CancelRequested: the run was already asked to stop (a PipelineRun whose spec says
	// Cancelled); it need not be asked again.
	CancelRequested bool
}

// Done reports whether the run finished.
func (s *RunState) Done() bool { return s.Exists && s.Phase != PhaseRunning && s.Phase != PhaseQueued }

// pipelineRunKind is the Kind of a Tekton run.
const pipelineRunKind = "PipelineRun"

// SupersededPrefix starts the cancelReason of a Build that a newer one superseded.
const SupersededPrefix = "superseded by "

// markProgressing: the Build is being worked on; Ready is Unknown.
func markProgressing(b *ferryv1.Build, reason, message string, now metav1.Time) {
	b.Status.ObservedGeneration = b.Generation
	conditions.Set(&b.Status.Conditions, ferryv1.ReadyCondition, metav1.ConditionUnknown, reason, message, b.Generation, now)
	conditions.Set(&b.Status.Conditions, ferryv1.ReconcilingCondition, metav1.ConditionTrue, reason, message, b.Generation, now)
	meta.RemoveStatusCondition(&b.Status.Conditions, ferryv1.StalledCondition)
}

// markProjectNotFound: the Build is stalled until a person creates its Project, as a Release is.
func markProjectNotFound(b *ferryv1.Build, now metav1.Time) {
	b.Status.ObservedGeneration = b.Generation
	conditions.MarkStalled(&b.Status.Conditions, ferryv1.ProjectNotFoundReason, conditions.ProjectNotFound(b.Namespace, b.Spec.Project), b.Generation, now)
}

// markSourceUnavailable: the commit could not be read yet; the controller retries.
func markSourceUnavailable(b *ferryv1.Build, reason, message string, now metav1.Time) {
	conditions.Set(&b.Status.Conditions, ferryv1.SourceResolvedCondition, metav1.ConditionFalse, reason, message, b.Generation, now)
	markProgressing(b, reason, message, now)
}

// markSourceResolved: the pipeline file was read at the commit.
func markSourceResolved(b *ferryv1.Build, message string, now metav1.Time) {
	conditions.Set(&b.Status.Conditions, ferryv1.SourceResolvedCondition, metav1.ConditionTrue, ferryv1.SucceededReason, message, b.Generation, now)
}

// markFinished records an outcome: Ready says it, PipelineSucceeded mirrors the run, Reconciling
// ends, and Stalled stays only where a person must change something (the pipeline file). The
// Build completes now unless it already has a completion time.
func markFinished(b *ferryv1.Build, ready metav1.ConditionStatus, reason, message string, now metav1.Time) {
	b.Status.ObservedGeneration = b.Generation
	conditions.Set(&b.Status.Conditions, ferryv1.ReadyCondition, ready, reason, message, b.Generation, now)
	meta.RemoveStatusCondition(&b.Status.Conditions, ferryv1.ReconcilingCondition)
	if reason == ferryv1.InvalidPipelineFileReason {
		conditions.Set(&b.Status.Conditions, ferryv1.StalledCondition, metav1.ConditionTrue, reason, message, b.Generation, now)
	} else {
		meta.RemoveStatusCondition(&b.Status.Conditions, ferryv1.StalledCondition)
	}
	if b.Status.CompletionTime == nil {
		b.Status.CompletionTime = &now
	}
}

// markInvalidPipelineFile: the pipeline file is missing or invalid at the commit; the message
// names the file, line and field.
func markInvalidPipelineFile(b *ferryv1.Build, message string, now metav1.Time) {
	conditions.Set(&b.Status.Conditions, ferryv1.SourceResolvedCondition, metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason, message, b.Generation, now)
	markFinished(b, metav1.ConditionFalse, ferryv1.InvalidPipelineFileReason, message, now)
}

// markCancelledBeforeStart: the Build was cancelled before it ran.
func markCancelledBeforeStart(b *ferryv1.Build, now metav1.Time) {
	reason, msg := cancelReason(b, "")
	conditions.Set(&b.Status.Conditions, ferryv1.PipelineSucceededCondition, metav1.ConditionFalse, reason, msg, b.Generation, now)
	markFinished(b, metav1.ConditionFalse, reason, msg, now)
}

// markInvalidImageTag: the Build's git tag cannot be an image tag, so the Build fails before it
// runs; the message says which tag and why.
func markInvalidImageTag(b *ferryv1.Build, message string, now metav1.Time) {
	markFinished(b, metav1.ConditionFalse, ferryv1.InvalidImageTagReason, message, now)
}

// markRunRefused: the cluster refused the Build's run (Tekton's webhook, a quota, a policy); the
// Build fails without running.
func markRunRefused(b *ferryv1.Build, message string, now metav1.Time) {
	conditions.Set(&b.Status.Conditions, ferryv1.PipelineSucceededCondition, metav1.ConditionFalse, ferryv1.PipelineRunRefusedReason, message, b.Generation, now)
	markFinished(b, metav1.ConditionFalse, ferryv1.PipelineRunRefusedReason, message, now)
}

// markWaitingForExecutor: the Build's run could not be created for now; the controller retries.
func markWaitingForExecutor(b *ferryv1.Build, err error, now metav1.Time) {
	markProgressing(b, ferryv1.WaitingForExecutorReason, "waiting to create the Build's run: "+err.Error(), now)
}

// cancelReason says Cancelled or Superseded, with a message.
func cancelReason(b *ferryv1.Build, detail string) (string, string) {
	reason, msg := ferryv1.CancelledReason, "Cancelled"
	if strings.HasPrefix(b.Spec.CancelReason, SupersededPrefix) {
		reason = ferryv1.SupersededReason
	}
	if b.Spec.CancelReason != "" {
		msg += ": " + b.Spec.CancelReason
	}
	if detail != "" {
		msg += " (" + detail + ")"
	}
	return reason, msg
}

// setRunStatus mirrors an executor's run into the Build: while it waits in the executor's queue
// PipelineSucceeded is Unknown with reason Queued; while it runs, Unknown with reason PipelineRunning; a success with complete results is Ready=True with the image,
// its tags and lineage; a failure, a timeout or missing results is Ready=False with that reason; a
// cancellation is Ready=False with reason Cancelled or Superseded.
func setRunStatus(b *ferryv1.Build, s *RunState, p planFacts, now metav1.Time) {
	kind := s.Kind
	if kind == "" || kind == pipelineRunKind {
		kind = pipelineRunKind
		b.Status.PipelineRunRef = &ferryv1.LocalObjectReference{Name: s.Name}
	}
	run := kind + " " + s.Name
	if s.StartTime != nil && b.Status.StartTime == nil {
		b.Status.StartTime = s.StartTime.DeepCopy()
	}
	if s.Steps != nil {
		b.Status.Steps = s.Steps
	}
	if s.Deploy != nil && b.Status.Deploy == nil {
		b.Status.Deploy = s.Deploy.DeepCopy()
	}
	if s.LogURL != "" {
		b.Status.LogURL = s.LogURL
	}
	set := func(typ string, status metav1.ConditionStatus, reason, message string) {
		conditions.Set(&b.Status.Conditions, typ, status, reason, message, b.Generation, now)
	}
	// finish records an outcome; the Build completes when its run did.
	finish := func(ready metav1.ConditionStatus, reason, message string) {
		if s.CompletionTime != nil && b.Status.CompletionTime == nil {
			b.Status.CompletionTime = s.CompletionTime.DeepCopy()
		}
		markFinished(b, ready, reason, message, now)
	}
	// progress records a run that has not finished: queued or running, or being cancelled.
	progress := func(reason, state, cancelling string) {
		msg := run + " " + state
		if b.Spec.Cancelled {
			msg = "Cancellation requested; waiting for " + run + " " + cancelling
		}
		if s.Message != "" {
			msg += ": " + s.Message
		}
		set(ferryv1.PipelineSucceededCondition, metav1.ConditionUnknown, reason, msg)
		markProgressing(b, reason, msg, now)
	}
	switch s.Phase {
	case PhaseQueued:
		progress(ferryv1.QueuedReason, "is queued", "to leave the queue")
	case PhaseRunning:
		progress(ferryv1.PipelineRunningReason, "is running", "to stop")
	case PhaseSucceeded:
		set(ferryv1.PipelineSucceededCondition, metav1.ConditionTrue, ferryv1.SucceededReason, run+" succeeded")
		image, lineage, err := imageFromResults(s.Results, p.repository)
		if err != nil {
			set(ferryv1.ImagePushedCondition, metav1.ConditionFalse, ferryv1.ResultsMissingReason, err.Error())
			finish(metav1.ConditionFalse, ferryv1.ResultsMissingReason, err.Error())
			return
		}
		b.Status.Image, b.Status.Tags, b.Status.Lineage = image, p.tags, lineage
		set(ferryv1.ImagePushedCondition, metav1.ConditionTrue, ferryv1.SucceededReason, "pushed "+image)
		finish(metav1.ConditionTrue, ferryv1.SucceededReason, "Built and pushed "+image)
	case PhaseTimedOut:
		msg := run + " timed out" + withDetail(s.Message)
		set(ferryv1.PipelineSucceededCondition, metav1.ConditionFalse, ferryv1.PipelineTimeoutReason, msg)
		finish(metav1.ConditionFalse, ferryv1.PipelineTimeoutReason, msg)
	case PhaseCancelled:
		reason, msg := cancelReason(b, run+" stopped")
		set(ferryv1.PipelineSucceededCondition, metav1.ConditionFalse, reason, msg)
		finish(metav1.ConditionFalse, reason, msg)
	default:
		msg := run + " failed" + withDetail(s.Message)
		set(ferryv1.PipelineSucceededCondition, metav1.ConditionFalse, ferryv1.PipelineFailedReason, msg)
		finish(metav1.ConditionFalse, ferryv1.PipelineFailedReason, msg)
	}
}

// planFacts is what setRunStatus needs to know of the Build's plan.
type planFacts struct {
	// repository is the Project's image repository; the results must name it.
	repository string
	// tags are the tags assemble pushes.
	tags []string
}

var digestRE = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)

// imageFromResults checks the results of `ferry assemble` and returns repository@digest and the
// lineage.
func imageFromResults(results map[string]string, repository string) (string, *ferryv1.ImageLineage, error) {
	var missing []string
	for _, r := range []string{buildplan.ResultImageURL, buildplan.ResultImageDigest, buildplan.ResultLineage} {
		if strings.TrimSpace(results[r]) == "" {
			missing = append(missing, r)
		}
	}
	if len(missing) > 0 {
		return "", nil, fmt.Errorf("the pipeline succeeded without reporting %s: no image was recorded", strings.Join(missing, ", "))
	}
	url, digest := strings.TrimSpace(results[buildplan.ResultImageURL]), strings.TrimSpace(results[buildplan.ResultImageDigest])
	if !digestRE.MatchString(digest) {
		return "", nil, fmt.Errorf("result %s %q is not a sha256 digest", buildplan.ResultImageDigest, text.Truncate(digest, 100))
	}
	repo := imageRepository(url)
	if repository != "" {
		if !sameRepository(repo, repository) {
			return "", nil, fmt.Errorf("result %s names %s, not the Project's repository %s", buildplan.ResultImageURL, text.Truncate(repo, 200), repository)
		}
		// The Project's spelling: assemble reports docker.io/team/app as index.docker.io/team/app.
		repo = repository
	}
	lineage := &ferryv1.ImageLineage{}
	if err := json.Unmarshal([]byte(results[buildplan.ResultLineage]), lineage); err != nil {
		return "", nil, fmt.Errorf("result %s is not the image's lineage: %w", buildplan.ResultLineage, err)
	}
	return repo + "@" + digest, lineage, nil
}

// sameRepository reports whether two repository names are the same repository once registry
// defaults are applied (docker.io/team/app and index.docker.io/team/app are).
func sameRepository(a, b string) bool {
	if a == b {
		return true
	}
	ra, errA := name.NewRepository(a)
	rb, errB := name.NewRepository(b)
	return errA == nil && errB == nil && ra.Name() == rb.Name()
}

// imageRepository strips a tag or digest from an image reference.
func imageRepository(ref string) string {
	if i := strings.Index(ref, "@"); i >= 0 {
		ref = ref[:i]
	}
	if i := strings.LastIndex(ref, ":"); i > strings.LastIndex(ref, "/") {
		ref = ref[:i]
	}
	return ref
}

func withDetail(msg string) string {
	if msg == "" {
		return ""
	}
	return ": " + msg
}

// isFinished reports whether the Build reached an outcome.
func isFinished(b *ferryv1.Build) bool { return b.Status.CompletionTime != nil }
