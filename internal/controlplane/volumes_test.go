package controlplane

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

// A released volume whose path is not one of the provisioner's own directories — a volume someone
// made by hand with the provisioner's annotation, pointing at /etc or at the parent — is never
// removed; one of its own goes with its directory.
func TestVolumeDeleteOnlyItsOwnDirectories(t *testing.T) {
	dir := t.TempDir()
	own := filepath.Join(dir, "pvc-1")
	if err := os.MkdirAll(filepath.Join(own, "GOCACHE"), 0o700); err != nil {
		t.Fatal(err)
	}
	pv := func(name, path string) *corev1.PersistentVolume {
		return &corev1.PersistentVolume{
			ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedByAnnotation: VolumeProvisioner}},
			Spec:       corev1.PersistentVolumeSpec{PersistentVolumeSource: corev1.PersistentVolumeSource{HostPath: &corev1.HostPathVolumeSource{Path: path}}},
		}
	}
	foreign := []*corev1.PersistentVolume{pv("etc", "/etc"), pv("parent", dir), pv("nested", filepath.Join(own, "GOCACHE")), pv("sideways", filepath.Join(dir, "..", filepath.Base(dir)+"x", "pvc-2"))}
	c := fake.NewClientset(pv("pvc-1", own), foreign[0], foreign[1], foreign[2], foreign[3])
	v := &volumes{client: c, dir: dir}
	for _, p := range foreign {
		if err := v.delete(context.Background(), p); err == nil || !strings.Contains(err.Error(), "is not one of the provisioner's directories") {
			t.Errorf("volume %s at %s: %v", p.Name, p.Spec.HostPath.Path, err)
		}
	}
	if _, err := os.Stat(filepath.Join(own, "GOCACHE")); err != nil {
		t.Fatalf("a refused deletion removed something: %v", err)
	}
	if err := v.delete(context.Background(), pv("pvc-1", own)); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(own); !os.IsNotExist(err) {
		t.Errorf("the volume's directory is still there: %v", err)
	}
	if _, err := c.CoreV1().PersistentVolumes().Get(context.Background(), "pvc-1", metav1.GetOptions{}); err == nil {
		t.Error("the volume is still there")
	}
}
