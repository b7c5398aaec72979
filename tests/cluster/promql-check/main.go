// promql-check parses PromQL expressions with Prometheus' own parser, one expression per line
// of stdin, and prints one line per expression: "ok" and the expression as the parser prints it
// back, or "error" and why. It exits 1 when any expression does not parse. Built by
// tests/cluster/build.sh; the operator's tests run it on the PrometheusRule's expressions.
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/prometheus/prometheus/promql/parser"
)

func main() {
	failed := false
	// Default options: the PromQL a Prometheus server accepts without feature flags.
	promql := parser.NewParser(parser.Options{})
	scanner := bufio.NewScanner(os.Stdin)
	scanner.Buffer(make([]byte, 1<<20), 1<<20)
	for scanner.Scan() {
		line := scanner.Text()
		if line == "" {
			continue
		}
		expr, err := promql.ParseExpr(line)
		if err != nil {
			failed = true
			fmt.Printf("error\t%s\t%v\n", line, err)
			continue
		}
		fmt.Printf("ok\t%s\t%s\n", expr.Type(), expr.String())
	}
	if err := scanner.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if failed {
		os.Exit(1)
	}
}
