package gitsource

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferryci/ferry/internal/gitserver"
)

const password = "gl-deploy-t0ken-that-must-not-leak"

type fixture struct {
	srv            *gitserver.Server
	first, second  string // commits on main; second is the head
	privateHead    string
	publicURL      string
	privateURL     string
	wrongPassword  *Credentials
	rightPassword  *Credentials
	pipelineFile   string
	pipelineFileV2 string
}

func setup(t *testing.T) *fixture {
	t.Helper()
	srv, err := gitserver.Start(gitserver.Options{Users: map[string]string{"deploy": password}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	f := &fixture{srv: srv, pipelineFile: "stack: debian-12\n", pipelineFileV2: "stack: debian-13\n"}
	if err := srv.CreateRepo("team/app", gitserver.RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	if f.first, err = srv.Commit("team/app", gitserver.Commit{Files: map[string]string{".ferry.yaml": f.pipelineFile, "app/main.py": "print('one')\n"}}); err != nil {
		t.Fatal(err)
	}
	if f.second, err = srv.Commit("team/app", gitserver.Commit{Files: map[string]string{".ferry.yaml": f.pipelineFileV2, "app/main.py": "print('two')\n"}}); err != nil {
		t.Fatal(err)
	}
	if err := srv.CreateRepo("team/private", gitserver.RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	if f.privateHead, err = srv.Commit("team/private", gitserver.Commit{Files: map[string]string{"ci/ferry.yaml": f.pipelineFile}}); err != nil {
		t.Fatal(err)
	}
	f.publicURL, f.privateURL = srv.RepoURL("team/app"), srv.RepoURL("team/private")
	f.rightPassword = &Credentials{Username: "deploy", Password: password}
	f.wrongPassword = &Credentials{Username: "deploy", Password: password + "-wrong"}
	return f
}

// TestMissingFileIsTellable checks that a missing file is told apart from a missing commit or
// repository by its type, not by its message: the Build controller reports the first as an
// invalid pipeline file and retries the others.
func TestMissingFileIsTellable(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	_, err := ReadFile(ctx, Request{URL: f.publicURL, Revision: f.first}, "ci/nope.yaml")
	var missing *FileNotFoundError
	if !errors.As(err, &missing) || missing.File != "ci/nope.yaml" || missing.Revision != f.first || !errors.Is(err, ErrNotFound) {
		t.Errorf("missing file: %#v, want a *FileNotFoundError for ci/nope.yaml at %s that is ErrNotFound", err, f.first)
	}
	for name, req := range map[string]Request{
		"unknown commit":     {URL: f.publicURL, Revision: strings.Repeat("ab", 20)},
		"unknown repository": {URL: f.srv.RepoURL("team/none"), Revision: f.first},
	} {
		if _, err := ReadFile(ctx, req, ".ferry.yaml"); !errors.Is(err, ErrNotFound) || errors.As(err, &missing) {
			t.Errorf("%s: %v, want ErrNotFound and no *FileNotFoundError", name, err)
		}
	}
}

func TestReadFile(t *testing.T) {
	f := setup(t)
	ctx := context.Background()
	cases := []struct {
		name    string
		req     Request
		path    string
		want    string
		wantErr error
		wantMsg string
	}{
		{name: "head", req: Request{URL: f.publicURL, Revision: f.second}, path: ".ferry.yaml", want: f.pipelineFileV2},
		{name: "not a branch head", req: Request{URL: f.publicURL, Revision: f.first}, path: ".ferry.yaml", want: f.pipelineFile},
		{name: "missing file", req: Request{URL: f.publicURL, Revision: f.first}, path: "nope.yaml", wantErr: ErrNotFound, wantMsg: "nope.yaml at " + f.first[:12]},
		{name: "unknown commit", req: Request{URL: f.publicURL, Revision: strings.Repeat("ab", 20)}, path: ".ferry.yaml", wantErr: ErrNotFound},
		{name: "unknown repository", req: Request{URL: f.srv.RepoURL("team/none"), Revision: f.first}, path: ".ferry.yaml", wantErr: ErrNotFound},
		{name: "private without credentials", req: Request{URL: f.privateURL, Revision: f.privateHead}, path: "ci/ferry.yaml", wantErr: ErrAuth, wantMsg: "needs credentials"},
		{name: "private with wrong credentials", req: Request{URL: f.privateURL, Revision: f.privateHead, Credentials: f.wrongPassword}, path: "ci/ferry.yaml", wantErr: ErrAuth, wantMsg: "refused the credentials"},
		{name: "private", req: Request{URL: f.privateURL, Revision: f.privateHead, Credentials: f.rightPassword}, path: "ci/ferry.yaml", want: f.pipelineFile},
		{name: "path escaping", req: Request{URL: f.publicURL, Revision: f.first}, path: "../x", wantMsg: "must be relative"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ReadFile(ctx, tc.req, tc.path)
			if tc.wantErr != nil || tc.wantMsg != "" {
				if err == nil {
					t.Fatalf("no error; read %q", got)
				}
				if tc.wantErr != nil && !errors.Is(err, tc.wantErr) {
					t.Errorf("error %v is not %v", err, tc.wantErr)
				}
				if !strings.Contains(err.Error(), tc.wantMsg) {
					t.Errorf("error %q does not say %q", err, tc.wantMsg)
				}
				if strings.Contains(fmt.Sprintf("%v %+v", err, err), password) {
					t.Errorf("error leaks the password: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Errorf("read %q, want %q", got, tc.want)
			}
		})
	}
}

func TestCheckout(t *testing.T) {
	f := setup(t)
	dir := filepath.Join(t.TempDir(), "src")
	if err := Checkout(context.Background(), Request{URL: f.publicURL, Revision: f.first}, dir); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "app/main.py")); err != nil || string(b) != "print('one')\n" {
		t.Errorf("app/main.py = %q, %v", b, err)
	}
	head, err := os.ReadFile(filepath.Join(dir, ".git/HEAD"))
	if err != nil || strings.TrimSpace(string(head)) != f.first {
		t.Errorf(".git/HEAD = %q, %v; want the detached commit %s", head, err, f.first)
	}
	// Shallow: the parent commit is not there.
	shallow, err := os.ReadFile(filepath.Join(dir, ".git/shallow"))
	if err != nil || strings.TrimSpace(string(shallow)) != f.first {
		t.Errorf(".git/shallow = %q, %v", shallow, err)
	}
	if err := Checkout(context.Background(), Request{URL: f.publicURL, Revision: f.second}, dir); err == nil || !strings.Contains(err.Error(), "not empty") {
		t.Errorf("checkout into a non-empty directory: %v", err)
	}
	private := filepath.Join(t.TempDir(), "private")
	if err := Checkout(context.Background(), Request{URL: f.privateURL, Revision: f.privateHead, Credentials: f.rightPassword}, private); err != nil {
		t.Fatal(err)
	}
	cfg, err := os.ReadFile(filepath.Join(private, ".git/config"))
	if err != nil || strings.Contains(string(cfg), password) {
		t.Errorf("the checkout's .git/config holds the password (or cannot be read: %v)", err)
	}
}

// TestServerWithoutFetchBySHA: when a server does not allow fetching a commit by SHA, the Build's
// ref is fetched instead and the commit found in its recent history.
func TestServerWithoutFetchBySHA(t *testing.T) {
	f := setup(t)
	cmd := exec.Command("git", "--git-dir="+filepath.Join(f.srv.Dir(), "team/app.git"), "config", "uploadpack.allowReachableSHA1InWant", "false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got, err := ReadFile(context.Background(), Request{URL: f.publicURL, Revision: f.first, Ref: "refs/heads/main"}, ".ferry.yaml")
	if err != nil || string(got) != f.pipelineFile {
		t.Fatalf("read %q, %v", got, err)
	}
	if _, err := ReadFile(context.Background(), Request{URL: f.publicURL, Revision: f.first}, ".ferry.yaml"); err == nil {
		t.Error("fetching by SHA from a server that refuses it succeeded without a ref")
	}
	other := strings.Repeat("cd", 20)
	_, err = ReadFile(context.Background(), Request{URL: f.publicURL, Revision: other, Ref: "refs/heads/main"}, ".ferry.yaml")
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "not within 50 commits of refs/heads/main") {
		t.Errorf("unknown commit via the ref: %v", err)
	}
}

// TestRefusedBeforeFetching: nothing that could read local files, run commands or pass options
// is fetched.
func TestRefusedBeforeFetching(t *testing.T) {
	good := strings.Repeat("a", 40)
	cases := []struct {
		req  Request
		want string
	}{
		{Request{URL: "file:///etc", Revision: good}, `scheme "file" is refused`},
		{Request{URL: "ext::sh -c touch% /tmp/pwned", Revision: good}, "whitespace"},
		{Request{URL: "ext::sh", Revision: good}, `transport "ext::" is refused`},
		{Request{URL: "/srv/git/app.git", Revision: good}, "local paths are refused"},
		{Request{URL: "./app", Revision: good}, "local paths are refused"},
		{Request{URL: "git://example.com/app.git", Revision: good}, `scheme "git" is refused`},
		{Request{URL: "https://user:" + password + "@example.com/app.git", Revision: good}, "must not embed credentials"},
		{Request{URL: "ssh://-oProxyCommand=touch/x", Revision: good}, "no valid host"},
		{Request{URL: "-upload-pack=touch@example.com:app", Revision: good}, "starts with '-'"},
		{Request{URL: "git@example.com:-app", Revision: good}, "starts with '-'"},
		{Request{URL: "https://example.com/app.git", Revision: "-" + good[1:]}, "not a full 40-hex commit SHA"},
		{Request{URL: "https://example.com/app.git", Revision: "main"}, "not a full 40-hex commit SHA"},
		{Request{URL: "https://example.com/app.git", Revision: good, Ref: "refs/heads/-x"}, "starting with '-'"},
		{Request{URL: "https://example.com/app.git", Revision: good, Ref: "--upload-pack=x"}, "must start with refs/"},
		{Request{URL: "https://example.com/app.git", Revision: good, Ref: "refs/heads/a..b"}, "not a valid git ref"},
	}
	for _, tc := range cases {
		_, err := ReadFile(context.Background(), tc.req, ".ferry.yaml")
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: err = %v, want %q", tc.req, err, tc.want)
		}
		if err != nil && strings.Contains(err.Error(), password) {
			t.Errorf("error leaks the password: %v", err)
		}
	}
	for _, ok := range []string{"https://gitlab.example.com/group/app.git", "http://127.0.0.1:8080/app.git", "ssh://git@gitlab.example.com:2222/group/app.git", "git@gitlab.example.com:group/app.git"} {
		if err := ValidateURL(ok); err != nil {
			t.Errorf("ValidateURL(%s) = %v", ok, err)
		}
	}
}

// TestRedirectNotFollowed: a redirect would fetch from somewhere other than the Project's URL.
func TestRedirectNotFollowed(t *testing.T) {
	f := setup(t)
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, f.srv.URL()+"/team/app.git"+strings.TrimPrefix(r.URL.RequestURI(), "/moved.git"), http.StatusMovedPermanently)
	}))
	t.Cleanup(redirector.Close)
	_, err := ReadFile(context.Background(), Request{URL: redirector.URL + "/moved.git", Revision: f.first}, ".ferry.yaml")
	if err == nil {
		t.Fatal("the redirect was followed")
	}
}

