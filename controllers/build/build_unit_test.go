package build

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/tools/events"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/client/interceptor"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
	"github.com/ferryci/ferry/internal/gitsource"
)

const unitSHA = "0123456789abcdef0123456789abcdef01234567"

// unitReconciler is a Build reconciler on a fake client, with a fixed clock and a pipeline file
// read from memory.
func unitReconciler(t *testing.T, ex Executor, file string, readErr error, objs ...client.Object) *Reconciler {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	if err := ferryv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(&ferryv1.Build{}, &ferryv1.Project{}).
		WithIndex(&ferryv1.Build{}, projectIndex, indexProject).WithIndex(&ferryv1.Build{}, projectRefIndex, indexProjectRef).Build()
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	return &Reconciler{
		Client: c, APIReader: c, Scheme: scheme, Executor: ex, Recorder: events.NewFakeRecorder(100), Namespace: "ferry-system", FerryImage: "registry.example.com/ferry:test",
		Now: func() time.Time { return now },
		ReadSource: func(context.Context, gitsource.Request, string) ([]byte, error) {
			return []byte(file), readErr
		},
	}
}

func unitProject() *ferryv1.Project {
	return &ferryv1.Project{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app", UID: "p-uid"},
		Spec: ferryv1.ProjectSpec{
			Repository: ferryv1.Repository{CloneURL: "https://git.example.com/team/app.git"},
			Image:      ferryv1.ImageRepository{Repository: "registry.example.com/team/app"},
		},
	}
}

func unitBuild(mutate func(*ferryv1.Build)) *ferryv1.Build {
	b := &ferryv1.Build{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "app-main-1", UID: "b-uid", Generation: 1,
			CreationTimestamp: metav1.NewTime(time.Date(2026, 3, 1, 11, 59, 0, 0, time.UTC))},
		Spec: ferryv1.BuildSpec{Project: "app", Revision: unitSHA, Ref: "refs/heads/main"},
	}
	if mutate != nil {
		mutate(b)
	}
	return b
}

