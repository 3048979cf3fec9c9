//go:build tools

// Package tools names the Tekton Pipelines commands built from this module
// (hack/controlplane/build.sh): the controller, the webhook and the helper binaries its pods run.
// Tekton pins its own Kubernetes libraries, so it is built in a module of its own rather than
// Ferry's.
package tools

import (
	_ "github.com/tektoncd/pipeline/cmd/controller"
	_ "github.com/tektoncd/pipeline/cmd/entrypoint"
	_ "github.com/tektoncd/pipeline/cmd/events"
	_ "github.com/tektoncd/pipeline/cmd/nop"
	_ "github.com/tektoncd/pipeline/cmd/sidecarlogresults"
	_ "github.com/tektoncd/pipeline/cmd/webhook"
	_ "github.com/tektoncd/pipeline/cmd/workingdirinit"
)
