package ui_test

import (
	"html"
	"net/http"
	"strings"
	"testing"
)

// TestBuildLogsNeedTheRightToReadThem: a person whom RBAC lets list Builds but not read the logs
// of pods in their namespace (get pods/log, what `kubectl logs` of a Build's pod needs) sees a
// Build's steps without what they printed, and gets 403 for the log itself; a person who may read
// logs reads them. A Build whose status points at another Build's log shows nothing of it, even to
// someone who may read logs: the UI never follows a log location taken from status.
func TestBuildLogsNeedTheRightToReadThem(t *testing.T) {
	w := newWorld(t, worldOptions{people: []person{
		{name: "rita", groups: []string{"release-managers"}},
		{name: "eve", groups: []string{"developers"}},
	}})
	// Both may list Builds (the release-manager role); only rita may read logs.
	w.bind([]string{"eve"}, "release-managers")
	w.allowLogs("rita")
	w.project("shop", "https://gitlab.example.com", 0)
	const secret = "DATABASE_PASSWORD=hunter2"
	a := w.build("shop-a", "shop", revision("a"), image("a"), "dave", nil)
	aLog := w.writeLog(a, "==> test\n"+secret+"\n1 passed\n")
	// b's status names a's log, as anyone who may write a Build's status can make it.
	b := w.build("shop-b", "shop", revision("b"), image("b"), "dave", nil)
	b.Status.LogURL = "file://" + aLog
	if err := w.c.Status().Update(t.Context(), b); err != nil {
		t.Fatal(err)
	}

	eve := newClient(t, w.URL)
	eve.signIn(w.tokens["eve"])
	code, page := eve.get("/builds/" + w.ns + "/shop-a")
	if code != http.StatusOK || !strings.Contains(page, "shop-a") {
		t.Fatalf("eve, who may list Builds, does not see Build shop-a: %d\n%s", code, page)
	}
	if strings.Contains(page, secret) {
		t.Errorf("eve, who may not read logs, sees what shop-a printed:\n%s", page)
	}
	if want := "You (eve) may not read the logs of Builds in " + w.ns; !strings.Contains(html.UnescapeString(page), want) {
		t.Errorf("the page does not say why eve sees no log (%q):\n%s", want, page)
	}
	code, page = eve.get("/builds/" + w.ns + "/shop-a/log")
	if code != http.StatusForbidden || strings.Contains(page, secret) {
		t.Errorf("eve reading shop-a's log: %d, want 403 without the log:\n%s", code, page)
	}

	rita := newClient(t, w.URL)
	rita.signIn(w.tokens["rita"])
	if code, page := rita.get("/builds/" + w.ns + "/shop-a"); code != http.StatusOK || !strings.Contains(page, secret) {
		t.Errorf("rita, who may read logs, does not see shop-a's log: %d\n%s", code, page)
	}
	if code, page := rita.get("/builds/" + w.ns + "/shop-a/log"); code != http.StatusOK || !strings.Contains(page, secret) {
		t.Errorf("rita reading shop-a's log: %d\n%s", code, page)
	}
	for _, path := range []string{"/builds/" + w.ns + "/shop-b", "/builds/" + w.ns + "/shop-b/log"} {
		if _, page := rita.get(path); strings.Contains(page, secret) {
			t.Errorf("%s shows shop-a's log, which shop-b's status points at:\n%s", path, page)
		}
	}
}
