package release_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/testutil"
)

// relay is a TCP endpoint a test points a Cluster at. It forwards connections to an API server,
// or, black-holed, accepts them and never answers: the cluster is down in the way that costs a
// client the most, a connection that opens and then nothing.
type relay struct {
	l net.Listener

	mu       sync.Mutex
	upstream string // "" when black-holed
	conns    map[net.Conn]bool
	// hung counts the connections held open without an answer now; maxHung the most at once.
	hung, maxHung int
}

// newRelay starts a relay to upstream (host:port), black-holed when upstream is "".
func newRelay(t *testing.T, upstream string) *relay {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &relay{l: l, upstream: upstream, conns: map[net.Conn]bool{}}
	t.Cleanup(func() {
		_ = l.Close()
		r.mu.Lock()
		defer r.mu.Unlock()
		for c := range r.conns {
			_ = c.Close()
		}
	})
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go r.serve(conn)
		}
	}()
	return r
}

func (r *relay) url() string { return "https://" + r.l.Addr().String() }

func (r *relay) serve(conn net.Conn) {
	r.mu.Lock()
	upstream := r.upstream
	r.conns[conn] = true
	if upstream == "" {
		r.hung++
		r.maxHung = max(r.maxHung, r.hung)
	}
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, conn)
		if upstream == "" {
			r.hung--
		}
		r.mu.Unlock()
		_ = conn.Close()
	}()
	if upstream == "" {
		// Read and never answer, until the client gives up.
		_, _ = io.Copy(io.Discard, conn)
		return
	}
	up, err := net.Dial("tcp", upstream)
	if err != nil {
		return
	}
	r.mu.Lock()
	r.conns[up] = true
	r.mu.Unlock()
	defer func() {
		r.mu.Lock()
		delete(r.conns, up)
		r.mu.Unlock()
		_ = up.Close()
	}()
	done := make(chan struct{}, 2)
	go func() { _, _ = io.Copy(up, conn); done <- struct{}{} }()
	go func() { _, _ = io.Copy(conn, up); done <- struct{}{} }()
	<-done
}

// blackHole cuts the forwarded connections; later ones hang.
func (r *relay) blackHole() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.upstream = ""
	for c := range r.conns {
		_ = c.Close()
	}
}

// resetMax starts counting the most hung connections at once from now.
func (r *relay) resetMax() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.maxHung = r.hung
}

func (r *relay) mostHung() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.maxHung
}

// registerCluster creates a Cluster on the hub whose kubeconfig is east's with another server.
func registerCluster(t *testing.T, name, server string) {
	t.Helper()
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	cfg, err := clientcmd.LoadFromFile(startTargets(t)["east"].KubeconfigPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, cl := range cfg.Clusters {
		cl.Server = server
	}
	kubeconfig, err := clientcmd.Write(*cfg)
	if err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: testutil.FerryNamespace, Name: name + "-kubeconfig"}, Data: map[string][]byte{"kubeconfig": kubeconfig}}
	if err := c.Create(ctx, secret); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Delete(context.Background(), secret) })
	releasetest.CreateCleanly(t, c, &ferryv1.Cluster{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: ferryv1.ClusterSpec{KubeConfigSecretRef: &ferryv1.SecretKeyReference{Name: secret.Name}}})
}

