// Package webhookcert gives Ferry's admission webhooks a certificate without cert-manager: it keeps
// a CA and a serving certificate in a Secret in Ferry's namespace, writes them where the webhook
// server reads them, and puts the CA into Ferry's webhook configurations. Every replica runs it; the
// first to find the Secret missing or expiring creates it, the others read it.
package webhookcert

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// Secret keys.
const (
	caCertKey = "ca.crt"
	caKeyKey  = "ca.key"
	certKey   = corev1.TLSCertKey
	keyKey    = corev1.TLSPrivateKeyKey
)

// Lifetimes: the serving certificate is renewed a month before it expires.
const (
	caValidity      = 10 * 365 * 24 * time.Hour
	certValidity    = 365 * 24 * time.Hour
	renewBefore     = 30 * 24 * time.Hour
	defaultInterval = time.Hour
)

// The rotator reads and patches only Ferry's own webhook configurations and certificate Secret,
// by name, with a direct client (no list, no watch): RBAC names them (the names config/default
// gives them), so that the manager cannot touch anyone else's webhooks. A Secret cannot be named
// in a create rule.
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,verbs=create
// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,resourceNames=ferry-webhook-tls,verbs=update
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=mutatingwebhookconfigurations,resourceNames=ferry-mutating-webhook-configuration,verbs=get;patch
// +kubebuilder:rbac:groups=admissionregistration.k8s.io,resources=validatingwebhookconfigurations,resourceNames=ferry-validating-webhook-configuration,verbs=get;patch

// Rotator keeps the webhook certificate current.
type Rotator struct {
	// Client reads and writes the Secret and the webhook configurations.
	Client client.Client
	// Namespace is Ferry's namespace, where the Secret and the webhook Service live.
	Namespace string
	// SecretName names the Secret that holds the CA and the serving certificate.
	SecretName string
	// ServiceName is the webhook Service; the certificate is valid for its DNS names.
	ServiceName string
	// CertDir is where the webhook server reads tls.crt and tls.key.
	CertDir string
	// ValidatingWebhooks and MutatingWebhooks name the configurations whose caBundle is kept.
	ValidatingWebhooks []string
	MutatingWebhooks   []string
	// Interval is how often the certificate is checked. Default 1h.
	Interval time.Duration
	// Now returns the current time. Default time.Now.
	Now func() time.Time

	ready atomic.Bool
}

// NeedLeaderElection is false: every replica serves webhooks and needs the certificate.
func (r *Rotator) NeedLeaderElection() bool { return false }

