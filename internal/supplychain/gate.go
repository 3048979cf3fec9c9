package supplychain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
)

// Policy is what an image must prove before a rollout.
type Policy struct {
	// Keys are the trusted keys.
	Keys []Key
	// RequireSignature, RequireProvenance and RequireSBOM say which proofs are required.
	RequireSignature, RequireProvenance, RequireSBOM bool
	// Harbor, when set, checks the image's Harbor scan.
	Harbor *HarborScan
}

// HarborScan reads scan results through Harbor's scan-overview API.
type HarborScan struct {
	// URL is Harbor's base URL.
	URL string
	// Username and Password authenticate with HTTP Basic; empty is anonymous.
	Username, Password string
	// RefuseAtOrAbove is the lowest severity refused: Low, Medium, High or Critical.
	RefuseAtOrAbove string
	// Client makes the requests; nil uses a client with a 30 s timeout.
	Client *http.Client
}

// Expect is what the provenance must name.
type Expect struct {
	// Repository is the Release's Project repository, Revision its commit.
	Repository, Revision string
}

// Verdict is the outcome of a gate check.
type Verdict struct {
	// Refused says what failed; "" when the image passed.
	Refused string
	// Passed lists the checks that passed, for people.
	Passed []string
	// SignedBy names the key whose signature verified, when a signature was required.
	SignedBy string
	// ScanSeverity is the Harbor scan's highest severity, when the policy reads it.
	ScanSeverity string
	// Provenance is the verified provenance, when there is one.
	Provenance *Provenance
	// SBOM is the image's SBOM, when there is one.
	SBOM *SBOM
	// Duration is how long the check took.
	Duration time.Duration
}

// Check runs the policy's checks on the image. A definite failure is a Verdict with Refused; an
// error means the checks could not run (the registry or Harbor unreachable, a 5xx answer) and
// may be tried again.
func Check(ctx context.Context, img name.Digest, pol Policy, want Expect, opts ...remote.Option) (*Verdict, error) {
	start := time.Now()
	v := &Verdict{}
	defer func() { v.Duration = time.Since(start) }()
	refuse := func(err error) (*Verdict, error) {
		if transient(err) {
			return nil, err
		}
		v.Refused = err.Error()
		return v, nil
	}
	if pol.RequireSignature {
		by, err := VerifySignature(img, pol.Keys, opts...)
		if err != nil {
			return refuse(err)
		}
		v.SignedBy = by
		v.Passed = append(v.Passed, "signed by "+by)
	}
	if pol.RequireProvenance {
		p, by, err := VerifyProvenance(img, pol.Keys, opts...)
		if err != nil {
			return refuse(err)
		}
		v.Provenance = p
		if !SameRepository(p.Repository, want.Repository) {
			return refuse(fmt.Errorf("provenance: built from %s, not the Project's repository %s", p.Repository, want.Repository))
		}
		if want.Revision == "" || p.Revision != want.Revision {
			return refuse(fmt.Errorf("provenance: built from commit %s, not the Release's revision %q", p.Revision, want.Revision))
		}
		v.Passed = append(v.Passed, fmt.Sprintf("provenance by %s: %s at %.12s, Build %s", by, p.Repository, p.Revision, p.Build))
	}
	if pol.RequireSBOM {
		s, _, err := FetchSBOM(img, opts...)
		if err != nil {
			return refuse(fmt.Errorf("SBOM: %w", err))
		}
		v.SBOM = s
		v.Passed = append(v.Passed, fmt.Sprintf("SBOM with %d packages", len(s.Packages())))
	}
	if pol.Harbor != nil {
		sev, err := pol.Harbor.severity(ctx, img)
		if err != nil {
			return refuse(err)
		}
		v.ScanSeverity = sev
		if severityRank(sev) >= severityRank(pol.Harbor.RefuseAtOrAbove) {
			return refuse(fmt.Errorf("harbor scan: severity %s, at or above %s", sev, pol.Harbor.RefuseAtOrAbove))
		}
		v.Passed = append(v.Passed, "Harbor scan severity "+sev)
	}
	return v, nil
}

