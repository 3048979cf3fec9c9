package supplychain

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cosignVersion is the cosign CLI that `make cosign` builds into bin/ from hack/cosign/go.mod.
const cosignVersion = "v2.6.5"

// TestCosignVerifiesFerrysFormats runs the real cosign CLI, offline, against what Publish pushes
// to a real registry: `cosign verify --key` accepts the signature and `cosign verify-attestation
// --key --type slsaprovenance1` the provenance; both refuse another key.
func TestCosignVerifiesFerrysFormats(t *testing.T) {
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "bin", "cosign-"+cosignVersion)
	if _, err := os.Stat(bin); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%s is not built; CI runs `make test`, which builds it first (make cosign)", bin)
		}
		t.Skipf("%s is not built: make cosign", bin)
	}
	e := registries(t)["distribution"]
	app := pushImage(t, e.proxy.Host+"/team-a/app", tarLayer(t, map[string][]byte{"app/requirements.txt": []byte("flask==3.0.3\n")}))
	key, pub, err := GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	signer, _ := NewSigner(key)
	prov := testProvenance(app, app)
	prov.Stack, prov.Runtime = "", ""
	if _, err := Publish(app, PublishOptions{Provenance: &prov, Signer: signer}); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	pubFile := filepath.Join(dir, "cosign.pub")
	if err := os.WriteFile(pubFile, pub, 0o600); err != nil {
		t.Fatal(err)
	}
	_, otherPub, _ := GenerateKey()
	otherFile := filepath.Join(dir, "other.pub")
	if err := os.WriteFile(otherFile, otherPub, 0o600); err != nil {
		t.Fatal(err)
	}
	cosign := func(args ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, bin, args...)
		// Offline: no TUF root, no Rekor; the registry is anonymous.
		cmd.Env = append(os.Environ(), "HOME="+dir, "TUF_ROOT="+filepath.Join(dir, "tuf"), "DOCKER_CONFIG="+dir)
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		err := cmd.Run()
		return out.String(), err
	}
	common := []string{"--insecure-ignore-tlog=true", "--allow-http-registry=true", app.String()}
	if out, err := cosign(append([]string{"verify", "--key", pubFile}, common...)...); err != nil || !strings.Contains(out, app.DigestStr()) || !strings.Contains(out, "verified against the specified public key") {
		t.Errorf("cosign verify: %v\n%s", err, out)
	}
	if out, err := cosign(append([]string{"verify-attestation", "--key", pubFile, "--type", "slsaprovenance1"}, common...)...); err != nil || !strings.Contains(out, "verified against the specified public key") || !strings.Contains(out, `"payloadType":"application/vnd.in-toto+json"`) {
		t.Errorf("cosign verify-attestation: %v\n%s", err, out)
	}
	if out, err := cosign(append([]string{"verify", "--key", otherFile}, common...)...); err == nil {
		t.Errorf("cosign verify with another key passed:\n%s", out)
	}
	if out, err := cosign(append([]string{"verify-attestation", "--key", otherFile, "--type", "slsaprovenance1"}, common...)...); err == nil {
		t.Errorf("cosign verify-attestation with another key passed:\n%s", out)
	}
}
