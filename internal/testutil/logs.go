package testutil

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"

	"go.uber.org/zap/zapcore"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Logs holds every line controller-runtime's logger wrote, at debug level, since CaptureLogs.
type Logs struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// CaptureLogs sends controller-runtime's logs, debug level included, to the returned Logs: a
// TestMain calls it first, then checks with Leaked that no secret reached a log line.
func CaptureLogs() *Logs {
	l := &Logs{}
	ctrl.SetLogger(zap.New(zap.WriteTo(l), zap.UseDevMode(true), zap.Level(zapcore.DebugLevel)))
	return l
}

func (l *Logs) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *Logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Leaked turns a passing exit code into a failing one when a log line holds secret (what is
// named by what, e.g. "the GitLab token"), saying so on stderr.
func (l *Logs) Leaked(code int, what, secret string) int {
	if code == 0 && strings.Contains(l.String(), secret) {
		fmt.Fprintf(os.Stderr, "FAIL: %s appeared in the manager's logs\n", what)
		return 1
	}
	return code
}
