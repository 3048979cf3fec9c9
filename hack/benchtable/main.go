// Command benchtable reads `go test -bench` output on stdin, passes it through, and prints every
// reported figure in one table at the end: benchmark, figure, value. Benchmarks report their
// figures with b.ReportMetric; goals belong in the metric's unit name or the benchmark's doc, never
// in a pass/fail decision here.
package main

import (
	"bufio"
	"fmt"
	"os"
	"strings"
	"text/tabwriter"
)

type row struct{ pkg, bench, value, unit string }

func main() {
	var rows []row
	pkg := ""
	failed := false
	sc := bufio.NewScanner(os.Stdin)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		fmt.Println(line)
		fields := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "pkg: "):
			pkg = strings.TrimPrefix(line, "pkg: ")
		case strings.HasPrefix(line, "FAIL"), strings.HasPrefix(line, "--- FAIL"):
			failed = true
		case len(fields) >= 4 && strings.HasPrefix(fields[0], "Benchmark"):
			name := strings.TrimPrefix(fields[0], "Benchmark")
			if i := strings.LastIndex(name, "-"); i > 0 {
				name = name[:i] // the GOMAXPROCS suffix
			}
			// fields[1] is the iteration count; then value/unit pairs.
			for i := 2; i+1 < len(fields); i += 2 {
				rows = append(rows, row{pkg: shortPkg(pkg), bench: name, value: fields[i], unit: fields[i+1]})
			}
		}
	}
	if len(rows) > 0 {
		fmt.Println()
		fmt.Println("Ferry benchmark figures")
		w := tabwriter.NewWriter(os.Stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(w, "PACKAGE\tBENCHMARK\tVALUE\tFIGURE")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", r.pkg, r.bench, r.value, r.unit)
		}
		_ = w.Flush()
	}
	if failed {
		os.Exit(1)
	}
}

func shortPkg(p string) string { return strings.TrimPrefix(p, "github.com/ferryci/ferry/") }
