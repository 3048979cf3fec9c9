package baseimage

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"time"
)

// goVersionRE matches a Go release version as the go command prints it (go1.26.8, go1.27rc1).
var goVersionRE = regexp.MustCompile(`^go(1\.\d+)(\.\d+|rc\d+)?$`)

// machineGoVersion returns the version of the go command on this machine's PATH (go env
// GOVERSION, GOTOOLCHAIN=local: the installed one, not one it would switch to).
func machineGoVersion(ctx context.Context) (string, error) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		return "", fmt.Errorf("no go command on PATH: the Go toolchain of the golang builder image comes from the Go module proxy through it (install Go, or set Options.GoVersion)")
	}
	cmd := exec.CommandContext(ctx, goBin, "env", "GOVERSION")
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local")
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("failed to ask %s for its version: %w", goBin, err)
	}
	return strings.TrimSpace(string(out)), nil
}

// goMinor returns "1.26" of "go1.26.8".
func goMinor(v string) (string, error) {
	m := goVersionRE.FindStringSubmatch(v)
	if m == nil {
		return "", fmt.Errorf("the Go version %q is not a release such as go1.26.8", v)
	}
	return m[1], nil
}

// toolchainModule is the module of the Go module proxy that holds a Go release for a platform:
// its zip is a GOROOT (this is how the go command itself switches toolchains).
func toolchainModule(version, goarch string) string {
	return "golang.org/toolchain@v0.0.1-" + version + ".linux-" + goarch
}

// downloadedModule is what `go mod download -json` says about a module.
type downloadedModule struct {
	Path, Version, Dir, Sum, Error string
}

// downloadToolchain fetches the toolchain module through the machine's go command, which checks
// it against the checksum database (sum.golang.org, or the user's GOSUMDB), and returns its
// directory in the module cache.
func downloadToolchain(ctx context.Context, version, goarch string) (*downloadedModule, error) {
	mod := toolchainModule(version, goarch)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", mod)
	cmd.Dir = os.TempDir() // outside any module
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN=local", "GOFLAGS=", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	m := &downloadedModule{}
	if jerr := json.Unmarshal(out, m); jerr == nil && m.Error != "" {
		return nil, fmt.Errorf("failed to download the Go toolchain %s from the module proxy: %s", mod, m.Error)
	}
	if err != nil {
		return nil, fmt.Errorf("failed to download the Go toolchain %s from the module proxy: %w: %s", mod, err, strings.TrimSpace(stderr.String()))
	}
	if m.Dir == "" {
		return nil, fmt.Errorf("go mod download %s printed no directory", mod)
	}
	return m, nil
}

// writeTreeLayer writes the files of src (a directory of regular files and directories, such as
// a module in the module cache) as a layer under prefix, owned by root: directories 0755, files
// 0644, or 0755 when executable(rel) says so. Above prefix it writes only extra, the
// directories the layer adds with their modes (the stack has the other parents).
func writeTreeLayer(ctx context.Context, w io.Writer, src, prefix string, extra []dirEntry, executable func(rel string, head []byte) bool, epoch time.Time) (layerStats, error) {
	tw := tar.NewWriter(w)
	var stats layerStats
	for _, d := range extra {
		if err := tw.WriteHeader(&tar.Header{Name: d.name + "/", Typeflag: tar.TypeDir, Mode: d.mode, ModTime: epoch}); err != nil {
			return stats, err
		}
		stats.Entries++
	}
	if err := tw.WriteHeader(&tar.Header{Name: prefix + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
		return stats, err
	}
	stats.Entries++
	buf := make([]byte, 256<<10)
	var walk func(rel string) error
	walk = func(rel string) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		entries, err := os.ReadDir(filepath.Join(src, rel))
		if err != nil {
			return fmt.Errorf("failed to read %s: %w", filepath.Join(src, rel), err)
		}
		// os.ReadDir sorts by name.
		for _, e := range entries {
			r := path.Join(rel, e.Name())
			name := prefix + "/" + r
			switch {
			case e.IsDir():
				if err := tw.WriteHeader(&tar.Header{Name: name + "/", Typeflag: tar.TypeDir, Mode: 0o755, ModTime: epoch}); err != nil {
					return err
				}
				stats.Entries++
				if err := walk(r); err != nil {
					return err
				}
			case e.Type().IsRegular():
				if err := copyRegular(tw, filepath.Join(src, r), name, r, executable, epoch, buf, &stats); err != nil {
					return err
				}
			default:
				return fmt.Errorf("%s: %s is neither a file nor a directory", src, r)
			}
		}
		return nil
	}
	if err := walk(""); err != nil {
		return stats, err
	}
	return stats, tw.Close()
}

