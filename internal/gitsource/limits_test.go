package gitsource

import (
	"bufio"
	"bytes"
	"compress/zlib"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha1"
	"encoding/binary"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gossh "golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"

	"github.com/ferryci/ferry/internal/gitserver"
)

// eventually polls cond until it holds or 30 s pass (testutil imports this package).
func eventually(t *testing.T, what string, cond func() (bool, error)) {
	t.Helper()
	var last error
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ok, err := cond()
		if ok {
			return
		}
		last = err
	}
	t.Fatalf("waiting for %s: %v", what, last)
}

// hungServer accepts connections and then, depending on its mode, never answers or trickles one
// byte a second forever. It counts the connections it holds open.
type hungServer struct {
	addr string
	open atomic.Int32
}

type hungMode int

const (
	// silent reads what the client sends and never writes.
	silent hungMode = iota
	// trickleHTTP answers an HTTP request with headers and then a body of one byte a second.
	trickleHTTP
	// trickleRaw writes one byte a second from the start (an SSH banner that never ends).
	trickleRaw
)

func startHungServer(t *testing.T, mode hungMode) *hungServer {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &hungServer{addr: l.Addr().String()}
	done := make(chan struct{})
	var wg sync.WaitGroup
	t.Cleanup(func() {
		close(done)
		_ = l.Close()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			conn, err := l.Accept()
			if err != nil {
				return
			}
			s.open.Add(1)
			wg.Go(func() {
				defer s.open.Add(-1)
				defer func() { _ = conn.Close() }()
				go func() {
					<-done
					_ = conn.Close()
				}()
				switch mode {
				case silent:
					_, _ = io.Copy(io.Discard, conn)
				case trickleHTTP:
					br := bufio.NewReader(conn)
					if _, err := http.ReadRequest(br); err != nil {
						return
					}
					if _, err := io.WriteString(conn, "HTTP/1.1 200 OK\r\nContent-Type: application/x-git-upload-pack-advertisement\r\n\r\nfff0"); err != nil {
						return
					}
					trickle(conn, done)
				case trickleRaw:
					go func() { _, _ = io.Copy(io.Discard, conn) }()
					trickle(conn, done)
				}
			})
		}
	})
	return s
}

func trickle(conn net.Conn, done chan struct{}) {
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-done:
			return
		case <-tick.C:
			if _, err := conn.Write([]byte("x")); err != nil {
				return
			}
		}
	}
}

// sshCredentials are a client key and a known_hosts entry for addr (with a key no server has).
func sshCredentials(t *testing.T, addr string) *Credentials {
	t.Helper()
	_, clientPriv, _ := ed25519.GenerateKey(rand.Reader)
	block, err := gossh.MarshalPrivateKey(clientPriv, "")
	if err != nil {
		t.Fatal(err)
	}
	hostPub, _, _ := ed25519.GenerateKey(rand.Reader)
	sshHostPub, err := gossh.NewPublicKey(hostPub)
	if err != nil {
		t.Fatal(err)
	}
	return &Credentials{SSHPrivateKey: pem.EncodeToMemory(block), KnownHosts: []byte(knownhosts.Line([]string{knownhosts.Normalize(addr)}, sshHostPub) + "\n")}
}

// TestHungServer: a git server that accepts and never answers, or trickles a byte a second
// forever, fails the read within its limits, with an error that names the server and the limit;
// the connection is closed, not left to the server.
func TestHungServer(t *testing.T) {
	rev := strings.Repeat("ab", 20)
	limits := Limits{Timeout: 3 * time.Second, StallTimeout: 2 * time.Second}
	cases := []struct {
		name string
		mode hungMode
		ssh  bool
		want string
	}{
		{name: "HTTP, never answers", mode: silent, want: "sent nothing for 2s (stall timeout)"},
		{name: "HTTP, a byte a second", mode: trickleHTTP, want: "did not send everything within 3s (timeout)"},
		{name: "SSH, never answers", mode: silent, ssh: true, want: "sent nothing for 2s (stall timeout)"},
		{name: "SSH, a byte a second", mode: trickleRaw, ssh: true, want: "did not send everything within 3s (timeout)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			srv := startHungServer(t, tc.mode)
			req := Request{URL: "http://" + srv.addr + "/team/app.git", Revision: rev, Limits: limits}
			if tc.ssh {
				req.URL = "ssh://git@" + srv.addr + "/team/app.git"
				req.Credentials = sshCredentials(t, srv.addr)
			}
			for _, op := range []string{"ReadFile", "Checkout"} {
				var err error
				if op == "ReadFile" {
					_, err = ReadFile(context.Background(), req, ".ferry.yaml")
				} else {
					err = Checkout(context.Background(), req, filepath.Join(t.TempDir(), "src"))
				}
				if !errors.Is(err, ErrTimeout) {
					t.Fatalf("%s: error %v is not a timeout", op, err)
				}
				msg := err.Error()
				if !strings.Contains(msg, "the git server "+srv.addr+" "+tc.want) || !strings.Contains(msg, req.URL) {
					t.Errorf("%s: error %q does not name the server and %q", op, msg, tc.want)
				}
				eventually(t, "the hung server's connections to be closed", func() (bool, error) {
					n := srv.open.Load()
					return n == 0, fmt.Errorf("%d connections open", n)
				})
			}
		})
	}
}

