package release

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"

	ferryv1 "github.com/ferryci/ferry/apis/v1alpha1"
	"github.com/ferryci/ferry/internal/image"
	"github.com/ferryci/ferry/internal/rollout"
	"github.com/ferryci/ferry/internal/supplychain"
	"github.com/ferryci/ferry/internal/text"
	"github.com/ferryci/ferry/internal/verify"
)

// packageDiffTimeout bounds the reads of the two SBOMs: the comparison is for people, and a
// registry in trouble must not hold a rollout the gate let through.
const packageDiffTimeout = 20 * time.Second

// packageDiffBackoff retries a failing registry briefly, for the same reason.
var packageDiffBackoff = image.Backoff{Duration: 200 * time.Millisecond, Factor: 2, Jitter: 0.1, Steps: 2}

// packageDiff compares the packages of the image running in env with the Release's image, from
// their SBOMs (issue 17), so the UI and `ferry get release -o wide` show what a promotion changes
// without a registry client of their own. Nil when nothing else ran there before. It never fails:
// what keeps the comparison from being made is recorded as unavailable.
func (r *Reconciler) packageDiff(ctx context.Context, p *plan, env string, v *supplychain.Verdict) *ferryv1.PackageDiff {
	cur := deployedIn(p.project, env)
	if cur == nil || cur.Image == "" || cur.Image == p.image {
		return nil
	}
	d := &ferryv1.PackageDiff{From: cur.Image}
	from, to, err := r.readSBOMs(ctx, p, cur.Image, v)
	if err != nil {
		d.Unavailable = verify.Redact(err.Error()) // at most verify.MaxOutput characters, credentials hidden
		return d
	}
	summarizeDiff(d, supplychain.DiffPackages(from.Packages(), to.Packages()))
	return d
}

// readSBOMs reads the SBOM of the running image and, unless the gate read it already, the
// Release image's.
func (r *Reconciler) readSBOMs(ctx context.Context, p *plan, running string, v *supplychain.Verdict) (from, to *supplychain.SBOM, err error) {
	ctx, cancel := context.WithTimeout(ctx, packageDiffTimeout)
	defer cancel()
	backoff := packageDiffBackoff
	c, err := r.registryClient(p, &backoff)
	if err != nil {
		return nil, nil, err
	}
	fetch := func(img string) (*supplychain.SBOM, error) {
		ref, err := c.ParseReference(img)
		if err != nil {
			return nil, err
		}
		d, ok := ref.(name.Digest)
		if !ok {
			return nil, fmt.Errorf("%s is not pinned by digest", img)
		}
		s, _, err := supplychain.FetchSBOM(d, c.RemoteOptions(ctx)...)
		if errors.Is(err, supplychain.ErrNoSBOM) {
			return nil, fmt.Errorf("no SBOM for %s", rollout.ShortImage(img))
		}
		var te *transport.Error
		if errors.As(err, &te) {
			// go-containerregistry's message names the registry's error code, not its status.
			return nil, fmt.Errorf("cannot read the SBOM of %s: the registry answered %d %s: %w", rollout.ShortImage(img), te.StatusCode, http.StatusText(te.StatusCode), err)
		}
		if err != nil {
			return nil, fmt.Errorf("cannot read the SBOM of %s: %w", rollout.ShortImage(img), err)
		}
		return s, nil
	}
	if from, err = fetch(running); err != nil {
		return nil, nil, err
	}
	if v != nil && v.SBOM != nil {
		return from, v.SBOM, nil
	}
	to, err = fetch(p.image)
	return from, to, err
}

// summarizeDiff counts each kind of change into d and lists the first MaxPackageChanges: added,
// removed, upgraded, downgraded, then changed packages, each kind in DiffPackages' order.
func summarizeDiff(d *ferryv1.PackageDiff, diff supplychain.Diff) {
	byKind := map[string][]ferryv1.PackageChange{}
	for _, p := range diff.Added {
		byKind[supplychain.ChangeAdded] = append(byKind[supplychain.ChangeAdded], packageChange(supplychain.ChangeAdded, p.Type, p.Name, "", p.Version))
	}
	for _, p := range diff.Removed {
		byKind[supplychain.ChangeRemoved] = append(byKind[supplychain.ChangeRemoved], packageChange(supplychain.ChangeRemoved, p.Type, p.Name, p.Version, ""))
	}
	for _, c := range diff.Changed {
		k := c.Kind()
		byKind[k] = append(byKind[k], packageChange(k, c.Type, c.Name, c.From, c.To))
	}
	count := func(k string) int32 { return int32(min(len(byKind[k]), 1<<30)) }
	d.Added, d.Removed, d.Upgraded = count(supplychain.ChangeAdded), count(supplychain.ChangeRemoved), count(supplychain.ChangeUpgraded)
	d.Downgraded, d.Changed = count(supplychain.ChangeDowngraded), count(supplychain.ChangeChanged)
	d.Changes = nil
	for _, k := range []string{supplychain.ChangeAdded, supplychain.ChangeRemoved, supplychain.ChangeUpgraded, supplychain.ChangeDowngraded, supplychain.ChangeChanged} {
		for _, c := range byKind[k] {
			if len(d.Changes) == ferryv1.MaxPackageChanges {
				return
			}
			d.Changes = append(d.Changes, c)
		}
	}
}

// packageChange is one entry of the list, cut to the status fields' maximums: an SBOM is signed
// data, but not validated by the cluster's API.
func packageChange(kind, typ, name, from, to string) ferryv1.PackageChange {
	return ferryv1.PackageChange{Kind: kind, Type: text.Truncate(typ, 32), Name: text.Truncate(name, 512), From: text.Truncate(from, 256), To: text.Truncate(to, 256)}
}
