package release

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/metrics"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/conditions"
	"github.com/ferryci/ferry/internal/patch"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/text"
	"github.com/ferryci/ferry/internal/verify"
)

// verificationTotal counts finished verification runs.
var verificationTotal = prometheus.NewCounterVec(prometheus.CounterOpts{
	Name: "ferry_release_verification_total",
	Help: "Verification runs of a Release's image in an environment that finished, by result: passed, failed (after a rollout, a failed run rolls the environment back; a failed re-verification takes back the verified mark).",
}, []string{"environment", "result"})

func init() {
	metrics.Registry.MustRegister(verificationTotal)
}

// VerifyTarget hands out a client and the rest config of a member cluster for verification.
type VerifyTarget func(ctx context.Context, cluster string) (client.Client, *rest.Config, error)

// verifyTarget is the client and rest config of a cluster: from r.VerifyTargets when set (tests),
// else from the cluster cache under its rules (a cluster known to be down is answered at once).
func (r *Reconciler) verifyTarget(ctx context.Context, cluster string) (client.Client, *rest.Config, error) {
	if r.VerifyTargets != nil {
		return r.VerifyTargets(ctx, cluster)
	}
	c, err := r.Clusters.Client(ctx, cluster)
	if err != nil {
		return nil, nil, err
	}
	cfg, err := r.Clusters.RESTConfig(ctx, cluster)
	if err != nil {
		return nil, nil, err
	}
	return c, cfg, nil
}

// declaredCheck is a check and who declared it.
type declaredCheck struct {
	source ferryv1.VerificationSource
	ferryv1.VerificationCheck
}

// checksOf are the Environment's checks, then the application's.
func checksOf(env *ferryv1.Environment, p *plan) []declaredCheck {
	var out []declaredCheck
	for _, c := range env.Spec.Verification {
		out = append(out, declaredCheck{ferryv1.EnvironmentCheck, c})
	}
	for _, c := range p.deploy.Verification {
		out = append(out, declaredCheck{ferryv1.ApplicationCheck, c})
	}
	return out
}

// verifyOutcome is where a verification run stands.
type verifyOutcome int

const (
	verifyRunning verifyOutcome = iota
	verifyPassed
	verifyFailed
)

// verifyAfterRollout runs the environment's verification once the rollout is healthy on every
// cluster: it proceeds when there is nothing to verify or every check passed, waits while checks
// run, and, when one failed, marks that check's cluster failed (so that the caller rolls the
// environment back like after a failed health check) and reports failed. In an environment that
// rolls out in waves, the waves before the last passed their checks already (verifyWave): their
// results are kept in the run, so only the last wave's clusters are checked here.
func (r *Reconciler) verifyAfterRollout(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, bool) {
	checks := checksOf(env, p)
	v := es.Verification
	if len(checks) == 0 && v == nil {
		return proceed(), false
	}
	if v == nil || v.Image != p.image {
		v = r.startRun(rel, es, p.image, "verifying "+rollout.ShortImage(p.image)+" after the rollout", now)
	}
	if v.CompletionTime != nil {
		// Finished before a restart: a passed run lets the environment succeed; a failed one
		// already turned a cluster's rollout into a failure.
		return proceed(), false
	}
	outcome, after := r.runChecks(ctx, rel, p, es, checks, 0, now)
	switch outcome {
	case verifyPassed:
		v.VerifiedWave = es.Waves
		return proceed(), false
	case verifyFailed:
		failCheckedCluster(es, v, now)
		return stop(), true
	}
	if es.Waves > 0 {
		setEnvRollingOut(es, verifyingWaveMessage(p, es, es.Waves), rel.Generation, now)
	} else {
		setEnvRollingOut(es, fmt.Sprintf("%s is healthy on %s; verifying: %s", rollout.ShortImage(p.image), clusterNames(es), progressOf(v, es, 0)), rel.Generation, now)
	}
	return wait(after), false
}

