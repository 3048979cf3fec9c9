package build_test

import (
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/controllers/build"
	"github.com/ferryci/ferry/internal/gitsource"
	"github.com/ferryci/ferry/internal/manager"
	ftestutil "github.com/ferryci/ferry/internal/testutil"
)

// hungGitServer accepts connections and never answers. It counts the connections it holds, the
// most it held at once, and all it accepted.
type hungGitServer struct {
	port                 int
	open, most, accepted atomic.Int32
}

func startHungGitServer(t *testing.T) *hungGitServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hungGitServer{port: l.Addr().(*net.TCPAddr).Port}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var conns []net.Conn
	t.Cleanup(func() {
		_ = l.Close()
		mu.Lock()
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, conn)
			mu.Unlock()
			s.accepted.Add(1)
			n := s.open.Add(1)
			for m := s.most.Load(); n > m && !s.most.CompareAndSwap(m, n); m = s.most.Load() {
			}
			wg.Go(func() {
				defer s.open.Add(-1)
				_, _ = io.Copy(io.Discard, conn)
				_ = conn.Close()
			})
		}
	})
	return s
}

// url is a clone URL on the hung server, by a host name of its own.
func (s *hungGitServer) url() string { return fmt.Sprintf("http://localhost:%d/team/app.git", s.port) }

// TestHungGitServer: a Build whose git server accepts and never answers fails its read within the
// stall timeout, shows which server and which timeout, and keeps waiting (its Ready stays
// Unknown); the server is then left alone: another Build of it waits without connecting.
func TestHungGitServer(t *testing.T) {
	hung := startHungGitServer(t)
	e := newEnv(t, func(p *ferryv1.Project) { p.Spec.Repository.CloneURL = hung.url() })
	ftestutil.StartManager(t, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage,
		GitLimits: gitsource.Limits{Timeout: 5 * time.Second, StallTimeout: time.Second}})
	e.createBuild("hung-1", fmt.Sprintf("%040x", 1), "refs/heads/main")
	ftestutil.Eventually(t, "SourceResolved=False/SourceUnavailable", func() (bool, error) {
		b := e.build("hung-1")
		return condition(b, ferryv1.SourceResolvedCondition) == "False/SourceUnavailable", fmt.Errorf("%s: %s", condition(b, ferryv1.SourceResolvedCondition), conditionMessage(b, ferryv1.SourceResolvedCondition))
	})
	b := e.build("hung-1")
	want := fmt.Sprintf("failed to fetch %s: the git server localhost:%d sent nothing for 1s (stall timeout)", hung.url(), hung.port)
	if msg := conditionMessage(b, ferryv1.SourceResolvedCondition); msg != want || condition(b, ferryv1.ReadyCondition) != "Unknown/SourceUnavailable" {
		t.Errorf("Ready %s, SourceResolved message %q, want %q", condition(b, ferryv1.ReadyCondition), msg, want)
	}
	accepted := hung.accepted.Load()

	e.createBuild("hung-2", fmt.Sprintf("%040x", 2), "refs/heads/main")
	ftestutil.Eventually(t, "hung-2 SourceResolved=False/WaitingForGitServer", func() (bool, error) {
		b := e.build("hung-2")
		return condition(b, ferryv1.SourceResolvedCondition) == "False/WaitingForGitServer", fmt.Errorf("%s: %s", condition(b, ferryv1.SourceResolvedCondition), conditionMessage(b, ferryv1.SourceResolvedCondition))
	})
	if msg := conditionMessage(e.build("hung-2"), ferryv1.SourceResolvedCondition); !strings.HasPrefix(msg, "Waiting for git server localhost: a fetch from it timed out at ") {
		t.Errorf("hung-2 waits with %q", msg)
	}
	if n := hung.accepted.Load(); n != accepted {
		t.Errorf("the server was tried again during its backoff: %d connections, %d before", n, accepted)
	}
}

// TestHungGitServerHoldsItsShare: eight Builds whose git server hangs (and would hang for ten
// minutes each) hold half the workers; the rest keep serving: a Build of another namespace, on a
// healthy server, runs while the hung ones still hang.
func TestHungGitServerHoldsItsShare(t *testing.T) {
	hung := startHungGitServer(t)
	bad := newEnv(t, func(p *ferryv1.Project) { p.Spec.Repository.CloneURL = hung.url() })
	good := newEnv(t)
	sha := good.commit(okFile)
	ftestutil.StartManager(t, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage,
		GitLimits: gitsource.Limits{Timeout: 10 * time.Minute, StallTimeout: 10 * time.Minute}})
	for i := range 8 {
		bad.createBuild(fmt.Sprintf("hung-%d", i), fmt.Sprintf("%040x", i+1), fmt.Sprintf("refs/heads/b%d", i))
	}
	share := build.DefaultConcurrency / 2
	ftestutil.Eventually(t, "the hung server to hold its share and the other Builds to wait", func() (bool, error) {
		waiting := 0
		for i := range 8 {
			b := bad.build(fmt.Sprintf("hung-%d", i))
			if condition(b, ferryv1.SourceResolvedCondition) == "False/WaitingForGitServer" &&
				conditionMessage(b, ferryv1.SourceResolvedCondition) == fmt.Sprintf("Waiting to fetch from git server localhost: %d Builds are fetching from it, its share of the workers", share) {
				waiting++
			}
		}
		open := hung.open.Load()
		return int(open) == share && waiting == 8-share, fmt.Errorf("%d connections open, %d Builds waiting", open, waiting)
	})

	good.createBuild("healthy", sha, "refs/heads/main")
	good.waitPipelineRun("healthy")
	good.waitReady("healthy", metav1.ConditionUnknown, ferryv1.PipelineRunningReason)

	// The hung ones still hang: no Build of theirs resolved, and their server never held more
	// than its share.
	for i := range 8 {
		if b := bad.build(fmt.Sprintf("hung-%d", i)); condition(b, ferryv1.SourceResolvedCondition) == "True/Succeeded" || b.Status.CompletionTime != nil {
			t.Errorf("hung-%d: %+v", i, b.Status.Conditions)
		}
	}
	if open, most := hung.open.Load(), hung.most.Load(); int(open) != share || int(most) > share {
		t.Errorf("the hung server holds %d connections (at most %d), want its share %d", open, most, share)
	}
}
