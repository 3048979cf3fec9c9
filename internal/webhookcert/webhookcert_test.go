package webhookcert

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/ferryci/ferry/internal/controlplane"
)

func TestRotator(t *testing.T) {
	ctx := t.Context()
	api, err := controlplane.StartAPIServer(ctx, controlplane.APIServerOptions{Name: "webhookcert"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = api.Stop() })
	c, err := client.New(api.Config, client.Options{Scheme: clientgoscheme.Scheme})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "ferry-system"}}); err != nil {
		t.Fatal(err)
	}
	hook := admissionregistrationv1.ValidatingWebhook{
		Name:                    "approvals.ferry.dev",
		ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "ferry-system", Name: "ferry-webhook", Path: ptr.To("/validate")}},
		SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
		AdmissionReviewVersions: []string{"v1"},
	}
	vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ferry-validating"}, Webhooks: []admissionregistrationv1.ValidatingWebhook{hook}}
	if err := c.Create(ctx, vwc); err != nil {
		t.Fatal(err)
	}
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{ObjectMeta: metav1.ObjectMeta{Name: "ferry-mutating"}, Webhooks: []admissionregistrationv1.MutatingWebhook{{
		Name: "releases.ferry.dev", ClientConfig: hook.ClientConfig, SideEffects: hook.SideEffects, AdmissionReviewVersions: hook.AdmissionReviewVersions,
	}}}
	if err := c.Create(ctx, mwc); err != nil {
		t.Fatal(err)
	}

	newRotator := func(dir string, now time.Time) *Rotator {
		return &Rotator{
			Client: c, Namespace: "ferry-system", SecretName: "ferry-webhook-tls", ServiceName: "ferry-webhook", CertDir: dir,
			ValidatingWebhooks: []string{"ferry-validating"}, MutatingWebhooks: []string{"ferry-mutating"},
			Now: func() time.Time { return now },
		}
	}
	start := time.Now()
	first := newRotator(t.TempDir(), start)
	if first.ReadyCheck(nil) == nil {
		t.Fatal("ready before the certificate exists")
	}
	if err := first.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.ReadyCheck(nil); err != nil {
		t.Fatal(err)
	}
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: "ferry-system", Name: "ferry-webhook-tls"}, secret); err != nil {
		t.Fatal(err)
	}
	ca := secret.Data[caCertKey]
	verifyServing(t, first.CertDir, ca, "ferry-webhook.ferry-system.svc", start)

	// The CA is injected into every webhook of both configurations.
	if err := c.Get(ctx, client.ObjectKeyFromObject(vwc), vwc); err != nil {
		t.Fatal(err)
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(mwc), mwc); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(vwc.Webhooks[0].ClientConfig.CABundle, ca) || !bytes.Equal(mwc.Webhooks[0].ClientConfig.CABundle, ca) {
		t.Fatal("caBundle not injected")
	}

	// A second replica reuses the same certificate.
	second := newRotator(t.TempDir(), start)
	if err := second.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(filepath.Join(first.CertDir, "tls.crt"))
	b, _ := os.ReadFile(filepath.Join(second.CertDir, "tls.crt"))
	if !bytes.Equal(a, b) {
		t.Fatal("the second replica issued its own certificate")
	}

	// Close to expiry the serving certificate is renewed under the same CA.
	later := newRotator(first.CertDir, start.Add(certValidity-renewBefore+time.Hour))
	if err := later.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	renewed, _ := os.ReadFile(filepath.Join(first.CertDir, "tls.crt"))
	if bytes.Equal(renewed, a) {
		t.Fatal("the certificate was not renewed")
	}
	if err := c.Get(ctx, client.ObjectKeyFromObject(secret), secret); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(secret.Data[caCertKey], ca) {
		t.Fatal("renewal replaced a CA that is still valid")
	}
	verifyServing(t, first.CertDir, ca, "ferry-webhook.ferry-system.svc", start.Add(certValidity))
}

func verifyServing(t *testing.T, dir string, ca []byte, name string, at time.Time) {
	t.Helper()
	pair, err := tls.LoadX509KeyPair(filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key"))
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(ca)
	caCert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: at}); err != nil {
		t.Fatalf("serving certificate does not verify for %s: %v", name, err)
	}
}
