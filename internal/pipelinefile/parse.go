package pipelinefile

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"sigs.k8s.io/yaml"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// DefaultWorkdir is where the artifacts go when the file does not say.
const DefaultWorkdir = "/app"

// Parse reads a pipeline file strictly (unknown fields are errors) and applies defaults. name is the
// file's path, used in error messages.
func Parse(name string, data []byte) (*File, error) {
	f := &File{}
	if err := yaml.UnmarshalStrict(data, f); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if f.Stack == "" {
		return nil, fmt.Errorf("%s: stack: required: name the OS stack (a catalog name such as debian-12, or an image reference)", name)
	}
	if f.Workdir == "" {
		f.Workdir = DefaultWorkdir
	}
	return f, nil
}

// Load reads the pipeline file at path (default .ferry.yaml) inside dir.
func Load(dir, path string) (*File, error) {
	if path == "" {
		path = ferryv1.DefaultPipelineFile
	}
	data, err := os.ReadFile(filepath.Join(dir, path))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("%s: no pipeline file in %s", path, dir)
		}
		return nil, err
	}
	return Parse(path, data)
}
