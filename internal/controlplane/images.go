package controlplane

import (
	"archive/tar"
	"bytes"
	"fmt"
	"io"
	"os"
	"path"
	goruntime "runtime"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// imageEpoch is the time recorded in images made from binaries, so that the same binary gives the
// same digest.
var imageEpoch = time.Date(2024, 1, 1, 0, 0, 0, 0, time.UTC)

// BinaryImage makes a one-layer image that runs a static binary: the binary at inImage (an
// absolute path, e.g. /ko-app/entrypoint as ko puts it), /tmp, and an /etc/passwd with root and a
// nonroot user (65532). Each of links is a symbolic link to the binary (a multi-call binary such
// as busybox answers to the name it is called by). The same binary gives the same digest.
func BinaryImage(binary, inImage string, links ...string) (v1.Image, error) {
	data, err := os.ReadFile(binary)
	if err != nil {
		return nil, fmt.Errorf("failed to read %s for an image: %w", binary, err)
	}
	inImage = path.Clean("/" + inImage)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entry := func(name string, mode int64, typ byte, content []byte) error {
		hdr := &tar.Header{Name: name, Mode: mode, Typeflag: typ, Size: int64(len(content)), ModTime: imageEpoch, Format: tar.FormatPAX}
		if err := tw.WriteHeader(hdr); err != nil {
			return err
		}
		_, err := tw.Write(content)
		return err
	}
	var dirs []string
	seen := map[string]bool{}
	for _, p := range append([]string{inImage}, links...) {
		var parents []string
		for d := path.Dir(path.Clean("/" + p)); d != "/"; d = path.Dir(d) {
			if name := strings.TrimPrefix(d, "/") + "/"; !seen[name] {
				seen[name] = true
				parents = append([]string{name}, parents...)
			}
		}
		dirs = append(dirs, parents...)
	}
	steps := []func() error{
		func() error { return entry("etc/", 0o755, tar.TypeDir, nil) },
		func() error {
			return entry("etc/group", 0o644, tar.TypeReg, []byte("root:x:0:\nnonroot:x:65532:\n"))
		},
		func() error {
			return entry("etc/passwd", 0o644, tar.TypeReg, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
		},
		func() error { return entry("tmp/", 0o1777, tar.TypeDir, nil) },
	}
	for _, d := range dirs {
		if d == "etc/" || d == "tmp/" {
			continue
		}
		steps = append(steps, func() error { return entry(d, 0o755, tar.TypeDir, nil) })
	}
	steps = append(steps, func() error { return entry(strings.TrimPrefix(inImage, "/"), 0o755, tar.TypeReg, data) })
	for _, l := range links {
		steps = append(steps, func() error {
			hdr := &tar.Header{Name: strings.TrimPrefix(path.Clean("/"+l), "/"), Linkname: inImage, Mode: 0o777, Typeflag: tar.TypeSymlink, ModTime: imageEpoch, Format: tar.FormatPAX}
			return tw.WriteHeader(hdr)
		})
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	layerData := buf.Bytes()
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerData)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{Layer: layer, History: v1.History{Created: v1.Time{Time: imageEpoch}, CreatedBy: "ferry: " + path.Base(inImage)}})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Created = "linux", goruntime.GOARCH, v1.Time{Time: imageEpoch}
	cf.Config.Entrypoint = []string{inImage}
	cf.Config.Env = []string{"PATH=/usr/local/bin:/usr/bin:/bin"}
	return mutate.ConfigFile(img, cf)
}
