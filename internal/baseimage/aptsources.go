package baseimage

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// AptSource is one entry of the machine's apt sources: a line of a one-line-style .list file, or a
// paragraph of a deb822-style .sources file (which may name several URIs and suites).
type AptSource struct {
	// Types are "deb" and/or "deb-src".
	Types []string
	// URIs are the archive addresses.
	URIs []string
	// Suites are the distributions (bookworm, bookworm-updates, stable, ...).
	Suites []string
	// Components are the archive areas (main, contrib, ...).
	Components []string
	// File and Line say where the entry was read (the paragraph's first line for deb822).
	File string
	Line int
}

// Where names the entry's file and line, for messages.
func (s AptSource) Where() string { return fmt.Sprintf("%s:%d", s.File, s.Line) }

// aptSourcesDir and aptSourcesList are where apt reads its sources, relative to the machine's root.
const (
	aptSourcesList = "etc/apt/sources.list"
	aptSourcesDir  = "etc/apt/sources.list.d"
)

// ReadAptSources reads the apt sources of the machine whose root directory is root ("/" for this
// machine): etc/apt/sources.list, then etc/apt/sources.list.d/*.list and *.sources in name order,
// as apt does. Entries disabled with "Enabled: no" are left out; other files of the directory
// (*.disabled, *.save) are ignored, as apt ignores them. Missing files are not an error: the
// result is then empty.
func ReadAptSources(root string) ([]AptSource, error) {
	files := []string{filepath.Join(root, aptSourcesList)}
	dir := filepath.Join(root, aptSourcesDir)
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("failed to read the apt sources directory %s: %w", dir, err)
	}
	for _, e := range entries {
		if !e.IsDir() && (strings.HasSuffix(e.Name(), ".list") || strings.HasSuffix(e.Name(), ".sources")) {
			files = append(files, filepath.Join(dir, e.Name()))
		}
	}
	var out []AptSource
	for _, f := range files {
		data, err := os.ReadFile(f)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("failed to read the apt sources %s: %w", f, err)
		}
		var parsed []AptSource
		if strings.HasSuffix(f, ".sources") {
			parsed, err = parseDeb822Sources(f, data)
		} else {
			parsed, err = parseOneLineSources(f, data)
		}
		if err != nil {
			return nil, err
		}
		out = append(out, parsed...)
	}
	return out, nil
}

// parseOneLineSources reads the one-line format of sources.list(5):
//
//	deb [ option=value ... ] uri suite [component ...]   # comment
func parseOneLineSources(file string, data []byte) ([]AptSource, error) {
	var out []AptSource
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		if i := strings.IndexByte(line, '#'); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		typ := fields[0]
		if typ != "deb" && typ != "deb-src" {
			return nil, fmt.Errorf("apt sources %s:%d: the type %q is neither deb nor deb-src", file, n, typ)
		}
		rest := fields[1:]
		// Options: "[arch=amd64 signed-by=/k.gpg]", possibly with spaces after "[" and before "]".
		if len(rest) > 0 && strings.HasPrefix(rest[0], "[") {
			end := slices.IndexFunc(rest, func(f string) bool { return strings.HasSuffix(f, "]") })
			if end < 0 {
				return nil, fmt.Errorf("apt sources %s:%d: the options opened with [ are not closed with ]", file, n)
			}
			rest = rest[end+1:]
		}
		if len(rest) < 2 {
			return nil, fmt.Errorf("apt sources %s:%d: want %q, got %q", file, n, typ+" URI SUITE [COMPONENT...]", strings.TrimSpace(line))
		}
		var components []string
		if len(rest) > 2 {
			components = rest[2:]
		}
		out = append(out, AptSource{Types: []string{typ}, URIs: []string{rest[0]}, Suites: []string{rest[1]}, Components: components, File: file, Line: n})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the apt sources %s: %w", file, err)
	}
	return out, nil
}

