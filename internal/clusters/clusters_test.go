package clusters

import (
	"strings"
	"testing"
)

func TestRedact(t *testing.T) {
	kubeconfig := []byte(`apiVersion: v1
users:
- name: u
  user: {token: "abcd1234efgh", client-key-data: LS0tLS1CRUdJTiBSU0E=}
- name: v
  user:
    password: hunter2hunter2
clusters: [oops`)
	msg := "yaml: line 4: did not find expected key near token: abcd1234efgh, LS0tLS1CRUdJTiBSU0E= and hunter2hunter2 in context elsewhere"
	got := redact(msg, kubeconfig)
	for _, secret := range []string{"abcd1234efgh", "LS0tLS1CRUdJTiBSU0E=", "hunter2hunter2"} {
		if strings.Contains(got, secret) {
			t.Errorf("redact left %q in %q", secret, got)
		}
	}
	if !strings.Contains(got, "line 4") || !strings.Contains(got, "elsewhere") {
		t.Errorf("redact removed more than credentials: %q", got)
	}
}

func TestRedactUserinfo(t *testing.T) {
	if got := redactUserinfo(`dial "https://admin:pw@10.0.0.1:6443/version"`); strings.Contains(got, "pw") {
		t.Errorf("got %q", got)
	}
	if got := redactURL("https://admin:pw@10.0.0.1:6443"); got != "https://10.0.0.1:6443" {
		t.Errorf("got %q", got)
	}
}
