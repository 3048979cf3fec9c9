package testutil

import (
	"testing"

	ctrl "sigs.k8s.io/controller-runtime"
)

func TestLogsLeaked(t *testing.T) {
	logs := CaptureLogs()
	ctrl.Log.WithName("reporter").V(1).Info("calling GitLab", "token", "glpat-secret-1")
	if got := logs.Leaked(0, "the token", "glpat-secret-1"); got != 1 {
		t.Errorf("a debug line with the secret: Leaked = %d, want 1", got)
	}
	if got := logs.Leaked(0, "the token", "glpat-other"); got != 0 {
		t.Errorf("a secret never logged: Leaked = %d, want 0", got)
	}
	if got := logs.Leaked(3, "the token", "glpat-other"); got != 3 {
		t.Errorf("a failing code is kept: Leaked = %d, want 3", got)
	}
}