// TestEnsureRunUnit: ensureRun returns an existing run, starts one once the pipeline file reads
// and plans, and otherwise ends the Build without a run (cancelled, a tag that cannot tag an
// image, an invalid pipeline file, a source that stays unreadable past the Build's timeout) or
// retries (a source that cannot be read yet).
func TestEnsureRunUnit(t *testing.T) {
	okPipeline := "stack: registry.example.com/stacks/debian@sha256:0b2a1f5d9e4c7a3b8f6e2d1c0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b\nbuild:\n  image: golang:1.26\n  steps:\n    - name: test\n      run: go test ./...\n"
	existing := &RunState{Exists: true, Name: "pr-1", Phase: PhaseRunning}
	for _, tc := range []struct {
		name       string
		build      func(*ferryv1.Build)
		observe    *RunState
		file       string
		readErr    error
		wantRun    bool
		wantErr    bool
		wantStart  bool
		wantReady  string // status/reason of Ready, "" for none
		wantSource string // status/reason of SourceResolved, "" for none
		wantFinish bool
	}{
		{name: "the run exists", observe: existing, wantRun: true},
		{name: "cancelled before it ran", build: func(b *ferryv1.Build) { b.Spec.Cancelled, b.Spec.CancelReason = true, "by alice" },
			wantReady: "False/Cancelled", wantFinish: true},
		{name: "superseded before it ran", build: func(b *ferryv1.Build) { b.Spec.Cancelled, b.Spec.CancelReason = true, SupersededPrefix+"app-main-2" },
			wantReady: "False/Superseded", wantFinish: true},
		{name: "a tag that cannot tag an image", build: func(b *ferryv1.Build) { b.Spec.Ref = "refs/tags/release/1.0" },
			wantReady: "False/InvalidImageTag", wantFinish: true},
		{name: "an invalid pipeline file", file: "stak: x\n",
			wantReady: "False/InvalidPipelineFile", wantSource: "False/InvalidPipelineFile", wantFinish: true},
		{name: "no pipeline file", readErr: &gitsource.FileNotFoundError{File: ferryv1.DefaultPipelineFile, Revision: unitSHA},
			wantReady: "False/InvalidPipelineFile", wantSource: "False/InvalidPipelineFile", wantFinish: true},
		{name: "the source cannot be read yet", readErr: errors.New("connection refused"), wantErr: true,
			wantReady: "Unknown/SourceUnavailable", wantSource: "False/SourceUnavailable"},
		{name: "the source cannot be read past the timeout", readErr: errors.New("connection refused"),
			build: func(b *ferryv1.Build) {
				b.CreationTimestamp = metav1.NewTime(time.Date(2026, 2, 1, 0, 0, 0, 0, time.UTC))
			},
			wantReady: "False/SourceUnavailable", wantSource: "False/SourceUnavailable", wantFinish: true},
		{name: "starts the run", file: okPipeline, wantRun: true, wantStart: true, wantSource: "True/Succeeded"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			started := 0
			ex := &FakeExecutor{
				ObserveFn: func(context.Context, *ferryv1.Build) (*RunState, error) {
					if tc.observe != nil {
						return tc.observe, nil
					}
					return &RunState{}, nil
				},
				StartFn: func(_ context.Context, b *ferryv1.Build, p *buildplan.Plan) (*RunState, error) {
					started++
					if p.PipelineFile != ferryv1.DefaultPipelineFile || len(p.Steps) == 0 {
						t.Errorf("plan %+v", p)
					}
					return &RunState{Exists: true, Name: b.Name, Phase: PhaseQueued}, nil
				},
			}
			r := unitReconciler(t, ex, tc.file, tc.readErr)
			b := unitBuild(tc.build)
			run, err := r.ensureRun(context.Background(), b, unitProject())
			if (err != nil) != tc.wantErr || (run != nil) != tc.wantRun {
				t.Fatalf("ensureRun = %+v, %v; want a run %v, an error %v", run, err, tc.wantRun, tc.wantErr)
			}
			if (started == 1) != tc.wantStart || started > 1 {
				t.Errorf("started %d times", started)
			}
			if tc.wantRun && b.Status.Executor != "fake" {
				t.Errorf("executor %q", b.Status.Executor)
			}
			if tc.wantStart && (len(b.Status.Steps) != 3 || b.Status.Steps[1].Name != "test" || b.Status.Steps[1].State != "Waiting") {
				t.Errorf("steps %+v", b.Status.Steps)
			}
			if got := unitCondition(b, ferryv1.ReadyCondition); got != tc.wantReady {
				t.Errorf("Ready = %q, want %q", got, tc.wantReady)
			}
			if got := unitCondition(b, ferryv1.SourceResolvedCondition); got != tc.wantSource {
				t.Errorf("SourceResolved = %q, want %q", got, tc.wantSource)
			}
			if isFinished(b) != tc.wantFinish {
				t.Errorf("finished %v, want %v", isFinished(b), tc.wantFinish)
			}
		})
	}
}

func unitCondition(b *ferryv1.Build, typ string) string {
	if c := meta.FindStatusCondition(b.Status.Conditions, typ); c != nil {
		return string(c.Status) + "/" + c.Reason
	}
	return ""
}

