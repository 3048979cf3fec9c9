package dev

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// Endpoints is what a person (or a test) needs to use a running local environment; `ferry dev`
// writes it to DIR/endpoints.json (mode 0600: it holds the environment's credentials).
type Endpoints struct {
	// Kubeconfig is the hub's admin kubeconfig, with the examples' namespace as the default.
	Kubeconfig string `json:"kubeconfig"`
	// UIURL is the approval UI's address; "" while the UI is off.
	UIURL string `json:"uiURL"`
	// WebhookURL is where GitLab's webhooks go (the receiver).
	WebhookURL string `json:"webhookURL"`
	// Registry is the registry's host:port, the registry part of image references.
	Registry string `json:"registry"`
	// GitURL is the git server's base URL.
	GitURL string `json:"gitURL"`
	// GitLabURL is the fake GitLab's base URL; its REST API is under /api/v4.
	GitLabURL string `json:"gitlabURL"`
	// Namespace holds the Projects, Builds, Releases and Approvals.
	Namespace string `json:"namespace"`
	// DataDir is the data directory.
	DataDir string `json:"dataDir"`
	// LogFile receives the logs of Ferry's manager.
	LogFile string `json:"logFile"`
	// BuildLogs is where the local executor writes each Build's log.
	BuildLogs string `json:"buildLogs"`
	// Clusters are the simulated target clusters by name.
	Clusters map[string]ClusterEndpoint `json:"clusters"`
	// Users are the people by username.
	Users map[string]UserEndpoint `json:"users"`
	// Projects are the example apps' Projects by name.
	Projects map[string]ProjectEndpoint `json:"projects"`
	// RegistryAccounts are the registry's accounts, username to password.
	RegistryAccounts map[string]string `json:"registryAccounts"`
	// Nodes is "real" when containers run on the clusters' nodes, else "simulated".
	Nodes string `json:"nodes"`
	// Started is when this start finished; StartSeconds how long it took, FirstStart whether it was
	// the first start of the data directory.
	Started      time.Time `json:"started"`
	StartSeconds float64   `json:"startSeconds"`
	FirstStart   bool      `json:"firstStart"`
}

// ClusterEndpoint is a simulated target cluster.
type ClusterEndpoint struct {
	// Kubeconfig is its admin kubeconfig.
	Kubeconfig string `json:"kubeconfig"`
	// Environments are the environments that deploy to it.
	Environments []string `json:"environments"`
}

// UserEndpoint is a person of the local environment and their credentials.
type UserEndpoint struct {
	Role   string   `json:"role"`
	Groups []string `json:"groups"`
	// Kubeconfig authenticates as the person on the hub (for ferry approve, kubectl).
	Kubeconfig string `json:"kubeconfig"`
	// UIToken signs in to the UI; UISignInURL does it in one click (when the UI is on).
	UIToken     string `json:"uiToken,omitempty"`
	UISignInURL string `json:"uiSignInURL,omitempty"`
	// GitLabToken is the person's GitLab API token.
	GitLabToken string `json:"gitlabToken"`
	// GitPassword lets the person push to the git server (the developer only).
	GitPassword string `json:"gitPassword,omitempty"`
}

// ProjectEndpoint is an example app's Project.
type ProjectEndpoint struct {
	// RepoURL is the git repository's clone URL.
	RepoURL string `json:"repoURL"`
	// WebhookSecret is the secret token GitLab sends with the project's webhooks.
	WebhookSecret string `json:"webhookSecret"`
	// GitLabProject and GitLabProjectID name the project in the fake GitLab.
	GitLabProject   string `json:"gitlabProject"`
	GitLabProjectID int64  `json:"gitlabProjectID"`
	// Image is the image repository its Builds push to.
	Image string `json:"image"`
	// Namespaces are the namespaces it deploys to, by environment.
	Namespaces map[string]string `json:"namespaces"`
	// AppURLs are where the app answers, by environment (real nodes only).
	AppURLs map[string]string `json:"appURLs,omitempty"`
	// Preview says that the project's merge requests get preview environments.
	Preview bool `json:"preview,omitempty"`
	// PreviewURLTemplate is where a merge request's preview answers, with {iid} for the merge
	// request's number (real nodes only); see PreviewURL.
	PreviewURLTemplate string `json:"previewURLTemplate,omitempty"`
}

