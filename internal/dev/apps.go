package dev

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/rollout"
)

// appsHostSuffix makes the apps' host names: PROJECT.ENVIRONMENT.localhost, which browsers and
// curl resolve to loopback by themselves (RFC 6761).
const appsHostSuffix = ".localhost"

// previewHostPrefix makes the host names of merge requests' previews: PROJECT.mr-IID.localhost.
// An environment named like that would be hidden by its previews; the proxy reads a preview only
// for the exact form mr-<number>.
const previewHostPrefix = "mr-"

// appProxy is one loopback address in front of every example app in every environment:
// http://PROJECT.ENVIRONMENT.localhost:PORT/ reaches the app's Service in the environment's
// namespace on its cluster, through the cluster's real node (as a pod would reach it), so a person
// on this machine can open what runs in dev, staging and prod.
type appProxy struct {
	hub      client.Reader
	clusters map[string]*controlplane.Cluster
	srv      *http.Server
	addr     string

	mu         sync.Mutex
	transports map[string]*http.Transport
	clients    map[string]client.Client
}

func startAppProxy(addr string, hub client.Reader, clusters map[string]*controlplane.Cluster) (*appProxy, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("failed to listen for the apps on %s: %w", addr, err)
	}
	p := &appProxy{hub: hub, clusters: clusters, addr: ln.Addr().String(), transports: map[string]*http.Transport{}, clients: map[string]client.Client{}}
	p.srv = &http.Server{Handler: p, ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = p.srv.Serve(ln) }()
	return p, nil
}

// URL is where an app answers in an environment.
func (p *appProxy) URL(project, environment string) string {
	_, port, _ := net.SplitHostPort(p.addr)
	return "http://" + project + "." + environment + appsHostSuffix + ":" + port + "/"
}

func (p *appProxy) Close() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return p.srv.Shutdown(ctx)
}

// ServeHTTP forwards a request to the app its host name names.
func (p *appProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	project, environment, ok := p.route(r.Host)
	if !ok {
		http.Error(w, fmt.Sprintf("ferry dev: no app at %q: open http://PROJECT.ENVIRONMENT%s:%s/", r.Host, appsHostSuffix, portOf(p.addr)), http.StatusNotFound)
		return
	}
	resolve := p.resolve
	if iid, ok := previewIID(environment); ok {
		resolve = func(ctx context.Context, project, _ string) (string, *url.URL, error) {
			return p.resolvePreview(ctx, project, iid)
		}
	}
	cluster, target, err := resolve(r.Context(), project, environment)
	if err != nil {
		http.Error(w, "ferry dev: "+err.Error(), http.StatusBadGateway)
		return
	}
	rp := &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = r.Host
			pr.SetXForwarded()
		},
		Transport: p.transport(cluster),
		ErrorHandler: func(w http.ResponseWriter, _ *http.Request, err error) {
			http.Error(w, fmt.Sprintf("ferry dev: %s in %s does not answer: %v", project, environment, err), http.StatusBadGateway)
		},
	}
	rp.ServeHTTP(w, r)
}

// route reads PROJECT.ENVIRONMENT.localhost[:port].
func (p *appProxy) route(host string) (project, environment string, ok bool) {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	name, found := strings.CutSuffix(strings.ToLower(host), appsHostSuffix)
	if !found {
		return "", "", false
	}
	project, environment, ok = strings.Cut(name, ".")
	return project, environment, ok && project != "" && environment != "" && !strings.Contains(environment, ".")
}

// resolve finds the cluster and the Service address of a project's app in an environment.
func (p *appProxy) resolve(ctx context.Context, project, environment string) (string, *url.URL, error) {
	env := &ferryv1.Environment{}
	if err := p.hub.Get(ctx, types.NamespacedName{Name: environment}, env); err != nil {
		return "", nil, fmt.Errorf("environment %s: %w", environment, err)
	}
	if len(env.Spec.Clusters) == 0 {
		return "", nil, fmt.Errorf("environment %s names no cluster", environment)
	}
	cluster := env.Spec.Clusters[0]
	if p.clusters[cluster] == nil {
		return "", nil, fmt.Errorf("cluster %s of environment %s is not one of ferry dev's", cluster, environment)
	}
	ns, err := rollout.NamespaceFor(env.Spec.NamespaceTemplate, types.NamespacedName{Namespace: Namespace, Name: project}, environment)
	if err != nil {
		return "", nil, err
	}
	return p.service(ctx, cluster, ns, project, environment)
}