// TestReconcileUnit: a whole Reconcile on a fake client: a missing Project stalls the Build
// without retrying; a Build is cancelled through the executor, its outcome mirrored and written
// once; a newer Build supersedes an older one of the same ref.
func TestReconcileUnit(t *testing.T) {
	ctx := context.Background()
	t.Run("a missing Project", func(t *testing.T) {
		b := unitBuild(nil)
		r := unitReconciler(t, &FakeExecutor{}, "", nil, b)
		_, err := r.Reconcile(ctx, requestFor(b))
		if !errors.Is(err, reconcileTerminal) {
			t.Errorf("Reconcile: %v, want a terminal error", err)
		}
		got := r.get(t, b)
		if unitCondition(got, ferryv1.StalledCondition) != "True/ProjectNotFound" || unitCondition(got, ferryv1.ReadyCondition) != "False/ProjectNotFound" || got.Status.CompletionTime != nil {
			t.Errorf("status %+v", got.Status)
		}
		if msg := meta.FindStatusCondition(got.Status.Conditions, ferryv1.ReadyCondition).Message; msg != "project app not found in namespace team" {
			t.Errorf("message %q", msg)
		}
	})
	for _, requested := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancelled while running, run already asked to stop: %v", requested), func(t *testing.T) {
			b := unitBuild(func(b *ferryv1.Build) { b.Spec.Cancelled = true })
			cancels := 0
			ex := &FakeExecutor{
				ObserveFn: func(context.Context, *ferryv1.Build) (*RunState, error) {
					return &RunState{Exists: true, Name: "pr", Phase: PhaseRunning, CancelRequested: requested}, nil
				},
				CancelFn: func(context.Context, *ferryv1.Build) error { cancels++; return nil },
			}
			r := unitReconciler(t, ex, "", nil, b, unitProject())
			if _, err := r.Reconcile(ctx, requestFor(b)); err != nil {
				t.Fatal(err)
			}
			want := 1
			if requested {
				want = 0
			}
			got := r.get(t, b)
			if cancels != want || unitCondition(got, ferryv1.ReadyCondition) != "Unknown/PipelineRunning" || got.Status.Executor != "fake" {
				t.Errorf("%d cancels (want %d), status %+v", cancels, want, got.Status)
			}
		})
	}
	t.Run("supersede", func(t *testing.T) {
		p := unitProject()
		p.Spec.Triggers.Supersede = true
		older := unitBuild(func(b *ferryv1.Build) { b.Name, b.UID = "app-main-0", "old-uid" })
		newer := unitBuild(func(b *ferryv1.Build) { b.CreationTimestamp = metav1.NewTime(b.CreationTimestamp.Add(time.Minute)) })
		r := unitReconciler(t, &FakeExecutor{ObserveFn: func(_ context.Context, b *ferryv1.Build) (*RunState, error) {
			return &RunState{Exists: true, Name: b.Name, Phase: PhaseRunning}, nil
		}}, "", nil, p, older, newer)
		if _, err := r.Reconcile(ctx, requestFor(newer)); err != nil {
			t.Fatal(err)
		}
		if got := r.get(t, older); !got.Spec.Cancelled || got.Spec.CancelReason != SupersededPrefix+newer.Name {
			t.Errorf("older spec %+v", got.Spec)
		}
		if got := r.get(t, newer); got.Spec.Cancelled {
			t.Errorf("newer cancelled: %+v", got.Spec)
		}
		proj := &ferryv1.Project{}
		if err := r.Get(ctx, client.ObjectKeyFromObject(p), proj); err != nil || proj.Status.LastBuild == nil || proj.Status.LastBuild.Name != newer.Name {
			t.Errorf("lastBuild %+v, %v", proj.Status.LastBuild, err)
		}
	})
	t.Run("a Build not yet started with a newer one cancels itself without reading its source or starting", func(t *testing.T) {
		p := unitProject()
		p.Spec.Triggers.Supersede = true
		older := unitBuild(func(b *ferryv1.Build) { b.Name, b.UID = "app-main-0", "old-uid" })
		newer := unitBuild(func(b *ferryv1.Build) { b.CreationTimestamp = metav1.NewTime(b.CreationTimestamp.Add(time.Minute)) })
		cancelledNewest := unitBuild(func(b *ferryv1.Build) {
			b.Name, b.UID, b.Spec.Cancelled = "app-main-2", "cancelled-uid", true
			b.CreationTimestamp = metav1.NewTime(b.CreationTimestamp.Add(2 * time.Minute))
		})
		starts := 0
		r := unitReconciler(t, &FakeExecutor{StartFn: func(context.Context, *ferryv1.Build, *buildplan.Plan) (*RunState, error) {
			starts++
			return &RunState{Exists: true}, nil
		}}, "", errors.New("the source must not be read"), p, older, newer, cancelledNewest)
		// The first reconcile cancels it; the change of its spec brings it back to finish.
		for range 2 {
			if _, err := r.Reconcile(ctx, requestFor(older)); err != nil {
				t.Fatal(err)
			}
		}
		got := r.get(t, older)
		if !got.Spec.Cancelled || got.Spec.CancelReason != SupersededPrefix+newer.Name || starts != 0 || got.Status.CompletionTime == nil ||
			unitCondition(got, ferryv1.ReadyCondition) != "False/"+ferryv1.SupersededReason {
			t.Errorf("%d starts, spec %+v, status %+v", starts, got.Spec, got.Status)
		}
	})
}

