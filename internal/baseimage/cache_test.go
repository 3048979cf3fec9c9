package baseimage

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// A Build killed half-way leaves trees in work/; the next one removes them, but never deletes
// through something mounted there (a bind mount of /dev would take the machine's devices with it).
func TestCleanWorkRefusesMounts(t *testing.T) {
	needRoot(t)
	c, err := openCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(c.dir, "work", "stack-123", "rootfs", "etc")
	if err := os.MkdirAll(leftover, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := c.cleanWork(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.dir, "work", "stack-123")); !os.IsNotExist(err) {
		t.Fatalf("the leftover tree is still there: %v", err)
	}

	mounted := filepath.Join(c.dir, "work", "layer-456", "rootfs", "dev")
	if err := os.MkdirAll(mounted, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount("tmpfs", mounted, "tmpfs", 0, "size=1m"); err != nil {
		t.Skipf("cannot mount a tmpfs here: %v", err)
	}
	t.Cleanup(func() { _ = syscall.Unmount(mounted, syscall.MNT_DETACH) })
	precious := filepath.Join(mounted, "null")
	if err := os.WriteFile(precious, []byte("a device, say"), 0o644); err != nil {
		t.Fatal(err)
	}
	err = c.cleanWork()
	if err == nil || !strings.Contains(err.Error(), "refusing to delete") || !strings.Contains(err.Error(), mounted) {
		t.Fatalf("cleanWork() = %v, want a refusal naming %s", err, mounted)
	}
	if _, err := os.Stat(precious); err != nil {
		t.Fatalf("a file under the mount was deleted: %v", err)
	}
}

// Two builds with one cache directory take turns; one that gives up waiting says so.
func TestCacheLock(t *testing.T) {
	c, err := openCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	unlock, err := c.lock(context.Background(), func() { t.Error("the first lock waited") })
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	waited := false
	_, err = c.lock(ctx, func() { waited = true; cancel() })
	if !waited || !errors.Is(err, context.Canceled) {
		t.Fatalf("second lock: waited=%v err=%v, want a wait ended by the context", waited, err)
	}
	unlock()
	unlock2, err := c.lock(context.Background(), func() { t.Error("waited for a released lock") })
	if err != nil {
		t.Fatal(err)
	}
	unlock2()
}

func TestUnescapeMountPath(t *testing.T) {
	for in, want := range map[string]string{
		`/var/lib/a\040b`: "/var/lib/a b",
		`/plain`:          "/plain",
		`/tab\011x`:       "/tab\tx",
		`/not\08`:         `/not\08`,
		`/end\04`:         `/end\04`,
	} {
		if got := unescapeMountPath(in); got != want {
			t.Errorf("unescapeMountPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// A damaged or incomplete cache entry is rebuilt, not trusted.
func TestCacheStepNeedsItsBlob(t *testing.T) {
	c, err := openCache(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	rec, err := c.writeBlob(func(w io.Writer) error {
		_, err := io.WriteString(w, strings.Repeat("layer ", 1000))
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.putStep("k", rec); err != nil {
		t.Fatal(err)
	}
	got, err := c.step("k")
	if err != nil || got == nil || got.Digest != rec.Digest {
		t.Fatalf("step(k) = %+v, %v; want the record", got, err)
	}
	if err := os.Truncate(c.blobPath(rec.Digest), rec.Size-1); err != nil {
		t.Fatal(err)
	}
	if got, err := c.step("k"); got != nil || err != nil {
		t.Fatalf("step(k) with a truncated blob = %+v, %v; want a miss", got, err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, "steps", "k.json"), []byte("{"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got, err := c.step("k"); got != nil || err != nil {
		t.Fatalf("step(k) with a damaged record = %+v, %v; want a miss", got, err)
	}
}
