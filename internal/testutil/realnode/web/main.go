// Command web is the test application of real-node tests (built by internal/testutil/realnode): it answers HTTP
// on / (any other unknown path is 404, a failing health check), reports its health, and
// says whether it can open a TCP connection to an address (to check what pods may reach). Run as
// "web exit N" it prints a line and exits with status N at once (a verification Job).
package main

import (
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"time"
)

func main() {
	if len(os.Args) == 3 && os.Args[1] == "exit" {
		code, err := strconv.Atoi(os.Args[2])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		fmt.Printf("check exits with %d\n", code)
		os.Exit(code)
	}
	host, _ := os.Hostname()
	http.HandleFunc("/{$}", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintf(w, "hello from %s\n", host)
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	http.HandleFunc("/dial", func(w http.ResponseWriter, r *http.Request) {
		// Dialing what the test names is this test server's purpose.
		c, err := net.DialTimeout("tcp", r.URL.Query().Get("addr"), 3*time.Second) //nolint:gosec // G704: see above
		if err != nil {
			fmt.Fprintf(w, "failed: %v\n", err)
			return
		}
		_ = c.Close()
		fmt.Fprintln(w, "connected")
	})
	addr := ":8080"
	if p := os.Getenv("PORT"); p != "" {
		addr = ":" + p
	}
	srv := &http.Server{Addr: addr, ReadHeaderTimeout: 5 * time.Second}
	if err := srv.ListenAndServe(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
