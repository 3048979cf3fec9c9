package build

import (
	"context"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/buildplan"
)

// FakeExecutor is an Executor whose methods call the function fields, in the manner of
// crossplane-runtime's fakes; a nil field has a harmless default (no run yet, a run that starts
// running, a cancellation that succeeds). Unit tests use it; integration tests use the Tekton
// executor against a real API server, or the local executor.
type FakeExecutor struct {
	// ExecutorName is what Name returns; "fake" when empty.
	ExecutorName string
	ObserveFn    func(ctx context.Context, b *ferryv1.Build) (*RunState, error)
	StartFn      func(ctx context.Context, b *ferryv1.Build, p *buildplan.Plan) (*RunState, error)
	CancelFn     func(ctx context.Context, b *ferryv1.Build) error
}

var _ Executor = (*FakeExecutor)(nil)

// Name returns ExecutorName, "fake" when it is empty.
func (f *FakeExecutor) Name() string {
	if f.ExecutorName == "" {
		return "fake"
	}
	return f.ExecutorName
}

// Observe calls ObserveFn; without it the Build has no run.
func (f *FakeExecutor) Observe(ctx context.Context, b *ferryv1.Build) (*RunState, error) {
	if f.ObserveFn == nil {
		return &RunState{}, nil
	}
	return f.ObserveFn(ctx, b)
}

// Start calls StartFn; without it the run exists at once, named after the Build, and is running.
func (f *FakeExecutor) Start(ctx context.Context, b *ferryv1.Build, p *buildplan.Plan) (*RunState, error) {
	if f.StartFn == nil {
		return &RunState{Exists: true, Name: b.Name, Kind: "Fake run", Phase: PhaseRunning}, nil
	}
	return f.StartFn(ctx, b, p)
}

// Cancel calls CancelFn; without it the cancellation succeeds.
func (f *FakeExecutor) Cancel(ctx context.Context, b *ferryv1.Build) error {
	if f.CancelFn == nil {
		return nil
	}
	return f.CancelFn(ctx, b)
}
