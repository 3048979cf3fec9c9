package release

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/events"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/verify"
)

// member is a member cluster for the verification's unit tests: an API server that answers the
// service proxy of shop-prod/shop:8080 (counting the requests, refusing every other path), and a
// fake client for Job checks.
type member struct {
	cfg    *rest.Config
	client client.Client
	mu     sync.Mutex
	status int
	body   string
	hits   int
	paths  []string
}

func newMember(t *testing.T) *member {
	t.Helper()
	m := &member{status: http.StatusOK, body: "ok"}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.mu.Lock()
		defer m.mu.Unlock()
		m.paths = append(m.paths, r.URL.Path)
		if !strings.HasPrefix(r.URL.Path, "/api/v1/namespaces/shop-prod/services/shop:8080/proxy/") {
			http.Error(w, "not the service proxy", http.StatusForbidden)
			return
		}
		m.hits++
		w.WriteHeader(m.status)
		_, _ = w.Write([]byte(m.body))
	}))
	t.Cleanup(srv.Close)
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	m.cfg = &rest.Config{Host: srv.URL}
	m.client = fake.NewClientBuilder().WithScheme(scheme).WithStatusSubresource(&batchv1.Job{}).Build()
	return m
}

func (m *member) answer(status int, body string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.status, m.body = status, body
}

func (m *member) requests() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.hits
}

// verifyFixture is a Release whose rollout in prod is healthy on east, the Environment with
// checks, and a Reconciler whose member cluster is m.
func verifyFixture(t *testing.T, m *member, checks ...ferryv1.VerificationCheck) (*Reconciler, *ferryv1.Release, *plan, *ferryv1.Environment, *events.FakeRecorder) {
	t.Helper()
	env := unitEnv(func(e *ferryv1.Environment) { e.Spec.Verification = checks })
	r := unitReconciler(t, env)
	rec := events.NewFakeRecorder(100)
	r.Recorder = rec
	r.VerifyTargets = func(context.Context, string) (client.Client, *rest.Config, error) { return m.client, m.cfg, nil }
	rel := unitRelease("r1", 0)
	es := &rel.Status.Environments[0]
	done := now
	st := ferryv1.ClusterRolloutStatus{Cluster: "east", Namespace: "shop-prod", Image: unitImage, CompletionTime: &done}
	rollout.SetClusterCondition(&st, metav1.ConditionTrue, ferryv1.HealthyReason, "healthy", now)
	es.Clusters = []ferryv1.ClusterRolloutStatus{st}
	setEnvRollingOut(es, "rolling out", 1, now)
	p := unitPlan()
	p.deploy.Ports = []int32{8080}
	return r, rel, p, env, rec
}

func at(d time.Duration) metav1.Time { return metav1.NewTime(now.Add(d)) }

// persisted is the Release as a new manager reads it after a restart: its status through JSON.
func persisted(t *testing.T, rel *ferryv1.Release) *ferryv1.Release {
	t.Helper()
	data, err := json.Marshal(rel)
	if err != nil {
		t.Fatal(err)
	}
	out := &ferryv1.Release{}
	if err := json.Unmarshal(data, out); err != nil {
		t.Fatal(err)
	}
	return out
}

func drain(rec *events.FakeRecorder) string {
	var out []string
	for {
		select {
		case e := <-rec.Events:
			out = append(out, e)
		default:
			return strings.Join(out, "\n")
		}
	}
}

