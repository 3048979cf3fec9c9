package image

import (
	"bytes"
	"compress/gzip"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
)

func TestParallelGzipIsValidAndIndependentOfWorkers(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	random := make([]byte, 3*pgzipBlock+12345)
	for i := range random {
		random[i] = byte(rng.Uint32())
	}
	for name, data := range map[string][]byte{
		"empty":           nil,
		"small":           []byte("hello, layer"),
		"exactly a block": bytes.Repeat([]byte("a"), pgzipBlock),
		"text":            []byte(strings.Repeat("def handler(request): return response\n", 100000)),
		"random":          random,
	} {
		t.Run(name, func(t *testing.T) {
			var outputs [][]byte
			for _, workers := range []int{1, 2, 7} {
				var buf bytes.Buffer
				z, err := newParallelGzip(&buf, 1, workers)
				if err != nil {
					t.Fatal(err)
				}
				// Uneven writes, as tar does.
				for rest := data; len(rest) > 0; {
					k := min(len(rest), 1+rng.IntN(300000))
					if _, err := z.Write(rest[:k]); err != nil {
						t.Fatal(err)
					}
					rest = rest[k:]
				}
				if err := z.Close(); err != nil {
					t.Fatal(err)
				}
				outputs = append(outputs, buf.Bytes())
				zr, err := gzip.NewReader(bytes.NewReader(buf.Bytes()))
				if err != nil {
					t.Fatal(err)
				}
				got, err := io.ReadAll(zr)
				if err != nil {
					t.Fatalf("%d workers: %v", workers, err)
				}
				if !bytes.Equal(got, data) {
					t.Fatalf("%d workers: round trip gave %d bytes, want %d", workers, len(got), len(data))
				}
			}
			for i := range outputs {
				if !bytes.Equal(outputs[i], outputs[0]) {
					t.Fatalf("output depends on the number of workers")
				}
			}
		})
	}
}