// TestPruneHistoryUnit: a history far beyond the limit is pruned at most pruneBatch Builds per
// reconcile, the oldest first, each deleted once even when the cache still shows it, and the
// reconcile comes back while some are left.
func TestPruneHistoryUnit(t *testing.T) {
	ctx := context.Background()
	p := unitProject()
	p.Spec.BuildHistoryLimit = 2
	objs := []client.Object{p}
	const total = pruneBatch + 7
	for i := range total {
		objs = append(objs, unitBuild(func(b *ferryv1.Build) {
			b.Name, b.UID = fmt.Sprintf("app-main-%02d", i), types.UID(fmt.Sprintf("uid-%02d", i))
			done := metav1.NewTime(b.CreationTimestamp.Add(time.Duration(i) * time.Minute))
			b.Status.CompletionTime = &done
		}))
	}
	deletes := 0
	r := unitReconciler(t, &FakeExecutor{}, "", nil, objs...)
	r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
		deletes++
		return c.Delete(ctx, obj, opts...)
	}})
	newest := objs[total].(*ferryv1.Build)
	more, err := r.pruneHistory(ctx, newest)
	if err != nil || !more || deletes != pruneBatch {
		t.Fatalf("first prune: more=%v, %d deletes, %v", more, deletes, err)
	}
	// What the first deleted is gone; the oldest went first.
	if err := r.Get(ctx, client.ObjectKey{Namespace: "team", Name: "app-main-00"}, &ferryv1.Build{}); err == nil {
		t.Error("the oldest Build is still there")
	}
	more, err = r.pruneHistory(ctx, newest)
	if err != nil || more || deletes != total-2 {
		t.Fatalf("second prune: more=%v, %d deletes in all, want %d, %v", more, deletes, total-2, err)
	}
	var left ferryv1.BuildList
	if err := r.List(ctx, &left); err != nil || len(left.Items) != 2 || left.Items[0].Name != fmt.Sprintf("app-main-%02d", total-2) {
		t.Errorf("left: %d Builds (%v)", len(left.Items), err)
	}
	// A Build the cache still shows after its deletion is not deleted again.
	if !r.pruned.has("uid-00") {
		t.Error("a deleted Build is not remembered")
	}
}

var reconcileTerminal = reconcile.TerminalError(nil)

func requestFor(b *ferryv1.Build) reconcile.Request {
	return reconcile.Request{NamespacedName: client.ObjectKeyFromObject(b)}
}

