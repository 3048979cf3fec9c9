package local

import (
	"errors"
	"fmt"
	"os"
)

// AllowInClusterFlag is the manager's flag that lets the local executor run in a Kubernetes pod.
const AllowInClusterFlag = "--allow-local-executor-in-cluster"

// ErrInCluster is why New refuses to run in a Kubernetes pod without Options.AllowInCluster.
var ErrInCluster = errors.New("refusing to run the local executor in a Kubernetes pod")

// serviceAccountTokenPath is where Kubernetes mounts a pod's ServiceAccount token.
var serviceAccountTokenPath = "/var/run/secrets/kubernetes.io/serviceaccount/token" //nolint:gosec // G101: where a token is, not a token

// inCluster says what shows that this process runs in a Kubernetes pod, or "" when nothing does.
func inCluster() string {
	for _, name := range []string{"KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT"} {
		if _, ok := os.LookupEnv(name); ok {
			return name + " is set"
		}
	}
	if _, err := os.Stat(serviceAccountTokenPath); err == nil {
		return "the ServiceAccount token " + serviceAccountTokenPath + " exists"
	}
	return ""
}

// checkNotInCluster refuses a Kubernetes pod: there, a repository's build steps would run next to
// the pod's ServiceAccount token and the manager's own credentials, which read every Project's
// Secrets and the kubeconfigs of target clusters.
func checkNotInCluster() error {
	if where := inCluster(); where != "" {
		return fmt.Errorf("%w (%s): it runs every repository's build steps as processes of this pod, next to the "+
			"pod's ServiceAccount token and Ferry's credentials, and is meant for a single-user machine (ferry dev); "+
			"use --executor=tekton in a cluster, or pass %s (dangerous) only if nobody but you can push code that this pod builds",
			ErrInCluster, where, AllowInClusterFlag)
	}
	return nil
}
