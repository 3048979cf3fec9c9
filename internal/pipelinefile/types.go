// Package pipelinefile is the repository's pipeline file, `.ferry.yaml`: what a developer controls —
// how the image is made (OS stack, language runtime, build steps, artifacts) and how the application
// runs (entrypoint, env, ports, deploy settings). Nothing in it can choose a cluster, skip an approval
// or read a credential: those live in cluster objects owned by the platform team.
//
// Parse is strict: unknown fields, wrong types and invalid values are errors that name the file, the
// line, the column and the field path, for example
//
//	.ferry.yaml:7:13: build.steps[0].name: "Test" must be lower-case letters, digits and '-'
//
// The markers on the types below feed the JSON Schema for editors (hack/schemagen); the checks in
// validate.go enforce the same rules with positions.
package pipelinefile

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// File is a parsed pipeline file.
type File struct {
	// stack is the OS layer: a name from the platform's catalog (debian-12) or an image reference
	// (registry.example.com/base/debian@sha256:…).
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Stack string `json:"stack"`

	// runtime is the language runtime layer, built on the stack: a catalog name (python-3.12) or an
	// image reference. Without a runtime the application layer goes directly on the stack.
	// +optional
	// +kubebuilder:validation:MaxLength=512
	Runtime string `json:"runtime,omitempty"`

	// build runs steps in a builder image before the image is assembled (tests, compilation).
	// +optional
	Build *Build `json:"build,omitempty"`

	// artifacts are the paths (files or directories, relative to the repository root) that go into
	// the application layer. Default: the whole repository except .git.
	// +optional
	// +kubebuilder:validation:MaxItems=256
	// +kubebuilder:validation:items:MinLength=1
	// +kubebuilder:validation:items:MaxLength=1024
	Artifacts []string `json:"artifacts,omitempty"`

	// workdir is the absolute path where the artifacts are placed in the image and the working
	// directory of the process. Default /app.
	// +optional
	// +kubebuilder:validation:MaxLength=1024
	// +kubebuilder:validation:Pattern=`^/`
	Workdir string `json:"workdir,omitempty"`

	// entrypoint is the image's entrypoint, exec form.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Entrypoint []string `json:"entrypoint,omitempty"`

	// cmd is the image's default arguments, exec form.
	// +optional
	// +kubebuilder:validation:MaxItems=64
	Cmd []string `json:"cmd,omitempty"`

	// env is added to the image's environment. Names are letters, digits and '_', not starting
	// with a digit.
	// +optional
	// +kubebuilder:validation:MaxProperties=128
	Env map[string]string `json:"env,omitempty"`

	// ports are the TCP ports the application listens on.
	// +optional
	// +kubebuilder:validation:MaxItems=16
	// +kubebuilder:validation:items:Minimum=1
	// +kubebuilder:validation:items:Maximum=65535
	Ports []int32 `json:"ports,omitempty"`

	// user is the user (name or uid[:gid]) the process runs as.
	// +optional
	// +kubebuilder:validation:MaxLength=64
	// +kubebuilder:validation:Pattern=`^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$`
	User string `json:"user,omitempty"`

	// deploy says how the application runs once deployed. Default: one replica, the ports above.
	// +optional
	Deploy *ferryv1.DeploySpec `json:"deploy,omitempty"`

	// timeout bounds the whole Build, for example 20m; the Project's buildTimeout caps it.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`

	// positions maps field paths to where their values are written, for error messages.
	positions map[string]Position
	// name is the file's path in the repository, for error messages.
	name string
}

// Build is the optional build stage.
type Build struct {
	// image is the builder image the steps run in, for example golang:1.26.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=512
	Image string `json:"image"`

	// steps run in order in the repository's checkout; the first that fails fails the Build.
	// +required
	// +kubebuilder:validation:MinItems=1
	// +kubebuilder:validation:MaxItems=32
	Steps []Step `json:"steps"`
}

// Step is one shell command of the build stage.
type Step struct {
	// name identifies the step in logs and status: lower-case letters, digits and '-', starting
	// with a letter; clone and assemble are Ferry's own.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=50
	// +kubebuilder:validation:Pattern=`^[a-z]([-a-z0-9]*[a-z0-9])?$`
	Name string `json:"name"`

	// run is the shell script to run with /bin/sh in the checkout.
	// +required
	// +kubebuilder:validation:MinLength=1
	// +kubebuilder:validation:MaxLength=65536
	Run string `json:"run"`

	// env is added to the step's environment.
	// +optional
	// +kubebuilder:validation:MaxProperties=64
	Env map[string]string `json:"env,omitempty"`

	// timeout bounds the step, for example 10m.
	// +optional
	Timeout *metav1.Duration `json:"timeout,omitempty"`
}

// Position is a place in the pipeline file, 1-based.
type Position struct {
	// Line is the line number.
	Line int
	// Column is the column number.
	Column int
}
