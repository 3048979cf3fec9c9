package baseimage

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseOneLineSources(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []AptSource
		wantErr string
	}{
		{
			name: "entries, comments and blank lines",
			in: "# the main archive\n" +
				"deb http://deb.debian.org/debian bookworm main contrib\n" +
				"\n" +
				"deb-src http://deb.debian.org/debian bookworm main   # sources too\n" +
				"   deb http://security.debian.org/debian-security bookworm-security main\n",
			want: []AptSource{
				{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm"}, Components: []string{"main", "contrib"}, File: "f", Line: 2},
				{Types: []string{"deb-src"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm"}, Components: []string{"main"}, File: "f", Line: 4},
				{Types: []string{"deb"}, URIs: []string{"http://security.debian.org/debian-security"}, Suites: []string{"bookworm-security"}, Components: []string{"main"}, File: "f", Line: 5},
			},
		},
		{
			name: "options in brackets, with and without spaces",
			in: "deb [arch=amd64 signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] https://mirror.example/debian bookworm main\n" +
				"deb [ trusted=yes ] file:/srv/mirror bookworm main\n",
			want: []AptSource{
				{Types: []string{"deb"}, URIs: []string{"https://mirror.example/debian"}, Suites: []string{"bookworm"}, Components: []string{"main"}, File: "f", Line: 1},
				{Types: []string{"deb"}, URIs: []string{"file:/srv/mirror"}, Suites: []string{"bookworm"}, Components: []string{"main"}, File: "f", Line: 2},
			},
		},
		{
			name: "a flat repository has no components",
			in:   "deb https://repo.example/apt ./\n",
			want: []AptSource{{Types: []string{"deb"}, URIs: []string{"https://repo.example/apt"}, Suites: []string{"./"}, File: "f", Line: 1}},
		},
		{name: "only comments", in: "# nothing here\n\n"},
		{name: "unknown type", in: "rpm http://x/ y main\n", wantErr: `f:1: the type "rpm" is neither deb nor deb-src`},
		{name: "missing suite", in: "deb http://deb.debian.org/debian\n", wantErr: "f:1: want"},
		{name: "unclosed options", in: "deb [arch=amd64 http://x bookworm main\n", wantErr: "f:1: the options opened with [ are not closed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseOneLineSources("f", []byte(tt.in))
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func TestParseDeb822Sources(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []AptSource
		wantErr string
	}{
		{
			name: "Debian 12's default file: two paragraphs, comments inside",
			in: "Types: deb\n" +
				"# http://snapshot.debian.org/archive/debian/20250520T000000Z\n" +
				"URIs: http://deb.debian.org/debian\n" +
				"Suites: bookworm bookworm-updates\n" +
				"Components: main\n" +
				"Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n" +
				"\n" +
				"Types: deb\n" +
				"URIs: http://deb.debian.org/debian-security\n" +
				"Suites: bookworm-security\n" +
				"Components: main\n",
			want: []AptSource{
				{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian"}, Suites: []string{"bookworm", "bookworm-updates"}, Components: []string{"main"}, File: "f", Line: 1},
				{Types: []string{"deb"}, URIs: []string{"http://deb.debian.org/debian-security"}, Suites: []string{"bookworm-security"}, Components: []string{"main"}, File: "f", Line: 8},
			},
		},
		{
			name: "case-insensitive fields, several types and URIs, continuation lines, extra blank lines",
			in: "\n\n" +
				"types: deb deb-src\n" +
				"uris: https://a.example/debian\n" +
				"  https://b.example/debian\n" +
				"SUITES: bookworm\n" +
				"Components: main\n" +
				"Signed-By:\n" +
				" -----BEGIN PGP PUBLIC KEY BLOCK-----\n" +
				" .\n" +
				" mQINBF...\n" +
				"\n\n",
			want: []AptSource{{
				Types: []string{"deb", "deb-src"}, URIs: []string{"https://a.example/debian", "https://b.example/debian"},
				Suites: []string{"bookworm"}, Components: []string{"main"}, File: "f", Line: 3,
			}},
		},
		{
			name: "Enabled: no leaves a paragraph out",
			in: "Types: deb\nURIs: http://off.example/debian\nSuites: bookworm\nComponents: main\nEnabled: no\n\n" +
				"Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\nComponents: main\nEnabled: yes\n",
			want: []AptSource{{Types: []string{"deb"}, URIs: []string{"http://on.example/debian"}, Suites: []string{"bookworm"}, Components: []string{"main"}, File: "f", Line: 7}},
		},
		{name: "no URIs", in: "Types: deb\nSuites: bookworm\n", wantErr: "the entry at line 1 has no URIs field"},
		{name: "a line without a colon", in: "Types deb\n", wantErr: `f:1: want "Field: value"`},
		{name: "continuation first", in: " bookworm\n", wantErr: "f:1: a continuation line with no field before it"},
		{name: "unknown type", in: "Types: rpm\nURIs: http://x/\nSuites: y\n", wantErr: `the type "rpm" is neither deb nor deb-src`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseDeb822Sources("f", []byte(tt.in))
			checkParse(t, got, err, tt.want, tt.wantErr)
		})
	}
}

func checkParse(t *testing.T, got []AptSource, err error, want []AptSource, wantErr string) {
	t.Helper()
	if wantErr != "" {
		if err == nil || !strings.Contains(err.Error(), wantErr) {
			t.Fatalf("error = %v, want one containing %q", err, wantErr)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got  %+v\nwant %+v", got, want)
	}
}

func TestReadAptSourcesOrderAndFiles(t *testing.T) {
	root := t.TempDir()
	write := func(p, content string) {
		t.Helper()
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("etc/apt/sources.list", "deb http://one.example/debian bookworm main\n")
	write("etc/apt/sources.list.d/b.sources", "Types: deb\nURIs: http://three.example/debian\nSuites: bookworm\nComponents: main\n")
	write("etc/apt/sources.list.d/a.list", "deb http://two.example/debian bookworm main\n")
	// apt ignores these, and so must the build.
	write("etc/apt/sources.list.d/c.list.disabled-by-farm", "deb http://no.example/debian bookworm main\n")
	write("etc/apt/sources.list.d/d.sources.save", "Types: deb\nURIs: http://no.example/debian\nSuites: bookworm\n")
	got, err := ReadAptSources(root)
	if err != nil {
		t.Fatal(err)
	}
	var uris []string
	for _, s := range got {
		uris = append(uris, s.URIs...)
	}
	want := []string{"http://one.example/debian", "http://two.example/debian", "http://three.example/debian"}
	if !reflect.DeepEqual(uris, want) {
		t.Fatalf("URIs in order = %v, want %v", uris, want)
	}
	if got[1].Where() != filepath.Join(root, "etc/apt/sources.list.d/a.list")+":1" {
		t.Errorf("Where() = %s", got[1].Where())
	}

	// A syntax error names the file and line.
	write("etc/apt/sources.list.d/e.list", "deb\n")
	if _, err := ReadAptSources(root); err == nil || !strings.Contains(err.Error(), "e.list:1") {
		t.Fatalf("error = %v, want one naming e.list:1", err)
	}
}

func TestArchiveURI(t *testing.T) {
	src := func(typ, uri, suite string, components ...string) AptSource {
		return AptSource{Types: []string{typ}, URIs: []string{uri}, Suites: []string{suite}, Components: components, File: "/etc/apt/sources.list", Line: 1}
	}
	tests := []struct {
		name    string
		sources []AptSource
		want    string
		wantErr []string
	}{
		{
			name: "the entry for the suite wins over earlier entries for other suites",
			sources: []AptSource{
				src("deb", "http://security.debian.org/debian-security", "bookworm-security", "main"),
				src("deb-src", "http://src.example/debian", "bookworm", "main"),
				src("deb", "http://deb.debian.org/debian/", "bookworm", "main"),
			},
			want: "http://deb.debian.org/debian",
		},
		{
			name:    "a deb822 entry with several suites",
			sources: []AptSource{{Types: []string{"deb"}, URIs: []string{"https://mirror.example/debian"}, Suites: []string{"bookworm-updates", "bookworm"}, Components: []string{"main", "non-free-firmware"}}},
			want:    "https://mirror.example/debian",
		},
		{
			name: "another release's archive serves bookworm too",
			sources: []AptSource{
				src("deb", "http://deb.debian.org/debian-security", "trixie-security", "main"),
				src("deb", "http://deb.debian.org/debian", "trixie", "main"),
			},
			want: "http://deb.debian.org/debian",
		},
		{
			name: "credentials and unsupported schemes are passed over",
			sources: []AptSource{
				src("deb", "https://user:secret@private.example/debian", "bookworm", "main"),
				src("deb", "mirror+file:/etc/apt/mirrors.txt", "bookworm", "main"),
				src("deb", "file:/srv/debian", "bookworm", "main"),
			},
			want: "file:/srv/debian",
		},
		{
			name:    "no sources at all",
			wantErr: []string{"this machine has no apt sources", "deb entry for bookworm main"},
		},
		{
			name: "nothing usable: the error says why, without the password",
			sources: []AptSource{
				src("deb", "https://user:secret@private.example/debian", "bookworm", "main"),
				src("deb", "cdrom:[Debian 12]/", "bookworm", "main"),
				src("deb", "http://deb.debian.org/debian", "bookworm", "contrib"),
				src("deb", "http://deb.debian.org/debian-security", "bookworm-security", "main"),
			},
			wantErr: []string{"none of this machine's 4 apt sources", "carries credentials", "cannot fetch from cdrom"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ArchiveURI(tt.sources, "bookworm")
			if len(tt.wantErr) > 0 {
				if err == nil {
					t.Fatalf("got %q, want an error", got)
				}
				for _, w := range tt.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("error %q does not contain %q", err, w)
					}
				}
				if strings.Contains(err.Error(), "secret") {
					t.Errorf("error %q shows the password", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Fatalf("got %q, want %q", got, tt.want)
			}
		})
	}
}

// A machine without apt sources cannot build the stack, and Build says so before doing anything.
func TestBuildWithoutAptSources(t *testing.T) {
	if err := Available(); err != nil {
		t.Skipf("this machine cannot build base images: %v", err)
	}
	_, err := Build(t.Context(), Options{CacheDir: t.TempDir(), Registry: "127.0.0.1:1", sourcesRoot: t.TempDir(), GoVersion: "go1.26.0"})
	if err == nil || !strings.Contains(err.Error(), "this machine has no apt sources") {
		t.Fatalf("error = %v, want one saying there are no apt sources", err)
	}
}
