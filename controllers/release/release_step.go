package release

import (
	"time"

	ctrl "sigs.k8s.io/controller-runtime"
)

// stepKind says how a Reconcile goes on after a step.
type stepKind int

const (
	// proceedKind: the step is done; the next one runs.
	proceedKind stepKind = iota
	// waitKind: the Release waits here and is looked at again after a while, or when something
	// it watches changes (an Approval, an Environment, a sibling Release, a Cluster).
	waitKind
	// stopKind: the Release stopped in this environment (superseded, rejected, failed, rolled
	// back) or is stalled until a person acts (an expired gate); its status says which.
	stopKind
)

// step is what one step of a Release's Reconcile decided, in the spirit of Flux's
// sreconcile.Result: go on, wait, or stop. A returned error is the fourth outcome (retry with
// backoff).
type step struct {
	kind stepKind
	// after is how long a waiting Release waits before it is looked at again; 0 waits for a
	// watched change only.
	after time.Duration
}

// proceed lets the next step run.
func proceed() step { return step{kind: proceedKind} }

// wait stops this Reconcile and looks again after d (0: when something watched changes).
func wait(d time.Duration) step { return step{kind: waitKind, after: d} }

// stop ends the Release's work in the environment.
func stop() step { return step{kind: stopKind} }

// proceeds reports whether the next step may run.
func (s step) proceeds() bool { return s.kind == proceedKind }

// result is what Reconcile returns for a step that did not proceed.
func (s step) result() ctrl.Result {
	if s.kind == waitKind {
		return ctrl.Result{RequeueAfter: s.after}
	}
	return ctrl.Result{}
}
