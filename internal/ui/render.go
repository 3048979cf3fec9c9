package ui

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strings"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/ferryci/ferry/internal/ui/auth"
)

//go:embed templates/*.html
var templateFS embed.FS

//go:embed static
var staticFS embed.FS

// staticHandler serves the stylesheet, the script and the icon, cacheable for a while.
func staticHandler() http.Handler {
	sub, err := fs.Sub(staticFS, "static")
	if err != nil {
		panic(err)
	}
	files := http.StripPrefix("/static/", http.FileServerFS(sub))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "public, max-age=300")
		files.ServeHTTP(w, r)
	})
}

// pages holds one template set per page, each with the layout and the shared parts.
type pages struct {
	sets map[string]*template.Template
}

var pageNames = []string{"signin", "error", "waiting", "releases", "release", "environments", "builds", "build", "audit", "previews", "week"}

func loadPages() (*pages, error) {
	p := &pages{sets: map[string]*template.Template{}}
	for _, name := range pageNames {
		t, err := template.New(name).Funcs(funcs).ParseFS(templateFS, "templates/layout.html", "templates/parts.html", "templates/"+name+".html")
		if err != nil {
			return nil, fmt.Errorf("failed to parse the %s page: %w", name, err)
		}
		p.sets[name] = t
	}
	return p, nil
}

// layout is what every page's template gets.
type layout struct {
	Title string
	// Nav names the current section of the navigation.
	Nav string
	// Session is the signed-in person; nil on the sign-in and error pages when signed out.
	Session *auth.Session
	// CSRF is the token every form sends back.
	CSRF string
	// Live lists the kinds whose changes refresh the page, comma-separated.
	Live string
	// Flash is a one-time message, such as "your decision was recorded".
	Flash string
	// Page is the page's own data.
	Page any
}