// PreviewURL is where the preview of merge request iid answers; "" when there is none to open.
func (p ProjectEndpoint) PreviewURL(iid int64) string {
	if p.PreviewURLTemplate == "" {
		return ""
	}
	return strings.ReplaceAll(p.PreviewURLTemplate, "{iid}", strconv.FormatInt(iid, 10))
}

// EndpointsPath is where a data directory's endpoints are written.
func EndpointsPath(dataDir string) string { return filepath.Join(dataDir, "endpoints.json") }

// ReadEndpoints reads the endpoints of a running local environment.
func ReadEndpoints(dataDir string) (*Endpoints, error) {
	data, err := os.ReadFile(EndpointsPath(dataDir))
	if err != nil {
		return nil, fmt.Errorf("failed to read the endpoints of ferry dev (is it running with --data-dir %s?): %w", dataDir, err)
	}
	ep := &Endpoints{}
	if err := json.Unmarshal(data, ep); err != nil {
		return nil, fmt.Errorf("failed to parse %s: %w", EndpointsPath(dataDir), err)
	}
	return ep, nil
}

// endpoints describes the running environment.
func (e *env) endpoints(elapsed time.Duration) *Endpoints {
	ep := &Endpoints{
		Kubeconfig:       e.kubeconfigPath(),
		WebhookURL:       "http://" + e.mgr.Receiver.Addr() + "/hooks/gitlab",
		Registry:         e.registry.Host,
		GitURL:           e.git.URL(),
		GitLabURL:        e.gitlab.URL,
		Namespace:        Namespace,
		DataDir:          e.dir,
		LogFile:          filepath.Join(e.dir, "ferry-dev.log"),
		BuildLogs:        filepath.Join(e.dir, "builds", Namespace),
		Clusters:         map[string]ClusterEndpoint{},
		Users:            map[string]UserEndpoint{},
		Projects:         map[string]ProjectEndpoint{},
		RegistryAccounts: map[string]string{},
		Started:          time.Now().UTC().Truncate(time.Second),
		StartSeconds:     elapsed.Seconds(),
		FirstStart:       e.first,
		Nodes:            NodesSimulated,
	}
	if e.real {
		ep.Nodes = NodesReal
	}
	for _, user := range []string{registryAdmin, robotPush, robotPull} {
		ep.RegistryAccounts[user] = e.st.get("registry/" + user)
	}
	envs := environments()
	for _, name := range ClusterNames {
		ce := ClusterEndpoint{Kubeconfig: e.clusters[name].KubeconfigPath}
		for _, env := range envs {
			for _, c := range env.Spec.Clusters {
				if c == name {
					ce.Environments = append(ce.Environments, env.Name)
				}
			}
		}
		ep.Clusters[name] = ce
	}
	for _, p := range People {
		u := UserEndpoint{
			Role: p.Role, Groups: p.Groups, Kubeconfig: e.userKubeconfigPath(p.Name),
			GitLabToken: e.st.get("gitlab/" + p.Name), GitPassword: e.st.get("git/" + p.Name),
		}
		e.uiUser(ep, p, &u)
		ep.Users[p.Name] = u
	}
	for i, name := range e.examples {
		repo := Namespace + "/" + name
		pe := ProjectEndpoint{
			RepoURL: e.git.RepoURL(repo), WebhookSecret: e.webhookSecret(name),
			GitLabProject: repo, GitLabProjectID: gitlabProjectID(i),
			Image: e.registry.Host + "/" + repo, Namespaces: map[string]string{},
		}
		if name == previewProject {
			pe.Preview = true
			if e.apps != nil {
				pe.PreviewURLTemplate = e.apps.URL(name, previewHostPrefix+"{iid}")
			}
		}
		for _, env := range envs {
			pe.Namespaces[env.Name] = strings.NewReplacer("{project}", name, "{environment}", env.Name).Replace(env.Spec.NamespaceTemplate)
			if e.apps != nil {
				if pe.AppURLs == nil {
					pe.AppURLs = map[string]string{}
				}
				pe.AppURLs[env.Name] = e.apps.URL(name, env.Name)
			}
		}
		ep.Projects[name] = pe
	}
	return ep
}

