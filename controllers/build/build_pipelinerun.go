package build

import (
	"context"
	"encoding/json"
	"fmt"

	pipelinev1 "github.com/tektoncd/pipeline/pkg/apis/pipeline/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/apis"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
)

// Executor runs a Build's plan and reports on the run. Start is idempotent: a run that exists
// already is success, so a crash between starting a run and recording it never starts a second.
type Executor interface {
	// Name is recorded in the Build's status.executor.
	Name() string
	// Observe reports the Build's run; Exists is false when there is none.
	Observe(ctx context.Context, b *ferryv1.Build) (*RunState, error)
	// Start makes the run exist and reports it.
	Start(ctx context.Context, b *ferryv1.Build, p *buildplan.Plan) (*RunState, error)
	// Cancel asks the run to stop.
	Cancel(ctx context.Context, b *ferryv1.Build) error
}

// TektonExecutor runs each Build as one Tekton PipelineRun owned by the Build.
type TektonExecutor struct {
	// Client reads PipelineRuns and TaskRuns from the cache and writes them.
	Client client.Client
	// APIReader reads a PipelineRun the cache has not seen yet.
	APIReader client.Reader
	// Scheme sets owner references.
	Scheme *runtime.Scheme
	// Cache, when it names variables, gives every Project a step cache of its own.
	Cache StepCache
}

// StepCache is what the Tekton executor keeps between a Project's Builds: one
// PersistentVolumeClaim per Project, owned by it (deleted with it), mounted into the user's steps
// of that Project's Builds only, each variable in Vars naming a directory in it. Builds of
// another Project, and the clone and assemble steps, never see it.
type StepCache struct {
	// Vars are the variables that name cache directories, such as GOCACHE and GOMODCACHE; none
	// turns the cache off.
	Vars []string
	// StorageClassName is the claims' StorageClass ("" for the cluster's default).
	StorageClassName string
	// Size is what each claim requests (zero: DefaultStepCacheSize).
	Size resource.Quantity
}

// DefaultStepCacheSize is a Project's step cache unless StepCache.Size says otherwise.
var DefaultStepCacheSize = resource.MustParse("10Gi")

// StepCacheClaimName is the PersistentVolumeClaim of a Project's step cache.
func StepCacheClaimName(project string) string { return "ferry-cache-" + project }

// Name is "tekton".
func (e *TektonExecutor) Name() string { return "tekton" }

// +kubebuilder:rbac:groups=tekton.dev,resources=pipelineruns,verbs=get;list;watch;create;patch;delete
// +kubebuilder:rbac:groups=tekton.dev,resources=taskruns,verbs=get;list;watch

// Observe reads the Build's PipelineRun and its TaskRun.
func (e *TektonExecutor) Observe(ctx context.Context, b *ferryv1.Build) (*RunState, error) {
	pr := &pipelinev1.PipelineRun{}
	key := types.NamespacedName{Namespace: b.Namespace, Name: buildplan.PipelineRunName(b.Name, b.UID)}
	if err := e.Client.Get(ctx, key, pr); err != nil {
		if apierrors.IsNotFound(err) {
			return &RunState{}, nil
		}
		return nil, err
	}
	if !metav1.IsControlledBy(pr, b) {
		return nil, fmt.Errorf("PipelineRun %s exists but does not belong to Build %s", key.Name, b.Name)
	}
	tr, err := e.taskRun(ctx, pr)
	if err != nil {
		return nil, err
	}
	return stateFromPipelineRun(pr, tr), nil
}

// taskRun finds the TaskRun of the pipeline's one task, if Tekton created it.
func (e *TektonExecutor) taskRun(ctx context.Context, pr *pipelinev1.PipelineRun) (*pipelinev1.TaskRun, error) {
	for _, ref := range pr.Status.ChildReferences {
		if ref.PipelineTaskName != buildplan.TaskName || ref.Kind != "TaskRun" {
			continue
		}
		tr := &pipelinev1.TaskRun{}
		if err := e.Client.Get(ctx, types.NamespacedName{Namespace: pr.Namespace, Name: ref.Name}, tr); err != nil {
			return nil, client.IgnoreNotFound(err)
		}
		return tr, nil
	}
	return nil, nil
}

