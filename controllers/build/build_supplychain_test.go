package build_test

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	buildcontroller "github.com/ferryci/ferry/controllers/build"
	"github.com/ferryci/ferry/internal/manager"
	"github.com/ferryci/ferry/internal/registry"
	"github.com/ferryci/ferry/internal/releasetest"
	"github.com/ferryci/ferry/internal/supplychain"
	"github.com/ferryci/ferry/internal/testutil"
)

// supplyChainEnv is a registry with a stack and an app image built on it, a Project pushing
// there, the platform's signing key in Ferry's namespace, and a manager that signs.
type supplyChainEnv struct {
	*env
	proxy      *registry.Proxy
	stack, app name.Digest
	keys       []supplychain.Key
}

func tarOf(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, c := range files {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(c)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		_, _ = tw.Write([]byte(c))
	}
	_ = tw.Close()
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
}

// newSupplyChainEnv starts it all with the platform's own key in the signing Secret. The manager
// may generate a key; it must use the platform's.
func newSupplyChainEnv(t *testing.T) *supplyChainEnv {
	t.Helper()
	return startSupplyChainEnv(t, true)
}

func startSupplyChainEnv(t *testing.T, platformKey bool) *supplyChainEnv {
	t.Helper()
	reg, err := registry.StartMemory(registry.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	proxy, err := registry.StartProxy(reg.Host)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = proxy.Close(); _ = reg.Close() })
	repo := proxy.Host + "/team/app"
	e := newEnv(t, func(p *ferryv1.Project) { p.Spec.Image.Repository = repo })
	stackLayer := tarOf(t, map[string]string{"var/lib/dpkg/status": "Package: libc6\nStatus: install ok installed\nVersion: 2.36-9\n"})
	stack := releasetest.PushImage(t, proxy.Host+"/stacks/debian", stackLayer)
	app := releasetest.PushImage(t, repo, stackLayer, tarOf(t, map[string]string{"app/requirements.txt": "flask==3.0.3\n"}))

	priv, pub, err := supplychain.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	k, err := supplychain.ParsePublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	keyName := "signing-" + e.ns
	ctx := context.Background()
	for _, s := range []*corev1.Secret{
		{ObjectMeta: metav1ObjectMeta(testutil.FerryNamespace, keyName), Data: map[string][]byte{buildcontroller.SigningKeyDataKey: priv}},
		{ObjectMeta: metav1ObjectMeta(e.ns, "push"), Type: corev1.SecretTypeDockerConfigJson, Data: map[string][]byte{corev1.DockerConfigJsonKey: []byte(`{"auths":{}}`)}},
	} {
		if s.Namespace == testutil.FerryNamespace {
			ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: testutil.FerryNamespace}}
			_ = e.c.Create(ctx, ns)
			if !platformKey {
				continue
			}
		}
		if err := e.c.Create(ctx, s); err != nil {
			t.Fatal(err)
		}
	}
	testutil.StartManager(t, manager.Options{Controllers: []string{"build"}, FerryImage: ferryImage, SigningKeySecret: keyName, GenerateSigningKey: true, FerryVersion: "v9.9.9-test"})
	keys := []supplychain.Key{{Name: "platform", Key: k}}
	if !platformKey {
		keys = nil
	}
	return &supplyChainEnv{env: e, proxy: proxy, stack: stack, app: app, keys: keys}
}

// succeed lets the Build's PipelineRun succeed with results naming the app image on the stack.
func (s *supplyChainEnv) succeed(build, sha string) {
	s.t.Helper()
	s.createBuild(build, sha, "refs/heads/main")
	pr := s.waitPipelineRun(build)
	lin := fmt.Sprintf(`{"stack":{"name":"debian","image":%q,"digest":%q},"appLayer":"sha256:%s"}`, s.stack.String(), s.stack.DigestStr(), strings.Repeat("1", 64))
	s.tekton(pr, corev1.ConditionTrue, "Succeeded", "", map[string]string{"IMAGE_URL": s.app.Context().String(), "IMAGE_DIGEST": s.app.DigestStr(), "FERRY_LINEAGE": lin})
}

