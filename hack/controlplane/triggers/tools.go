//go:build tools

// Package tools names the Tekton Triggers command built from this module (hack/controlplane/build.sh
// with the set triggers): the EventListener sink, which `make bench` runs beside Ferry's GitLab
// receiver; the core interceptors are built from ./interceptors. Triggers pins its own Kubernetes and
// Knative libraries, so it is built in a module of its own rather than Ferry's.
package tools

import (
	_ "github.com/tektoncd/triggers/cmd/eventlistenersink"
)
