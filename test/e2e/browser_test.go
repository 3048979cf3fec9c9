package e2e

import (
	"context"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/ferryci/ferry/internal/testutil/chromium"
)

// browser is a person's headless Chromium, closed when the test ends.
type browser struct {
	t    testing.TB
	ctx  context.Context
	base string
}

func newBrowser(t testing.TB, base string) *browser {
	t.Helper()
	ctx, stop, err := chromium.Start(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(stop)
	return &browser{t: t, ctx: ctx, base: base}
}

// do runs actions with a time limit.
func (b *browser) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, time.Minute)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (page: %s)", err, chromium.Text(b.ctx, "body"))
	}
}

// waitText waits until the element's text contains want.
func (b *browser) waitText(sel, want string, timeout time.Duration) {
	b.t.Helper()
	chromium.WaitText(b.t, b.ctx, sel, want, timeout)
}

// signIn follows the sign-in link that `ferry dev` printed.
func (b *browser) signIn(link string) {
	b.t.Helper()
	b.do(chromedp.Navigate(link), chromedp.WaitVisible(chromedp.ID("token-submit")))
	b.do(chromedp.Click(chromedp.ID("token-submit")), chromedp.WaitVisible(chromedp.ID("signed-in-user")))
}

// screenshot saves the page as artifacts/e2e/<name>.png for people to review.
func (b *browser) screenshot(root, name string) {
	b.t.Helper()
	chromium.Screenshot(b.t, b.ctx, filepath.Join(root, "artifacts", "e2e"), name)
}
