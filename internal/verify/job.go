package verify

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"slices"
	"strings"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// CheckLabel on a verification Job and its pod names the check.
const CheckLabel = "ferry.dev/verification"

// jobKeep is how long a finished verification Job stays for people to look at.
const jobKeep = int32(3600)

// JobName is the name of the Job of one check in one run of a Release's verification in an
// environment: the same after a restart (so that it is found, not started again), another one for
// another run.
func JobName(release, environment string, run int32, source ferryv1.VerificationSource, check string) string {
	sum := sha256.Sum256(fmt.Appendf(nil, "%s\x00%s\x00%d\x00%s\x00%s", release, environment, run, source, check))
	return "ferry-verify-" + check + "-" + hex.EncodeToString(sum[:])[:8]
}

// Job is a Job check to run in a namespace.
type Job struct {
	// Namespace and Name are the Job's.
	Namespace, Name string
	// Labels go on the Job and its pod (never the application's selector labels: the Service
	// must not send traffic to the check's pod).
	Labels map[string]string
	// PullSecret, when set, is the image pull Secret the rollout copied into the namespace.
	PullSecret string
	// Check is the Job check.
	Check *ferryv1.JobCheck
}

func (j *Job) render() *batchv1.Job {
	timeout := j.Check.TimeoutOrDefault()
	pod := corev1.PodSpec{
		RestartPolicy:                corev1.RestartPolicyNever,
		AutomountServiceAccountToken: ptr.To(false),
		Containers: []corev1.Container{{
			Name:    "check",
			Image:   j.Check.Image,
			Command: j.Check.Command,
			Args:    j.Check.Args,
			SecurityContext: &corev1.SecurityContext{
				AllowPrivilegeEscalation: ptr.To(false),
				Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			},
			TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
		}},
	}
	if j.PullSecret != "" {
		pod.ImagePullSecrets = []corev1.LocalObjectReference{{Name: j.PullSecret}}
	}
	return &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Namespace: j.Namespace, Name: j.Name, Labels: j.Labels},
		Spec: batchv1.JobSpec{
			BackoffLimit:            ptr.To[int32](0),
			ActiveDeadlineSeconds:   ptr.To(int64(timeout.Seconds())),
			TTLSecondsAfterFinished: ptr.To(jobKeep),
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: j.Labels},
				Spec:       pod,
			},
		},
	}
}

// StartJob creates the Job; one that exists already (created before a restart) is kept.
func StartJob(ctx context.Context, c client.Client, j *Job) error {
	if err := c.Create(ctx, j.render()); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("failed to create Job %s/%s: %w", j.Namespace, j.Name, err)
	}
	return nil
}

// JobOutcome says whether the Job finished and how: exit 0 passes; a failed Job fails with its
// pod's termination message or the end of its log. A Job that is gone fails.
func JobOutcome(ctx context.Context, c client.Client, cfg *rest.Config, namespace, name string) (done bool, _ Outcome, _ error) {
	job := &batchv1.Job{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: namespace, Name: name}, job); err != nil {
		if apierrors.IsNotFound(err) {
			return true, Outcome{Message: "Job " + name + " is gone before it finished"}, nil
		}
		return false, Outcome{}, fmt.Errorf("failed to read Job %s/%s: %w", namespace, name, err)
	}
	for _, cond := range job.Status.Conditions {
		if cond.Status != corev1.ConditionTrue {
			continue
		}
		switch cond.Type {
		case batchv1.JobComplete:
			return true, Outcome{Passed: true, Message: "Job " + name + " exited 0"}, nil
		case batchv1.JobFailed:
			msg := "Job " + name + " failed"
			if cond.Reason != "" {
				msg += " (" + cond.Reason + ")"
			}
			if out := podOutput(ctx, c, cfg, namespace, name); out != "" {
				msg += ": " + out
			}
			return true, Outcome{Message: msg}, nil
		}
	}
	return false, Outcome{}, nil
}

// StopJob deletes the Job and its pod.
func StopJob(ctx context.Context, c client.Client, namespace, name string) error {
	job := &batchv1.Job{ObjectMeta: metav1.ObjectMeta{Namespace: namespace, Name: name}}
	if err := c.Delete(ctx, job, client.PropagationPolicy(metav1.DeletePropagationBackground)); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to delete Job %s/%s: %w", namespace, name, err)
	}
	return nil
}

// podOutput is what the Job's last pod said: its exit code and termination message (the end of
// its log when it wrote none), redacted and shortened.
func podOutput(ctx context.Context, c client.Client, cfg *rest.Config, namespace, job string) string {
	pods := &corev1.PodList{}
	if err := c.List(ctx, pods, client.InNamespace(namespace), client.MatchingLabels{batchv1.JobNameLabel: job}); err != nil || len(pods.Items) == 0 {
		return ""
	}
	pod := slices.MaxFunc(pods.Items, func(a, b corev1.Pod) int { return a.CreationTimestamp.Compare(b.CreationTimestamp.Time) })
	var parts []string
	for _, cs := range pod.Status.ContainerStatuses {
		if t := cs.State.Terminated; t != nil {
			parts = append(parts, fmt.Sprintf("exit code %d", t.ExitCode))
			if strings.TrimSpace(t.Message) != "" {
				parts = append(parts, Redact(t.Message))
				return strings.Join(parts, ": ")
			}
		}
	}
	if cfg != nil {
		if cs, err := kubernetes.NewForConfig(cfg); err == nil {
			data, err := cs.CoreV1().Pods(namespace).GetLogs(pod.Name, &corev1.PodLogOptions{Container: "check", TailLines: ptr.To[int64](20), LimitBytes: ptr.To[int64](8 << 10)}).DoRaw(ctx)
			if err == nil && len(strings.TrimSpace(string(data))) > 0 {
				parts = append(parts, Redact(string(data)))
			}
		}
	}
	return strings.Join(parts, ": ")
}
