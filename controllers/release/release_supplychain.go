package release

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/assemble"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/supplychain"
)

// Reasons of the supply-chain gate (issue 17).
const (
	// SupplyChainRefusedReason: the image failed the Environment's supplyChain checks; the
	// Release stops before rolling out there.
	SupplyChainRefusedReason = "SupplyChainRefused"
	// SupplyChainUnverifiedReason: the checks could not run (registry, Harbor or a key
	// unavailable); they are tried again.
	SupplyChainUnverifiedReason = "SupplyChainUnverified"
	// SupplyChainVerifiedReason is the event of an image that passed.
	SupplyChainVerifiedReason = "SupplyChainVerified"
)

// defaultPublicKeyName is the key of a public key in its Secret or ConfigMap.
const defaultPublicKeyName = "cosign.pub"

// supplyChainRetry is how soon checks that could not run are tried again.
const supplyChainRetry = 15 * time.Second

// +kubebuilder:rbac:groups="",namespace=ferry-system,resources=configmaps,verbs=get

// supplyChainGate checks the Release's image against the Environment's supplyChain policy before
// its rollout there, a rollback to an older digest like any other: a refusal stops the Release in
// this environment with what failed; checks that could not run wait and are tried again.
func (r *Reconciler) supplyChainGate(ctx context.Context, rel *ferryv1.Release, p *plan, env *ferryv1.Environment, es *ferryv1.ReleaseEnvironmentStatus, now metav1.Time) (step, error) {
	pol := env.Spec.SupplyChain
	if pol == nil {
		return proceed(), nil
	}
	if sc := es.SupplyChain; sc != nil && sc.Digest == p.image && sc.Result == ferryv1.SupplyChainPassed {
		// Passed already for this rollout: the steps after the gate can wait (for a cluster
		// another Release holds, once a second), and each wait comes back through here — the
		// registry, the keys and Harbor are not asked again, nor is the event sent again.
		return proceed(), nil
	}
	gen := rel.Generation
	verdict, err := r.checkSupplyChain(ctx, rel, p, pol)
	if err != nil {
		setEnvWaiting(es, SupplyChainUnverifiedReason, fmt.Sprintf("cannot check %s against environment %s's supply-chain policy yet: %v", rollout.ShortImage(p.image), env.Name, err), gen, now)
		return wait(supplyChainRetry), nil
	}
	recordSupplyChain(es, p.image, pol, verdict, r.packageDiff(ctx, p, env.Name, verdict), now)
	if verdict.Refused != "" {
		msg := fmt.Sprintf("refused %s before its rollout to %s: %s", rollout.ShortImage(p.image), env.Name, verdict.Refused)
		setEnvFailed(es, SupplyChainRefusedReason, msg, gen, now)
		r.Recorder.Eventf(rel, nil, corev1.EventTypeWarning, SupplyChainRefusedReason, "SupplyChain", "Environment %s: %s", env.Name, msg)
		return stop(), nil
	}
	r.Recorder.Eventf(rel, nil, corev1.EventTypeNormal, SupplyChainVerifiedReason, "SupplyChain", "Environment %s: %s passed in %s: %s",
		env.Name, rollout.ShortImage(p.image), verdict.Duration.Round(time.Millisecond), strings.Join(verdict.Passed, "; "))
	return proceed(), nil
}

// maxSupplyChainMessage bounds status.environments[].supplyChain.message (its CRD maximum).
const maxSupplyChainMessage = 1024

// recordSupplyChain writes the gate's verdict on the environment's status, with the packages the
// image changes there, so the UI and `ferry get release -o wide` show who signed the image, where
// it was built and what is new in it. A check of the
// same digest with the same outcome keeps the earlier record, so the status does not change on
// every reconcile.
func recordSupplyChain(es *ferryv1.ReleaseEnvironmentStatus, image string, pol *ferryv1.SupplyChainPolicy, v *supplychain.Verdict, packages *ferryv1.PackageDiff, now metav1.Time) {
	res := &ferryv1.SupplyChainResult{Digest: image, Result: ferryv1.SupplyChainPassed, CheckedAt: now, SignedBy: v.SignedBy, SBOM: v.SBOM != nil, Packages: packages}
	res.Message = strings.Join(v.Passed, "; ")
	if v.Refused != "" {
		res.Result, res.Message = ferryv1.SupplyChainRefused, v.Refused
	}
	if len(res.Message) > maxSupplyChainMessage {
		res.Message = res.Message[:maxSupplyChainMessage-3] + "..."
	}
	if v.SBOM != nil {
		res.SBOMPackages = int32(min(len(v.SBOM.Packages()), 1<<30))
	}
	if pv := v.Provenance; pv != nil {
		builder := "Ferry " + pv.FerryVersion
		if pv.Executor != "" {
			builder += " (" + pv.Executor + ")"
		}
		res.Provenance = &ferryv1.ProvenanceSummary{
			Repository: truncate(pv.Repository, 1024), Revision: truncate(pv.Revision, 64), Builder: truncate(builder, 256),
			Stack: truncate(pv.Stack, 1024), Runtime: truncate(pv.Runtime, 1024), BuildRef: truncate(pv.Build, 317),
		}
	}
	if v.ScanSeverity != "" && pol.HarborScan != nil {
		res.Scan = &ferryv1.ScanSummary{Severity: truncate(v.ScanSeverity, 32), RefuseAtOrAbove: orDefault(pol.HarborScan.RefuseAtOrAbove, "High")}
	}
	if old := es.SupplyChain; old != nil && old.Digest == res.Digest && old.Result == res.Result && old.Message == res.Message {
		res.CheckedAt = old.CheckedAt
	}
	es.SupplyChain = res
}