func TestCredentialsFromSecret(t *testing.T) {
	cases := []struct {
		name    string
		secret  corev1.Secret
		want    string
		wantErr string
	}{
		{name: "basic-auth", secret: corev1.Secret{Type: corev1.SecretTypeBasicAuth, Data: map[string][]byte{"username": []byte("u"), "password": []byte(password)}}, want: "basic auth for u"},
		{name: "token only", secret: corev1.Secret{Data: map[string][]byte{"password": []byte(password)}}, want: "basic auth for oauth2"},
		{name: "ssh", secret: corev1.Secret{Type: corev1.SecretTypeSSHAuth, Data: map[string][]byte{"ssh-privatekey": []byte("k"), "known_hosts": []byte("h")}}, want: "ssh key"},
		{name: "ssh without known_hosts", secret: corev1.Secret{Type: corev1.SecretTypeSSHAuth, Data: map[string][]byte{"ssh-privatekey": []byte("k")}}, wantErr: "no known_hosts"},
		{name: "nothing", secret: corev1.Secret{Data: map[string][]byte{"token": []byte(password)}}, wantErr: "has neither password nor ssh-privatekey"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tc.secret.ObjectMeta = metav1.ObjectMeta{Namespace: "ns", Name: "git"}
			c, err := CredentialsFromSecret(&tc.secret)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) || !strings.Contains(err.Error(), "Secret ns/git") {
					t.Errorf("err = %v, want %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got := fmt.Sprintf("%v %+v %#v %s", c, c, c, c); strings.Contains(got, password) || !strings.Contains(got, tc.want) {
				t.Errorf("formatted credentials = %q", got)
			}
		})
	}
	// The same keys from a mounted Secret.
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "password"), []byte(password), 0o600); err != nil {
		t.Fatal(err)
	}
	c, err := CredentialsFromDir(dir)
	if err != nil || c.Password != password || c.Username != "oauth2" {
		t.Errorf("CredentialsFromDir = %v, %v", c, err)
	}
}