// verifyWave runs the checks on a healthy wave (one before the last) before the next wave may
// start, as one run with the later waves: the run starts with wave 1 and keeps each check's result
// per cluster, so a restart goes on where it was and a passed wave is not checked again. When every
// check passed on the wave's clusters it records the wave as verified and returns 0; when one
// failed it marks that check's cluster failed (the caller then rolls back this wave and the ones
// before it, and the later waves never start) and returns 0; otherwise it says how long to wait.
func (r *Reconciler) verifyWave(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus, checks []declaredCheck, wave int32, now metav1.Time) time.Duration {
	v := es.Verification
	if v == nil || v.Image != p.image || v.CompletionTime != nil {
		v = r.startRun(rel, es, p.image, fmt.Sprintf("verifying %s on wave %d of %d", rollout.ShortImage(p.image), wave, es.Waves), now)
	}
	outcome, after := r.runChecks(ctx, rel, p, es, checks, wave, now)
	switch outcome {
	case verifyFailed:
		failCheckedCluster(es, v, now)
		return 0
	case verifyPassed:
		v.VerifiedWave = wave
		msg := fmt.Sprintf("wave %d of %d (%s) passed %s; wave %d starts", wave, es.Waves, waveClusters(es, wave), countChecks(len(checks)), wave+1)
		// Still Unknown: the image is verified once the last wave passed.
		conditions.Set(&es.Conditions, ferryv1.VerifiedCondition, metav1.ConditionUnknown, ferryv1.VerifyingReason, msg, rel.Generation, now)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.VerifiedReason, "Verify", "Environment %s: %s", es.Name, msg)
		return 0
	}
	setEnvRollingOut(es, verifyingWaveMessage(p, es, wave), rel.Generation, now)
	return after
}

// verifyingWaveMessage says which wave's checks run and how far they got.
func verifyingWaveMessage(p *plan, es *ferryv1.ReleaseEnvironmentStatus, wave int32) string {
	return fmt.Sprintf("%s is healthy on wave %d of %d (%s); verifying wave %d/%d: %s",
		rollout.ShortImage(p.image), wave, es.Waves, waveClusters(es, wave), wave, es.Waves, progressOf(es.Verification, es, wave))
}

// failCheckedCluster turns the rollout on the cluster of the run's first failed check into a
// failure, so that the environment rolls back like after a failed health check.
func failCheckedCluster(es *ferryv1.ReleaseEnvironmentStatus, v *ferryv1.VerificationStatus, now metav1.Time) {
	failed := firstFailedCheck(v)
	for i := range es.Clusters {
		st := &es.Clusters[i]
		if st.Cluster != failed.Cluster {
			continue
		}
		st.CompletionTime = nil
		rollout.SetClusterCondition(st, metav1.ConditionFalse, ferryv1.RolloutFailedReason, describeFailure(failed), now)
	}
}

// startRun starts a new verification run (the first after the rollout, or a re-verification).
func (r *Reconciler) startRun(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, image, message string, now metav1.Time) *ferryv1.VerificationStatus {
	prev := es.Verification
	v := &ferryv1.VerificationStatus{Run: 1, Image: image, StartTime: &now}
	if prev != nil {
		v.Run = prev.Run + 1
		v.VerifiedImage = prev.VerifiedImage
	}
	es.Verification = v
	conditions.Set(&es.Conditions, ferryv1.VerifiedCondition, metav1.ConditionUnknown, ferryv1.VerifyingReason, message, rel.Generation, now)
	return v
}