// render writes a page. A page that fails to render becomes a plain error, never half a page.
func (s *Server) render(w http.ResponseWriter, r *http.Request, sess *auth.Session, status int, page, title string, data any) {
	l := layout{Title: title, Nav: page, Session: sess, Page: data}
	if sess != nil {
		tok, err := s.sessions.CSRFToken(r.Context(), sess)
		if err != nil {
			http.Error(w, err.Error(), http.StatusServiceUnavailable)
			return
		}
		l.CSRF = tok
		l.Live = liveKinds[page]
		l.Flash = s.takeFlash(w, r)
	}
	var buf bytes.Buffer
	if err := s.pages.sets[page].ExecuteTemplate(&buf, "layout", l); err != nil {
		s.log.Error(err, "Cannot render a page", "page", page)
		http.Error(w, "failed to render the page", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_, _ = w.Write(buf.Bytes())
}

// liveKinds says which changes refresh which page.
var liveKinds = map[string]string{
	"waiting":      "Release,Approval,Environment,Build",
	"releases":     "Release",
	"release":      "Release,Approval,Project,Environment",
	"environments": "Release,Project,Environment,Freeze",
	"builds":       "Build",
	"build":        "Build",
	"audit":        "Approval",
	"week":         "Environment,Freeze",
}

type errorData struct{ Heading, Message string }

func (s *Server) renderError(w http.ResponseWriter, r *http.Request, sess *auth.Session, status int, heading, message string) {
	s.render(w, r, sess, status, "error", heading, errorData{Heading: heading, Message: message})
}

// flashCookie carries a one-time message across a redirect, sealed so that nobody else's link can
// put words in the UI's mouth.
const flashCookie = "ferry-flash"

type flash struct {
	Message string `json:"m"`
	Expires int64  `json:"e"`
}

func (s *Server) setFlash(w http.ResponseWriter, r *http.Request, message string) {
	v, err := s.sessions.Store.Seal(r.Context(), flashCookie, flash{Message: message, Expires: time.Now().Add(time.Minute).Unix()})
	if err == nil {
		http.SetCookie(w, s.sessions.Cookies.Cookie(flashCookie, v, time.Minute))
	}
}

func (s *Server) takeFlash(w http.ResponseWriter, r *http.Request) string {
	ck, err := r.Cookie(flashCookie)
	if err != nil || r.Header.Get(refreshHeader) != "" {
		return ""
	}
	http.SetCookie(w, s.sessions.Cookies.Cookie(flashCookie, "", -1))
	var f flash
	if s.sessions.Store.Unseal(r.Context(), flashCookie, ck.Value, &f) != nil || time.Now().Unix() > f.Expires {
		return ""
	}
	return f.Message
}

// refreshHeader marks the page fetches of the live-update script, which must not consume a flash.
const refreshHeader = "X-Ferry-Refresh"

var funcs = template.FuncMap{
	"shortDigest": shortDigest,
	"shortImage":  shortImage,
	"shortSHA":    shortSHA,
	"repository":  repository,
	"ago":         ago,
	"stamp":       stamp,
	"iso":         iso,
	"duration":    duration,
	"percent": func(part, whole int32) int {
		if whole <= 0 {
			return 0
		}
		return int(part) * 100 / int(whole)
	},
	"join":  strings.Join,
	"lower": strings.ToLower,
	"gate": func(g gateView, csrf, from string) gateForm {
		return gateForm{Gate: g, CSRF: csrf, From: from}
	},
	"commitURL": commitURL,
}

// gateForm is what the decision form of a gate needs.
type gateForm struct {
	Gate gateView
	CSRF string
	// From says which page the form is on, so a refused decision comes back to it.
	From string
}

// shortDigest keeps "sha256:" and 12 hex digits.
func shortDigest(d string) string {
	if i := strings.LastIndex(d, "@"); i >= 0 {
		d = d[i+1:]
	}
	if strings.HasPrefix(d, "sha256:") && len(d) > 19 {
		return d[:19]
	}
	return d
}

// shortImage is the repository's last path element and the short digest.
func shortImage(image string) string {
	if image == "" {
		return ""
	}
	repo, digest, ok := strings.Cut(image, "@")
	if i := strings.LastIndex(repo, "/"); i >= 0 {
		repo = repo[i+1:]
	}
	if !ok {
		return repo
	}
	return repo + "@" + shortDigest(digest)
}

// repository is an image without its digest.
func repository(image string) string {
	repo, _, _ := strings.Cut(image, "@")
	return repo
}

func shortSHA(sha string) string {
	if len(sha) > 8 {
		return sha[:8]
	}
	return sha
}

func commitURL(gitlabURL, projectPath, sha string) string {
	if gitlabURL == "" || projectPath == "" || sha == "" {
		return ""
	}
	return strings.TrimSuffix(gitlabURL, "/") + "/" + projectPath + "/-/commit/" + sha
}

func timeOf(v any) (time.Time, bool) {
	switch t := v.(type) {
	case *metav1.Time:
		if t == nil || t.IsZero() {
			return time.Time{}, false
		}
		return t.Time, true
	case metav1.Time:
		return t.Time, !t.IsZero()
	case time.Time:
		return t, !t.IsZero()
	}
	return time.Time{}, false
}

// ago says how long ago (or how far ahead) a time is, in words; the script keeps it current.
func ago(v any) string {
	t, ok := timeOf(v)
	if !ok {
		return ""
	}
	return relative(time.Since(t))
}

func relative(d time.Duration) string {
	future := d < 0
	if future {
		d = -d
	}
	var s string
	switch {
	case d < time.Minute:
		s = "less than a minute"
	case d < time.Hour:
		s = plural(int(d.Minutes()), "minute")
	case d < 48*time.Hour:
		s = plural(int(d.Hours()), "hour")
	default:
		s = plural(int(d.Hours()/24), "day")
	}
	if future {
		return "in " + s
	}
	return s + " ago"
}

func plural(n int, unit string) string {
	if n == 1 {
		return "1 " + unit
	}
	return fmt.Sprintf("%d %ss", n, unit)
}

// stamp is a time in UTC for people.
func stamp(v any) string {
	t, ok := timeOf(v)
	if !ok {
		return ""
	}
	return t.UTC().Format("2006-01-02 15:04 UTC")
}

// iso is a time for the datetime attribute.
func iso(v any) string {
	t, ok := timeOf(v)
	if !ok {
		return ""
	}
	return t.UTC().Format(time.RFC3339)
}

// duration is how long from start to end (or to now).
func duration(start, end any) string {
	s, ok := timeOf(start)
	if !ok {
		return ""
	}
	e, ok := timeOf(end)
	if !ok {
		e = time.Now()
	}
	d := e.Sub(s).Round(time.Second)
	if d < 0 {
		return ""
	}
	return d.String()
}