// TestBlackHoledClusterDoesNotStarveOthers: one cluster accepts connections and never answers,
// and several Releases of several projects target it. Once it is known to be down, nobody waits on
// it: at most one connection to it is open at any time (a probe), and a Release of another project
// on a healthy cluster goes through meanwhile. (Before: each Release held one of the controller's
// four workers on it for up to 20 s at every look, and the others queued behind them.)
func TestBlackHoledClusterDoesNotStarveOthers(t *testing.T) {
	tg := startTargets(t)
	c := testutil.CurrentHub(t).Client
	startManager(t)
	ns := testutil.Namespace(t, c)
	hole := newRelay(t, "")
	dark := releasetest.Unique("dark")
	registerCluster(t, dark, hole.url())
	darkEnv := releasetest.Environment(releasetest.Unique("void"), nil, dark)
	litEnv := releasetest.Environment(releasetest.Unique("lit"), nil, "east")
	releasetest.CreateCleanly(t, c, darkEnv)
	releasetest.CreateCleanly(t, c, litEnv)
	projects := []string{"d1", "d2", "d3", "d4", "d5", "d6"}
	for _, p := range projects {
		createProject(t, ns, p, darkEnv.Name)
	}
	createProject(t, ns, "ok", litEnv.Name)
	dumpOnFailure(t, "ok-"+litEnv.Name, "east")

	// The first Release finds the cluster down.
	releaseOf(t, ns, "d1", "d1-1", "d1", releasetest.Deploy(1, nil))
	rel := waitCluster(t, ns, "d1-1", darkEnv.Name, dark, ferryv1.ClusterUnreachableReason)
	if _, cond := clusterCondition(rel, darkEnv.Name, dark); !strings.Contains(cond.Message, "cluster "+dark+" cannot be reached") {
		t.Errorf("d1-1 on %s: %q", dark, cond.Message)
	}

	// Five more Releases on it, then one of another project on a healthy cluster.
	hole.resetMax()
	for _, p := range projects[1:] {
		releaseOf(t, ns, p, p+"-1", p, releasetest.Deploy(1, nil))
	}
	releaseOf(t, ns, "ok", "ok-1", "ok", releasetest.Deploy(1, nil))
	waitRelease(t, c, ns, "ok-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	tg["east"].waitAvailable(t, "ok-"+litEnv.Name, "ok", releasetest.Image("ok"), 1)
	for _, p := range projects[1:] {
		rel := waitCluster(t, ns, p+"-1", darkEnv.Name, dark, ferryv1.ClusterUnreachableReason)
		if _, cond := clusterCondition(rel, darkEnv.Name, dark); !strings.Contains(cond.Message, "cluster "+dark+" cannot be reached") {
			t.Errorf("%s-1 on %s: %q", p, dark, cond.Message)
		}
	}
	if got := hole.mostHung(); got > 1 {
		t.Errorf("%d connections to the black-holed cluster were open at once: Releases waited on a cluster known to be down", got)
	}
}

// releaseWatch keeps the last state the API server sent of each Release of a namespace, the
// deleted ones included.
type releaseWatch struct {
	mu   sync.Mutex
	last map[string]*ferryv1.Release
}

func watchReleases(t *testing.T, ns string) *releaseWatch {
	t.Helper()
	wc, err := client.NewWithWatch(testutil.CurrentHub(t).Config, client.Options{Scheme: manager.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := wc.Watch(ctx, &ferryv1.ReleaseList{}, client.InNamespace(ns))
	if err != nil {
		t.Fatal(err)
	}
	rw := &releaseWatch{last: map[string]*ferryv1.Release{}}
	go func() {
		defer w.Stop()
		for e := range w.ResultChan() {
			if rel, ok := e.Object.(*ferryv1.Release); ok && e.Type != watch.Error {
				rw.mu.Lock()
				rw.last[rel.Name] = rel
				rw.mu.Unlock()
			}
		}
	}()
	return rw
}

func (rw *releaseWatch) lastOf(name string) *ferryv1.Release {
	rw.mu.Lock()
	defer rw.mu.Unlock()
	return rw.last[name]
}

// TestDeletingAReleaseWhoseClusterIsDown: a Release rolling out on a cluster that then stops
// answering is deleted. The deletion finishes, and before the Release goes it records, in a
// condition and an event, the cluster, the namespace and the objects it left there. (Before: the
// finalizer retried the rollback forever and the Release never went.)
func TestDeletingAReleaseWhoseClusterIsDown(t *testing.T) {
	east := startTargets(t)["east"]
	c := testutil.CurrentHub(t).Client
	ctx := context.Background()
	startManager(t)
	ns := testutil.Namespace(t, c)
	eastURL, err := url.Parse(east.Config.Host)
	if err != nil {
		t.Fatal(err)
	}
	far := newRelay(t, eastURL.Host)
	name := releasetest.Unique("far")
	registerCluster(t, name, far.url())
	env := releasetest.Environment(releasetest.Unique("remote"), nil, name)
	env.Spec.Rollout.ProgressDeadline = &metav1.Duration{Duration: 10 * time.Minute}
	env.Spec.AllowedPodAnnotations = []string{"sim.ferry.dev/*"}
	releasetest.CreateCleanly(t, c, env)
	createProject(t, ns, "shop", env.Name)
	target := "shop-" + env.Name
	dumpOnFailure(t, target, "east")
	watched := watchReleases(t, ns)

	// The rollout starts through the relay and never becomes healthy.
	r1 := releaseOf(t, ns, "shop", "r1", "far-v1", releasetest.UnreadyDeploy(1))
	within(t, rolloutTimeout, "the Deployment written through the relay", func() (bool, error) {
		return east.deployment(t, target, "shop") != nil, nil
	})
	waitCluster(t, ns, "r1", env.Name, name, ferryv1.RollingOutReason)

	// The cluster stops answering, and the Release is deleted.
	far.blackHole()
	if err := c.Delete(ctx, r1); err != nil {
		t.Fatal(err)
	}
	within(t, rolloutTimeout, "r1 gone", func() (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(r1), &ferryv1.Release{})
		return apierrors.IsNotFound(err), err
	})
	var last *ferryv1.Release
	testutil.Eventually(t, "the last state of r1", func() (bool, error) {
		last = watched.lastOf("r1")
		return last != nil && meta.FindStatusCondition(last.Status.Conditions, ferryv1.CleanedUpCondition) != nil, fmt.Errorf("last seen %+v", last)
	})
	cond := meta.FindStatusCondition(last.Status.Conditions, ferryv1.CleanedUpCondition)
	for _, want := range []string{"cluster " + name, "Deployment shop", "in namespace " + target, "ferry rollback"} {
		if cond.Status != metav1.ConditionFalse || cond.Reason != ferryv1.ObjectsLeftReason || !strings.Contains(cond.Message, want) {
			t.Errorf("CleanedUp = %s %s %q, want ObjectsLeft saying %q", cond.Status, cond.Reason, cond.Message, want)
		}
	}
	testutil.Eventually(t, "an ObjectsLeft event", func() (bool, error) {
		list := &corev1.EventList{}
		if err := c.List(ctx, list, client.InNamespace(ns)); err != nil {
			return false, err
		}
		for _, e := range list.Items {
			if e.InvolvedObject.Name == "r1" && e.Reason == ferryv1.ObjectsLeftReason {
				return strings.Contains(e.Message, "cluster "+name) && strings.Contains(e.Message, "namespace "+target), fmt.Errorf("event %q", e.Message)
			}
		}
		return false, fmt.Errorf("no ObjectsLeft event")
	})
	// What was left is still there, as it was.
	if d := east.deployment(t, target, "shop"); d == nil || d.Spec.Template.Spec.Containers[0].Image != releasetest.Image("far-v1") {
		t.Errorf("the Deployment left on the cluster: %+v", d)
	}
}
