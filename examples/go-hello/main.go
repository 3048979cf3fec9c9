// Command go-hello is Ferry's example Go service: it answers on $PORT with a greeting that names
// the commit it was built from ($FERRY_REVISION, which Ferry sets in every image it builds), and
// reports its health on /healthz.
package main

import (
	"fmt"
	"log"
	"net/http"
	"os"
)

func main() {
	port := os.Getenv("PORT")
	if port == "" {
		port = "8080"
	}
	http.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, greeting(os.Getenv("GREETING"), os.Getenv("FERRY_REVISION")))
	})
	http.HandleFunc("/healthz", func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprintln(w, "ok") // health: ok
	})
	log.Printf("listening on :%s", port)
	log.Fatal(http.ListenAndServe(":"+port, nil))
}

// greeting greets name (default "world") and names the commit when it is known.
func greeting(name, revision string) string {
	if name == "" {
		name = "world"
	}
	g := "Hello, " + name + "!"
	if len(revision) >= 8 {
		g += " (commit " + revision[:8] + ")"
	}
	return g
}
