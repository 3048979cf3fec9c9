// Package chromium drives Debian's headless Chromium for Ferry's browser tests (the UI's tests and
// the end-to-end test): finding it, starting it, reading a page's text, waiting for text to appear
// without reloading, and saving screenshots for people to review.
package chromium

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// Path finds Chromium: $FERRY_CHROMIUM, else chromium, chromium-browser or google-chrome on PATH.
func Path() (string, error) {
	if p := os.Getenv("FERRY_CHROMIUM"); p != "" {
		return p, nil
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p, nil
		}
	}
	return "", errors.New("no Chromium found: install Debian's chromium (apt-get install chromium) or set FERRY_CHROMIUM")
}

// Start starts a headless Chromium with its profile in userDataDir and returns its context; stop
// ends it.
func Start(userDataDir string) (ctx context.Context, stop func(), err error) {
	path, err := Path()
	if err != nil {
		return nil, nil, err
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(path),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		// Without these Chromium keeps reaching for hosts this network refuses.
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(userDataDir),
		chromedp.WindowSize(1200, 900),
	)
	ctx, cancel := chromedp.NewContext(alloc)
	stop = func() { cancel(); cancelAlloc() }
	if err := chromedp.Do(ctx); err != nil {
		stop()
		return nil, nil, fmt.Errorf("failed to start Chromium %s: %w", path, err)
	}
	return ctx, stop, nil
}

// Text is the visible text of the first element matching a CSS selector, "" when none does.
func Text(ctx context.Context, sel string) string {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	s, err := chromedp.Run(ctx, chromedp.Evaluate[string](fmt.Sprintf(`(document.querySelector(%q) || {innerText: ""}).innerText`, sel)))
	if err != nil {
		return ""
	}
	return s
}

// WaitText waits until the element's text contains want. Pages update themselves (server-sent
// events); nothing is reloaded.
func WaitText(t testing.TB, ctx context.Context, sel, want string, timeout time.Duration) {
	t.Helper()
	defer func(start time.Time) { t.Logf("%s: %q after %s", sel, want, time.Since(start)) }(time.Now())
	deadline := time.Now().Add(timeout)
	for {
		got := Text(ctx, sel)
		if strings.Contains(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %q in %s; it reads:\n%s", want, sel, got)
		}
		time.Sleep(100 * time.Millisecond) // polling the page, as Eventually polls the API
	}
}

// Screenshot saves the whole page as dir/name.png.
func Screenshot(t testing.TB, ctx context.Context, dir, name string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, name+".png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
}