// TestHungServerCancelled: the caller's context still ends a read (the manager shutting down).
func TestHungServerCancelled(t *testing.T) {
	srv := startHungServer(t, silent)
	ctx, cancel := context.WithCancel(context.Background())
	errs := make(chan error, 1)
	go func() {
		_, err := ReadFile(ctx, Request{URL: "http://" + srv.addr + "/team/app.git", Revision: strings.Repeat("ab", 20)}, ".ferry.yaml")
		errs <- err
	}()
	eventually(t, "the read to connect", func() (bool, error) { return srv.open.Load() == 1, nil })
	cancel()
	if err := <-errs; err == nil || errors.Is(err, ErrTimeout) {
		t.Errorf("cancelled read: %v", err)
	}
}

// heapGrowth runs f and returns how far the heap grew above where it started, sampled every
// millisecond.
func heapGrowth(f func()) uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapAlloc, ms.HeapAlloc
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapAlloc)
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak - base
}

const bigBlobSize = 64 << 20

// bigRepo is a repository whose one commit has a pipeline file and a 64 MiB random (so
// incompressible) blob.
func bigRepo(t *testing.T) (*gitserver.Server, string, string) {
	t.Helper()
	srv, err := gitserver.Start(gitserver.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = srv.Close() })
	if err := srv.CreateRepo("team/big", gitserver.RepoOptions{}); err != nil {
		t.Fatal(err)
	}
	// Random data does not compress: the server need not try.
	cmd := exec.Command("git", "--git-dir="+filepath.Join(srv.Dir(), "team/big.git"), "config", "core.compression", "0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	big := make([]byte, bigBlobSize)
	_, _ = rand.Read(big)
	sha, err := srv.Commit("team/big", gitserver.Commit{Files: map[string]string{".ferry.yaml": "stack: debian-12\n", "assets/big.bin": string(big)}})
	if err != nil {
		t.Fatal(err)
	}
	return srv, srv.RepoURL("team/big"), sha
}