// parseDeb822Sources reads the deb822 format of sources.list(5): paragraphs separated by blank
// lines, "Field: value" lines with case-insensitive field names, continuation lines starting with
// a space or tab, and comment lines starting with "#".
func parseDeb822Sources(file string, data []byte) ([]AptSource, error) {
	var out []AptSource
	fields := map[string]string{}
	start, last := 0, ""
	flush := func() error {
		if len(fields) == 0 {
			return nil
		}
		defer func() { fields, last = map[string]string{}, "" }()
		if strings.EqualFold(strings.TrimSpace(fields["enabled"]), "no") {
			return nil
		}
		s := AptSource{
			Types:      strings.Fields(fields["types"]),
			URIs:       strings.Fields(fields["uris"]),
			Suites:     strings.Fields(fields["suites"]),
			Components: strings.Fields(fields["components"]),
			File:       file,
			Line:       start,
		}
		for name, v := range map[string][]string{"Types": s.Types, "URIs": s.URIs, "Suites": s.Suites} {
			if len(v) == 0 {
				return fmt.Errorf("apt sources %s: the entry at line %d has no %s field", file, start, name)
			}
		}
		for _, t := range s.Types {
			if t != "deb" && t != "deb-src" {
				return fmt.Errorf("apt sources %s:%d: the type %q is neither deb nor deb-src", file, start, t)
			}
		}
		out = append(out, s)
		return nil
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#"):
			continue
		case strings.TrimSpace(line) == "":
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		case line[0] == ' ' || line[0] == '\t':
			if last == "" {
				return nil, fmt.Errorf("apt sources %s:%d: a continuation line with no field before it", file, n)
			}
			fields[last] += " " + strings.TrimSpace(line)
			continue
		}
		name, value, ok := strings.Cut(line, ":")
		if !ok || strings.TrimSpace(name) == "" {
			return nil, fmt.Errorf("apt sources %s:%d: want \"Field: value\", got %q", file, n, line)
		}
		if len(fields) == 0 {
			start = n
		}
		last = strings.ToLower(strings.TrimSpace(name))
		fields[last] = strings.TrimSpace(value)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("failed to read the apt sources %s: %w", file, err)
	}
	if err := flush(); err != nil {
		return nil, err
	}
	return out, nil
}

// ArchiveURI picks the Debian archive to bootstrap suite from: the first "deb" entry (in apt's
// order) that lists suite and the component main. When none does, the first "deb" entry with main
// and a suite of the archive's main part (a codename or alias such as trixie or stable, not
// bookworm-security or bookworm-updates) is taken, since a Debian archive serves every release.
// URIs debootstrap cannot fetch from (only http, https and file are supported) and URIs that
// carry credentials (they would be written into the image's sources.list; apt keeps them in
// /etc/apt/auth.conf.d) are passed over. The error lists what was read and why each entry was not
// taken.
func ArchiveURI(sources []AptSource, suite string) (string, error) {
	var rejected []string
	pick := func(exact bool) string {
		for _, s := range sources {
			if !slices.Contains(s.Types, "deb") || !slices.Contains(s.Components, "main") {
				continue
			}
			matches := slices.Contains(s.Suites, suite)
			if !exact {
				matches = slices.ContainsFunc(s.Suites, func(x string) bool { return !strings.ContainsAny(x, "-/") })
			}
			if !matches {
				continue
			}
			for _, u := range s.URIs {
				if why := unusableURI(u); why != "" {
					if exact {
						rejected = append(rejected, fmt.Sprintf("%s: %s", s.Where(), why))
					}
					continue
				}
				return strings.TrimSuffix(u, "/")
			}
		}
		return ""
	}
	if u := pick(true); u != "" {
		return u, nil
	}
	if u := pick(false); u != "" {
		return u, nil
	}
	if len(sources) == 0 {
		return "", fmt.Errorf("this machine has no apt sources (/%s, /%s/*.list, /%s/*.sources): add the Debian archive (a deb entry for %s main) to build the base images", aptSourcesList, aptSourcesDir, aptSourcesDir, suite)
	}
	msg := fmt.Sprintf("none of this machine's %d apt sources is a Debian archive for %s main that debootstrap can use", len(sources), suite)
	if len(rejected) > 0 {
		msg += " (" + strings.Join(rejected, "; ") + ")"
	}
	return "", fmt.Errorf("%s: add one to /%s or /%s", msg, aptSourcesList, aptSourcesDir)
}

// unusableURI says why debootstrap cannot (or must not) use an archive URI, or "" when it can.
func unusableURI(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "the URI cannot be parsed"
	}
	if u.User != nil {
		return "the URI carries credentials, which would end up in the image (keep them in /etc/apt/auth.conf.d)"
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Sprintf("the URI %s has no host", redactURI(raw))
		}
		return ""
	case "file":
		return ""
	default:
		return fmt.Sprintf("debootstrap cannot fetch from %s: URIs (only http, https and file)", u.Scheme)
	}
}

// redactURI drops the user information of a URI, for messages.
func redactURI(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.User == nil {
		if err != nil {
			return "(unparsable URI)"
		}
		return raw
	}
	u.User = nil
	return u.String()
}
