// Command interceptors is Tekton Triggers' core interceptors server (cmd/interceptors of
// github.com/tektoncd/triggers, the same service, certificates and ClusterInterceptor updates) with
// one difference: it listens where -listen says and prints the address it got, instead of on the
// fixed port 8443 of every interface, so that benchmarks can run it on a free loopback port beside
// anything else on the machine. Ferry's benchmarks compare its GitLab receiver with Triggers'.
package main

import (
	"context"
	"crypto/tls"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"time"

	triggersclientset "github.com/tektoncd/triggers/pkg/client/clientset/versioned"
	"github.com/tektoncd/triggers/pkg/interceptors"
	"github.com/tektoncd/triggers/pkg/interceptors/server"
	"github.com/tektoncd/triggers/pkg/interceptors/server/tlsconfig"
	"go.uber.org/zap"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	"knative.dev/pkg/injection"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/signals"
)

// The upstream server's timeouts.
const (
	readTimeout  = 5 * time.Second
	writeTimeout = 20 * time.Second
	idleTimeout  = 60 * time.Second
)

var listen = flag.String("listen", ":8443", "The address to serve HTTPS on; its port may be 0. The address served on is printed as \"listening on ADDRESS\".")

func main() {
	ctx := signals.NewContext()
	cfg := injection.ParseAndGetRESTConfigOrDie()
	ctx, startInformer := injection.EnableInjectionOrDie(ctx, cfg)

	zl, err := zap.NewProduction()
	if err != nil {
		log.Fatalf("failed to initialize logger: %s", err)
	}
	logger := zl.Sugar()
	ctx = logging.WithLogger(ctx, logger)
	defer func() { _ = logger.Sync() }()

	service, err := server.NewWithCoreInterceptors(interceptors.DefaultSecretGetter(kubeclient.Get(ctx).CoreV1()), logger)
	if err != nil {
		logger.Fatalf("failed to initialize core interceptors: %s", err)
	}
	startInformer()

	mux := http.NewServeMux()
	mux.Handle("/", service)
	mux.HandleFunc("/ready", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })

	tc, err := triggersclientset.NewForConfig(cfg)
	if err != nil {
		logger.Fatalf("failed to create the Triggers client: %s", err)
	}
	server.CreateAndValidateCerts(ctx, kubeclient.Get(ctx).CoreV1(), logger, service, tc.TriggersV1alpha1())
	_ = server.UpdateCACertToClusterInterceptorCRD(ctx, service, tc.TriggersV1alpha1(), logger, time.Minute)

	tlsConfig, err := tlsconfig.LoadFromEnv().ToTLSConfig()
	if err != nil {
		logger.Fatalf("failed to parse TLS configuration from env: %s", err)
	}
	tlsConfig.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
		return server.GetTLSData(ctx, logger)
	}
	srv := &http.Server{
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ReadHeaderTimeout: readTimeout,
		ReadTimeout:       readTimeout,
		WriteTimeout:      writeTimeout,
		IdleTimeout:       idleTimeout,
		Handler:           mux,
		TLSConfig:         tlsConfig,
	}
	l, err := net.Listen("tcp", *listen)
	if err != nil {
		logger.Fatalf("failed to listen on %s: %s", *listen, err)
	}
	fmt.Printf("listening on %s\n", l.Addr())
	go func() {
		<-ctx.Done()
		srv.SetKeepAlivesEnabled(false)
		_ = srv.Shutdown(context.Background())
	}()
	if err := srv.ServeTLS(l, "", ""); err != nil && err != http.ErrServerClosed {
		logger.Fatalf("failed to serve: %s", err)
	}
}