// TestBigCommit: a commit with a 64 MiB blob. Reading the pipeline file fetches neither the blob
// nor more than a few KiB; from a server without partial fetches the pack exceeds the cap, and the
// error names it; a checkout over its cap fails and names it. The heap stays far below the blob
// throughout.
func TestBigCommit(t *testing.T) {
	srv, url, sha := bigRepo(t)
	const heapBound = 24 << 20

	var got []byte
	var err error
	growth := heapGrowth(func() {
		got, err = ReadFile(context.Background(), Request{URL: url, Revision: sha, Limits: Limits{MaxFetchBytes: 1 << 20}}, ".ferry.yaml")
	})
	if err != nil || string(got) != "stack: debian-12\n" {
		t.Fatalf("partial read: %q, %v", got, err)
	}
	t.Logf("partial read: heap grew %d KiB", growth>>10)
	if growth > heapBound {
		t.Errorf("reading the pipeline file grew the heap by %d MiB", growth>>20)
	}

	// A server that does not filter sends the whole commit.
	cmd := exec.Command("git", "--git-dir="+filepath.Join(srv.Dir(), "team/big.git"), "config", "uploadpack.allowFilter", "false")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	growth = heapGrowth(func() {
		got, err = ReadFile(context.Background(), Request{URL: url, Revision: sha}, ".ferry.yaml")
	})
	t.Logf("full read: heap grew %d KiB", growth>>10)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "the limit is 16 MiB") {
		t.Errorf("full read over the cap: %q, %v", got, err)
	}
	if growth > heapBound {
		t.Errorf("a read over the cap grew the heap by %d MiB", growth>>20)
	}

	// A checkout: the whole tree, on disk, under its own cap on the wire (and one on what it
	// inflates to, which the 64 MiB blob would pass).
	growth = heapGrowth(func() {
		err = Checkout(context.Background(), Request{URL: url, Revision: sha, Limits: Limits{MaxFetchBytes: 8 << 20, MaxInflatedBytes: 1 << 30}}, filepath.Join(t.TempDir(), "src"))
	})
	t.Logf("checkout: heap grew %d KiB", growth>>10)
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), url) || !strings.Contains(err.Error(), "sent more than 8 MiB, the limit") {
		t.Errorf("checkout over the cap: %v", err)
	}
	if growth > heapBound {
		t.Errorf("a checkout over the cap grew the heap by %d MiB", growth>>20)
	}
	// And under the inflated cap alone.
	err = Checkout(context.Background(), Request{URL: url, Revision: sha, Limits: Limits{MaxFetchBytes: 8 << 20}}, filepath.Join(t.TempDir(), "src"))
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "has an object of 67108864 bytes; the limit is 32 MiB inflated") {
		t.Errorf("checkout over the inflated cap: %v", err)
	}
	// Under caps it fits, the checkout has the blob.
	dir := filepath.Join(t.TempDir(), "src")
	growth = heapGrowth(func() {
		err = Checkout(context.Background(), Request{URL: url, Revision: sha}, dir)
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("checkout of the blob: heap grew %d MiB", growth>>20)
	if fi, err := os.Stat(filepath.Join(dir, "assets/big.bin")); err != nil || fi.Size() != bigBlobSize {
		t.Errorf("assets/big.bin: %v, %v", fi, err)
	}
}

// hostileServer serves one ref and, to any fetch, the given pack: a git server that answers, but
// out of all proportion.
func hostileServer(t *testing.T, head string, pack []byte) string {
	t.Helper()
	pkt := func(s string) string { return fmt.Sprintf("%04x%s", len(s)+4, s) }
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, "/info/refs"):
			w.Header().Set("Content-Type", "application/x-git-upload-pack-advertisement")
			_, _ = io.WriteString(w, pkt("# service=git-upload-pack\n")+"0000"+
				pkt(head+" refs/heads/main\x00allow-reachable-sha1-in-want side-band-64k ofs-delta shallow no-progress\n")+"0000")
		case strings.HasSuffix(r.URL.Path, "/git-upload-pack"):
			_, _ = io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/x-git-upload-pack-result")
			_, _ = io.WriteString(w, pkt("shallow "+head+"\n")+"0000"+pkt("NAK\n"))
			for len(pack) > 0 {
				n := min(len(pack), 65515)
				_, _ = fmt.Fprintf(w, "%04x\x01", n+5)
				_, _ = w.Write(pack[:n])
				pack = pack[n:]
			}
			_, _ = io.WriteString(w, "0000")
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	return srv.URL + "/team/app.git"
}