// runChecks advances every check of the run on the clusters of the waves up to through (every
// cluster of the environment when through is 0), the clusters in parallel. It finishes the run
// (status, condition, event, metric) when a check failed, or when all passed on every cluster; it
// reports a wave before the last that passed without finishing the run. Otherwise it says how long
// to wait before the next look.
func (r *Reconciler) runChecks(ctx context.Context, rel *ferryv1.Release, p *plan, es *ferryv1.ReleaseEnvironmentStatus, checks []declaredCheck, through int32, now metav1.Time) (verifyOutcome, time.Duration) {
	v := es.Verification
	checked := func(cl *ferryv1.ClusterRolloutStatus) bool {
		return !rollout.Refused(cl) && (through == 0 || cl.Wave <= through)
	}
	// Every entry exists before the clusters run in parallel: each goroutine changes its own.
	for _, cl := range es.Clusters {
		if !checked(&cl) {
			continue
		}
		for _, chk := range checks {
			if checkStatus(v, chk, cl.Cluster) == nil {
				v.Checks = append(v.Checks, ferryv1.VerificationCheckStatus{Name: chk.Name, Source: chk.source, Cluster: cl.Cluster})
			}
		}
	}
	var wg sync.WaitGroup
	for _, cl := range es.Clusters {
		if !checked(&cl) {
			continue
		}
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, clusterTimeout)
			defer cancel()
			c, cfg, err := r.verifyTarget(cctx, cl.Cluster)
			for _, chk := range checks {
				cs := checkStatus(v, chk, cl.Cluster)
				if cs.Result != "" {
					continue
				}
				if err != nil {
					// Not the application's fault: the check waits for the cluster.
					cs.Message = "cluster " + cl.Cluster + " cannot be reached: " + clusterError(err)
					continue
				}
				r.advanceCheck(cctx, rel, p, es.Name, v.Run, cl, c, cfg, chk, cs, now)
			}
		})
	}
	wg.Wait()

	if failed := firstFailedCheck(v); failed != nil {
		r.finishRun(rel, es, false, describeFailure(failed)+" on cluster "+failed.Cluster, now)
		return verifyFailed, 0
	}
	next := time.Duration(0)
	for _, cs := range v.Checks {
		if cs.Result != "" || !declared(checks, cs) {
			continue
		}
		d := r.pollInterval()
		if cs.NextTry != nil && cs.NextTry.After(now.Time) {
			d = cs.NextTry.Sub(now.Time)
		}
		if next == 0 || d < next {
			next = d
		}
	}
	if next > 0 {
		return verifyRunning, next
	}
	if through > 0 && through < es.Waves {
		return verifyPassed, 0
	}
	r.finishRun(rel, es, true, fmt.Sprintf("%s passed %s on %s", rollout.ShortImage(v.Image), countChecks(len(checks)), clusterNames(es)), now)
	return verifyPassed, 0
}

// advanceCheck does what is due for one check on one cluster: one HTTP request, or starting,
// reading or timing out a Job.
func (r *Reconciler) advanceCheck(ctx context.Context, rel *ferryv1.Release, p *plan, env string, run int32, cl ferryv1.ClusterRolloutStatus, c client.Client, cfg *rest.Config, chk declaredCheck, cs *ferryv1.VerificationCheckStatus, now metav1.Time) {
	if cs.StartTime == nil {
		cs.StartTime = &now
	}
	if fe := verify.Validate(&chk.VerificationCheck); len(fe) > 0 {
		cs.Result, cs.Message = ferryv1.VerificationFailed, "the check is invalid: "+fe[0].Error()
		return
	}
	switch {
	case chk.HTTP != nil:
		if cs.NextTry != nil && cs.NextTry.After(now.Time) {
			return
		}
		port := chk.HTTP.Port
		if port == 0 && len(p.deploy.Ports) > 0 {
			port = p.deploy.Ports[0]
		}
		if port == 0 {
			cs.Result, cs.Message = ferryv1.VerificationFailed, "the application has no Service to send to: deploy.ports is empty and the check names no port"
			return
		}
		out := verify.HTTPTry(ctx, cfg, verify.Service{Namespace: cl.Namespace, Name: rel.Spec.Project, Port: port}, chk.HTTP)
		cs.Tries++
		times := max(chk.HTTP.Times, 1)
		cs.Message = fmt.Sprintf("try %d of %d: %s", cs.Tries, times, out.Message)
		switch {
		case !out.Passed:
			cs.Result, cs.NextTry = ferryv1.VerificationFailed, nil
		case cs.Tries >= times:
			cs.Result, cs.NextTry = ferryv1.VerificationPassed, nil
		default:
			next := metav1.NewTime(now.Add(chk.HTTP.IntervalOrDefault()))
			cs.NextTry = &next
		}
	case chk.Job != nil:
		if cs.Job == "" {
			job := &verify.Job{
				Namespace: cl.Namespace,
				Name:      verify.JobName(rel.Name, env, run, chk.source, chk.Name),
				Labels: map[string]string{
					ferryv1.ProjectLabel: rel.Spec.Project, ferryv1.ReleaseLabel: rel.Name, ferryv1.EnvironmentLabel: env,
					verify.CheckLabel: chk.Name, ferryv1.ManagedByLabel: ferryv1.ManagedByValue,
				},
				Check: chk.Job,
			}
			if p.pullSecret != nil {
				job.PullSecret = p.pullSecret.Name
			}
			if err := verify.StartJob(ctx, c, job); err != nil {
				if apierrors.IsForbidden(err) || apierrors.IsInvalid(err) {
					cs.Result, cs.Message = ferryv1.VerificationFailed, "the cluster refused the Job: "+clusterError(err)
					return
				}
				cs.Message = clusterError(err)
				return
			}
			cs.Job, cs.Message = job.Name, "Job "+job.Name+" started"
			return
		}
		done, out, err := verify.JobOutcome(ctx, c, cfg, cl.Namespace, cs.Job)
		if err != nil {
			cs.Message = clusterError(err)
			return
		}
		if done {
			cs.Message = out.Message
			cs.Result = ferryv1.VerificationFailed
			if out.Passed {
				cs.Result = ferryv1.VerificationPassed
			}
			return
		}
		timeout := chk.Job.TimeoutOrDefault()
		if now.Sub(cs.StartTime.Time) >= timeout {
			if err := verify.StopJob(ctx, c, cl.Namespace, cs.Job); err != nil {
				cs.Message = clusterError(err)
				return
			}
			cs.Result, cs.Message = ferryv1.VerificationFailed, fmt.Sprintf("Job %s did not finish within %s", cs.Job, timeout)
		}
	}
}