func copyRegular(tw *tar.Writer, p, name, rel string, executable func(string, []byte) bool, epoch time.Time, buf []byte, stats *layerStats) error {
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer func() { _ = f.Close() }()
	info, err := f.Stat()
	if err != nil {
		return err
	}
	head := make([]byte, 2)
	n, _ := io.ReadFull(f, head)
	mode := int64(0o644)
	if executable(rel, head[:n]) {
		mode = 0o755
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return err
	}
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: info.Size(), ModTime: epoch}); err != nil {
		return err
	}
	if _, err := io.CopyBuffer(tw, io.LimitReader(f, info.Size()), buf); err != nil {
		return fmt.Errorf("failed to add %s to the layer: %w", rel, err)
	}
	stats.Entries++
	stats.Bytes += info.Size()
	return nil
}

// dirEntry is a directory a layer adds, with its mode.
type dirEntry struct {
	name string
	mode int64
}

// goExecutable says which files of a GOROOT are programs: the commands in bin/ and pkg/tool/,
// and scripts. The module zip keeps no permissions (the go command sets the same ones when it
// switches to a downloaded toolchain).
func goExecutable(rel string, head []byte) bool {
	return strings.HasPrefix(rel, "bin/") || strings.HasPrefix(rel, "pkg/tool/") || bytes.HasPrefix(head, []byte("#!"))
}

// buildPause compiles the pause program (embedded source) into dir with the Go release version:
// statically linked, without paths or build IDs of this machine, so that the same source and
// release give the same binary. GOTOOLCHAIN=version lets the machine's go switch to that release
// when it is another one.
func buildPause(ctx context.Context, dir, version, goarch string) (string, error) {
	src := filepath.Join(dir, "src")
	if err := os.MkdirAll(src, 0o750); err != nil {
		return "", err
	}
	minor, err := goMinor(version)
	if err != nil {
		return "", err
	}
	files := map[string][]byte{
		"go.mod":  []byte("module ferry.dev/pause\n\ngo " + minor + "\n"),
		"main.go": pauseSource,
	}
	for name, data := range files {
		if err := os.WriteFile(filepath.Join(src, name), data, 0o644); err != nil {
			return "", err
		}
	}
	out := filepath.Join(dir, "pause")
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w -buildid=", "-o", out, ".")
	cmd.Dir = src
	// The machine's settings stay (proxy, caches), except those that would change the binary.
	cmd.Env = append(os.Environ(), "GOTOOLCHAIN="+version, "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch,
		"GOAMD64=v1", "GOARM64=v8.0", "GOEXPERIMENT=", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if output, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("failed to build the pause program with %s: %w: %s", version, err, strings.TrimSpace(string(output)))
	}
	return out, nil
}

// fileLayer writes a layer of one file at name with mode, owned by root.
func fileLayer(w io.Writer, src, name string, mode int64, epoch time.Time) (layerStats, error) {
	data, err := os.ReadFile(src)
	if err != nil {
		return layerStats{}, err
	}
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: name, Typeflag: tar.TypeReg, Mode: mode, Size: int64(len(data)), ModTime: epoch}); err != nil {
		return layerStats{}, err
	}
	if _, err := tw.Write(data); err != nil {
		return layerStats{}, err
	}
	return layerStats{Entries: 1, Bytes: int64(len(data))}, tw.Close()
}
