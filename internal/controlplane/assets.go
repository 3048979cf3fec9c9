// Package controlplane starts real Kubernetes control planes on loopback from binaries built out of Go
// modules (hack/controlplane/build.sh): an API server with Ferry's and Tekton's CRDs for integration
// tests and for Ferry's hub in `ferry dev`, and simulated clusters (API server, controller-manager,
// scheduler and kwok playing the kubelet) where Deployments really become Available.
//
// Every child process is started so that it dies with the process that started it, even when that
// process is killed without a chance to clean up.
package controlplane

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
)

// AssetsEnv names the directory with the control-plane binaries, overriding the default.
const AssetsEnv = "FERRY_CONTROLPLANE_ASSETS"

// tektonModule and tektonVersion locate Tekton's CRDs in the Go module cache. The version must
// match go.mod; TestTektonVersionMatchesGoMod keeps them in step.
const (
	tektonModule  = "github.com/tektoncd/pipeline"
	tektonVersion = "v1.15.1"
)

// binaries every control plane needs, and the extra ones a simulated cluster needs.
var (
	apiServerBinaries = []string{"etcd", "kube-apiserver"}
	clusterBinaries   = []string{"kube-controller-manager", "kube-scheduler", "kwok"}
)

// AssetsDir returns the directory that holds the control-plane binaries: $FERRY_CONTROLPLANE_ASSETS,
// else $KUBEBUILDER_ASSETS, else bin/controlplane in the Ferry checkout that contains the working
// directory. It fails with the command to run when the binaries are missing.
func AssetsDir() (string, error) {
	dir := os.Getenv(AssetsEnv)
	if dir == "" {
		dir = os.Getenv("KUBEBUILDER_ASSETS")
	}
	if dir == "" {
		root, err := RepoRoot()
		if err != nil {
			return "", fmt.Errorf("control-plane binaries not located: set %s, or run from a Ferry checkout: %w", AssetsEnv, err)
		}
		dir = filepath.Join(root, "bin", "controlplane")
	}
	if err := checkBinaries(dir, apiServerBinaries); err != nil {
		return "", err
	}
	return dir, nil
}

func checkBinaries(dir string, names []string) error {
	var missing []string
	for _, name := range names {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			missing = append(missing, name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("control-plane binaries %s not found in %s: run `make controlplane` (hack/controlplane/build.sh) to build them from Go modules", strings.Join(missing, ", "), dir)
	}
	return nil
}

// RepoRoot returns the root of the Ferry checkout that contains the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		data, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && strings.HasPrefix(string(data), "module github.com/ferryci/ferry\n") {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("no go.mod of module github.com/ferryci/ferry above the working directory")
		}
		dir = parent
	}
}

// TektonVersion is the release of Tekton Pipelines Ferry is built with, whose CRDs and release
// manifests it installs.
func TektonVersion() string {
	version := tektonVersion
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, dep := range info.Deps {
			if dep.Path == tektonModule {
				version = dep.Version
				if dep.Replace != nil {
					version = dep.Replace.Version
				}
			}
		}
	}
	return version
}

// TektonConfigDir returns the directory of Tekton Pipelines' release manifests (its module's
// config/: CRDs, RBAC, ConfigMaps, webhook configurations, Deployments with ko:// image
// references) in the Go module cache, for TektonVersion.
func TektonConfigDir() (string, error) {
	modCache, err := goModCache()
	if err != nil {
		return "", err
	}
	version := TektonVersion()
	dir := filepath.Join(modCache, tektonModule+"@"+version, "config")
	if _, err := os.Stat(dir); err != nil {
		return "", fmt.Errorf("tekton's manifests not found at %s: run `go mod download %s@%s`", dir, tektonModule, version)
	}
	return dir, nil
}

// TektonCRDDir returns the directory of Tekton Pipelines' CRDs (config/300-crds) in the Go module
// cache, for the Tekton version Ferry is built with.
func TektonCRDDir() (string, error) {
	dir, err := TektonConfigDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "300-crds"), nil
}

func goModCache() (string, error) {
	if dir := os.Getenv("GOMODCACHE"); dir != "" {
		return dir, nil
	}
	if out, err := exec.Command("go", "env", "GOMODCACHE").Output(); err == nil {
		if dir := strings.TrimSpace(string(out)); dir != "" {
			return dir, nil
		}
	}
	if gopath := os.Getenv("GOPATH"); gopath != "" {
		return filepath.Join(strings.Split(gopath, string(os.PathListSeparator))[0], "pkg", "mod"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("failed to locate the Go module cache: %w", err)
	}
	return filepath.Join(home, "go", "pkg", "mod"), nil
}