// Start creates the PipelineRun. One that exists already and belongs to the Build is the run.
func (e *TektonExecutor) Start(ctx context.Context, b *ferryv1.Build, p *buildplan.Plan) (*RunState, error) {
	if len(e.Cache.Vars) > 0 {
		claim, err := e.ensureStepCache(ctx, b.Namespace, p.Project)
		if err != nil {
			return nil, err
		}
		withCache := *p
		withCache.Cache = buildplan.Cache{Claim: claim, Vars: e.Cache.Vars}
		p = &withCache
	}
	pr, err := p.PipelineRun()
	if err != nil {
		return nil, err
	}
	if err := controllerutil.SetControllerReference(b, pr, e.Scheme); err != nil {
		return nil, err
	}
	if err := e.Client.Create(ctx, pr); err != nil {
		switch {
		case apierrors.IsInvalid(err), apierrors.IsBadRequest(err), apierrors.IsForbidden(err):
			// Tekton's webhook, a quota or a policy of the namespace said no: asking again
			// would get the same answer.
			return nil, &RunRefusedError{What: "PipelineRun " + pr.Name, Err: err}
		case !apierrors.IsAlreadyExists(err):
			return nil, fmt.Errorf("failed to create PipelineRun %s: %w", pr.Name, err)
		}
		existing := &pipelinev1.PipelineRun{}
		if err := e.APIReader.Get(ctx, client.ObjectKeyFromObject(pr), existing); err != nil {
			return nil, err
		}
		if !metav1.IsControlledBy(existing, b) {
			return nil, fmt.Errorf("PipelineRun %s exists but does not belong to Build %s", pr.Name, b.Name)
		}
		return stateFromPipelineRun(existing, nil), nil
	}
	return stateFromPipelineRun(pr, nil), nil
}

// +kubebuilder:rbac:groups="",resources=persistentvolumeclaims,verbs=get;create

// ensureStepCache makes the Project's step cache claim exist and returns its name. A claim of
// that name that the Project does not own is never used: another Project's cache, or anyone's
// volume, does not become this one's.
func (e *TektonExecutor) ensureStepCache(ctx context.Context, namespace, project string) (string, error) {
	owner := &ferryv1.Project{}
	if err := e.Client.Get(ctx, types.NamespacedName{Namespace: namespace, Name: project}, owner); err != nil {
		return "", err
	}
	size := e.Cache.Size
	if size.IsZero() {
		size = DefaultStepCacheSize
	}
	pvc := &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: namespace,
			Name:      StepCacheClaimName(project),
			Labels:    map[string]string{ferryv1.ProjectLabel: project, ferryv1.ManagedByLabel: ferryv1.ManagedByValue},
		},
		Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			Resources:   corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: size}},
		},
	}
	if e.Cache.StorageClassName != "" {
		pvc.Spec.StorageClassName = &e.Cache.StorageClassName
	}
	if err := controllerutil.SetControllerReference(owner, pvc, e.Scheme); err != nil {
		return "", err
	}
	// The claim exists from the Project's first Build on: read it first (one request per Build),
	// create it when it is missing.
	existing := &corev1.PersistentVolumeClaim{}
	err := e.APIReader.Get(ctx, client.ObjectKeyFromObject(pvc), existing)
	if apierrors.IsNotFound(err) {
		err = e.Client.Create(ctx, pvc)
		switch {
		case err == nil:
			return pvc.Name, nil
		case apierrors.IsForbidden(err), apierrors.IsInvalid(err):
			return "", &RunRefusedError{What: "the step cache, PersistentVolumeClaim " + pvc.Name + ",", Err: err}
		case !apierrors.IsAlreadyExists(err):
			return "", fmt.Errorf("failed to create the step cache, PersistentVolumeClaim %s: %w", pvc.Name, err)
		}
		// Created since it was read (another Build of the Project): read what is there.
		err = e.APIReader.Get(ctx, client.ObjectKeyFromObject(pvc), existing)
	}
	switch {
	case apierrors.IsForbidden(err):
		return "", &RunRefusedError{What: "reading the step cache, PersistentVolumeClaim " + pvc.Name + ",", Err: err}
	case err != nil:
		return "", fmt.Errorf("failed to read the step cache, PersistentVolumeClaim %s: %w", pvc.Name, err)
	}
	if !metav1.IsControlledBy(existing, owner) {
		return "", &RunRefusedError{What: "the step cache, PersistentVolumeClaim " + pvc.Name + ",", Err: fmt.Errorf("a claim of that name exists and does not belong to Project %s: delete or rename it", project)}
	}
	return pvc.Name, nil
}

// RunRefusedError is a run (or what it needs) the cluster refused to create: retrying cannot
// help, the Build fails.
type RunRefusedError struct {
	// What names what was refused: "PipelineRun NAME", or the step cache's claim.
	What string
	// Err is the API server's answer, which carries the refuser's own words.
	Err error
}

func (e *RunRefusedError) Error() string {
	return fmt.Sprintf("%s was refused: %v", e.What, e.Err)
}

func (e *RunRefusedError) Unwrap() error { return e.Err }

// Cancel sets the PipelineRun's spec.status to Cancelled: Tekton stops its pods.
func (e *TektonExecutor) Cancel(ctx context.Context, b *ferryv1.Build) error {
	pr := &pipelinev1.PipelineRun{ObjectMeta: metav1.ObjectMeta{Namespace: b.Namespace, Name: buildplan.PipelineRunName(b.Name, b.UID)}}
	body := []byte(`{"spec":{"status":"` + pipelinev1.PipelineRunSpecStatusCancelled + `"}}`)
	if err := e.Client.Patch(ctx, pr, client.RawPatch(types.MergePatchType, body)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to cancel PipelineRun %s: %w", pr.Name, err)
	}
	return nil
}