// SameRepository compares repository URLs without credentials, a trailing .git or slash, or the
// host's case.
func SameRepository(a, b string) bool {
	norm := func(s string) string {
		s = strings.TrimSuffix(strings.TrimSuffix(s, "/"), ".git")
		if u, err := url.Parse(s); err == nil && u.Host != "" {
			u.User, u.Host = nil, strings.ToLower(u.Host)
			return u.String()
		}
		return s
	}
	return a != "" && norm(a) == norm(b)
}

// transientError marks a failure to check, not a failed check.
type transientError struct{ error }

func (e transientError) Unwrap() error { return e.error }

// transient says whether an error is the registry's or Harbor's trouble rather than the image's.
func transient(err error) bool {
	var te *transport.Error
	if errors.As(err, &te) {
		return te.StatusCode >= 500 || te.StatusCode == http.StatusTooManyRequests
	}
	var ne net.Error
	var tr transientError
	return errors.As(err, &ne) || errors.As(err, &tr)
}

// Harbor's severity ladder (src/pkg/scan/vuln/severity.go); anything else ranks above Critical.
var severities = map[string]int{"None": 0, "Unknown": 0, "Negligible": 1, "Low": 2, "Medium": 3, "High": 4, "Critical": 5}

func severityRank(s string) int {
	if r, ok := severities[s]; ok {
		return r
	}
	return 99
}

// reportMimeTypes are the scan report types asked for, preferred first.
var reportMimeTypes = []string{
	"application/vnd.security.vulnerability.report; version=1.1",
	"application/vnd.scanner.adapter.vuln.report.harbor+json; version=1.0",
}

// severity reads the image's scan overview. An image Harbor has not scanned, or whose scan did
// not succeed, is refused.
func (h *HarborScan) severity(ctx context.Context, img name.Digest) (string, error) {
	project, repo, ok := strings.Cut(img.Context().RepositoryStr(), "/")
	if !ok {
		return "", fmt.Errorf("harbor scan: repository %s has no Harbor project", img.Context().RepositoryStr())
	}
	u := strings.TrimSuffix(h.URL, "/") + "/api/v2.0/projects/" + url.PathEscape(project) + "/repositories/" +
		url.PathEscape(url.PathEscape(repo)) + "/artifacts/" + img.DigestStr() + "?with_scan_overview=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("X-Accept-Vulnerabilities", strings.Join(reportMimeTypes, ", "))
	if h.Username != "" {
		req.SetBasicAuth(h.Username, h.Password)
	}
	c := h.Client
	if c == nil {
		c = &http.Client{Timeout: 30 * time.Second}
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", transientError{fmt.Errorf("harbor scan: %w", err)}
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	if err != nil {
		return "", transientError{fmt.Errorf("harbor scan: %w", err)}
	}
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return "", fmt.Errorf("harbor scan: Harbor has no artifact %s", img.DigestStr())
	case resp.StatusCode >= 500 || resp.StatusCode == http.StatusTooManyRequests:
		return "", transientError{fmt.Errorf("harbor scan: Harbor answered %s", resp.Status)}
	case resp.StatusCode != http.StatusOK:
		return "", fmt.Errorf("harbor scan: Harbor answered %s", resp.Status)
	}
	var art struct {
		Digest       string `json:"digest"`
		ScanOverview map[string]struct {
			ScanStatus string `json:"scan_status"`
			Severity   string `json:"severity"`
		} `json:"scan_overview"`
	}
	if err := json.Unmarshal(body, &art); err != nil {
		return "", fmt.Errorf("harbor scan: the artifact is not JSON: %w", err)
	}
	if art.Digest != "" && art.Digest != img.DigestStr() {
		return "", fmt.Errorf("harbor scan: Harbor answered for %s, not %s", art.Digest, img.DigestStr())
	}
	for _, mt := range reportMimeTypes {
		o, ok := art.ScanOverview[mt]
		if !ok {
			continue
		}
		if o.ScanStatus != "Success" {
			return "", fmt.Errorf("harbor scan: the scan of %s is %s, not Success", img.DigestStr(), o.ScanStatus)
		}
		return o.Severity, nil
	}
	return "", fmt.Errorf("harbor scan: %s has not been scanned", img.DigestStr())
}