// TestVerifyHTTPRepeatsAndResumesUnit: an HTTP check repeated 3 times, 10s apart, sends one
// request per due try — a look before the next try is due sends none, a manager restarted in the
// middle (the status read back) goes on from the try it reached — and passes after the third;
// the run records the verified digest, the Verified condition and an event.
func TestVerifyHTTPRepeatsAndResumesUnit(t *testing.T) {
	m := newMember(t)
	r, rel, p, env, rec := verifyFixture(t, m, ferryv1.VerificationCheck{Name: "smoke", HTTP: &ferryv1.HTTPCheck{
		Path: "/healthz", ExpectStatus: 200, BodyMatch: "^ok$", Times: 3, Interval: &metav1.Duration{Duration: 10 * time.Second}}})
	ctx := context.Background()
	es := &rel.Status.Environments[0]

	st, failed := r.verifyAfterRollout(ctx, rel, p, env, es, at(0))
	if failed || kindOf(st) != "wait 10s" || m.requests() != 1 {
		t.Fatalf("first look: %s failed=%v after %d requests, want wait 10s after 1", kindOf(st), failed, m.requests())
	}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition); c == nil || c.Status != metav1.ConditionUnknown {
		t.Fatalf("Verified = %+v, want Unknown while verifying", c)
	}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.ReadyCondition); c.Status != metav1.ConditionUnknown || !strings.Contains(c.Message, "verifying: 0 of 1 checks passed") {
		t.Errorf("Ready = %+v, want the verification's progress", c)
	}
	// Looked at again 4s later (something else woke the Release): the next try is not due.
	if st, _ := r.verifyAfterRollout(ctx, rel, p, env, es, at(4*time.Second)); kindOf(st) != "wait 6s" || m.requests() != 1 {
		t.Fatalf("early look: %s after %d requests, want wait 6s and no new request", kindOf(st), m.requests())
	}
	if st, _ := r.verifyAfterRollout(ctx, rel, p, env, es, at(10*time.Second)); kindOf(st) != "wait 10s" || m.requests() != 2 {
		t.Fatalf("second try: %s after %d requests", kindOf(st), m.requests())
	}

	// The manager restarts: a new Reconciler reads the status back and goes on from try 2.
	rel = persisted(t, rel)
	es = &rel.Status.Environments[0]
	r2, _, _, _, _ := verifyFixture(t, m)
	r2.Recorder = rec
	if cs := es.Verification.Checks[0]; cs.Tries != 2 || cs.NextTry == nil || !cs.NextTry.Equal(&metav1.Time{Time: now.Add(20 * time.Second)}) {
		t.Fatalf("persisted progress = %+v, want 2 tries and the next at +20s", cs)
	}
	st, failed = r2.verifyAfterRollout(ctx, rel, p, env, es, at(20*time.Second))
	if failed || !st.proceeds() || m.requests() != 3 {
		t.Fatalf("third try: %s failed=%v after %d requests, want proceed after exactly 3", kindOf(st), failed, m.requests())
	}
	v := es.Verification
	if v.VerifiedImage != unitImage || v.CompletionTime == nil || v.Checks[0].Result != ferryv1.VerificationPassed || v.Checks[0].Tries != 3 {
		t.Errorf("verification = %+v, want passed with the digest recorded", v)
	}
	if c := meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition); c.Status != metav1.ConditionTrue || !strings.Contains(c.Message, "passed 1 check on east") {
		t.Errorf("Verified = %+v", c)
	}
	if evs := drain(rec); !strings.Contains(evs, "Normal Verified Environment prod: ") {
		t.Errorf("events = %q, want a Verified event", evs)
	}
	// A finished run is not run again (a later Reconcile, before the environment is recorded).
	if st, _ := r2.verifyAfterRollout(ctx, rel, p, env, es, at(time.Minute)); !st.proceeds() || m.requests() != 3 {
		t.Errorf("after the run: %s after %d requests, want proceed without a request", kindOf(st), m.requests())
	}
}