// previewIID reads the merge request number of a preview's host name part, mr-<iid>.
func previewIID(environment string) (int64, bool) {
	digits, ok := strings.CutPrefix(environment, previewHostPrefix)
	if !ok {
		return 0, false
	}
	iid, err := strconv.ParseInt(digits, 10, 64)
	// Only the canonical form: mr-07 or mr-+7 would name the same preview under another host.
	return iid, err == nil && iid > 0 && strconv.FormatInt(iid, 10) == digits
}

// resolvePreview finds the cluster and the Service address of a merge request's preview. Where it
// runs comes from the Preview object the preview controller keeps, never from the host name.
func (p *appProxy) resolvePreview(ctx context.Context, project string, iid int64) (string, *url.URL, error) {
	pv := &ferryv1.Preview{}
	name := ferryv1.PreviewName(project, iid)
	if err := p.hub.Get(ctx, types.NamespacedName{Namespace: Namespace, Name: name}, pv); err != nil {
		return "", nil, fmt.Errorf("merge request !%d of %s has no preview (Preview %s/%s: %w)", iid, project, Namespace, name, err)
	}
	if pv.Spec.Project != project || pv.Spec.MergeRequestIID != iid {
		return "", nil, fmt.Errorf("preview %s/%s is of %s !%d, not of %s !%d", Namespace, name, pv.Spec.Project, pv.Spec.MergeRequestIID, project, iid)
	}
	if pv.Status.Cluster == "" || pv.Status.Namespace == "" {
		return "", nil, fmt.Errorf("the preview of %s !%d has not been deployed yet (Preview %s/%s has no namespace)", project, iid, Namespace, name)
	}
	if p.clusters[pv.Status.Cluster] == nil {
		return "", nil, fmt.Errorf("cluster %s of preview %s/%s is not one of ferry dev's", pv.Status.Cluster, Namespace, name)
	}
	return p.service(ctx, pv.Status.Cluster, pv.Status.Namespace, rollout.DeploymentName(project, rollout.StableTrack), fmt.Sprintf("the preview of !%d", iid))
}

// service is the address of the app's Service in a namespace of a cluster; where names the
// environment or preview for errors.
func (p *appProxy) service(ctx context.Context, cluster, ns, name, where string) (string, *url.URL, error) {
	c, err := p.client(cluster)
	if err != nil {
		return "", nil, err
	}
	svc := &corev1.Service{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, svc); err != nil {
		return "", nil, fmt.Errorf("%s has not been deployed to %s yet (Service %s/%s on cluster %s: %w)", name, where, ns, name, cluster, err)
	}
	if svc.Spec.ClusterIP == "" || svc.Spec.ClusterIP == corev1.ClusterIPNone || len(svc.Spec.Ports) == 0 {
		return "", nil, fmt.Errorf("service %s/%s on cluster %s has no address", ns, name, cluster)
	}
	return cluster, &url.URL{Scheme: "http", Host: net.JoinHostPort(svc.Spec.ClusterIP, strconv.Itoa(int(svc.Spec.Ports[0].Port)))}, nil
}

// transport dials through a cluster's node.
func (p *appProxy) transport(cluster string) *http.Transport {
	p.mu.Lock()
	defer p.mu.Unlock()
	t, ok := p.transports[cluster]
	if !ok {
		t = &http.Transport{DialContext: p.clusters[cluster].DialContext, MaxIdleConnsPerHost: 8, IdleConnTimeout: 30 * time.Second}
		p.transports[cluster] = t
	}
	return t
}

func (p *appProxy) client(cluster string) (client.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[cluster]; ok {
		return c, nil
	}
	c, err := client.New(p.clusters[cluster].Config, client.Options{})
	if err != nil {
		return nil, errors.New("failed to reach cluster " + cluster + ": " + err.Error())
	}
	p.clients[cluster] = c
	return c, nil
}

func portOf(addr string) string {
	_, port, _ := net.SplitHostPort(addr)
	return port
}
