// Package supplychain describes and vouches for the images Ferry assembles: an SPDX 2.3 SBOM per
// image that says which layer (stack, runtime, application) each package came from, attached in the
// registry as an OCI referrer; an image signature and a signed in-toto statement with SLSA v1
// provenance, both in cosign's formats so that `cosign verify --key` and `cosign
// verify-attestation --key` accept them offline; and the checks that promotion gates make on them.
package supplychain

import (
	"archive/tar"
	"bufio"
	"bytes"
	"debug/buildinfo"
	"errors"
	"fmt"
	"io"
	"path"
	"regexp"
	"slices"
	"strings"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Package types, the purl types of the packages Ferry catalogues.
const (
	TypeDeb    = "deb"
	TypeGolang = "golang"
	TypePyPI   = "pypi"
)

// Package is one catalogued package.
type Package struct {
	// Type is deb, golang or pypi.
	Type string `json:"type"`
	// Name is the package's name (for Go, the module path).
	Name string `json:"name"`
	// Version is its version; "" when the source did not pin one.
	Version string `json:"version,omitempty"`
	// Layer is the digest of the compressed layer it was found in.
	Layer string `json:"layer"`
	// Location is the file it was read from, inside the layer.
	Location string `json:"location"`
}

// Key identifies a package independently of its version and layer.
func (p Package) Key() string { return p.Type + "/" + p.Name }

// PURL is the package URL of the package.
func (p Package) PURL() string {
	name := p.Name
	switch p.Type {
	case TypeDeb:
		name = "debian/" + name
	case TypePyPI:
		name = strings.ToLower(strings.ReplaceAll(name, "_", "-"))
	}
	s := "pkg:" + p.Type + "/" + name
	if p.Version != "" {
		s += "@" + p.Version
	}
	return s
}

// maxBinary is the largest executable read for Go build information; bigger ones are skipped.
const maxBinary = 512 << 20

// maxTextFile is the largest dpkg status, requirements or METADATA file read.
const maxTextFile = 64 << 20

// CatalogLayer lists the packages a layer adds on top of below, the packages of the layers under
// it (for Debian packages, the dpkg status is one file that every layer installing packages
// replaces: the layer adds what its status lists that below does not have at the same version).
func CatalogLayer(layer v1.Layer, below []Package) ([]Package, error) {
	d, err := layer.Digest()
	if err != nil {
		return nil, err
	}
	rc, err := layer.Uncompressed()
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	defer func() { _ = rc.Close() }()
	pkgs, err := catalogTar(rc, d.String(), below)
	if err != nil {
		return nil, fmt.Errorf("layer %s: %w", d, err)
	}
	return pkgs, nil
}

var distInfoRE = regexp.MustCompile(`(^|/)(site|dist)-packages/[^/]+\.dist-info/METADATA$`)

func catalogTar(r io.Reader, layer string, below []Package) ([]Package, error) {
	var out []Package
	have := map[string]bool{}
	for _, p := range below {
		have[p.Type+"/"+p.Name+"@"+p.Version] = true
	}
	tr := tar.NewReader(r)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the layer's tar stream: %w", err)
		}
		if h.Typeflag != tar.TypeReg {
			continue
		}
		name := strings.TrimPrefix(path.Clean("/"+h.Name), "/")
		var found []Package
		switch {
		case name == "var/lib/dpkg/status":
			b, err := readSmall(tr, h, name)
			if err != nil {
				return nil, err
			}
			found = parseDpkgStatus(b)
		case distInfoRE.MatchString(name):
			b, err := readSmall(tr, h, name)
			if err != nil {
				return nil, err
			}
			if p, ok := parseDistInfo(b); ok {
				found = []Package{p}
			}
		case path.Base(name) == "requirements.txt":
			b, err := readSmall(tr, h, name)
			if err != nil {
				return nil, err
			}
			found = parseRequirements(b)
		case h.Mode&0o111 != 0 && h.Size > 4 && h.Size <= maxBinary:
			found, err = goBinary(tr, h.Size)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
		}
		for _, p := range found {
			p.Layer, p.Location = layer, name
			k := p.Type + "/" + p.Name + "@" + p.Version
			if p.Type == TypeDeb && have[k] {
				continue
			}
			out = append(out, p)
		}
	}
	slices.SortFunc(out, func(a, b Package) int {
		return strings.Compare(a.Type+"/"+a.Name+"@"+a.Version+" "+a.Location, b.Type+"/"+b.Name+"@"+b.Version+" "+b.Location)
	})
	return slices.CompactFunc(out, func(a, b Package) bool { return a == b }), nil
}