// finishRun records a finished run: the verified mark (given or taken back), the condition, an
// event and the metric.
func (r *Reconciler) finishRun(rel *ferryv1.Release, es *ferryv1.ReleaseEnvironmentStatus, passed bool, message string, now metav1.Time) {
	v := es.Verification
	v.CompletionTime = &now
	message = text.Message(message)
	if passed {
		v.VerifiedImage = v.Image
		conditions.Set(&es.Conditions, ferryv1.VerifiedCondition, metav1.ConditionTrue, ferryv1.VerifiedReason, message, rel.Generation, now)
		verificationTotal.WithLabelValues(es.Name, "passed").Inc()
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.VerifiedReason, "Verify", "Environment %s: %s", es.Name, message)
		return
	}
	v.VerifiedImage = ""
	conditions.Set(&es.Conditions, ferryv1.VerifiedCondition, metav1.ConditionFalse, ferryv1.VerificationFailedReason, message, rel.Generation, now)
	verificationTotal.WithLabelValues(es.Name, "failed").Inc()
	r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.VerificationFailedReason, "Verify", "Environment %s: %s", es.Name, message)
}

func checkStatus(v *ferryv1.VerificationStatus, chk declaredCheck, cluster string) *ferryv1.VerificationCheckStatus {
	for i := range v.Checks {
		cs := &v.Checks[i]
		if cs.Name == chk.Name && cs.Source == chk.source && cs.Cluster == cluster {
			return cs
		}
	}
	return nil
}

// declared reports whether a check's entry belongs to a check still declared (one removed from
// the Environment during the run no longer holds it up).
func declared(checks []declaredCheck, cs ferryv1.VerificationCheckStatus) bool {
	return slices.ContainsFunc(checks, func(c declaredCheck) bool { return c.Name == cs.Name && c.source == cs.Source })
}

func firstFailedCheck(v *ferryv1.VerificationStatus) *ferryv1.VerificationCheckStatus {
	for i := range v.Checks {
		if v.Checks[i].Result == ferryv1.VerificationFailed {
			return &v.Checks[i]
		}
	}
	return nil
}

// describeFailure names a failed check, who declared it and what it saw.
func describeFailure(cs *ferryv1.VerificationCheckStatus) string {
	return fmt.Sprintf("verification check %s (%s) failed: %s", cs.Name, strings.ToLower(string(cs.Source)), cs.Message)
}

// progressOf says how many checks passed so far, on the clusters of one wave (on every cluster
// when wave is 0).
func progressOf(v *ferryv1.VerificationStatus, es *ferryv1.ReleaseEnvironmentStatus, wave int32) string {
	waveOf := map[string]int32{}
	for _, st := range es.Clusters {
		waveOf[st.Cluster] = st.Wave
	}
	passed, total := 0, 0
	for _, cs := range v.Checks {
		if wave != 0 && waveOf[cs.Cluster] != wave {
			continue
		}
		total++
		if cs.Result == ferryv1.VerificationPassed {
			passed++
		}
	}
	return fmt.Sprintf("%d of %d checks passed", passed, total)
}

