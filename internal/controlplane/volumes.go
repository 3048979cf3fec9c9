package controlplane

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

// What a cluster with a real node provides for PersistentVolumeClaims, as kind's local-path
// provisioner does: a default StorageClass whose volumes are directories on this machine, under
// the cluster's directory (so they live as long as the cluster's data does).
const (
	// StorageClassName is the real node's default StorageClass.
	StorageClassName = "ferry-host-path"
	// VolumeProvisioner is its provisioner's name, in the class and on every volume it made.
	VolumeProvisioner = "ferry.dev/host-path"
	// provisionedByAnnotation names the provisioner of a PersistentVolume (Kubernetes' own key).
	provisionedByAnnotation = "pv.kubernetes.io/provisioned-by"
	// volumeResync is how often the provisioner looks again at what it could not do.
	volumeResync = 10 * time.Second
)

// volumes provisions and deletes the host-path volumes of one cluster.
type volumes struct {
	client kubernetes.Interface
	dir    string
	pvcs   corelisters.PersistentVolumeClaimLister
	pvs    corelisters.PersistentVolumeLister
	cancel context.CancelFunc
	done   chan struct{}
}

// startVolumes makes StorageClassName the cluster's default class and provisions its claims
// until stop: a claim of the class gets a PersistentVolume bound to it, a directory of its own
// under dir; a released volume is deleted with its directory.
func startVolumes(ctx context.Context, c kubernetes.Interface, dir string) (*volumes, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	class := &storagev1.StorageClass{
		ObjectMeta: metav1.ObjectMeta{
			Name:        StorageClassName,
			Annotations: map[string]string{"storageclass.kubernetes.io/is-default-class": "true"},
		},
		Provisioner:       VolumeProvisioner,
		ReclaimPolicy:     ptr.To(corev1.PersistentVolumeReclaimDelete),
		VolumeBindingMode: ptr.To(storagev1.VolumeBindingImmediate),
	}
	if _, err := c.StorageV1().StorageClasses().Create(ctx, class, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return nil, fmt.Errorf("failed to create StorageClass %s: %w", StorageClassName, err)
	}
	factory := informers.NewSharedInformerFactory(c, 0)
	pvcInformer := factory.Core().V1().PersistentVolumeClaims()
	pvInformer := factory.Core().V1().PersistentVolumes()
	kick := make(chan struct{}, 1)
	poke := func(any) {
		select {
		case kick <- struct{}{}:
		default:
		}
	}
	handler := cache.ResourceEventHandlerFuncs{AddFunc: poke, UpdateFunc: func(_, o any) { poke(o) }, DeleteFunc: poke}
	for _, inf := range []cache.SharedIndexInformer{pvcInformer.Informer(), pvInformer.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			return nil, err
		}
	}
	vctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	v := &volumes{client: c, dir: dir, pvcs: pvcInformer.Lister(), pvs: pvInformer.Lister(), cancel: cancel, done: make(chan struct{})}
	factory.Start(vctx.Done())
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			factory.Shutdown()
			return nil, fmt.Errorf("the volume provisioner's cache of %v did not sync", typ)
		}
	}
	go func() {
		defer close(v.done)
		defer factory.Shutdown()
		tick := time.NewTicker(volumeResync)
		defer tick.Stop()
		for {
			v.sync(vctx)
			select {
			case <-vctx.Done():
				return
			case <-kick:
			case <-tick.C:
			}
		}
	}()
	return v, nil
}

// stop ends the provisioner; the volumes stay.
func (v *volumes) stop() {
	if v == nil {
		return
	}
	v.cancel()
	<-v.done
}

// sync provisions every claim of the class that has no volume and deletes every released
// volume of the provisioner's. What fails is tried again at the next event or resync.
func (v *volumes) sync(ctx context.Context) {
	claims, _ := v.pvcs.List(labels.Everything())
	for _, pvc := range claims {
		if pvc.Spec.VolumeName == "" && pvc.DeletionTimestamp == nil && ptr.Deref(pvc.Spec.StorageClassName, "") == StorageClassName {
			_ = v.provision(ctx, pvc)
		}
	}
	pvs, _ := v.pvs.List(labels.Everything())
	for _, pv := range pvs {
		if pv.Annotations[provisionedByAnnotation] == VolumeProvisioner && pv.DeletionTimestamp == nil &&
			(pv.Status.Phase == corev1.VolumeReleased || pv.Status.Phase == corev1.VolumeFailed) &&
			pv.Spec.PersistentVolumeReclaimPolicy == corev1.PersistentVolumeReclaimDelete {
			_ = v.delete(ctx, pv)
		}
	}
}

// volumeName is the PersistentVolume, and the directory, of a claim.
func volumeName(pvc *corev1.PersistentVolumeClaim) string { return "pvc-" + string(pvc.UID) }

// provision makes a claim's directory and its PersistentVolume, bound to the claim.
func (v *volumes) provision(ctx context.Context, pvc *corev1.PersistentVolumeClaim) error {
	name := volumeName(pvc)
	if _, err := v.pvs.Get(name); err == nil {
		return nil
	}
	dir := filepath.Join(v.dir, name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	// The pod's steps may run as any user: the directory is theirs alone (its parent is not).
	if err := os.Chmod(dir, 0o777); err != nil { //nolint:gosec // G302: see above; only the claim's pods mount it
		return err
	}
	size := pvc.Spec.Resources.Requests[corev1.ResourceStorage]
	if size.IsZero() {
		size = resource.MustParse("1Gi")
	}
	pv := &corev1.PersistentVolume{
		ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{provisionedByAnnotation: VolumeProvisioner}},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:                      corev1.ResourceList{corev1.ResourceStorage: size},
			AccessModes:                   pvc.Spec.AccessModes,
			PersistentVolumeReclaimPolicy: corev1.PersistentVolumeReclaimDelete,
			StorageClassName:              StorageClassName,
			VolumeMode:                    ptr.To(corev1.PersistentVolumeFilesystem),
			PersistentVolumeSource: corev1.PersistentVolumeSource{
				HostPath: &corev1.HostPathVolumeSource{Path: dir, Type: ptr.To(corev1.HostPathDirectory)},
			},
			ClaimRef: &corev1.ObjectReference{
				Kind: "PersistentVolumeClaim", APIVersion: "v1", Namespace: pvc.Namespace, Name: pvc.Name, UID: pvc.UID,
			},
		},
	}
	_, err := v.client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		return nil
	}
	return err
}

// delete removes a released volume's directory, then the volume.
func (v *volumes) delete(ctx context.Context, pv *corev1.PersistentVolume) error {
	if hp := pv.Spec.HostPath; hp != nil {
		dir := filepath.Clean(hp.Path)
		if filepath.Dir(dir) != filepath.Clean(v.dir) || !strings.HasPrefix(filepath.Base(dir), "pvc-") {
			return fmt.Errorf("volume %s: %s is not one of the provisioner's directories", pv.Name, dir)
		}
		if err := os.RemoveAll(dir); err != nil {
			return err
		}
	}
	if err := v.client.CoreV1().PersistentVolumes().Delete(ctx, pv.Name, metav1.DeleteOptions{}); !apierrors.IsNotFound(err) {
		return err
	}
	return nil
}
