package patch

import (
	"context"
	"errors"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

func newClient(t *testing.T, objs ...client.Object) client.Client {
	t.Helper()
	scheme := runtime.NewScheme()
	if err := ferryv1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	return fake.NewClientBuilder().WithScheme(scheme).WithObjects(objs...).WithStatusSubresource(objs...).Build()
}

// TestStatusPatcher: a patch writes the status as changed since the snapshot; with an optimistic
// lock a patch of a stale read is ErrConflict and writes nothing; a deleted object is no error.
func TestStatusPatcher(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name     string
		opts     []Option
		stale    bool
		deleted  bool
		conflict bool
		want     string
	}{
		{name: "unchanged since read", want: "mine"},
		{name: "stale read without a lock", stale: true, want: "mine"},
		{name: "stale read with a lock", opts: []Option{WithOptimisticLock()}, stale: true, conflict: true, want: "theirs"},
		{name: "fresh read with a lock", opts: []Option{WithOptimisticLock()}, want: "mine"},
		{name: "deleted", opts: []Option{WithOptimisticLock()}, deleted: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := &ferryv1.Project{ObjectMeta: metav1.ObjectMeta{Namespace: "team", Name: "shop"}}
			c := newClient(t, p)
			read := &ferryv1.Project{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(p), read); err != nil {
				t.Fatal(err)
			}
			patcher := NewStatusPatcher(read, tc.opts...)
			if tc.stale {
				other := read.DeepCopy()
				other.Status.LastBuild = &ferryv1.BuildReference{Name: "theirs"}
				if err := c.Status().Update(ctx, other); err != nil {
					t.Fatal(err)
				}
			}
			if tc.deleted {
				if err := c.Delete(ctx, read.DeepCopy()); err != nil {
					t.Fatal(err)
				}
			}
			read.Status.LastBuild = &ferryv1.BuildReference{Name: "mine"}
			err := patcher.Patch(ctx, c, read)
			if errors.Is(err, ErrConflict) != tc.conflict || (err != nil && !tc.conflict) {
				t.Fatalf("Patch: %v, want a conflict: %v", err, tc.conflict)
			}
			if tc.deleted {
				return
			}
			got := &ferryv1.Project{}
			if err := c.Get(ctx, client.ObjectKeyFromObject(p), got); err != nil {
				t.Fatal(err)
			}
			if got.Status.LastBuild == nil || got.Status.LastBuild.Name != tc.want {
				t.Errorf("lastBuild = %+v, want %s", got.Status.LastBuild, tc.want)
			}
		})
	}
}