// Start keeps the certificate current until ctx ends.
func (r *Rotator) Start(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("webhookcert")
	interval := r.Interval
	if interval == 0 {
		interval = defaultInterval
	}
	for {
		wait := interval
		if err := r.Sync(ctx); err != nil {
			log.Error(err, "Failed to sync the webhook certificate; retrying")
			wait = 5 * time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// WaitForCertificate syncs until the certificate is in place, retrying failures, or ctx ends.
func (r *Rotator) WaitForCertificate(ctx context.Context) error {
	log := ctrl.LoggerFrom(ctx).WithName("webhookcert")
	for {
		err := r.Sync(ctx)
		if err == nil {
			return nil
		}
		log.Error(err, "Failed to issue the webhook certificate; retrying")
		select {
		case <-ctx.Done():
			return fmt.Errorf("the webhook certificate was not issued: %w", err)
		case <-time.After(2 * time.Second):
		}
	}
}

// ReadyCheck fails until the certificate is in place; use it as a readiness check.
func (r *Rotator) ReadyCheck(*http.Request) error {
	if !r.ready.Load() {
		return errors.New("the webhook certificate is not in place yet")
	}
	return nil
}

// Sync makes sure the Secret holds a valid certificate, writes it to CertDir and injects the CA.
func (r *Rotator) Sync(ctx context.Context) error {
	secret, err := r.ensureSecret(ctx)
	if err != nil {
		return err
	}
	if err := r.writeFiles(secret); err != nil {
		return err
	}
	if err := r.injectCA(ctx, secret.Data[caCertKey]); err != nil {
		return err
	}
	r.ready.Store(true)
	return nil
}

func (r *Rotator) now() time.Time {
	if r.Now != nil {
		return r.Now()
	}
	return time.Now()
}

func (r *Rotator) dnsNames() []string {
	return []string{
		r.ServiceName,
		r.ServiceName + "." + r.Namespace,
		r.ServiceName + "." + r.Namespace + ".svc",
		r.ServiceName + "." + r.Namespace + ".svc.cluster.local",
	}
}

func (r *Rotator) ensureSecret(ctx context.Context) (*corev1.Secret, error) {
	key := types.NamespacedName{Namespace: r.Namespace, Name: r.SecretName}
	secret := &corev1.Secret{}
	err := r.Client.Get(ctx, key, secret)
	switch {
	case apierrors.IsNotFound(err):
		data, err := r.generate(nil, nil)
		if err != nil {
			return nil, err
		}
		secret = &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: r.SecretName, Labels: map[string]string{"app.kubernetes.io/part-of": "ferry"}},
			Type:       corev1.SecretTypeTLS,
			Data:       data,
		}
		if err := r.Client.Create(ctx, secret); err != nil {
			if apierrors.IsAlreadyExists(err) {
				// Another replica was faster; use what it wrote.
				return r.ensureSecret(ctx)
			}
			return nil, fmt.Errorf("failed to create Secret %s: %w", key, err)
		}
		return secret, nil
	case err != nil:
		return nil, fmt.Errorf("failed to read Secret %s: %w", key, err)
	}
	if r.valid(secret.Data) {
		return secret, nil
	}
	caCert, caKey := parseCA(secret.Data)
	data, err := r.generate(caCert, caKey)
	if err != nil {
		return nil, err
	}
	secret.Data = data
	if err := r.Client.Update(ctx, secret); err != nil {
		if apierrors.IsConflict(err) {
			return r.ensureSecret(ctx)
		}
		return nil, fmt.Errorf("failed to update Secret %s: %w", key, err)
	}
	return secret, nil
}

// valid reports whether data holds a serving certificate signed by its CA, for the Service's names,
// that does not expire within renewBefore.
func (r *Rotator) valid(data map[string][]byte) bool {
	caCert, _ := parseCA(data)
	if caCert == nil || caCert.NotAfter.Before(r.now().Add(renewBefore)) {
		return false
	}
	block, _ := pem.Decode(data[certKey])
	if block == nil {
		return false
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || cert.NotAfter.Before(r.now().Add(renewBefore)) {
		return false
	}
	pool := x509.NewCertPool()
	pool.AddCert(caCert)
	for _, name := range r.dnsNames() {
		if _, err := cert.Verify(x509.VerifyOptions{DNSName: name, Roots: pool, CurrentTime: r.now()}); err != nil {
			return false
		}
	}
	return true
}

func parseCA(data map[string][]byte) (*x509.Certificate, *ecdsa.PrivateKey) {
	certBlock, _ := pem.Decode(data[caCertKey])
	keyBlock, _ := pem.Decode(data[caKeyKey])
	if certBlock == nil || keyBlock == nil {
		return nil, nil
	}
	cert, err := x509.ParseCertificate(certBlock.Bytes)
	if err != nil {
		return nil, nil
	}
	key, err := x509.ParseECPrivateKey(keyBlock.Bytes)
	if err != nil {
		return nil, nil
	}
	return cert, key
}

// generate issues a serving certificate, with a new CA unless a usable one is given.
func (r *Rotator) generate(caCert *x509.Certificate, caKey *ecdsa.PrivateKey) (map[string][]byte, error) {
	now := r.now()
	if caCert == nil || caKey == nil || caCert.NotAfter.Before(now.Add(certValidity)) {
		var err error
		caKey, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return nil, err
		}
		tmpl := &x509.Certificate{
			SerialNumber:          serial(),
			Subject:               pkix.Name{CommonName: "ferry-webhook-ca"},
			NotBefore:             now.Add(-time.Hour),
			NotAfter:              now.Add(caValidity),
			KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
			BasicConstraintsValid: true,
			IsCA:                  true,
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &caKey.PublicKey, caKey)
		if err != nil {
			return nil, err
		}
		if caCert, err = x509.ParseCertificate(der); err != nil {
			return nil, err
		}
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: r.dnsNames()[2]},
		DNSNames:     r.dnsNames(),
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(certValidity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
	if err != nil {
		return nil, err
	}
	caKeyDER, err := x509.MarshalECPrivateKey(caKey)
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, err
	}
	return map[string][]byte{
		caCertKey: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caCert.Raw}),
		caKeyKey:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: caKeyDER}),
		certKey:   pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		keyKey:    pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(err) // crypto/rand does not fail on supported platforms
	}
	return n
}

// writeFiles writes the serving pair into CertDir when it differs; the webhook server's certificate
// watcher picks up the change.
func (r *Rotator) writeFiles(secret *corev1.Secret) error {
	if err := os.MkdirAll(r.CertDir, 0o700); err != nil {
		return err
	}
	for _, k := range []string{certKey, keyKey} {
		path := filepath.Join(r.CertDir, k)
		if old, err := os.ReadFile(path); err == nil && bytes.Equal(old, secret.Data[k]) {
			continue
		}
		tmp := path + ".tmp"
		if err := os.WriteFile(tmp, secret.Data[k], 0o600); err != nil {
			return err
		}
		if err := os.Rename(tmp, path); err != nil {
			return err
		}
	}
	return nil
}

func (r *Rotator) injectCA(ctx context.Context, ca []byte) error {
	for _, name := range r.ValidatingWebhooks {
		cfg := &admissionregistrationv1.ValidatingWebhookConfiguration{}
		if err := r.Client.Get(ctx, types.NamespacedName{Name: name}, cfg); err != nil {
			return fmt.Errorf("failed to read ValidatingWebhookConfiguration %s: %w", name, err)
		}
		before := cfg.DeepCopy()
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = ca
		}
		if err := r.Client.Patch(ctx, cfg, client.MergeFrom(before)); err != nil {
			return fmt.Errorf("failed to inject the CA into ValidatingWebhookConfiguration %s: %w", name, err)
		}
	}
	for _, name := range r.MutatingWebhooks {
		cfg := &admissionregistrationv1.MutatingWebhookConfiguration{}
		if err := r.Client.Get(ctx, types.NamespacedName{Name: name}, cfg); err != nil {
			return fmt.Errorf("failed to read MutatingWebhookConfiguration %s: %w", name, err)
		}
		before := cfg.DeepCopy()
		for i := range cfg.Webhooks {
			cfg.Webhooks[i].ClientConfig.CABundle = ca
		}
		if err := r.Client.Patch(ctx, cfg, client.MergeFrom(before)); err != nil {
			return fmt.Errorf("failed to inject the CA into MutatingWebhookConfiguration %s: %w", name, err)
		}
	}
	return nil
}
