// Package catalog is the platform team's list of OS stacks and language runtimes: the names a
// pipeline file may use (debian-12, python-3.12) and the images, pinned by digest, they stand for.
// In a cluster it is the key catalog.yaml of the ConfigMap ferry-catalog in Ferry's namespace; on a
// developer's machine it is a file passed to `ferry build --catalog`.
//
//	stacks:
//	  debian-12: harbor.example.com/ferry/stacks/debian@sha256:…
//	runtimes:
//	  python-3.12: harbor.example.com/ferry/runtimes/python@sha256:…
package catalog

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	"sigs.k8s.io/yaml"
)

const (
	// ConfigMapName is the ConfigMap in Ferry's namespace that holds the catalog.
	ConfigMapName = "ferry-catalog"
	// ConfigMapKey is the key of the catalog in that ConfigMap.
	ConfigMapKey = "catalog.yaml"
)

// Kind says which list a name is looked up in.
type Kind string

const (
	// Stack is an OS base image.
	Stack Kind = "stack"
	// Runtime is a language runtime image built on a stack.
	Runtime Kind = "runtime"
)

// Catalog maps names to images pinned by digest.
type Catalog struct {
	// Stacks are the OS base images by name.
	Stacks map[string]string `json:"stacks,omitempty"`
	// Runtimes are the language runtime images by name.
	Runtimes map[string]string `json:"runtimes,omitempty"`
}

var (
	nameRE   = regexp.MustCompile(`^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`)
	pinnedRE = regexp.MustCompile(`^[^@\s]+@sha256:[0-9a-f]{64}$`)
)

// Parse reads a catalog and checks that every name is well formed and every image pinned by digest.
func Parse(source string, data []byte) (*Catalog, error) {
	c := &Catalog{}
	if err := yaml.UnmarshalStrict(data, c); err != nil {
		return nil, fmt.Errorf("catalog %s: %w", source, err)
	}
	for kind, entries := range map[Kind]map[string]string{Stack: c.Stacks, Runtime: c.Runtimes} {
		for name, image := range entries {
			if !nameRE.MatchString(name) {
				return nil, fmt.Errorf("catalog %s: %ss.%s: a name is lower-case letters, digits, '.' and '-'", source, kind, name)
			}
			if !pinnedRE.MatchString(image) {
				return nil, fmt.Errorf("catalog %s: %ss.%s: image %q must be pinned by digest (repository@sha256:…)", source, kind, name, image)
			}
		}
	}
	return c, nil
}

// IsReference reports whether s is an image reference rather than a catalog name: references name
// a registry path, a tag or a digest.
func IsReference(s string) bool {
	return strings.ContainsAny(s, "/:@")
}

// Resolve returns the image for a stack or runtime as written in a pipeline file: a catalog name is
// looked up, an image reference is returned as written (the image builder pins it to a digest).
func (c *Catalog) Resolve(kind Kind, nameOrRef string) (string, error) {
	if IsReference(nameOrRef) {
		return nameOrRef, nil
	}
	var entries map[string]string
	if c != nil {
		entries = c.Runtimes
		if kind == Stack {
			entries = c.Stacks
		}
	}
	if image, ok := entries[nameOrRef]; ok {
		return image, nil
	}
	known := make([]string, 0, len(entries))
	for name := range entries {
		known = append(known, name)
	}
	slices.Sort(known)
	if len(known) == 0 {
		return "", fmt.Errorf("%s %q is not in the catalog, which has no %ss: use an image reference, or ask the platform team to add it", kind, nameOrRef, kind)
	}
	return "", fmt.Errorf("%s %q is not in the catalog (known %ss: %s)", kind, nameOrRef, kind, strings.Join(known, ", "))
}
