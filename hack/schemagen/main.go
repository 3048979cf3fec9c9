// Command schemagen writes the JSON Schema of the pipeline file (.ferry.yaml) for editors, generated
// from the Go type in internal/pipelinefile with controller-gen's schema machinery, so that the doc
// comments and validation markers of the type are the single source. `make manifests` runs it.
//
//	go run ./hack/schemagen > config/schema/ferry-pipeline.schema.json
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"

	"golang.org/x/tools/go/packages"
	apiextensionsv1 "k8s.io/apiextensions-apiserver/pkg/apis/apiextensions/v1"
	"sigs.k8s.io/controller-tools/pkg/crd"
	crdmarkers "sigs.k8s.io/controller-tools/pkg/crd/markers"
	"sigs.k8s.io/controller-tools/pkg/loader"
	"sigs.k8s.io/controller-tools/pkg/markers"
)

const (
	pkgPath  = "github.com/ferryci/ferry/internal/pipelinefile"
	typeName = "File"
	schemaID = "https://ferry.dev/schemas/ferry-pipeline.schema.json"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "schemagen:", err)
		os.Exit(1)
	}
}

func run() error {
	pkgs, err := loader.LoadRoots(pkgPath)
	if err != nil {
		return fmt.Errorf("failed to load %s: %w", pkgPath, err)
	}
	reg := &markers.Registry{}
	if err := crdmarkers.Register(reg); err != nil {
		return err
	}
	parser := &crd.Parser{
		Collector:              &markers.Collector{Registry: reg},
		Checker:                &loader.TypeChecker{},
		IgnoreUnexportedFields: true,
	}
	crd.AddKnownTypes(parser)
	for _, p := range pkgs {
		parser.NeedPackage(p)
	}
	ident := crd.TypeIdent{Package: pkgs[0], Name: typeName}
	parser.NeedFlattenedSchemaFor(ident)
	// Like controller-gen, ignore type errors: the loader type-checks only what the schema needs, so
	// code that uses other imports (the YAML decoder) reports "undefined" names that do not matter.
	if loader.PrintErrors(pkgs, packages.TypeError) {
		return fmt.Errorf("failed to load %s", pkgPath)
	}
	props, ok := parser.FlattenedSchemata[ident]
	if !ok {
		return fmt.Errorf("no schema for %s.%s", pkgPath, typeName)
	}
	schema := toJSONSchema(&props)
	schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
	schema["$id"] = schemaID
	schema["title"] = "Ferry pipeline file (.ferry.yaml)"
	schema["description"] = "How a repository's image is made (OS stack, language runtime, build steps, artifacts) " +
		"and how the application runs (entrypoint, env, ports, deploy settings). Read at the Build's exact commit."
	out, err := json.MarshalIndent(schema, "", "  ")
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(append(out, '\n'))
	return err
}

// toJSONSchema converts an OpenAPI v3 schema as controller-gen writes it for CRDs into a JSON Schema
// that editors apply: objects with declared properties refuse unknown ones (Ferry's parser does), an
// int-or-string becomes a oneOf, and Kubernetes extensions are dropped.
func toJSONSchema(p *apiextensionsv1.JSONSchemaProps) map[string]any {
	s := map[string]any{}
	if p.Description != "" {
		s["description"] = p.Description
	}
	switch {
	case p.XIntOrString:
		s["anyOf"] = []any{map[string]any{"type": "integer"}, map[string]any{"type": "string"}}
	case p.Type != "":
		s["type"] = p.Type
	}
	if p.Pattern != "" {
		s["pattern"] = p.Pattern
	}
	if p.Format != "" {
		s["format"] = p.Format
	}
	if p.MinLength != nil {
		s["minLength"] = *p.MinLength
	}
	if p.MaxLength != nil {
		s["maxLength"] = *p.MaxLength
	}
	if p.MinItems != nil {
		s["minItems"] = *p.MinItems
	}
	if p.MaxItems != nil {
		s["maxItems"] = *p.MaxItems
	}
	if p.MaxProperties != nil {
		s["maxProperties"] = *p.MaxProperties
	}
	if p.Minimum != nil {
		s["minimum"] = *p.Minimum
	}
	if p.Maximum != nil {
		s["maximum"] = *p.Maximum
	}
	if len(p.Enum) > 0 {
		var values []any
		for _, e := range p.Enum {
			var v any
			if err := json.Unmarshal(e.Raw, &v); err == nil {
				values = append(values, v)
			}
		}
		s["enum"] = values
	}
	if len(p.Required) > 0 {
		req := append([]string(nil), p.Required...)
		sort.Strings(req)
		s["required"] = req
	}
	if p.Items != nil && p.Items.Schema != nil {
		s["items"] = toJSONSchema(p.Items.Schema)
	}
	if len(p.Properties) > 0 {
		props := map[string]any{}
		for name, prop := range p.Properties {
			props[name] = toJSONSchema(&prop)
		}
		s["properties"] = props
		s["additionalProperties"] = false
	} else if p.AdditionalProperties != nil && p.AdditionalProperties.Schema != nil {
		s["additionalProperties"] = toJSONSchema(p.AdditionalProperties.Schema)
	}
	return s
}