// TestVerifyHTTPFailureFailsTheClusterUnit: a wrong status (and a wrong body) fails the check at
// once; the cluster's rollout turns RolloutFailed naming the check and what it saw, without the
// password the body carried, so that rollOut rolls the environment back.
func TestVerifyHTTPFailureFailsTheClusterUnit(t *testing.T) {
	for _, tc := range []struct {
		name, body, want string
		status           int
	}{
		{"wrong status", "not here; password=hunter2", "GET /healthz: 404", http.StatusNotFound},
		{"wrong body", "degraded token=abc123", `body does not match "^ok$": degraded token=[redacted]`, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := newMember(t)
			m.answer(tc.status, tc.body)
			r, rel, p, env, rec := verifyFixture(t, m, ferryv1.VerificationCheck{Name: "smoke", HTTP: &ferryv1.HTTPCheck{
				Path: "/healthz", ExpectStatus: 200, BodyMatch: "^ok$", Times: 5, Interval: &metav1.Duration{Duration: 10 * time.Second}}})
			es := &rel.Status.Environments[0]
			st, failed := r.verifyAfterRollout(context.Background(), rel, p, env, es, at(0))
			if !failed || st.proceeds() {
				t.Fatalf("%s failed=%v, want a failure", kindOf(st), failed)
			}
			cl := &es.Clusters[0]
			c := clusterRolledOut(cl)
			if !rollout.Failed(cl) || c.Reason != ferryv1.RolloutFailedReason || !strings.Contains(c.Message, "verification check smoke (environment) failed: try 1 of 5: GET /healthz: ") || !strings.Contains(c.Message, tc.want) {
				t.Errorf("cluster east = %+v, want RolloutFailed naming the check and %q", c, tc.want)
			}
			if firstFailed(es) == nil {
				t.Error("rollOut would not see the failed cluster")
			}
			v := es.Verification
			if v.VerifiedImage != "" || v.CompletionTime == nil {
				t.Errorf("verification = %+v, want finished without a verified image", v)
			}
			evs := drain(rec)
			all := c.Message + evs + meta.FindStatusCondition(es.Conditions, ferryv1.VerifiedCondition).Message
			if strings.Contains(all, "hunter2") || strings.Contains(all, "abc123") {
				t.Errorf("a secret of the body leaked: %s", all)
			}
			if !strings.Contains(evs, "Warning VerificationFailed Environment prod: verification check smoke") {
				t.Errorf("events = %q", evs)
			}
		})
	}
}

// TestVerifyRefusesAPathOutOfTheProxyUnit: from the attacker's side, a Release whose own deploy
// settings (not checked by .ferry.yaml's validation) name a path with dot segments fails its check
// without a single request reaching the member's API server.
func TestVerifyRefusesAPathOutOfTheProxyUnit(t *testing.T) {
	m := newMember(t)
	r, rel, p, env, _ := verifyFixture(t, m)
	p.deploy.Verification = []ferryv1.VerificationCheck{{Name: "sneaky", HTTP: &ferryv1.HTTPCheck{Path: "/../../../../api/v1/namespaces/kube-system/secrets", Times: 1}}}
	es := &rel.Status.Environments[0]
	if _, failed := r.verifyAfterRollout(context.Background(), rel, p, env, es, at(0)); !failed {
		t.Fatal("the check did not fail")
	}
	if msg := clusterRolledOut(&es.Clusters[0]).Message; !strings.Contains(msg, "check sneaky (application) failed: the check is invalid: http.path") {
		t.Errorf("message = %q", msg)
	}
	if len(m.paths) != 0 {
		t.Errorf("requests reached the API server: %v", m.paths)
	}
}

func getJob(t *testing.T, c client.Client, name string) *batchv1.Job {
	t.Helper()
	job := &batchv1.Job{}
	if err := c.Get(context.Background(), types.NamespacedName{Namespace: "shop-prod", Name: name}, job); err != nil {
		t.Fatal(err)
	}
	return job
}

func finishJob(t *testing.T, c client.Client, name string, cond batchv1.JobConditionType, reason string) {
	t.Helper()
	job := getJob(t, c, name)
	job.Status.Conditions = append(job.Status.Conditions, batchv1.JobCondition{Type: cond, Status: corev1.ConditionTrue, Reason: reason})
	if err := c.Status().Update(context.Background(), job); err != nil {
		t.Fatal(err)
	}
}

