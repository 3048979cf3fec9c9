package pipelinefile

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"

	yaml "go.yaml.in/yaml/v3"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
)

// DefaultWorkdir is where the artifacts go when the file does not say.
const DefaultWorkdir = "/app"

// MaxSize is the largest pipeline file Ferry reads.
const MaxSize = 256 << 10

// maxNodes bounds the YAML nodes one file may expand to, aliases included (a "billion laughs" file
// is refused instead of exhausting memory).
const maxNodes = 20000

// Parse reads a pipeline file strictly — unknown fields, wrong types and invalid values are errors —
// and applies defaults. name is the file's path, used in error messages. The error is an ErrorList
// whose entries name the line, the column and the field path.
func Parse(name string, data []byte) (*File, error) {
	if len(data) > MaxSize {
		return nil, ErrorList{{File: name, Message: fmt.Sprintf("the file is %d bytes; the limit is %d", len(data), MaxSize)}}
	}
	root, err := parseYAML(name, data)
	if err != nil {
		return nil, err
	}
	f := &File{name: name, positions: map[string]Position{}}
	d := &decoder{file: name, positions: f.positions}
	d.decode(root, reflect.ValueOf(f).Elem(), "")
	if len(d.errs) > 0 {
		return nil, sortErrors(d.errs)
	}
	if errs := validate(f); len(errs) > 0 {
		return nil, sortErrors(errs)
	}
	setDefaults(f)
	return f, nil
}

// Load reads the pipeline file at path (default .ferry.yaml) inside dir.
func Load(dir, path string) (*File, error) {
	if path == "" {
		path = ferryv1.DefaultPipelineFile
	}
	data, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(path)))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, ErrorList{{File: path, Message: "no pipeline file in the repository: add one (see config/schema/ferry-pipeline.schema.json)"}}
		}
		return nil, fmt.Errorf("failed to read the pipeline file %s: %w", path, err)
	}
	return Parse(path, data)
}

// Name is the file's path as given to Parse.
func (f *File) Name() string { return f.name }

// Position returns where the value at a field path (stack, build.steps[0].name) is written, or the
// nearest enclosing value that is; the zero Position when the file says nothing about it.
func (f *File) Position(path string) Position {
	for {
		if p, ok := f.positions[path]; ok {
			return p
		}
		if path == "" {
			return Position{}
		}
		path = parentPath(path)
	}
}

// Errorf returns an *Error about a field of the file, positioned where the field is written.
func (f *File) Errorf(path, format string, args ...any) *Error {
	p := f.Position(path)
	return &Error{File: f.name, Line: p.Line, Column: p.Column, Field: path, Message: fmt.Sprintf(format, args...)}
}

// sortErrors orders problems as they appear in the file.
func sortErrors(errs ErrorList) ErrorList {
	slices.SortStableFunc(errs, func(a, b *Error) int {
		if a.Line != b.Line {
			return a.Line - b.Line
		}
		return a.Column - b.Column
	})
	return errs
}

// parentPath strips the last element of a field path: build.steps[0].name → build.steps[0] →
// build.steps → build → "".
func parentPath(path string) string {
	if strings.HasSuffix(path, "]") {
		if i := strings.LastIndex(path, "["); i >= 0 {
			return path[:i]
		}
	}
	if i := strings.LastIndex(path, "."); i >= 0 {
		return path[:i]
	}
	return ""
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// parseYAML reads exactly one YAML document into a node tree.
func parseYAML(name string, data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, ErrorList{{File: name, Message: "the file is empty: it needs at least a stack"}}
		}
		return nil, ErrorList{syntaxError(name, err)}
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, ErrorList{syntaxError(name, err)}
		}
		return nil, ErrorList{{File: name, Line: extra.Line, Column: extra.Column, Message: "a pipeline file holds one YAML document; remove the second one (after ---)"}}
	}
	if len(doc.Content) == 0 {
		return nil, ErrorList{{File: name, Message: "the file is empty: it needs at least a stack"}}
	}
	return doc.Content[0], nil
}

