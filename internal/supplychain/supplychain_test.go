package supplychain

import (
	"archive/tar"
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/ferryci/ferry/internal/registry"
)

const dpkgStatus = `Package: libc6
Status: install ok installed
Version: 2.36-9+deb12u9
Description: GNU C Library
 continued line: not a field

Package: removed-pkg
Status: deinstall ok config-files
Version: 1.0

Package: tzdata
Status: install ok installed
Version: 2024a-0+deb12u1
`

// tarLayer makes an uncompressed layer of files path → content; mode 0755 files are executables.
func tarLayer(t testing.TB, files map[string][]byte) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		mode := int64(0o644)
		if strings.HasPrefix(n, "app/bin/") {
			mode = 0o755
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: mode, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(files[n]); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer)
}

// goBinaryWithDeps builds testdata/gobin, a Go program that depends on golang.org/x/sync (test
// binaries carry no dependencies in their build information).
func goBinaryWithDeps(t *testing.T) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "gobin")
	cmd := exec.Command("go", "build", "-o", out, "./testdata/gobin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func find(ps []Package, typ, name string) (Package, bool) {
	for _, p := range ps {
		if p.Type == typ && p.Name == name {
			return p, true
		}
	}
	return Package{}, false
}

func TestCatalogLayer(t *testing.T) {
	stack := tarLayer(t, map[string][]byte{"var/lib/dpkg/status": []byte(dpkgStatus)})
	pkgs, err := CatalogLayer(stack, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := len(pkgs); got != 2 {
		t.Fatalf("stack packages = %+v, want libc6 and tzdata (removed-pkg is not installed)", pkgs)
	}
	if p, _ := find(pkgs, TypeDeb, "libc6"); p.Version != "2.36-9+deb12u9" || p.PURL() != "pkg:deb/debian/libc6@2.36-9+deb12u9" {
		t.Errorf("libc6 = %+v", p)
	}

	// A runtime layer that installs one more package rewrites the whole status file: only the new
	// package is the runtime's.
	runtimeStatus := dpkgStatus + "\nPackage: python3.11\nStatus: install ok installed\nVersion: 3.11.2-6\n"
	rt := tarLayer(t, map[string][]byte{
		"var/lib/dpkg/status": []byte(runtimeStatus),
		"usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA": []byte("Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\n\nName: not-a-header\n"),
	})
	rpkgs, err := CatalogLayer(rt, pkgs)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range rpkgs {
		names = append(names, p.Type+"/"+p.Name+"@"+p.Version)
	}
	if want := []string{"deb/python3.11@3.11.2-6", "pypi/requests@2.31.0"}; !slices.Equal(names, want) {
		t.Errorf("runtime layer packages = %v, want %v", names, want)
	}

	app := tarLayer(t, map[string][]byte{
		"app/bin/server":       goBinaryWithDeps(t),
		"app/requirements.txt": []byte("# deps\nflask==3.0.3\nJinja2[i18n] == 3.1.4 ; python_version>'3'\nunpinned\n-r other.txt\ngit+https://example.com/x.git\n"),
		"app/README":           []byte("not a package"),
	})
	apkgs, err := CatalogLayer(app, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := find(apkgs, TypeGolang, "stdlib"); !ok || p.Version != runtime.Version() || p.Location != "app/bin/server" {
		t.Errorf("stdlib = %+v, %v; want %s from app/bin/server", p, ok, runtime.Version())
	}
	if p, ok := find(apkgs, TypeGolang, "golang.org/x/sync"); !ok || !strings.HasPrefix(p.Version, "v0.") {
		t.Errorf("the binary's golang.org/x/sync = %+v, %v; want its version", p, ok)
	}
	if p, ok := find(apkgs, TypeGolang, "github.com/ferryci/ferry"); !ok || p.Version != "(devel)" {
		t.Errorf("the binary's main module = %+v, %v", p, ok)
	}
	for name, version := range map[string]string{"flask": "3.0.3", "Jinja2": "3.1.4", "unpinned": ""} {
		if p, ok := find(apkgs, TypePyPI, name); !ok || p.Version != version {
			t.Errorf("requirement %s = %+v, %v; want version %q", name, p, ok, version)
		}
	}
	if _, ok := find(apkgs, TypePyPI, "git+https"); ok {
		t.Error("a URL requirement was catalogued as a package")
	}
}

func TestSPDXRoundTripAndDiff(t *testing.T) {
	s := &SBOM{
		Name: "registry.example/team-a/app", Digest: "sha256:" + strings.Repeat("a", 64), Created: time.Unix(1700000000, 0).UTC(), Tool: "ferry-test",
		Layers: []SBOMLayer{
			{Digest: "sha256:" + strings.Repeat("1", 64), Role: RoleStack, Packages: []Package{{Type: TypeDeb, Name: "libc6", Version: "2.36-9", Location: "var/lib/dpkg/status"}, {Type: TypeDeb, Name: "gone", Version: "1"}}},
			{Digest: "sha256:" + strings.Repeat("2", 64), Role: RoleApp, Packages: []Package{{Type: TypeGolang, Name: "golang.org/x/net", Version: "v0.1.0"}}},
		},
	}
	doc, err := s.MarshalSPDX()
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseSPDX(doc)
	if err != nil {
		t.Fatal(err)
	}
	if got.Digest != s.Digest || got.Name != s.Name || !got.Created.Equal(s.Created) || len(got.Layers) != 2 || got.Layers[0].Role != RoleStack {
		t.Fatalf("round trip = %+v", got)
	}
	if p := got.Layers[0].Packages[0]; p.Type != TypeDeb || p.Name != "libc6" || p.Version != "2.36-9" || p.Location != "var/lib/dpkg/status" || p.Layer != s.Layers[0].Digest {
		t.Errorf("package = %+v", p)
	}

	newer := []Package{{Type: TypeDeb, Name: "libc6", Version: "2.36-10"}, {Type: TypeGolang, Name: "golang.org/x/net", Version: "v0.1.0"}, {Type: TypePyPI, Name: "flask", Version: "3"}}
	d := DiffPackages(got.Packages(), newer)
	if len(d.Added) != 1 || d.Added[0].Name != "flask" || len(d.Removed) != 1 || d.Removed[0].Name != "gone" ||
		len(d.Changed) != 1 || d.Changed[0] != (Change{Type: TypeDeb, Name: "libc6", From: "2.36-9", To: "2.36-10"}) {
		t.Errorf("diff = %+v", d)
	}

	for _, bad := range []struct{ name, doc, want string }{
		{"not JSON", "{", "not SPDX JSON"},
		{"SPDX 2.2", `{"spdxVersion":"SPDX-2.2"}`, "SPDX-2.3"},
		{"no image", `{"spdxVersion":"SPDX-2.3","packages":[{"SPDXID":"SPDXRef-A","name":"a"}],"relationships":[{"spdxElementId":"SPDXRef-DOCUMENT","relationshipType":"DESCRIBES","relatedSpdxElement":"SPDXRef-A"}]}`, "container image"},
	} {
		if _, err := ParseSPDX([]byte(bad.doc)); err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: err = %v, want one naming %q", bad.name, err, bad.want)
		}
	}
}

// pushImage pushes an image of layers to repo and returns it by digest.
func pushImage(t testing.TB, repo string, layers ...v1.Layer) name.Digest {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.NewDigest(repo + "@" + h.String())
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	return ref
}

type env struct {
	reg   *registry.Server
	proxy *registry.Proxy
}

// registries are the two real registries of the tests: distribution (Harbor's) and
// go-containerregistry's, each behind a fault-injecting proxy.
func registries(t *testing.T) map[string]env {
	t.Helper()
	dist, err := registry.StartDistribution(registry.DistributionOptions{Access: func(_, _ string, requested []string) []string { return requested }})
	if err != nil {
		t.Fatal(err)
	}
	mem, err := registry.StartMemory(registry.MemoryOptions{})
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]env{}
	for n, r := range map[string]*registry.Server{"distribution": dist, "memory": mem} {
		p, err := registry.StartProxy(r.Host)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close(); _ = r.Close() })
		out[n] = env{reg: r, proxy: p}
	}
	return out
}

