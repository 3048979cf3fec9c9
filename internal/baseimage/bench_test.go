package baseimage

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// BenchmarkBuild reports what building the base images costs: a warm build (everything cached:
// the inputs are checked, nothing is built, and the images are pushed to an empty registry, then
// again to the same one) and the images' sizes. With FERRY_BASEIMAGE_COLD=1 it first builds
// everything from nothing into a fresh cache (debootstrap, apt, the Go toolchain: minutes) and
// reports each step's time; FERRY_BASEIMAGE_DIGESTS=<file> writes the digests there, to compare
// two cold builds.
func BenchmarkBuild(b *testing.B) {
	if err := Available(); err != nil {
		b.Skipf("this machine cannot build base images: %v", err)
	}
	cacheDir := testCacheDir(b)
	cold := os.Getenv("FERRY_BASEIMAGE_COLD") == "1"
	if cold {
		cacheDir = b.TempDir()
	}
	for b.Loop() {
		reg, ropts := startRegistry(b)
		opts := Options{CacheDir: cacheDir, Registry: reg.Host, Remote: ropts}
		start := time.Now()
		first, err := Build(b.Context(), opts)
		if err != nil {
			b.Fatal(err)
		}
		firstTime := time.Since(start)
		logFigures(b, first)
		if cold {
			b.ReportMetric(firstTime.Seconds(), "cold_build_s")
			for _, s := range first.Steps {
				b.ReportMetric(s.BuildDuration.Seconds(), unit(s.Name, "cold_s"))
			}
		} else {
			b.ReportMetric(firstTime.Seconds(), "warm_build_empty_registry_s")
		}
		start = time.Now()
		if _, err := Build(b.Context(), opts); err != nil {
			b.Fatal(err)
		}
		b.ReportMetric(time.Since(start).Seconds(), "warm_build_s")
		for _, img := range first.Images {
			b.ReportMetric(float64(img.Size)/1e6, unit(img.Name, "MB"))
		}
		if p := os.Getenv("FERRY_BASEIMAGE_DIGESTS"); p != "" {
			digests := map[string]string{}
			for _, s := range first.Steps {
				digests["layer "+s.Name] = s.Layer
			}
			for _, img := range first.Images {
				digests["image "+img.Name] = img.Ref[len(reg.Host)+1:]
			}
			data, _ := json.MarshalIndent(digests, "", "  ")
			if err := os.WriteFile(filepath.Clean(p), data, 0o644); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// unit makes a metric unit of a step or image name: letters, digits and underscores.
func unit(name, suffix string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' {
			return r
		}
		return '_'
	}, name) + "_" + suffix
}