// syntaxError turns the YAML library's error into an Error. The library counts lines from 1 for
// scanner errors but from 0 for parser errors ("did not find expected …", "found …"), which also
// point at the start of the enclosing block rather than at the problem.
func syntaxError(name string, err error) *Error {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		problem := m[2]
		if strings.HasPrefix(problem, "did not find expected") || strings.HasPrefix(problem, "found undefined") ||
			strings.HasPrefix(problem, "found duplicate") || strings.HasPrefix(problem, "found incompatible") {
			line++
		}
		return &Error{File: name, Line: line, Message: "invalid YAML: " + problem}
	}
	return &Error{File: name, Message: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: ")}
}

// decoder fills a Go value from a YAML node tree by reflection, following the json tags, and records
// where each value was written. It is strict where the YAML library would guess: a number where a
// string belongs must be quoted, a duplicate key is an error.
type decoder struct {
	file      string
	errs      ErrorList
	positions map[string]Position
	nodes     int
}

func (d *decoder) errorf(n *yaml.Node, path, format string, args ...any) {
	d.errs = append(d.errs, &Error{File: d.file, Line: n.Line, Column: n.Column, Field: path, Message: fmt.Sprintf(format, args...)})
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

func (d *decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	d.nodes++
	if d.nodes > maxNodes {
		if d.nodes == maxNodes+1 {
			d.errorf(n, path, "the file expands to more than %d values (aliases included); simplify it", maxNodes)
		}
		return
	}
	if n.Kind == yaml.AliasNode {
		d.decode(n.Alias, v, path)
		return
	}
	d.positions[path] = Position{Line: n.Line, Column: n.Column}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		v.SetZero()
		return
	}
	if v.Kind() == reflect.Pointer {
		if v.IsNil() {
			v.Set(reflect.New(v.Type().Elem()))
		}
		d.decode(n, v.Elem(), path)
		return
	}
	if v.CanAddr() && v.Addr().Type().Implements(jsonUnmarshaler) {
		d.decodeUnmarshaler(n, v.Addr().Interface().(json.Unmarshaler), v.Type(), path)
		return
	}
	switch v.Kind() {
	case reflect.Struct:
		d.decodeStruct(n, v, path)
	case reflect.Slice:
		d.decodeSlice(n, v, path)
	case reflect.Map:
		d.decodeMap(n, v, path)
	case reflect.String:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!str" {
			d.errorf(n, path, "must be a string%s", quoteHint(n))
			return
		}
		v.SetString(n.Value)
	case reflect.Bool:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!bool" {
			d.errorf(n, path, "must be true or false, not %s", describe(n))
			return
		}
		var b bool
		if err := n.Decode(&b); err != nil {
			d.errorf(n, path, "must be true or false")
			return
		}
		v.SetBool(b)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if n.Kind != yaml.ScalarNode || n.ShortTag() != "!!int" {
			d.errorf(n, path, "must be a whole number, not %s", describe(n))
			return
		}
		var i int64
		if err := n.Decode(&i); err != nil || v.OverflowInt(i) {
			d.errorf(n, path, "%s is out of range", n.Value)
			return
		}
		v.SetInt(i)
	default:
		d.errorf(n, path, "cannot be decoded into %s", v.Type())
	}
}

// decodeUnmarshaler hands a scalar to a type that reads JSON (durations, resource quantities).
func (d *decoder) decodeUnmarshaler(n *yaml.Node, u json.Unmarshaler, t reflect.Type, path string) {
	if n.Kind != yaml.ScalarNode {
		d.errorf(n, path, "must be a single value, not %s", describe(n))
		return
	}
	var raw []byte
	switch n.ShortTag() {
	case "!!int", "!!float":
		raw = []byte(n.Value)
	default:
		raw, _ = json.Marshal(n.Value)
	}
	if err := u.UnmarshalJSON(raw); err != nil {
		switch t.Name() {
		case "Duration":
			d.errorf(n, path, "%q is not a duration: write it like 90s, 10m or 1h30m", n.Value)
		case "Quantity":
			d.errorf(n, path, "%q is not a quantity: write it like 250m, 2, 512Mi or 1Gi", n.Value)
		default:
			d.errorf(n, path, "%q is invalid: %v", n.Value, err)
		}
	}
}

