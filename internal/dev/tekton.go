package dev

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/tektoninstall"
)

// installTekton installs Tekton Pipelines on the hub's real node and pushes Ferry's own image for
// the clone and assemble steps of PipelineRuns: the ferry binary of Ferry's image (static, without
// ferry dev: -tags ferry_nodev) built from the checkout.
func (e *env) installTekton(ctx context.Context) error {
	opts := e.registryOptions(ctx, registryAdmin)
	installed, err := tektoninstall.Install(ctx, tektoninstall.Options{
		Config:     e.hub.Config,
		Registry:   e.registry.Host,
		Repository: "ferry/tekton",
		Remote:     opts,
		Progress:   func(s string) { e.out.printf("  Tekton: %s", s) },
	})
	if err != nil {
		return fmt.Errorf("failed to install Tekton on the hub: %w", err)
	}
	e.out.printf("  Tekton %s runs on the hub's node (%d objects of its config/)", installed.Version, installed.Objects)
	binary := filepath.Join(e.dir, "ferry-image", "ferry")
	if err := os.MkdirAll(filepath.Dir(binary), 0o700); err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-tags", "ferry_nodev", "-o", binary, "./cmd/ferry")
	cmd.Dir = e.opts.RepoDir
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("failed to build the ferry binary of the steps' image in %s: %w\n%s", e.opts.RepoDir, err, out)
	}
	img, err := controlplane.BinaryImage(binary, "/usr/local/bin/ferry")
	if err != nil {
		return err
	}
	e.ferryImage, _, err = pushImage(e.registry.Host+"/ferry/ferry:dev", img, opts)
	return err
}