// writeEndpoints writes DIR/endpoints.json.
func (e *env) writeEndpoints() (*Endpoints, error) {
	ep := e.endpoints(e.out.elapsed())
	data, err := json.MarshalIndent(ep, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := writeFileAtomic(EndpointsPath(e.dir), append(data, '\n'), 0o600); err != nil {
		return nil, err
	}
	e.endpoint = ep
	return ep, nil
}

// rel shortens a path inside the working directory, for commands people copy.
func rel(path string) string {
	wd, err := os.Getwd()
	if err != nil {
		return path
	}
	if r, err := filepath.Rel(wd, path); err == nil && !strings.HasPrefix(r, "..") {
		return r
	}
	return path
}

// printSummary prints what a person needs: where everything is, who they can be, and what to run
// next.
func (e *env) printSummary(ep *Endpoints, elapsed time.Duration) {
	kind := "later start"
	if e.first {
		kind = "first start"
	}
	cmd := e.opts.Command
	dataFlag := ""
	if filepath.Clean(e.opts.DataDir) != DefaultDataDir {
		dataFlag = " --data-dir " + e.opts.DataDir
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nferry dev is ready (%s, %s). Ctrl-C stops everything; starting again resumes where you left off.\n\n", kind, roundDuration(elapsed))
	w := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if ep.UIURL != "" {
		fmt.Fprintf(w, "  UI\t%s\n", ep.UIURL)
		for _, p := range People {
			u := ep.Users[p.Name]
			fmt.Fprintf(w, "  \tsign in as %s (%s): %s\n", p.Name, p.Role, orText(u.UISignInURL, "token "+u.UIToken))
		}
	}
	fmt.Fprintf(w, "  GitLab webhook\t%s\n", ep.WebhookURL)
	for _, name := range e.examples {
		fmt.Fprintf(w, "  \tsecret token of %s: %s\n", name, ep.Projects[name].WebhookSecret)
	}
	fmt.Fprintf(w, "  Hub kubeconfig\t%s (admin, namespace %s)\n", rel(ep.Kubeconfig), Namespace)
	for _, p := range People {
		fmt.Fprintf(w, "  \t%s (%s, groups %s)\n", rel(ep.Users[p.Name].Kubeconfig), p.Role, strings.Join(p.Groups, ","))
	}
	for _, name := range ClusterNames {
		c := ep.Clusters[name]
		fmt.Fprintf(w, "  Cluster %s\t%s (%s)\n", name, rel(c.Kubeconfig), strings.Join(c.Environments, ", "))
	}
	if e.apps != nil {
		for _, name := range e.examples {
			urls := ep.Projects[name].AppURLs
			fmt.Fprintf(w, "  App %s\t%s  %s  %s\n", name, urls["dev"], urls["staging"], urls["prod"])
		}
	}
	fmt.Fprintf(w, "  Registry\t%s (Harbor-style token auth; stacks and runtimes under ferry/, images under %s/)\n", ep.Registry, Namespace)
	fmt.Fprintf(w, "  Git\t%s/%s/{%s}.git (push as %s)\n", ep.GitURL, Namespace, strings.Join(e.examples, ","), developer)
	fmt.Fprintf(w, "  GitLab (fake)\t%s\n", ep.GitLabURL)
	fmt.Fprintf(w, "  Logs\t%s; Builds in %s\n", rel(ep.LogFile), rel(ep.BuildLogs))
	fmt.Fprintf(w, "  Everything above\t%s\n", rel(EndpointsPath(e.dir)))
	_ = w.Flush()
	example := e.examples[0]
	fmt.Fprintf(&b, "\nNext, in another terminal:\n")
	fmt.Fprintf(&b, "  %s dev push %s%s                  # commit and push as %s: GitLab's Push Hook → Build → image → Release → dev\n", cmd, example, dataFlag, developer)
	fmt.Fprintf(&b, "  export KUBECONFIG=%s\n", rel(ep.Kubeconfig))
	fmt.Fprintf(&b, "  %s get builds; %s get releases      # staging and prod wait for approvals\n", cmd, cmd)
	fmt.Fprintf(&b, "  %s approve RELEASE --env staging --kubeconfig %s\n", cmd, rel(ep.Users["alice"].Kubeconfig))
	fmt.Fprintf(&b, "  %s approve RELEASE --env prod --kubeconfig %s\n", cmd, rel(ep.Users["alice"].Kubeconfig))
	fmt.Fprintf(&b, "  kubectl --kubeconfig %s get deploy -A    # what runs in prod\n", rel(ep.Clusters["prod"].Kubeconfig))
	fmt.Fprintf(&b, "\nActivity:\n")
	e.out.printf("%s", strings.TrimRight(b.String(), "\n"))
}

func orText(s, def string) string {
	if s == "" {
		return def
	}
	return s
}
