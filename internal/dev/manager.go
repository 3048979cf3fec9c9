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

	"github.com/ferryci/ferry/internal/manager"
)

// stepEnvNames are the variables of this process that the local executor hands to the example
// apps' build steps besides PATH, HOME and TMPDIR: Go's caches (so that a build reuses what this
// machine compiled already) and settings, and pyenv's root.
var stepEnvNames = []string{"GOFLAGS", "GOPROXY", "GONOSUMDB", "GOPRIVATE", "GOSUMDB", "GOINSECURE", "PYENV_ROOT", "PYENV_VERSION", "LANG"}

// stepEnv is the build steps' environment: the Go caches and toolchain of this machine (without
// them every build would compile the standard library again and might download a toolchain), and
// the variables of stepEnvNames that are set.
func stepEnv() []string {
	var env []string
	for _, name := range stepEnvNames {
		if _, ok := os.LookupEnv(name); ok {
			env = append(env, name)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if out, err := exec.CommandContext(ctx, "go", "env", "GOCACHE", "GOMODCACHE", "GOPATH").Output(); err == nil {
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for i, name := range []string{"GOCACHE", "GOMODCACHE", "GOPATH"} {
			if i < len(lines) && lines[i] != "" {
				env = append(env, name+"="+lines[i])
			}
		}
	}
	return append(env, "GOTOOLCHAIN=local")
}

// startManager runs Ferry's manager in this process against the hub: every controller, the
// admission webhooks where the hub expects them, the GitLab receiver, the UI, and the local
// executor with its logs in DIR/builds.
func (e *env) startManager(ctx context.Context) error {
	receiverAddr, err := e.receiverAddr()
	if err != nil {
		return err
	}
	host, port, certDir := e.hub.WebhookOptions()
	opts := manager.Options{
		Namespace:               FerryNamespace,
		MetricsAddr:             "0",
		ProbeAddr:               "0",
		GracefulShutdownTimeout: 10 * time.Second,
		WebhookHost:             host,
		WebhookPort:             port,
		WebhookCertDir:          certDir,
		Executor:                "local",
		LogDir:                  filepath.Join(e.dir, "builds"),
		LocalStepEnv:            stepEnv(),
		ReceiverAddr:            receiverAddr,
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