func TestBuildPublishesSBOMProvenanceAndSignature(t *testing.T) {
	s := newSupplyChainEnv(t)
	sha := s.commit(okFile)
	s.succeed("app-main-1", sha)
	b := s.waitReady("app-main-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	testutil.Eventually(t, "Signed condition", func() (bool, error) {
		b = s.build("app-main-1")
		return condition(b, buildcontroller.SignedCondition) == "True/Signed", fmt.Errorf("Signed = %s", condition(b, buildcontroller.SignedCondition))
	})
	if c := meta.FindStatusCondition(b.Status.Conditions, buildcontroller.SignedCondition); !strings.Contains(c.Message, "2 packages") {
		t.Errorf("Signed message = %q, want the SBOM's 2 packages", c.Message)
	}
	if by, err := supplychain.VerifySignature(s.app, s.keys); err != nil || by != "platform" {
		t.Errorf("VerifySignature = %q, %v", by, err)
	}
	p, _, err := supplychain.VerifyProvenance(s.app, s.keys)
	if err != nil {
		t.Fatal(err)
	}
	if p.Revision != sha || p.Repository != s.project.Spec.Repository.CloneURL || p.Stack != s.stack.String() ||
		p.Build != s.ns+"/app-main-1" || p.BuildUID != string(b.UID) || p.FerryVersion != "v9.9.9-test" || !strings.HasPrefix(p.PipelineFileDigest, "sha256:") {
		t.Errorf("provenance = %+v", p)
	}
	sb, _, err := supplychain.FetchSBOM(s.app)
	if err != nil {
		t.Fatal(err)
	}
	if len(sb.Layers) != 2 || sb.Layers[0].Role != supplychain.RoleStack || sb.Layers[1].Role != supplychain.RoleApp {
		t.Errorf("SBOM layers = %+v", sb.Layers)
	}
}

// TestBuildGeneratesTheSigningKey: a new installation has no signing Secret; the manager creates
// one with a new key pair at the first Build, signs with it, and its cosign.pub verifies the image.
func TestBuildGeneratesTheSigningKey(t *testing.T) {
	s := startSupplyChainEnv(t, false)
	sha := s.commit(okFile)
	s.succeed("app-main-1", sha)
	b := s.waitReady("app-main-1", metav1.ConditionTrue, ferryv1.SucceededReason)
	testutil.Eventually(t, "Signed condition", func() (bool, error) {
		b = s.build("app-main-1")
		return condition(b, buildcontroller.SignedCondition) == "True/Signed", fmt.Errorf("Signed = %s", condition(b, buildcontroller.SignedCondition))
	})
	secret := &corev1.Secret{}
	if err := s.c.Get(context.Background(), client.ObjectKey{Namespace: testutil.FerryNamespace, Name: "signing-" + s.ns}, secret); err != nil {
		t.Fatal(err)
	}
	pub, err := supplychain.ParsePublicKey(secret.Data[buildcontroller.PublicKeyDataKey])
	if err != nil {
		t.Fatalf("the generated Secret's %s: %v", buildcontroller.PublicKeyDataKey, err)
	}
	if _, err := supplychain.NewSigner(secret.Data[buildcontroller.SigningKeyDataKey]); err != nil {
		t.Fatalf("the generated Secret's %s: %v", buildcontroller.SigningKeyDataKey, err)
	}
	if by, err := supplychain.VerifySignature(s.app, []supplychain.Key{{Name: "generated", Key: pub}}); err != nil || by != "generated" {
		t.Errorf("VerifySignature with the generated cosign.pub = %q, %v", by, err)
	}
	if st := fmt.Sprintf("%+v", b.Status); strings.Contains(st, "PRIVATE KEY") {
		t.Errorf("the status holds the key: %s", st)
	}
}

// TestBuildSigningFailsVisibly: the registry answering 503 to the attestation's push makes the
// Build not Ready with the reason, and leaves the image unsigned.
func TestBuildSigningFailsVisibly(t *testing.T) {
	s := newSupplyChainEnv(t)
	s.proxy.Inject(registry.Fault{Status: http.StatusServiceUnavailable, Times: -1, Match: func(r *http.Request) bool {
		return registry.MatchManifestPuts(r) && strings.HasSuffix(r.URL.Path, supplychain.AttestationTagSuffix)
	}})
	sha := s.commit(okFile)
	s.succeed("app-main-1", sha)
	b := s.waitReady("app-main-1", metav1.ConditionFalse, buildcontroller.SigningFailedReason)
	c := meta.FindStatusCondition(b.Status.Conditions, ferryv1.ReadyCondition)
	if !strings.Contains(c.Message, ".att") || !strings.Contains(c.Message, "UNAVAILABLE") || condition(b, buildcontroller.SignedCondition) != "False/SigningFailed" {
		t.Errorf("Ready = %q, Signed = %s", c.Message, condition(b, buildcontroller.SignedCondition))
	}
	if _, err := supplychain.VerifySignature(s.app, s.keys); !errors.Is(err, supplychain.ErrNotSigned) {
		t.Errorf("VerifySignature = %v, want not signed", err)
	}
	if st := fmt.Sprintf("%+v", b.Status); strings.Contains(st, "PRIVATE KEY") {
		t.Errorf("the status holds the key: %s", st)
	}
}
