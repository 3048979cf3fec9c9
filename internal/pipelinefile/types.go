// Package pipelinefile is the repository's pipeline file, `.ferry.yaml`: what a developer controls —
// how the image is made (OS stack, language runtime, build steps, artifacts) and how the application
// runs (entrypoint, env, ports, deploy settings). Nothing in it can choose a cluster, skip an approval
// or read a credential: those live in cluster objects owned by the platform team.
package pipelinefile

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// File is a parsed pipeline file.
type File struct {
	// Stack is the OS layer: a name from the platform's catalog (debian-12) or an image reference.
	Stack string `json:"stack"`

	// Runtime is the language runtime layer, built on the stack: a catalog name (python-3.12) or an
	// image reference. Without a runtime the application layer goes directly on the stack.
	Runtime string `json:"runtime,omitempty"`

	// Build runs steps in a builder image before the image is assembled (tests, compilation).
	Build *Build `json:"build,omitempty"`

	// Artifacts are the paths (files or directories, relative to the repository root) that go into
	// the application layer. Default: the whole repository except .git.
	Artifacts []string `json:"artifacts,omitempty"`

	// Workdir is where the artifacts are placed in the image and the working directory of the
	// process. Default /app.
	Workdir string `json:"workdir,omitempty"`

	// Entrypoint is the image's entrypoint, exec form.
	Entrypoint []string `json:"entrypoint,omitempty"`

	// Cmd is the image's default arguments, exec form.
	Cmd []string `json:"cmd,omitempty"`

	// Env is added to the image's environment.
	Env map[string]string `json:"env,omitempty"`

	// Ports are the TCP ports the application listens on.
	Ports []int32 `json:"ports,omitempty"`

	// User is the user (name or uid[:gid]) the process runs as.
	User string `json:"user,omitempty"`

	// Deploy says how the application runs once deployed.
	Deploy *ferryv1.DeploySpec `json:"deploy,omitempty"`

	// Timeout bounds the whole Build; the Project's buildTimeout caps it.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Build is the optional build stage.
type Build struct {
	// Image is the builder image the steps run in.
	Image string `json:"image"`

	// Steps run in order in the repository's checkout; the first that fails fails the Build.
	Steps []Step `json:"steps"`
}

// Step is one shell command of the build stage.
type Step struct {
	// Name identifies the step in logs and status: lower-case letters, digits and '-'.
	Name string `json:"name"`

	// Run is the shell script to run (with /bin/sh -c).
	Run string `json:"run"`

	// Env is added to the step's environment.
	Env map[string]string `json:"env,omitempty"`

	// Timeout bounds the step.
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}