func readSmall(r io.Reader, h *tar.Header, name string) ([]byte, error) {
	if h.Size > maxTextFile {
		return nil, fmt.Errorf("%s is %d bytes, more than the %d catalogued", name, h.Size, maxTextFile)
	}
	b, err := io.ReadAll(io.LimitReader(r, h.Size))
	if err != nil {
		return nil, fmt.Errorf("failed to read %s: %w", name, err)
	}
	return b, nil
}

// goBinary reads the Go build information of an executable: the main module, its dependencies
// (with replacements applied) and the Go standard library. Other executables give nothing.
func goBinary(r io.Reader, size int64) ([]Package, error) {
	br := bufio.NewReader(r)
	magic, err := br.Peek(4)
	if err != nil {
		return nil, nil
	}
	if string(magic) != "\x7fELF" {
		return nil, nil
	}
	b, err := io.ReadAll(io.LimitReader(br, size))
	if err != nil {
		return nil, err
	}
	bi, err := buildinfo.Read(bytes.NewReader(b))
	if err != nil {
		return nil, nil // not a Go binary
	}
	out := []Package{{Type: TypeGolang, Name: "stdlib", Version: bi.GoVersion}}
	if bi.Main.Path != "" {
		out = append(out, Package{Type: TypeGolang, Name: bi.Main.Path, Version: bi.Main.Version})
	}
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		out = append(out, Package{Type: TypeGolang, Name: d.Path, Version: d.Version})
	}
	return out, nil
}

// parseDpkgStatus lists the installed packages of a dpkg status file.
func parseDpkgStatus(b []byte) []Package {
	var out []Package
	for stanza := range strings.SplitSeq(string(b), "\n\n") {
		var name, version, status string
		for line := range strings.SplitSeq(stanza, "\n") {
			k, v, ok := strings.Cut(line, ":")
			if !ok || strings.HasPrefix(line, " ") {
				continue
			}
			switch k {
			case "Package":
				name = strings.TrimSpace(v)
			case "Version":
				version = strings.TrimSpace(v)
			case "Status":
				status = strings.TrimSpace(v)
			}
		}
		if name != "" && strings.HasSuffix(status, " installed") && !strings.HasSuffix(status, "not-installed") {
			out = append(out, Package{Type: TypeDeb, Name: name, Version: version})
		}
	}
	return out
}

// parseDistInfo reads an installed Python distribution's METADATA.
func parseDistInfo(b []byte) (Package, bool) {
	var p Package
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" {
			break // the headers end at the first empty line
		}
		if v, ok := strings.CutPrefix(line, "Name:"); ok {
			p.Name = strings.TrimSpace(v)
		} else if v, ok := strings.CutPrefix(line, "Version:"); ok {
			p.Version = strings.TrimSpace(v)
		}
	}
	p.Type = TypePyPI
	return p, p.Name != ""
}

var requirementRE = regexp.MustCompile(`^([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*(==\s*([^\s;#]+))?`)

// parseRequirements reads a pip requirements file: one package per line, pinned with == when
// the file pins it; options (-r, --hash …), URLs and comments are left out.
func parseRequirements(b []byte) []Package {
	var out []Package
	for line := range strings.SplitSeq(string(b), "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, " #"); i >= 0 {
			line = line[:i]
		}
		if line == "" || strings.HasPrefix(line, "#") || strings.HasPrefix(line, "-") || strings.Contains(line, "://") {
			continue
		}
		m := requirementRE.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		out = append(out, Package{Type: TypePyPI, Name: m[1], Version: m[4]})
	}
	return out
}
