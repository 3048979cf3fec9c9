package build

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/log"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/conditions"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/supplychain"
)

// Supply-chain condition and reasons of a Build.
const (
	// SignedCondition is True once the image's SBOM, signed provenance and signature are in the
	// registry; False when publishing them failed (the Build is then not Ready).
	SignedCondition = "Signed"
	// SignedReason: everything was published.
	SignedReason = "Signed"
	// SigningFailedReason: the SBOM, provenance or signature could not be published.
	SigningFailedReason = "SigningFailed"
)

// SigningKeyDataKey is the key of the platform's PEM private key in the signing Secret.
const SigningKeyDataKey = "cosign.key"

// PublicKeyDataKey is the key of the public key in a signing Secret the manager generated: what
// `cosign verify --key` and an Environment's supplyChain.keys take.
const PublicKeyDataKey = "cosign.pub"

// SupplyChain configures what the manager publishes about every image a Build pushes. The manager
// does it, after the run, for the Tekton and the local executor alike: the key is read from a
// Secret in Ferry's namespace, which no Build's steps (running in the Project's namespace, or
// sandboxed by the local executor) can read.
type SupplyChain struct {
	// SigningKeySecret names the Secret in the Reconciler's Namespace with the ECDSA P-256 key
	// (PEM, unencrypted) under cosign.key.
	SigningKeySecret string
	// GenerateKey lets the manager create the Secret with a new key pair (cosign.key, cosign.pub)
	// when it does not exist, so that a new installation signs from its first Build. A key the
	// platform team brings is never replaced.
	GenerateKey bool
	// FerryVersion is the builder's version written into the provenance.
	FerryVersion string
	// Backoff overrides how failed registry requests are retried.
	Backoff *image.Backoff
}

// publishSupplyChain publishes the SBOM, the signed provenance and the signature of the image a
// Build just pushed, and records the outcome in the Signed condition. A failure makes the Build
// not Ready, with what failed: the image then does not count as signed (the signature is pushed
// last), and nobody mistakes it for one that is.
func (r *Reconciler) publishSupplyChain(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) {
	if r.SupplyChain == nil || b.Status.Image == "" || !meta.IsStatusConditionTrue(b.Status.Conditions, ferryv1.ReadyCondition) {
		return
	}
	now := r.now()
	pub, err := r.publish(ctx, b, p)
	if err != nil {
		msg := fmt.Sprintf("pushed %s, but publishing its SBOM, provenance and signature failed: %v", b.Status.Image, err)
		conditions.Set(&b.Status.Conditions, SignedCondition, metav1.ConditionFalse, SigningFailedReason, msg, b.Generation, now)
		markFinished(b, metav1.ConditionFalse, SigningFailedReason, "Built and "+msg, now)
		return
	}
	msg := fmt.Sprintf("SBOM %s (%d packages, %d bytes), SLSA provenance and signature pushed in %s",
		pub.SBOM, pub.Packages, pub.SBOMBytes, pub.Duration.Round(time.Millisecond))
	conditions.Set(&b.Status.Conditions, SignedCondition, metav1.ConditionTrue, SignedReason, msg, b.Generation, now)
}