func TestDescribeLinksBaseSBOMsAndPublishes(t *testing.T) {
	for rn, e := range registries(t) {
		t.Run(rn, func(t *testing.T) {
			host := e.proxy.Host
			stackL := tarLayer(t, map[string][]byte{"var/lib/dpkg/status": []byte(dpkgStatus)})
			runtimeL := tarLayer(t, map[string][]byte{"usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA": []byte("Name: requests\nVersion: 2.31.0\n")})
			appL := tarLayer(t, map[string][]byte{"app/requirements.txt": []byte("flask==3.0.3\n")})
			stack := pushImage(t, host+"/stacks/debian", stackL)
			rt := pushImage(t, host+"/runtimes/python", stackL, runtimeL)
			app := pushImage(t, host+"/team-a/app", stackL, runtimeL, appL)

			// The stack and runtime are described once, when they are built.
			sd, err := Describe(stack, DescribeOptions{Role: RoleStack, Tool: "ferry-test"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Publish(stack, PublishOptions{SBOM: sd.SBOM}); err != nil {
				t.Fatal(err)
			}
			rd, err := Describe(rt, DescribeOptions{Bases: []Base{{RoleStack, stack}}, Role: RoleRuntime, Tool: "ferry-test"})
			if err != nil {
				t.Fatal(err)
			}
			if rd.Catalogued != 1 || !slices.Equal(rd.Linked, []string{stack.String()}) {
				t.Errorf("runtime: catalogued %d layers, linked %v; want 1 and the stack", rd.Catalogued, rd.Linked)
			}
			if _, err := Publish(rt, PublishOptions{SBOM: rd.SBOM}); err != nil {
				t.Fatal(err)
			}

			// The app catalogues its own layer only: the runtime's SBOM covers the stack's layers.
			ad, err := Describe(app, DescribeOptions{Bases: []Base{{RoleStack, stack}, {RoleRuntime, rt}}, Tool: "ferry-test"})
			if err != nil {
				t.Fatal(err)
			}
			if ad.Catalogued != 1 || !slices.Equal(ad.Linked, []string{rt.String()}) {
				t.Errorf("app: catalogued %d layers, linked %v; want 1 and the runtime", ad.Catalogued, ad.Linked)
			}
			// On a runtime without an SBOM of its own, the stack's is linked and the runtime's
			// layer catalogued with its role.
			bareL := tarLayer(t, map[string][]byte{"usr/lib/python3/dist-packages/idna-3.7.dist-info/METADATA": []byte("Name: idna\nVersion: 3.7\n")})
			bare := pushImage(t, host+"/runtimes/bare", stackL, bareL)
			onBare := pushImage(t, host+"/team-a/on-bare", stackL, bareL, appL)
			bd, err := Describe(onBare, DescribeOptions{Bases: []Base{{RoleStack, stack}, {RoleRuntime, bare}}, Tool: "ferry-test"})
			if err != nil {
				t.Fatal(err)
			}
			var bareRoles []string
			for _, l := range bd.SBOM.Layers {
				bareRoles = append(bareRoles, l.Role)
			}
			if bd.Catalogued != 2 || !slices.Equal(bd.Linked, []string{stack.String()}) || !slices.Equal(bareRoles, []string{RoleStack, RoleRuntime, RoleApp}) {
				t.Errorf("app on a runtime without an SBOM: catalogued %d layers, linked %v, roles %v; want 2, the stack, stack/runtime/app", bd.Catalogued, bd.Linked, bareRoles)
			}
			roles := []string{}
			for _, l := range ad.SBOM.Layers {
				roles = append(roles, l.Role)
			}
			if !slices.Equal(roles, []string{RoleStack, RoleRuntime, RoleApp}) {
				t.Errorf("layer roles = %v", roles)
			}
			key, _, err := GenerateKey()
			if err != nil {
				t.Fatal(err)
			}
			signer, err := NewSigner(key)
			if err != nil {
				t.Fatal(err)
			}
			prov := testProvenance(stack, rt)
			pub, err := Publish(app, PublishOptions{SBOM: ad.SBOM, Provenance: &prov, Signer: signer})
			if err != nil {
				t.Fatal(err)
			}
			if !pub.Signed || !pub.Attested || pub.Packages != 4 {
				t.Errorf("published = %+v; want signed, attested, 4 packages", pub)
			}
			got, _, err := FetchSBOM(app)
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := find(got.Packages(), TypePyPI, "flask"); !ok || got.Digest != app.DigestStr() {
				t.Errorf("fetched SBOM = %+v", got)
			}
			pubPEM, _ := signer.PublicKeyPEM()
			k, err := ParsePublicKey(pubPEM)
			if err != nil {
				t.Fatal(err)
			}
			keys := []Key{{Name: "secret ferry-system/signing", Key: k}}
			if by, err := VerifySignature(app, keys); err != nil || by != keys[0].Name {
				t.Errorf("VerifySignature = %q, %v", by, err)
			}
			p, by, err := VerifyProvenance(app, keys)
			if err != nil || by != keys[0].Name {
				t.Fatalf("VerifyProvenance = %q, %v", by, err)
			}
			if p.Repository != prov.Repository || p.Revision != prov.Revision || p.Stack != stack.String() || p.Runtime != rt.String() ||
				p.PipelineFileDigest != prov.PipelineFileDigest || p.Build != prov.Build || p.BuildUID != prov.BuildUID || p.FerryVersion != "v9.9.9" {
				t.Errorf("provenance = %+v, want %+v", p, prov)
			}
			// Publishing again adds nothing.
			before := e.proxy.Stats().Manifests
			if _, err := Publish(app, PublishOptions{Provenance: &prov, Signer: signer}); err != nil {
				t.Fatal(err)
			}
			if after := e.proxy.Stats().Manifests; len(after) != len(before) {
				t.Errorf("publishing the same signature again pushed %d manifests", len(after)-len(before))
			}
		})
	}
}

func testProvenance(stack, rt name.Digest) Provenance {
	return Provenance{
		FerryVersion: "v9.9.9", Repository: "https://gitlab.example/team-a/app.git", Revision: strings.Repeat("c", 40),
		PipelineFile: ".ferry.yaml", PipelineFileDigest: "sha256:" + strings.Repeat("f", 64),
		Stack: stack.String(), Runtime: rt.String(), Build: "team-a/app-1", BuildUID: "3f1e…uid", Executor: "local",
		StartedOn: time.Unix(1700000000, 0), FinishedOn: time.Unix(1700000060, 0),
	}
}

func TestVerifyRefusesForgeries(t *testing.T) {
	e := registries(t)["distribution"]
	host := e.proxy.Host
	app := pushImage(t, host+"/team-a/app", tarLayer(t, map[string][]byte{"app/a": []byte("a")}))
	other := pushImage(t, host+"/team-a/app", tarLayer(t, map[string][]byte{"app/b": []byte("b")}))
	key, _, _ := GenerateKey()
	signer, err := NewSigner(key)
	if err != nil {
		t.Fatal(err)
	}
	pubPEM, _ := signer.PublicKeyPEM()
	trusted, _ := ParsePublicKey(pubPEM)
	keys := []Key{{Name: "platform", Key: trusted}}
	unknownKey, _, _ := GenerateKey()
	unknown, _ := NewSigner(unknownKey)

	t.Run("unsigned", func(t *testing.T) {
		if _, err := VerifySignature(app, keys); !errors.Is(err, ErrNotSigned) || !strings.Contains(err.Error(), "signature") {
			t.Errorf("err = %v, want not signed", err)
		}
	})
	t.Run("unknown key", func(t *testing.T) {
		prov := testProvenance(app, app)
		if _, err := Publish(app, PublishOptions{Provenance: &prov, Signer: unknown}); err != nil {
			t.Fatal(err)
		}
		if _, err := VerifySignature(app, keys); err == nil || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("VerifySignature err = %v, want one naming an unknown key", err)
		}
		if _, _, err := VerifyProvenance(app, keys); err == nil || !strings.Contains(err.Error(), "provenance:") || !strings.Contains(err.Error(), "unknown key") {
			t.Errorf("VerifyProvenance err = %v", err)
		}
	})
	t.Run("tampered attestation", func(t *testing.T) {
		prov := testProvenance(app, app)
		st, _ := prov.MarshalStatement(other)
		if err := signer.Attest(other, st, SLSAProvenanceType); err != nil {
			t.Fatal(err)
		}
		// Rewrite the statement's revision and put the envelope back with its old signature.
		tag := TagFor(other, AttestationTagSuffix)
		img, err := remote.Image(tag)
		if err != nil {
			t.Fatal(err)
		}
		m, _ := img.Manifest()
		b, _ := readBlob(img, m.Layers[0].Digest)
		var env struct {
			PayloadType string            `json:"payloadType"`
			Payload     string            `json:"payload"`
			Signatures  []json.RawMessage `json:"signatures"`
		}
		if err := json.Unmarshal(b, &env); err != nil {
			t.Fatal(err)
		}
		raw, _ := base64.StdEncoding.DecodeString(env.Payload)
		raw = bytes.ReplaceAll(raw, []byte(prov.Revision), []byte(strings.Repeat("d", 40)))
		env.Payload = base64.StdEncoding.EncodeToString(raw)
		forged, _ := json.Marshal(env)
		fimg, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
			mutate.Addendum{Layer: static.NewLayer(forged, DSSEMediaType), Annotations: m.Layers[0].Annotations})
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(tag, fimg); err != nil {
			t.Fatal(err)
		}
		if _, _, err := VerifyProvenance(other, keys); err == nil || !strings.Contains(err.Error(), "tampered") {
			t.Errorf("err = %v, want one saying the attestation does not verify", err)
		}
	})
	t.Run("signature of another digest", func(t *testing.T) {
		// A valid signature of app copied to other's .sig tag.
		if err := signer.Sign(app); err != nil {
			t.Fatal(err)
		}
		sig, err := remote.Image(TagFor(app, SignatureTagSuffix))
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(TagFor(other, SignatureTagSuffix), sig); err != nil {
			t.Fatal(err)
		}
		if _, err := VerifySignature(other, keys); err == nil || !strings.Contains(err.Error(), "signs "+app.DigestStr()) {
			t.Errorf("err = %v, want one naming the digest the signature is for", err)
		}
	})
	t.Run("SBOM of another digest", func(t *testing.T) {
		doc, _ := (&SBOM{Name: "x", Digest: app.DigestStr(), Tool: "t"}).MarshalSPDX()
		desc, err := remote.Head(other)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := AttachSBOM(other, *desc, doc); err != nil {
			t.Fatal(err)
		}
		if _, _, err := FetchSBOM(other); err == nil || !strings.Contains(err.Error(), "describes "+app.DigestStr()+", not the image "+other.DigestStr()) {
			t.Errorf("err = %v, want one naming both digests", err)
		}
	})
}

