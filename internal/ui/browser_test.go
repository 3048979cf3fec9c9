package ui_test

import (
	"context"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/ferryci/ferry/internal/controlplane"
	"github.com/ferryci/ferry/internal/testutil/chromium"
)

// One Chromium per test package: each test gets a browser context of its own (its own cookies),
// like a separate person at a separate computer.
var browser struct {
	once   sync.Once
	ctx    context.Context
	cancel func()
	dir    string
	err    error
}

func startBrowser() {
	var err error
	browser.dir, err = os.MkdirTemp("", "ferry-ui-chromium-")
	if err != nil {
		browser.err = err
		return
	}
	browser.ctx, browser.cancel, browser.err = chromium.Start(browser.dir)
}

func closeBrowser() {
	if browser.cancel != nil {
		browser.cancel()
	}
	if browser.dir != "" {
		_ = os.RemoveAll(browser.dir)
	}
}

// tab is one person's browser.
type tab struct {
	t    *testing.T
	ctx  context.Context
	base string
}

// newTab opens a fresh browser context (no cookies) on the shared browser.
func newTab(t *testing.T, base string) *tab {
	t.Helper()
	browser.once.Do(startBrowser)
	if browser.err != nil {
		t.Fatal(browser.err)
	}
	ctx, cancel := chromedp.NewContext(browser.ctx, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	if err := chromedp.Do(ctx); err != nil {
		t.Fatal(err)
	}
	return &tab{t: t, ctx: ctx, base: base}
}

// do runs actions with a time limit.
func (b *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.t.Fatalf("browser: %v (page: %s)", err, b.text("body"))
	}
}

func (b *tab) open(path string) {
	b.t.Helper()
	b.do(chromedp.Navigate(b.base + path))
}

// text is the visible text of the first element matching a CSS selector, "" when none does.
func (b *tab) text(sel string) string { return chromium.Text(b.ctx, sel) }

// eval evaluates a JavaScript expression.
func eval[T any](b *tab, expr string) T {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 30*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr, chromedp.EvalAwaitPromise))
	if err != nil {
		b.t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// waitText waits until the element's text contains want.
func (b *tab) waitText(sel, want string) {
	b.t.Helper()
	chromium.WaitText(b.t, b.ctx, sel, want, 60*time.Second)
}

// checkAccessible fails the test for what a screen reader could not name: form controls without a
// label, images without alt text, tables without a caption, links without text, a page without a
// language or an h1.
func (b *tab) checkAccessible() {
	b.t.Helper()
	problems := eval[[]string](b, `(() => {
		const out = [];
		if (!document.documentElement.lang) out.push('html has no lang');
		if (document.querySelectorAll('h1').length !== 1) out.push('the page has ' + document.querySelectorAll('h1').length + ' h1');
		for (const el of document.querySelectorAll('input:not([type=hidden]), textarea, select, button')) {
			const named = (el.labels && el.labels.length) || el.getAttribute('aria-label') || el.getAttribute('aria-labelledby') || (el.tagName === 'BUTTON' && el.textContent.trim());
			if (!named) out.push('unnamed ' + el.outerHTML.slice(0, 80));
		}
		for (const img of document.querySelectorAll('img')) if (!img.hasAttribute('alt')) out.push('img without alt ' + img.src);
		for (const t of document.querySelectorAll('table')) if (!t.querySelector('caption') && !t.getAttribute('aria-label') && !t.getAttribute('aria-labelledby')) out.push('table without caption');
		for (const a of document.querySelectorAll('a')) if (!a.textContent.trim() && !a.getAttribute('aria-label') && !a.querySelector('img[alt]:not([alt=""])')) out.push('link without text ' + a.href);
		for (const el of document.querySelectorAll('[aria-describedby]')) for (const id of el.getAttribute('aria-describedby').split(/\s+/)) if (id && !document.getElementById(id)) out.push('aria-describedby names no element: ' + id);
		return out;
	})()`)
	for _, p := range problems {
		b.t.Errorf("accessibility of %s: %s", eval[string](b, `location.pathname`), p)
	}
}

// signIn follows the sign-in link `ferry dev` prints: the token travels in the fragment.
func (b *tab) signIn(token string) {
	b.t.Helper()
	b.open("/signin#token=" + token)
	b.do(chromedp.WaitVisible(chromedp.ID("token-submit")))
	if v := eval[string](b, `document.getElementById('token').value`); v != token {
		b.t.Fatalf("the sign-in link did not fill in the token (%q)", v)
	}
	if loc := eval[string](b, `location.href`); strings.Contains(loc, token) {
		b.t.Errorf("the token stayed in the address bar: %s", loc)
	}
	b.do(chromedp.Click(chromedp.ID("token-submit")), chromedp.WaitVisible(chromedp.ID("signed-in-user")))
}

// cookie returns the value of a cookie of the UI's origin, HttpOnly ones included.
func (b *tab) cookie(name string) string {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, 10*time.Second)
	defer cancel()
	cookies, err := chromedp.Run(ctx, func(ctx context.Context, t *chromedp.Target) ([]*network.Cookie, error) {
		r, err := cdp.Call(ctx, t, network.GetCookies, network.GetCookiesParams{URLs: []string{b.base + "/"}})
		if err != nil {
			return nil, err
		}
		return r.Cookies, nil
	})
	if err != nil {
		b.t.Fatal(err)
	}
	for _, c := range cookies {
		if c.Name == name {
			if !c.HTTPOnly {
				b.t.Errorf("cookie %s is readable by scripts", name)
			}
			return c.Value
		}
	}
	return ""
}

// screenshot saves the page as artifacts/ui/<name>.png for people to review.
func (b *tab) screenshot(name string) {
	b.t.Helper()
	root, err := controlplane.RepoRoot()
	if err != nil {
		b.t.Fatal(err)
	}
	chromium.Screenshot(b.t, b.ctx, filepath.Join(root, "artifacts", "ui"), name)
}

// replay sends a request with only the given session cookie, as someone who copied it would.
func replay(t *testing.T, base, cookieName, value string) (status int, location string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, base+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.AddCookie(&http.Cookie{Name: cookieName, Value: value})
	c := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode, resp.Header.Get("Location")
}