// TestVerifyJobUnit: a Job check starts one Job in the application's namespace (no service
// account token, no retries, not selected by the application's Service, the same Job after a
// restart); it passes when the Job completes, fails when it fails, and a Job that never finishes
// is stopped at its timeout and fails.
func TestVerifyJobUnit(t *testing.T) {
	check := ferryv1.VerificationCheck{Name: "e2e", Job: &ferryv1.JobCheck{Image: "registry.example.com/team/e2e@sha256:" + strings.Repeat("3", 64), Args: []string{"--smoke"}, Timeout: &metav1.Duration{Duration: 2 * time.Minute}}}
	ctx := context.Background()

	t.Run("complete", func(t *testing.T) {
		m := newMember(t)
		r, rel, p, env, _ := verifyFixture(t, m, check)
		p.pullSecret = &rollout.PullSecret{Name: "ferry-pull"}
		es := &rel.Status.Environments[0]
		if st, _ := r.verifyAfterRollout(ctx, rel, p, env, es, at(0)); kindOf(st) != "wait 1s" {
			t.Fatalf("start: %s", kindOf(st))
		}
		name := es.Verification.Checks[0].Job
		if name != verify.JobName("r1", "prod", 1, ferryv1.EnvironmentCheck, "e2e") {
			t.Fatalf("job = %q", name)
		}
		job := getJob(t, m.client, name)
		spec := job.Spec.Template.Spec
		if *job.Spec.BackoffLimit != 0 || *job.Spec.ActiveDeadlineSeconds != 120 || *spec.AutomountServiceAccountToken ||
			spec.Containers[0].Image != check.Job.Image || spec.Containers[0].Args[0] != "--smoke" || spec.ImagePullSecrets[0].Name != "ferry-pull" {
			t.Errorf("job spec = %+v", job.Spec)
		}
		if _, ok := job.Spec.Template.Labels[rollout.NameLabel]; ok {
			t.Error("the check's pod carries the application's selector label: the Service would send traffic to it")
		}
		// Restart: the same Job is found, not a second one started.
		rel = persisted(t, rel)
		es = &rel.Status.Environments[0]
		if st, _ := r.verifyAfterRollout(ctx, rel, p, env, es, at(30*time.Second)); kindOf(st) != "wait 1s" {
			t.Fatalf("running: %s", kindOf(st))
		}
		jobs := &batchv1.JobList{}
		if err := m.client.List(ctx, jobs); err != nil || len(jobs.Items) != 1 {
			t.Fatalf("%d Jobs (%v), want 1", len(jobs.Items), err)
		}
		finishJob(t, m.client, name, batchv1.JobComplete, "")
		if st, failed := r.verifyAfterRollout(ctx, rel, p, env, es, at(40*time.Second)); !st.proceeds() || failed {
			t.Fatalf("complete: %s failed=%v", kindOf(st), failed)
		}
		if es.Verification.VerifiedImage != unitImage {
			t.Errorf("verification = %+v", es.Verification)
		}
	})

	t.Run("failed", func(t *testing.T) {
		m := newMember(t)
		r, rel, p, env, _ := verifyFixture(t, m, check)
		es := &rel.Status.Environments[0]
		r.verifyAfterRollout(ctx, rel, p, env, es, at(0))
		finishJob(t, m.client, es.Verification.Checks[0].Job, batchv1.JobFailed, "BackoffLimitExceeded")
		if _, failed := r.verifyAfterRollout(ctx, rel, p, env, es, at(10*time.Second)); !failed {
			t.Fatal("a failed Job did not fail the check")
		}
		if msg := clusterRolledOut(&es.Clusters[0]).Message; !strings.Contains(msg, "verification check e2e (environment) failed: Job ferry-verify-e2e-") || !strings.Contains(msg, "failed (BackoffLimitExceeded)") {
			t.Errorf("message = %q", msg)
		}
	})

	t.Run("never finishes", func(t *testing.T) {
		m := newMember(t)
		r, rel, p, env, _ := verifyFixture(t, m, check)
		es := &rel.Status.Environments[0]
		r.verifyAfterRollout(ctx, rel, p, env, es, at(0))
		name := es.Verification.Checks[0].Job
		if _, failed := r.verifyAfterRollout(ctx, rel, p, env, es, at(119*time.Second)); failed {
			t.Fatal("failed before the timeout")
		}
		if _, failed := r.verifyAfterRollout(ctx, rel, p, env, es, at(2*time.Minute)); !failed {
			t.Fatal("a Job past its timeout did not fail the check")
		}
		if msg := clusterRolledOut(&es.Clusters[0]).Message; !strings.Contains(msg, "Job "+name+" did not finish within 2m0s") {
			t.Errorf("message = %q", msg)
		}
		if err := m.client.Get(ctx, types.NamespacedName{Namespace: "shop-prod", Name: name}, &batchv1.Job{}); !apierrors.IsNotFound(err) {
			t.Errorf("the timed-out Job is still there: %v", err)
		}
	})
}

