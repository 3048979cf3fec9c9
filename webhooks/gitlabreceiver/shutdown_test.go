package gitlabreceiver_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/controller-runtime/pkg/client"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/testutil"
)

// TestDeliveryInFlightWhenTheManagerStops stops the manager while a delivery's body is still
// to arrive, as a rolling upgrade does: the receiver stops taking connections, but the delivery
// it has begun is answered and its Build recorded, not cut off with a 503.
func TestDeliveryInFlightWhenTheManagerStops(t *testing.T) {
	e := newEnv(t)
	token := e.project("shop", "group/shop", projectOptions{})
	body := pushBody("group/shop", "main", sha(7))
	u, err := url.Parse(e.r.url)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = conn.Close() }()
	// Expect: 100-continue makes the server say when the receiver begins to read the body: from
	// then on the delivery is in flight.
	h := hdr("Push Hook", token)
	h.Set("Expect", "100-continue")
	if _, err := fmt.Fprintf(conn, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n", u.Path, u.Host, len(body)); err != nil {
		t.Fatal(err)
	}
	if err := h.Write(conn); err != nil {
		t.Fatal(err)
	}
	if _, err := fmt.Fprint(conn, "\r\n"); err != nil {
		t.Fatal(err)
	}
	if err := conn.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	in := bufio.NewReader(conn)
	if line, err := in.ReadString('\n'); err != nil || !strings.HasPrefix(line, "HTTP/1.1 100 ") {
		t.Fatalf("the receiver did not begin to read the delivery: %q, %v", line, err)
	}
	if _, err := in.ReadString('\n'); err != nil {
		t.Fatal(err)
	}

	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		e.r.stop()
	}()
	// The manager is stopping once the receiver takes no new connection.
	testutil.EventuallyWithin(t, 30*time.Second, "the receiver to stop listening", func() (bool, error) {
		c, err := net.DialTimeout("tcp", u.Host, time.Second)
		if err != nil {
			return true, nil
		}
		_ = c.Close()
		return false, fmt.Errorf("%s still takes connections", u.Host)
	})
	if _, err := conn.Write(body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(in, nil)
	if err != nil {
		t.Fatalf("no answer to the delivery in flight: %v", err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("the delivery in flight was answered %d, want 201", resp.StatusCode)
	}
	<-stopped
	builds := &ferryv1.BuildList{}
	if err := e.c.List(context.Background(), builds, client.InNamespace(e.ns)); err != nil {
		t.Fatal(err)
	}
	if len(builds.Items) != 1 || builds.Items[0].Spec.Revision != sha(7) {
		t.Fatalf("Builds after the delivery: %d, want one of %s", len(builds.Items), sha(7))
	}
}