// packObject encodes an object's header and zlib-compressed data; ofs is an offset delta's
// distance to its base (0 for other objects).
func packObject(t *testing.T, typ byte, size int, data []byte, ofs int) []byte {
	t.Helper()
	var b bytes.Buffer
	c := typ<<4 | byte(size&15)
	size >>= 4
	for size > 0 {
		b.WriteByte(c | 0x80)
		c = byte(size & 0x7f)
		size >>= 7
	}
	b.WriteByte(c)
	if ofs > 0 {
		enc := []byte{byte(ofs & 0x7f)}
		for ofs >>= 7; ofs > 0; ofs >>= 7 {
			ofs--
			enc = append([]byte{0x80 | byte(ofs&0x7f)}, enc...)
		}
		b.Write(enc)
	}
	zw := zlib.NewWriter(&b)
	if _, err := zw.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func makePack(objects ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString("PACK")
	_ = binary.Write(&b, binary.BigEndian, uint32(2))
	_ = binary.Write(&b, binary.BigEndian, uint32(len(objects)))
	for _, o := range objects {
		b.Write(o)
	}
	sum := sha1.Sum(b.Bytes())
	b.Write(sum[:])
	return b.Bytes()
}

func varint(n int) []byte {
	var b []byte
	for {
		c := byte(n & 0x7f)
		n >>= 7
		if n == 0 {
			return append(b, c)
		}
		b = append(b, c|0x80)
	}
}

// TestHostilePack: a server's pack whose objects inflate a thousandfold, a blob of zeros or a
// delta that copies its base thousands of times, is refused from the object's header: the heap
// does not hold what the pack would inflate to.
func TestHostilePack(t *testing.T) {
	const bomb = 256 << 20
	head := strings.Repeat("ab", 20)
	base := make([]byte, 64<<10)
	delta := append(varint(len(base)), varint(bomb)...)
	delta = append(delta, bytes.Repeat([]byte{0x80}, bomb/len(base))...) // copy the whole base, 4096 times
	baseObject := packObject(t, 3, len(base), base, 0)
	cases := []struct {
		name string
		pack []byte
		want string
	}{
		{name: "a blob of zeros", pack: makePack(packObject(t, 3, bomb, make([]byte, bomb), 0)), want: "has an object of 268435456 bytes; the limit is 16 MiB inflated"},
		{name: "a delta bomb", pack: makePack(baseObject, packObject(t, 6, len(delta), delta, len(baseObject))), want: "has a delta that makes an object of 268435456 bytes; the limit is 16 MiB inflated"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			url := hostileServer(t, head, tc.pack)
			t.Logf("the pack is %d KiB", len(tc.pack)>>10)
			var err error
			growth := heapGrowth(func() {
				_, err = ReadFile(context.Background(), Request{URL: url, Revision: head}, ".ferry.yaml")
			})
			t.Logf("heap grew %d KiB", growth>>10)
			if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), url) {
				t.Errorf("error %v, want %q", err, tc.want)
			}
			if growth > 32<<20 {
				t.Errorf("the heap grew by %d MiB", growth>>20)
			}
		})
	}
}

// TestPackGuardPassesRealPacks: what the guard passes on is the pack, byte for byte, for a pack
// with deltas of every kind git makes.
func TestPackGuardPassesRealPacks(t *testing.T) {
	f := setup(t)
	for i := range 20 {
		if _, err := f.srv.Commit("team/app", gitserver.Commit{Files: map[string]string{"app/main.py": strings.Repeat(fmt.Sprintf("print(%d)\n", i), 200+i)}}); err != nil {
			t.Fatal(err)
		}
	}
	for _, args := range [][]string{{"--delta-base-offset"}, {}} {
		cmd := exec.Command("git", append([]string{"--git-dir=" + filepath.Join(f.srv.Dir(), "team/app.git"), "pack-objects", "--stdout", "--revs"}, args...)...)
		cmd.Stdin = strings.NewReader("refs/heads/main\n")
		pack, err := cmd.Output()
		if err != nil {
			t.Fatal(err)
		}
		// Read in small, odd pieces, as a network delivers them.
		g := newPackGuard(iotestHalfReader{bytes.NewReader(pack)}, "example.com", 64<<20)
		got, err := io.ReadAll(g)
		if err != nil || !bytes.Equal(got, pack) {
			t.Errorf("%v: passed %d of %d bytes: %v", args, len(got), len(pack), err)
		}
		// The same pack under a budget it does not fit.
		g = newPackGuard(bytes.NewReader(pack), "example.com", 8<<10)
		if _, err := io.ReadAll(g); !errors.Is(err, ErrTooLarge) {
			t.Errorf("%v: a pack over the budget: %v", args, err)
		}
	}
}

// iotestHalfReader reads at most 7 bytes at a time.
type iotestHalfReader struct{ r io.Reader }

func (h iotestHalfReader) Read(p []byte) (int, error) { return h.r.Read(p[:min(len(p), 7)]) }

// TestPipelineFileTooLarge: the file itself is capped at 1 MiB, and the error says so.
func TestPipelineFileTooLarge(t *testing.T) {
	f := setup(t)
	sha, err := f.srv.Commit("team/app", gitserver.Commit{Files: map[string]string{".ferry.yaml": strings.Repeat("#", maxFileSize+1)}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = ReadFile(context.Background(), Request{URL: f.publicURL, Revision: sha}, ".ferry.yaml")
	if want := fmt.Sprintf(".ferry.yaml at %s is %d bytes; the limit is %d", sha[:12], maxFileSize+1, maxFileSize); err == nil || err.Error() != want {
		t.Errorf("error %v, want %q", err, want)
	}
}