// TestPublishRegistryFailsDuringAttestation: a 503 on the attestation's manifest never leaves the
// image signed, and Publish says what failed.
func TestPublishRegistryFailsDuringAttestation(t *testing.T) {
	e := registries(t)["distribution"]
	app := pushImage(t, e.proxy.Host+"/team-a/app", tarLayer(t, map[string][]byte{"app/a": []byte("a")}))
	key, _, _ := GenerateKey()
	signer, _ := NewSigner(key)
	pubPEM, _ := signer.PublicKeyPEM()
	k, _ := ParsePublicKey(pubPEM)
	e.proxy.Inject(registry.Fault{Status: http.StatusServiceUnavailable, Times: -1, Match: func(r *http.Request) bool {
		return registry.MatchManifestPuts(r) && strings.HasSuffix(r.URL.Path, AttestationTagSuffix)
	}})
	prov := testProvenance(app, app)
	fast := remote.WithRetryBackoff(remote.Backoff{Duration: time.Millisecond, Factor: 1, Steps: 2})
	pub, err := Publish(app, PublishOptions{Provenance: &prov, Signer: signer, Remote: []remote.Option{fast}})
	if err == nil || !strings.Contains(err.Error(), ".att") || !strings.Contains(err.Error(), "UNAVAILABLE") {
		t.Fatalf("err = %v, want one naming the .att push and the 503", err)
	}
	if pub.Signed || pub.Attested {
		t.Errorf("published = %+v after the failure", pub)
	}
	if _, err := VerifySignature(app, []Key{{Name: "platform", Key: k}}); !errors.Is(err, ErrNotSigned) {
		t.Errorf("VerifySignature after the failed publish = %v, want not signed", err)
	}
	// Once the registry recovers, publishing again completes.
	e.proxy.ClearFaults()
	if _, err := Publish(app, PublishOptions{Provenance: &prov, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifySignature(app, []Key{{Name: "platform", Key: k}}); err != nil {
		t.Error(err)
	}
}

func TestNewSignerRefusesBadKeys(t *testing.T) {
	for _, tc := range []struct{ name, pem, want string }{
		{"garbage", "not a key", "not an unencrypted PEM private key"},
		{"public key", "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n", "not an unencrypted PEM private key"},
	} {
		_, err := NewSigner([]byte(tc.pem))
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), tc.pem) {
			t.Errorf("%s: err = %v, want %q without the key", tc.name, err, tc.want)
		}
	}
}