func (r *Reconciler) publish(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) (*supplychain.Published, error) {
	signer, err := r.signer(ctx)
	if err != nil {
		return nil, err
	}
	dockerConfig := []byte("{}")
	if ref := p.Spec.Image.PushSecretRef; ref != nil {
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: p.Namespace, Name: ref.Name}, s); err != nil {
			return nil, fmt.Errorf("failed to read the Project's push Secret %s: %w", ref.Name, err)
		}
		if cfg, ok := s.Data[corev1.DockerConfigJsonKey]; ok {
			dockerConfig = cfg
		}
	}
	c, err := image.NewClient(image.ClientOptions{DockerConfig: dockerConfig, Insecure: p.Spec.Image.Insecure, Backoff: r.SupplyChain.Backoff})
	if err != nil {
		return nil, err
	}
	ref, err := c.ParseReference(b.Status.Image)
	if err != nil {
		return nil, err
	}
	img, ok := ref.(name.Digest)
	if !ok {
		return nil, fmt.Errorf("image %s is not pinned by digest", b.Status.Image)
	}
	ropts := c.RemoteOptions(ctx)
	var bases []supplychain.Base
	prov := supplychain.Provenance{
		FerryVersion: r.SupplyChain.FerryVersion,
		Repository:   assemble.SanitizeSourceURL(p.Spec.Repository.CloneURL), Revision: b.Spec.Revision,
		PipelineFile: pipelineFilePath(p),
		Build:        b.Namespace + "/" + b.Name, BuildUID: string(b.UID), Executor: b.Status.Executor,
	}
	if b.Status.StartTime != nil {
		prov.StartedOn = b.Status.StartTime.Time
	}
	if b.Status.CompletionTime != nil {
		prov.FinishedOn = b.Status.CompletionTime.Time
	}
	if l := b.Status.Lineage; l != nil {
		for _, s := range []struct {
			role string
			src  *ferryv1.LayerSource
			dst  *string
		}{{supplychain.RoleStack, l.Stack, &prov.Stack}, {supplychain.RoleRuntime, l.Runtime, &prov.Runtime}} {
			if s.src == nil || s.src.Image == "" {
				continue
			}
			bref, err := c.ParseReference(s.src.Image)
			if err != nil {
				return nil, fmt.Errorf("the Build's %s: %w", s.role, err)
			}
			d, ok := bref.(name.Digest)
			if !ok {
				return nil, fmt.Errorf("the Build's %s %s is not pinned by digest", s.role, s.src.Image)
			}
			bases = append(bases, supplychain.Base{Role: s.role, Image: d})
			*s.dst = d.String()
		}
	}
	if data, err := r.pipelineFileBytes(ctx, b, p); err == nil {
		sum := sha256.Sum256(data)
		prov.PipelineFileDigest = "sha256:" + hex.EncodeToString(sum[:])
	} else {
		return nil, fmt.Errorf("failed to read the pipeline file for the provenance: %w", err)
	}
	described, err := supplychain.Describe(img, supplychain.DescribeOptions{Bases: bases, Tool: "ferry-" + r.SupplyChain.FerryVersion, Remote: ropts})
	if err != nil {
		return nil, err
	}
	return supplychain.Publish(img, supplychain.PublishOptions{SBOM: described.SBOM, Provenance: &prov, Signer: signer, Remote: ropts})
}

// signer reads the platform's key. Errors name the Secret, never its content.
func (r *Reconciler) signer(ctx context.Context) (*supplychain.Signer, error) {
	s := &corev1.Secret{}
	key := types.NamespacedName{Namespace: r.Namespace, Name: r.SupplyChain.SigningKeySecret}
	err := r.APIReader.Get(ctx, key, s)
	if apierrors.IsNotFound(err) && r.SupplyChain.GenerateKey {
		s, err = r.generateSigningKey(ctx, key)
	}
	if err != nil {
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("the signing Secret %s was not found", key)
		}
		return nil, fmt.Errorf("failed to read the signing Secret %s: %w", key, err)
	}
	data, ok := s.Data[SigningKeyDataKey]
	if !ok {
		return nil, fmt.Errorf("the signing Secret %s has no %s key", key, SigningKeyDataKey)
	}
	signer, err := supplychain.NewSigner(data)
	if err != nil {
		return nil, fmt.Errorf("the signing Secret %s: %w", key, err)
	}
	return signer, nil
}

func pipelineFilePath(p *ferryv1.Project) string {
	if p.Spec.PipelineFile != "" {
		return p.Spec.PipelineFile
	}
	return ferryv1.DefaultPipelineFile
}

// pipelineFileBytes reads the pipeline file the Build ran, from the cache that planning filled.
func (r *Reconciler) pipelineFileBytes(ctx context.Context, b *ferryv1.Build, p *ferryv1.Project) ([]byte, error) {
	_, data, err := r.readPipelineData(ctx, b, p)
	return data, err
}

// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=secrets,verbs=create

// generateSigningKey creates the signing Secret with a new ECDSA P-256 key pair. When another
// worker or replica created it first, theirs is read and used: one key, whoever wins.
func (r *Reconciler) generateSigningKey(ctx context.Context, key types.NamespacedName) (*corev1.Secret, error) {
	private, public, err := supplychain.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("failed to generate a signing key: %w", err)
	}
	s := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: key.Namespace, Name: key.Name,
			Labels:      map[string]string{"app.kubernetes.io/managed-by": "ferry"},
			Annotations: map[string]string{"ferry.dev/generated": "the platform's image signing key, made by the manager because none existed; cosign.pub verifies the images it signs"},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{SigningKeyDataKey: private, PublicKeyDataKey: public},
	}
	err = r.Create(ctx, s)
	if apierrors.IsAlreadyExists(err) {
		s = &corev1.Secret{}
		return s, r.APIReader.Get(ctx, key, s)
	}
	if err != nil {
		return nil, err
	}
	log.FromContext(ctx).Info("Created the platform's image signing key; verify images with its public key", "secret", key.String(), "publicKey", PublicKeyDataKey)
	return s, nil
}
