package gitsource

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/binary"
	"encoding/pem"
	"net"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ferryci/ferry/internal/gitserver"
)

// sshGitServer serves git-upload-pack for the repositories of a gitserver over real SSH, accepting
// one client key.
type sshGitServer struct {
	addr    string
	hostKey gossh.PublicKey
}

var execRE = regexp.MustCompile(`^git-upload-pack '/?([a-z0-9/._-]+)'$`)

func startSSHGitServer(t *testing.T, root string, client gossh.PublicKey) *sshGitServer {
	t.Helper()
	_, hostPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := gossh.NewSignerFromKey(hostPriv)
	if err != nil {
		t.Fatal(err)
	}
	cfg := &gossh.ServerConfig{PublicKeyCallback: func(_ gossh.ConnMetadata, key gossh.PublicKey) (*gossh.Permissions, error) {
		if bytes.Equal(key.Marshal(), client.Marshal()) {
			return &gossh.Permissions{}, nil
		}
		return nil, errUnknownKey
	}}
	cfg.AddHostKey(signer)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			go serveSSH(conn, cfg, root)
		}
	}()
	return &sshGitServer{addr: l.Addr().String(), hostKey: signer.PublicKey()}
}

type sshError string

func (e sshError) Error() string { return string(e) }

const errUnknownKey = sshError("unknown key")

func serveSSH(conn net.Conn, cfg *gossh.ServerConfig, root string) {
	_, chans, reqs, err := gossh.NewServerConn(conn, cfg)
	if err != nil {
		return
	}
	go gossh.DiscardRequests(reqs)
	for nc := range chans {
		if nc.ChannelType() != "session" {
			_ = nc.Reject(gossh.UnknownChannelType, "session only")
			continue
		}
		ch, chReqs, err := nc.Accept()
		if err != nil {
			return
		}
		go func() {
			defer ch.Close()
			for req := range chReqs {
				if req.Type != "exec" || len(req.Payload) < 4 {
					_ = req.Reply(req.Type == "env", nil)
					continue
				}
				m := execRE.FindStringSubmatch(string(req.Payload[4:]))
				if m == nil || strings.Contains(m[1], "..") {
					_ = req.Reply(false, nil)
					return
				}
				_ = req.Reply(true, nil)
				cmd := exec.Command("git-upload-pack", filepath.Join(root, m[1]))
				cmd.Stdin, cmd.Stdout, cmd.Stderr = ch, ch, ch.Stderr()
				status := uint32(0)
				if err := cmd.Run(); err != nil {
					status = 1
				}
				payload := make([]byte, 4)
				binary.BigEndian.PutUint32(payload, status)
				_, _ = ch.SendRequest("exit-status", false, payload)
				return
			}
		}()
	}
}

func TestSSH(t *testing.T) {
	if _, err := exec.LookPath("git-upload-pack"); err != nil {
		t.Skip("git-upload-pack is not on PATH")
	}
	srv, err := gitserver.Start(gitserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.CreateRepo("team/app", gitserver.RepoOptions{Private: true}); err != nil {
		t.Fatal(err)
	}
	sha, err := srv.Commit("team/app", gitserver.Commit{Files: map[string]string{".ferry.yaml": "stack: debian-12\n"}})
	if err != nil {
		t.Fatal(err)
	}
	clientPub, clientPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sshPub, err := gossh.NewPublicKey(clientPub)
	if err != nil {
		t.Fatal(err)
	}
	block, err := gossh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(block)
	server := startSSHGitServer(t, srv.Dir(), sshPub)
	knownHosts := []byte(knownhosts.Line([]string{knownhosts.Normalize(server.addr)}, server.hostKey) + "\n")
	url := "ssh://git@" + server.addr + "/team/app.git"

	got, err := ReadFile(context.Background(), Request{URL: url, Revision: sha, Credentials: &Credentials{SSHPrivateKey: keyPEM, KnownHosts: knownHosts}}, ".ferry.yaml")
	if err != nil || string(got) != "stack: debian-12\n" {
		t.Fatalf("read over SSH: %q, %v", got, err)
	}

	// Another server's host key in known_hosts: refused before any git traffic.
	_, otherPriv, _ := ed25519.GenerateKey(rand.Reader)
	otherSigner, _ := gossh.NewSignerFromKey(otherPriv)
	wrongHosts := []byte(knownhosts.Line([]string{knownhosts.Normalize(server.addr)}, otherSigner.PublicKey()) + "\n")
	_, err = ReadFile(context.Background(), Request{URL: url, Revision: sha, Credentials: &Credentials{SSHPrivateKey: keyPEM, KnownHosts: wrongHosts}}, ".ferry.yaml")
	if err == nil || !strings.Contains(err.Error(), "key mismatch") {
		t.Errorf("wrong host key: %v", err)
	}

	// A key the server does not know.
	_, strangerPriv, _ := ed25519.GenerateKey(rand.Reader)
	strangerBlock, _ := gossh.MarshalPrivateKey(strangerPriv, "")
	_, err = ReadFile(context.Background(), Request{URL: url, Revision: sha, Credentials: &Credentials{SSHPrivateKey: pem.EncodeToMemory(strangerBlock), KnownHosts: knownHosts}}, ".ferry.yaml")
	if err == nil {
		t.Error("an unknown client key was accepted")
	} else if strings.Contains(err.Error(), "PRIVATE KEY") {
		t.Errorf("error leaks the key: %v", err)
	}

	// A server that serves neither commits nor blobs by ID (over SSH, only advertised refs): the
	// ref is fetched without blobs, the blob by ID is refused, and the ref is fetched again with
	// every blob small enough to be the file.
	cmd := exec.Command("git", "--git-dir="+filepath.Join(srv.Dir(), "team/app.git"), "config", "uploadpack.allowReachableSHA1InWant", "false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	got, err = ReadFile(context.Background(), Request{URL: url, Revision: sha, Ref: "refs/heads/main", Credentials: &Credentials{SSHPrivateKey: keyPEM, KnownHosts: knownHosts}}, ".ferry.yaml")
	if err != nil || string(got) != "stack: debian-12\n" {
		t.Fatalf("read over SSH from a server that serves only refs: %q, %v", got, err)
	}

	// An SSH URL with password credentials is a configuration error, named as such.
	_, err = ReadFile(context.Background(), Request{URL: url, Revision: sha, Credentials: &Credentials{Username: "u", Password: password}}, ".ferry.yaml")
	if err == nil || !strings.Contains(err.Error(), "use an ssh-auth Secret") {
		t.Errorf("password for SSH: %v", err)
	}
}