func countChecks(n int) string {
	if n == 1 {
		return "1 check"
	}
	return fmt.Sprintf("%d checks", n)
}

// reverifying reports whether a re-verification runs in an environment the Release rolled out to.
func reverifying(es *ferryv1.ReleaseEnvironmentStatus) bool {
	return envSucceeded(es) && es.Verification != nil && es.Verification.CompletionTime == nil
}

// requestReverify starts a re-verification in each environment named in the Release's
// ReverifyAnnotation that the Release rolled out to and still runs in, then removes the
// annotation. The new runs are written before the request is consumed, so that a crash in between
// repeats the request rather than losing it.
func (r *Reconciler) requestReverify(ctx context.Context, rel *ferryv1.Release, patcher *patch.StatusPatcher) error {
	value, ok := rel.Annotations[ferryv1.ReverifyAnnotation]
	if !ok {
		return nil
	}
	now := r.now()
	proj := &ferryv1.Project{}
	if err := r.Get(ctx, types.NamespacedName{Namespace: rel.Namespace, Name: rel.Spec.Project}, proj); client.IgnoreNotFound(err) != nil {
		return fmt.Errorf("failed to read Project %s: %w", rel.Spec.Project, err)
	}
	for _, name := range splitList(value) {
		es := envStatus(rel, name)
		switch {
		case es == nil || !envSucceeded(es):
			r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.VerificationFailedReason, "Reverify", "Environment %s cannot be re-verified: the Release has not rolled out there", name)
			continue
		case reverifying(es):
			continue
		}
		if cur := deployedIn(proj, name); cur == nil || cur.Release != rel.Name {
			runs := "nothing"
			if cur != nil {
				runs = "Release " + cur.Release
			}
			r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, ferryv1.VerificationFailedReason, "Reverify", "Environment %s cannot be re-verified: it runs %s now, not this Release", name, runs)
			continue
		}
		r.startRun(rel, es, rel.Spec.Image, "re-verification requested", now)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, ferryv1.VerifyingReason, "Reverify", "Environment %s: re-verification %d started", name, es.Verification.Run)
	}
	if err := patcher.Patch(ctx, r.Client, rel); err != nil {
		return err
	}
	before := rel.DeepCopy()
	delete(rel.Annotations, ferryv1.ReverifyAnnotation)
	if err := r.Patch(ctx, rel, client.MergeFrom(before)); err != nil {
		return fmt.Errorf("failed to remove annotation %s: %w", ferryv1.ReverifyAnnotation, err)
	}
	return nil
}

// reverify advances the re-verifications running in environments the Release rolled out to. A
// failed one takes back the verified mark (condition, status, event, metric) and leaves the
// workload as it is: newer rollouts may depend on it, and people decide. It says how long to wait
// before the next look, 0 when none runs.
func (r *Reconciler) reverify(ctx context.Context, rel *ferryv1.Release, p *plan, now metav1.Time) (time.Duration, error) {
	next := time.Duration(0)
	for i := range rel.Status.Environments {
		es := &rel.Status.Environments[i]
		if !reverifying(es) {
			continue
		}
		env := &ferryv1.Environment{}
		if err := r.Get(ctx, types.NamespacedName{Name: es.Name}, env); err != nil {
			if apierrors.IsNotFound(err) {
				r.finishRun(rel, es, false, "re-verification: environment "+es.Name+" not found", now)
				continue
			}
			return 0, fmt.Errorf("failed to read Environment %s: %w", es.Name, err)
		}
		if p.image != es.Verification.Image {
			es.Verification.Image = p.image
		}
		// A re-verification checks every cluster, whatever wave it rolled out in.
		outcome, after := r.runChecks(ctx, rel, p, es, checksOf(env, p), 0, now)
		if outcome == verifyRunning && (next == 0 || after < next) {
			next = after
		}
	}
	return next, nil
}

// failReverifications ends the running re-verifications of a Release whose settings cannot be
// read any more.
func (r *Reconciler) failReverifications(rel *ferryv1.Release, why string, now metav1.Time) {
	for i := range rel.Status.Environments {
		if es := &rel.Status.Environments[i]; reverifying(es) {
			r.finishRun(rel, es, false, "re-verification cannot run: "+why, now)
		}
	}
}
