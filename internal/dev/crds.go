package dev

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	"github.com/ferryci/ferry/config/crd"
	"github.com/ferryci/ferry/internal/controlplane"
)

// crdHashAnnotation records the hash of the definition ferry dev installed, so that a later start
// with the same definitions installs nothing and does not wait for them.
const crdHashAnnotation = "dev.ferry.dev/definition-hash"

// installCRDs installs Ferry's and Tekton's CRDs on the hub, only those that are missing or
// changed since the last start, and waits until the hub serves them all.
func installCRDs(ctx context.Context, cfg *rest.Config) error {
	ferryCRDs, err := crd.CustomResourceDefinitions()
	if err != nil {
		return err
	}
	tektonDir, err := controlplane.TektonCRDDir()
	if err != nil {
		return err
	}
	opts := envtest.CRDInstallOptions{CRDs: ferryCRDs, Paths: []string{tektonDir}, ErrorIfPathMissing: true}
	if err := envtest.ReadCRDFiles(&opts); err != nil {
		return fmt.Errorf("failed to read Tekton's CRDs in %s: %w", tektonDir, err)
	}
	scheme := runtime.NewScheme()
	utilruntime.Must(apiextensionsv1.AddToScheme(scheme))
	c, err := client.New(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return err
	}
	var changed []*apiextensionsv1.CustomResourceDefinition
	for _, want := range opts.CRDs {
		sum, err := definitionHash(want)
		if err != nil {
			return err
		}
		if want.Annotations == nil {
			want.Annotations = map[string]string{}
		}
		want.Annotations[crdHashAnnotation] = sum
		have := &apiextensionsv1.CustomResourceDefinition{}
		switch err := c.Get(ctx, client.ObjectKey{Name: want.Name}, have); {
		case apierrors.IsNotFound(err):
			changed = append(changed, want)
		case err != nil:
			return fmt.Errorf("failed to read CRD %s: %w", want.Name, err)
		case have.Annotations[crdHashAnnotation] != sum:
			changed = append(changed, want)
		}
	}
	if len(changed) > 0 {
		if _, err := envtest.InstallCRDs(cfg, envtest.CRDInstallOptions{CRDs: changed}); err != nil {
			return fmt.Errorf("failed to install %d CRDs: %w", len(changed), err)
		}
	}
	if err := envtest.WaitForCRDs(cfg, opts.CRDs, envtest.CRDInstallOptions{PollInterval: 50 * time.Millisecond, MaxTime: 30 * time.Second}); err != nil {
		return fmt.Errorf("the hub does not serve every CRD: %w", err)
	}
	return nil
}

// definitionHash is the hash of a CRD as ferry dev would install it.
func definitionHash(c *apiextensionsv1.CustomResourceDefinition) (string, error) {
	data, err := json.Marshal(c.Spec)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:12]), nil
}