func (d *decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping (key: value lines), not %s", describe(n))
		return
	}
	fields := structFields(v.Type())
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i], n.Content[i+1]
		name, ok := d.key(key, path, seen)
		if !ok {
			continue
		}
		f, known := fields[name]
		if !known {
			d.errorf(key, joinPath(path, name), "unknown field%s (known fields: %s)", suggest(name, fields), strings.Join(sortedKeys(fields), ", "))
			continue
		}
		d.decode(value, v.FieldByIndex(f.index), joinPath(path, name))
	}
	for _, name := range sortedKeys(fields) {
		if f := fields[name]; f.required && !seen[name] {
			d.errorf(n, joinPath(path, name), "required field is missing")
		}
	}
}

// key reads a mapping key, refusing merge keys, non-string keys and duplicates.
func (d *decoder) key(key *yaml.Node, path string, seen map[string]bool) (string, bool) {
	if key.Kind == yaml.ScalarNode && key.ShortTag() == "!!merge" {
		d.errorf(key, path, "merge keys (<<) are not supported; write the fields out")
		return "", false
	}
	if key.Kind != yaml.ScalarNode {
		d.errorf(key, path, "keys must be strings, not %s", describe(key))
		return "", false
	}
	if seen[key.Value] {
		d.errorf(key, joinPath(path, key.Value), "duplicate key")
		return "", false
	}
	seen[key.Value] = true
	return key.Value, true
}

func (d *decoder) decodeSlice(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.SequenceNode {
		d.errorf(n, path, "must be a list, not %s", describe(n))
		return
	}
	s := reflect.MakeSlice(v.Type(), len(n.Content), len(n.Content))
	for i, item := range n.Content {
		d.decode(item, s.Index(i), fmt.Sprintf("%s[%d]", path, i))
	}
	v.Set(s)
}

func (d *decoder) decodeMap(n *yaml.Node, v reflect.Value, path string) {
	if n.Kind != yaml.MappingNode {
		d.errorf(n, path, "must be a mapping (key: value lines), not %s", describe(n))
		return
	}
	m := reflect.MakeMapWithSize(v.Type(), len(n.Content)/2)
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, value := n.Content[i], n.Content[i+1]
		name, ok := d.key(key, path, seen)
		if !ok {
			continue
		}
		elem := reflect.New(v.Type().Elem()).Elem()
		d.decode(value, elem, mapPath(path, name))
		m.SetMapIndex(reflect.ValueOf(name).Convert(v.Type().Key()), elem)
	}
	v.Set(m)
}

type fieldInfo struct {
	index    []int
	required bool
}

// structFields maps JSON names to fields; a field without omitempty is required.
func structFields(t reflect.Type) map[string]fieldInfo {
	fields := map[string]fieldInfo{}
	for i := range t.NumField() {
		sf := t.Field(i)
		if !sf.IsExported() {
			continue
		}
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		if name == "" {
			name = sf.Name
		}
		fields[name] = fieldInfo{index: sf.Index, required: !slices.Contains(strings.Split(opts, ","), "omitempty")}
	}
	return fields
}

func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

var plainKeyRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*$`)

// mapPath names a map entry: env.PORT, or deploy.podAnnotations["prometheus.io/scrape"].
func mapPath(path, key string) string {
	if plainKeyRE.MatchString(key) {
		return joinPath(path, key)
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// describe names what a node is, for "must be X, not Y" messages.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	}
	switch n.ShortTag() {
	case "!!str":
		return fmt.Sprintf("the string %q", n.Value)
	case "!!int", "!!float":
		return "the number " + n.Value
	case "!!bool":
		return "the boolean " + n.Value
	}
	return fmt.Sprintf("%q", n.Value)
}

// quoteHint suggests quoting a scalar that YAML read as a number, boolean or date.
func quoteHint(n *yaml.Node) string {
	if n.Kind == yaml.ScalarNode {
		return fmt.Sprintf(", not %s: quote it (%q) if it is meant as text", describe(n), n.Value)
	}
	return ", not " + describe(n)
}

// suggest proposes a known field a few edits away from an unknown one.
func suggest(name string, fields map[string]fieldInfo) string {
	best, bestDist := "", 3
	for known := range fields {
		if dist := editDistance(strings.ToLower(name), strings.ToLower(known)); dist < bestDist || (dist == bestDist && best != "" && known < best) {
			best, bestDist = known, dist
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