// truncate cuts what an image's attestations say to the status field's maximum: they are
// signed, but not by the cluster's API validation.
func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

func (r *Reconciler) checkSupplyChain(ctx context.Context, rel *ferryv1.Release, p *plan, pol *ferryv1.SupplyChainPolicy) (*supplychain.Verdict, error) {
	keys := make([]supplychain.Key, 0, len(pol.Keys))
	for i, src := range pol.Keys {
		k, err := r.publicKey(ctx, src)
		if err != nil {
			return nil, fmt.Errorf("supplyChain.keys[%d]: %w", i, err)
		}
		keys = append(keys, k)
	}
	sp := supplychain.Policy{Keys: keys, RequireSignature: pol.RequireSignature, RequireProvenance: pol.RequireProvenance, RequireSBOM: pol.RequireSBOM}
	if h := pol.HarborScan; h != nil {
		hs := &supplychain.HarborScan{URL: h.URL, RefuseAtOrAbove: h.RefuseAtOrAbove}
		if hs.RefuseAtOrAbove == "" {
			hs.RefuseAtOrAbove = "High"
		}
		if ref := h.CredentialsSecretRef; ref != nil {
			s := &corev1.Secret{}
			if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: ref.Name}, s); err != nil {
				return nil, fmt.Errorf("supplyChain.harborScan: failed to read the Secret %s/%s: %w", r.Namespace, ref.Name, err)
			}
			hs.Username, hs.Password = string(s.Data[corev1.BasicAuthUsernameKey]), string(s.Data[corev1.BasicAuthPasswordKey])
		}
		sp.Harbor = hs
	}
	c, err := r.registryClient(p, nil)
	if err != nil {
		return nil, err
	}
	ref, err := c.ParseReference(p.image)
	if err != nil {
		return nil, err
	}
	img, ok := ref.(name.Digest)
	if !ok {
		return &supplychain.Verdict{Refused: "the image is not pinned by digest"}, nil
	}
	revision := rel.Spec.Revision
	if revision == "" && p.build != nil {
		revision = p.build.Spec.Revision
	}
	want := supplychain.Expect{Repository: assemble.SanitizeSourceURL(p.project.Spec.Repository.CloneURL), Revision: revision}
	return supplychain.Check(ctx, img, sp, want, c.RemoteOptions(ctx)...)
}

// registryClient reads the Project's registry with its pull Secret; backoff nil retries as
// image.DefaultBackoff.
func (r *Reconciler) registryClient(p *plan, backoff *image.Backoff) (*image.Client, error) {
	copts := image.ClientOptions{DockerConfig: []byte("{}"), Insecure: p.project.Spec.Image.Insecure, Backoff: backoff}
	if p.pullSecret != nil {
		copts.DockerConfig = p.pullSecret.DockerConfigJSON
	}
	return image.NewClient(copts)
}

// publicKey reads a trusted key from Ferry's namespace; errors name where, never what.
func (r *Reconciler) publicKey(ctx context.Context, src ferryv1.PublicKeySource) (supplychain.Key, error) {
	var kind, objName, key string
	var data []byte
	switch {
	case src.SecretRef != nil:
		kind, objName, key = "Secret", src.SecretRef.Name, src.SecretRef.Key
		s := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: objName}, s); err != nil {
			return supplychain.Key{}, notFound(err, kind, r.Namespace, objName)
		}
		data = s.Data[orDefault(key, defaultPublicKeyName)]
	case src.ConfigMapRef != nil:
		kind, objName, key = "ConfigMap", src.ConfigMapRef.Name, src.ConfigMapRef.Key
		cm := &corev1.ConfigMap{}
		if err := r.APIReader.Get(ctx, types.NamespacedName{Namespace: r.Namespace, Name: objName}, cm); err != nil {
			return supplychain.Key{}, notFound(err, kind, r.Namespace, objName)
		}
		data = []byte(cm.Data[orDefault(key, defaultPublicKeyName)])
	default:
		return supplychain.Key{}, fmt.Errorf("names neither a Secret nor a ConfigMap")
	}
	where := fmt.Sprintf("%s %s/%s key %s", strings.ToLower(kind), r.Namespace, objName, orDefault(key, defaultPublicKeyName))
	if len(data) == 0 {
		return supplychain.Key{}, fmt.Errorf("%s is empty or missing", where)
	}
	k, err := supplychain.ParsePublicKey(data)
	if err != nil {
		return supplychain.Key{}, fmt.Errorf("%s: %w", where, err)
	}
	return supplychain.Key{Name: where, Key: k}, nil
}

func notFound(err error, kind, ns, n string) error {
	if apierrors.IsNotFound(err) {
		return fmt.Errorf("the %s %s/%s was not found", kind, ns, n)
	}
	return fmt.Errorf("failed to read the %s %s/%s: %w", kind, ns, n, err)
}

func orDefault(s, def string) string {
	if s != "" {
		return s
	}
	return def
}