// TestReverifyUnit: `ferry verify` (the annotation) starts a new run in an environment the Release
// rolled out to and still runs in — on a finished Release too — and a failed re-verification takes
// back the verified mark; an environment another Release now runs is not re-verified.
func TestReverifyUnit(t *testing.T) {
	m := newMember(t)
	check := ferryv1.VerificationCheck{Name: "smoke", HTTP: &ferryv1.HTTPCheck{Path: "/healthz", ExpectStatus: 200, Times: 1, Interval: &metav1.Duration{Duration: time.Second}}}
	env := unitEnv(func(e *ferryv1.Environment) { e.Spec.Verification = []ferryv1.VerificationCheck{check} })
	project := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: unitNS, Name: "shop"}}
	project.Spec.Promotion.Environments = []string{"prod"}
	project.Status.Environments = []ferryv1.ProjectEnvironmentStatus{{Name: "prod", Image: unitImage, Release: "r1"}}
	rel := unitRelease("r1", 0)
	rel.Spec.Deploy = &ferryv1.DeploySpec{Ports: []int32{8080}}
	rel.Annotations = map[string]string{ferryv1.ReverifyAnnotation: "prod"}
	rel.Finalizers = []string{ferryv1.ReleaseFinalizer}
	es := &rel.Status.Environments[0]
	done := now
	st := ferryv1.ClusterRolloutStatus{Cluster: "east", Namespace: "shop-prod", Image: unitImage, CompletionTime: &done}
	rollout.SetClusterCondition(&st, metav1.ConditionTrue, ferryv1.HealthyReason, "healthy", now)
	es.Clusters = []ferryv1.ClusterRolloutStatus{st}
	setEnvSucceeded(es, "healthy", 1, now)
	es.Verification = &ferryv1.VerificationStatus{Run: 1, Image: unitImage, VerifiedImage: unitImage, StartTime: &done, CompletionTime: &done}
	es.Conditions = append(es.Conditions, metav1.Condition{Type: ferryv1.VerifiedCondition, Status: metav1.ConditionTrue, Reason: ferryv1.VerifiedReason, LastTransitionTime: now})
	rel.Status.CompletionTime = &done
	r := unitReconciler(t, env, project, rel)
	rec := events.NewFakeRecorder(100)
	r.Recorder = rec
	r.VerifyTargets = func(context.Context, string) (client.Client, *rest.Config, error) { return m.client, m.cfg, nil }
	m.answer(http.StatusServiceUnavailable, "down")

	ctx := context.Background()
	key := types.NamespacedName{Namespace: unitNS, Name: "r1"}
	if _, err := r.Reconcile(ctx, reconcileRequest(key)); err != nil {
		t.Fatal(err)
	}
	got := &ferryv1.Release{}
	if err := r.Get(ctx, key, got); err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Annotations[ferryv1.ReverifyAnnotation]; ok {
		t.Error("the request was not consumed")
	}
	ges := &got.Status.Environments[0]
	v := ges.Verification
	if v.Run != 2 || v.CompletionTime == nil || v.VerifiedImage != "" || m.requests() != 1 {
		t.Fatalf("verification = %+v after %d requests, want run 2 failed and the mark taken back", v, m.requests())
	}
	if c := meta.FindStatusCondition(ges.Conditions, ferryv1.VerifiedCondition); c.Status != metav1.ConditionFalse || c.Reason != ferryv1.VerificationFailedReason || !strings.Contains(c.Message, "GET /healthz: 503") {
		t.Errorf("Verified = %+v", c)
	}
	if !envSucceeded(ges) || ges.Clusters[0].Image != unitImage {
		t.Error("a failed re-verification changed the rollout")
	}

	// Another Release runs in prod now: asking again starts nothing.
	project.Status.Environments[0].Release = "r2"
	if err := r.Status().Update(ctx, project); err != nil {
		t.Fatal(err)
	}
	got.Annotations = map[string]string{ferryv1.ReverifyAnnotation: "prod"}
	if err := r.Update(ctx, got); err != nil {
		t.Fatal(err)
	}
	if _, err := r.Reconcile(ctx, reconcileRequest(key)); err != nil {
		t.Fatal(err)
	}
	if err := r.Get(ctx, key, got); err != nil {
		t.Fatal(err)
	}
	if got.Status.Environments[0].Verification.Run != 2 || m.requests() != 1 {
		t.Errorf("a re-verification ran in an environment another Release runs: %+v", got.Status.Environments[0].Verification)
	}
	if evs := drain(rec); !strings.Contains(evs, "cannot be re-verified: it runs Release r2 now") {
		t.Errorf("events = %q", evs)
	}
}

func reconcileRequest(key types.NamespacedName) ctrl.Request {
	return ctrl.Request{NamespacedName: key}
}
