package dev

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	buildcontroller "github.com/ferryci/ferry/controllers/build"
	"github.com/ferryci/ferry/internal/manager"
)

// stepEnvNames are the variables of this process that the local executor hands to the example
// apps' build steps besides PATH, HOME and TMPDIR: Go's settings and pyenv's.
var stepEnvNames = []string{"GOFLAGS", "GOPROXY", "GONOSUMDB", "GOPRIVATE", "GOSUMDB", "GOINSECURE", "PYENV_ROOT", "PYENV_VERSION", "LANG"}

// stepEnv is the build steps' environment: the variables of stepEnvNames that are set, and the
// local Go toolchain only (never a download).
func stepEnv() []string {
	var env []string
	for _, name := range stepEnvNames {
		if _, ok := os.LookupEnv(name); ok {
			env = append(env, name)
		}
	}
	return append(env, "GOTOOLCHAIN=local")
}

// stepCachesAndMounts are the build steps' caches, this machine's Go caches (without them every
// build would compile the standard library again and might download modules), and the
// toolchains an isolated step may need to see read-only although they sit under a private
// directory (such as root's home): GOROOT and PYENV_ROOT.
func stepCachesAndMounts() (caches, mounts []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names := []string{"GOCACHE", "GOMODCACHE", "GOROOT"}
	out, err := exec.CommandContext(ctx, "go", append([]string{"env"}, names...)...).Output()
	if err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for i, name := range names {
			if i >= len(lines) || lines[i] == "" {
				continue
			}
			if fi, err := os.Stat(lines[i]); err != nil || !fi.IsDir() {
				continue
			}
			if name == "GOROOT" {
				mounts = append(mounts, lines[i])
			} else {
				caches = append(caches, name+"="+lines[i])
			}
		}
	}
	if dir := os.Getenv("PYENV_ROOT"); filepath.IsAbs(dir) {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() {
			mounts = append(mounts, dir)
		}
	}
	return caches, mounts
}

// tektonStepCaches are the cache directories each Project's steps keep between its Builds on
// Tekton, in a claim of the hub node's default StorageClass (controlplane.StorageClassName).
var tektonStepCaches = []string{"GOCACHE", "GOMODCACHE", "PIP_CACHE_DIR", "npm_config_cache"}

// startManager runs Ferry's manager in this process against the hub: every controller, the
// admission webhooks where the hub expects them, the GitLab receiver, the UI, and the local
// executor with its logs in DIR/builds.
func (e *env) startManager(ctx context.Context) error {
	receiverAddr, err := e.receiverAddr()
	if err != nil {
		return err
	}
	host, port, certDir := e.hub.WebhookOptions()
	caches, mounts := stepCachesAndMounts()
	opts := manager.Options{
		Namespace:                   FerryNamespace,
		MetricsAddr:                 "0",
		ProbeAddr:                   "0",
		GracefulShutdownTimeout:     10 * time.Second,
		WebhookHost:                 host,
		WebhookPort:                 port,
		WebhookCertDir:              certDir,
		Executor:                    e.executor,
		FerryImage:                  e.ferryImage,
		StepCache:                   buildcontroller.StepCache{Vars: tektonStepCaches},
		LogDir:                      filepath.Join(e.dir, "builds"),
		LocalStepEnv:                stepEnv(),
		LocalStepCaches:             caches,
		LocalStepMounts:             mounts,
		AllowLocalExecutorInCluster: e.opts.AllowLocalExecutorInCluster,
		ReceiverAddr:                receiverAddr,
		SigningKeySecret:            manager.DefaultSigningKeySecret,
		GenerateSigningKey:          true,
	}
	if err := e.configureUI(&opts); err != nil {
		return err
	}
	m, err := manager.New(e.hub.Config, opts)
	if err != nil {
		return err
	}
	mctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	var runErr error
	stopped := make(chan struct{})
	go func() {
		runErr = m.Start(mctx)
		close(stopped)
	}()
	e.onStop("Ferry's manager", func() error {
		cancel()
		select {
		case <-stopped:
			return runErr
		case <-time.After(30 * time.Second):
			return errors.New("the manager did not stop within 30s")
		}
	})
	e.mgr = m
	if err := e.waitManagerReady(ctx, stopped); err != nil {
		if errors.Is(err, errManagerStopped) {
			return fmt.Errorf("the manager stopped while starting: %w", runErr)
		}
		return err
	}
	return nil
}

var errManagerStopped = errors.New("the manager stopped")

// waitManagerReady waits until the webhook server, the receiver and the UI serve.
func (e *env) waitManagerReady(ctx context.Context, stopped <-chan struct{}) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	check := e.mgr.GetWebhookServer().StartedChecker()
	for {
		var waiting []string
		if err := check(nil); err != nil {
			waiting = append(waiting, "admission webhooks: "+err.Error())
		}
		if e.mgr.Receiver.Addr() == "" {
			waiting = append(waiting, "GitLab receiver")
		}
		if w := e.uiWaiting(); w != "" {
			waiting = append(waiting, w)
		}
		if len(waiting) == 0 {
			return nil
		}
		select {
		case <-stopped:
			return errManagerStopped
		case <-ctx.Done():
			return fmt.Errorf("the manager did not become ready: waiting for %s", strings.Join(waiting, ", "))
		case <-time.After(100 * time.Millisecond):
		}
	}
}