// get reads a Build back from the fake client.
func (r *Reconciler) get(t *testing.T, b *ferryv1.Build) *ferryv1.Build {
	t.Helper()
	got := &ferryv1.Build{}
	if err := r.Get(context.Background(), client.ObjectKeyFromObject(b), got); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestClaimsUnit: workers reconciling at once act on a Build once. A Build another worker is
// deleting is skipped by a prune, a superseded Build is asked to cancel once however many newer
// Builds find it while the cache still shows it running, and a request that failed is sent again.
func TestClaimsUnit(t *testing.T) {
	ctx := context.Background()
	p := unitProject()
	p.Spec.BuildHistoryLimit = 1
	old := unitBuild(func(b *ferryv1.Build) {
		b.Name, b.UID = "app-main-0", "uid-0"
		done := metav1.NewTime(b.CreationTimestamp.Time)
		b.Status.CompletionTime = &done
	})
	newer := unitBuild(func(b *ferryv1.Build) {
		b.Name, b.UID = "app-main-1", "uid-1"
		b.CreationTimestamp = metav1.NewTime(b.CreationTimestamp.Add(time.Minute))
		done := metav1.NewTime(b.CreationTimestamp.Time)
		b.Status.CompletionTime = &done
	})
	running := unitBuild(func(b *ferryv1.Build) { b.Name, b.UID = "app-main-2", "uid-2" })
	deletes, patches := 0, 0
	var failPatch error
	r := unitReconciler(t, &FakeExecutor{}, "", nil, p, old, newer, running)
	r.Client = interceptor.NewClient(r.Client.(client.WithWatch), interceptor.Funcs{
		Delete: func(ctx context.Context, c client.WithWatch, obj client.Object, opts ...client.DeleteOption) error {
			deletes++
			return c.Delete(ctx, obj, opts...)
		},
		Patch: func(ctx context.Context, c client.WithWatch, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
			patches++
			if failPatch != nil {
				return failPatch
			}
			return c.Patch(ctx, obj, patch, opts...)
		},
	})

	// Another worker claimed the oldest Build: this prune leaves it to that worker.
	if !r.pruned.claim(old.UID, time.Now()) {
		t.Fatal("a first claim was refused")
	}
	if more, err := r.pruneHistory(ctx, newer); err != nil || more || deletes != 0 {
		t.Fatalf("prune beside another worker: more=%v, %d deletes, %v", more, deletes, err)
	}
	r.pruned.release(old.UID)
	if _, err := r.pruneHistory(ctx, newer); err != nil || deletes != 1 {
		t.Fatalf("prune: %d deletes, %v", deletes, err)
	}

	// The first request to cancel fails: it is sent again by the next newer Build that finds it,
	// and then never again while the cache still shows the Build uncancelled.
	failPatch = errors.New("etcdserver: request timed out")
	if err := r.cancelSuperseded(ctx, running, "app-main-3"); err == nil {
		t.Fatal("a failed patch was not reported")
	}
	failPatch = nil
	for _, by := range []string{"app-main-3", "app-main-4", "app-main-5"} {
		if err := r.cancelSuperseded(ctx, running, by); err != nil {
			t.Fatal(err)
		}
	}
	if got := r.get(t, running); patches != 2 || !got.Spec.Cancelled || got.Spec.CancelReason != SupersededPrefix+"app-main-3" {
		t.Errorf("%d patches (want the failed one and one more), spec %+v", patches, got.Spec)
	}
}

// TestCancelledBeforeStartPrunesUnit: a Build that ends without a run (cancelled before it
// started) prunes the Project's history like any finished Build: in a burst of pushes these are
// most of the Builds, and the history must not wait for the few that ran. It prunes once more a
// moment later.
func TestCancelledBeforeStartPrunesUnit(t *testing.T) {
	ctx := context.Background()
	p := unitProject()
	p.Spec.BuildHistoryLimit = 1
	oldest := unitBuild(func(b *ferryv1.Build) {
		b.Name, b.UID = "app-main-0", "uid-0"
		b.CreationTimestamp = metav1.NewTime(b.CreationTimestamp.Add(-time.Hour))
		done := metav1.NewTime(b.CreationTimestamp.Time)
		b.Status.CompletionTime = &done
	})
	cancelled := unitBuild(func(b *ferryv1.Build) { b.Spec.Cancelled, b.Spec.CancelReason = true, "by alice" })
	r := unitReconciler(t, &FakeExecutor{}, "", errors.New("the source must not be read"), p, oldest, cancelled)
	// The reconcile in which it finishes comes back once to prune again (Builds finishing at once
	// each see the others unfinished in the cache); that one does not come back.
	res, err := r.Reconcile(ctx, requestFor(cancelled))
	if err != nil || res.RequeueAfter != pruneRetry {
		t.Fatalf("finishing reconcile: %+v, %v; want a requeue after %s", res, err, pruneRetry)
	}
	if got := r.get(t, cancelled); got.Status.CompletionTime == nil {
		t.Fatalf("the cancelled Build did not finish: %+v", got.Status)
	}
	if err := r.Get(ctx, client.ObjectKeyFromObject(oldest), &ferryv1.Build{}); !apierrors.IsNotFound(err) {
		t.Errorf("the Build beyond the history limit is still there: %v", err)
	}
	if res, err := r.Reconcile(ctx, requestFor(cancelled)); err != nil || !res.IsZero() {
		t.Errorf("reconcile of a finished Build: %+v, %v; want done", res, err)
	}
}