// stateFromPipelineRun reads Tekton's status contract: the Succeeded condition's status decides
// (Unknown runs, True succeeded — reason Succeeded or Completed —, False failed), and the reason
// only tells which failure: Cancelled (also seen with Unknown while cancelling), PipelineRunTimeout.
func stateFromPipelineRun(pr *pipelinev1.PipelineRun, tr *pipelinev1.TaskRun) *RunState {
	s := &RunState{Exists: true, Name: pr.Name, Kind: pipelineRunKind, Phase: PhaseRunning, StartTime: pr.Status.StartTime, CompletionTime: pr.Status.CompletionTime,
		CancelRequested: pr.Spec.Status == pipelinev1.PipelineRunSpecStatusCancelled}
	if raw := pr.Annotations[ferryv1.DeployAnnotation]; raw != "" {
		deploy := &ferryv1.DeploySpec{}
		if json.Unmarshal([]byte(raw), deploy) == nil {
			s.Deploy = deploy
		}
	}
	if tr == nil {
		// Tekton has not made the TaskRun yet: every step waits.
		tr = &pipelinev1.TaskRun{}
	}
	s.Steps = stepsFromTaskRun(pr, tr)
	cond := pr.Status.GetCondition(apis.ConditionSucceeded)
	if cond == nil {
		return s
	}
	s.Message = cond.Message
	switch cond.Status {
	case corev1.ConditionTrue:
		s.Phase = PhaseSucceeded
		s.Results = map[string]string{}
		for _, r := range pr.Status.Results {
			s.Results[r.Name] = r.Value.StringVal
		}
	case corev1.ConditionFalse:
		switch pipelinev1.PipelineRunReason(cond.Reason) {
		case pipelinev1.PipelineRunReasonCancelled:
			s.Phase = PhaseCancelled
		case pipelinev1.PipelineRunReasonTimedOut:
			s.Phase = PhaseTimedOut
		default:
			s.Phase = PhaseFailed
			s.Message = cond.Reason + withDetail(cond.Message)
			if tc := tr.Status.GetCondition(apis.ConditionSucceeded); tc != nil && tc.IsFalse() && tc.Reason != "" && tc.Reason != string(pipelinev1.TaskRunReasonFailed) {
				// The TaskRun says why in Tekton's words where the PipelineRun only counts
				// failed tasks: an image that could not be pulled, a pod that could not be made.
				s.Message = tc.Reason + withDetail(tc.Message)
			}
			if step := failedStep(tr); step != "" {
				s.Message = "step " + step + " failed; " + s.Message
			}
		}
	default:
		s.Phase = PhaseRunning
		s.Message = ""
		if cond.Reason != "" && cond.Reason != string(pipelinev1.PipelineRunReasonRunning) && cond.Reason != string(pipelinev1.PipelineRunReasonStarted) {
			s.Message = cond.Reason + withDetail(cond.Message)
		}
	}
	return s
}

// stepsFromTaskRun lists the steps with their states, in the order of the task.
func stepsFromTaskRun(pr *pipelinev1.PipelineRun, tr *pipelinev1.TaskRun) []ferryv1.StepStatus {
	var names []string
	if ps := pr.Spec.PipelineSpec; ps != nil && len(ps.Tasks) > 0 && ps.Tasks[0].TaskSpec != nil {
		for _, s := range ps.Tasks[0].TaskSpec.Steps {
			names = append(names, s.Name)
		}
	}
	states := map[string]pipelinev1.StepState{}
	for _, st := range tr.Status.Steps {
		states[st.Name] = st
	}
	steps := make([]ferryv1.StepStatus, 0, len(names))
	for _, name := range names {
		step := ferryv1.StepStatus{Name: name, State: "Waiting"}
		st, ok := states[name]
		switch {
		case !ok:
		case st.Terminated != nil:
			t := st.Terminated
			step.ExitCode = &t.ExitCode
			step.StartTime, step.CompletionTime = timePtr(t.StartedAt), timePtr(t.FinishedAt)
			switch {
			case st.TerminationReason == "Skipped":
				step.State = "Skipped"
			case t.ExitCode == 0:
				step.State = "Succeeded"
			default:
				step.State = "Failed"
			}
		case st.Running != nil:
			step.State = "Running"
			step.StartTime = timePtr(st.Running.StartedAt)
		}
		steps = append(steps, step)
	}
	return steps
}

// failedStep names the first step that failed.
func failedStep(tr *pipelinev1.TaskRun) string {
	if tr == nil {
		return ""
	}
	for _, st := range tr.Status.Steps {
		if st.Terminated != nil && st.Terminated.ExitCode != 0 && st.TerminationReason != "Skipped" {
			return fmt.Sprintf("%s (exit code %d)", st.Name, st.Terminated.ExitCode)
		}
	}
	return ""
}

func timePtr(t metav1.Time) *metav1.Time {
	if t.IsZero() {
		return nil
	}
	return &t
}
