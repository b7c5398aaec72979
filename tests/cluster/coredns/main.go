// A CoreDNS with only the plugins the real node's cluster DNS needs: Service and Pod names from the
// API server (kubernetes), and nothing that forwards a query off this machine (no forward, no
// proxy). build.sh compiles it against the CoreDNS module pinned in versions.env; this is CoreDNS's
// documented way to build a binary with a chosen plugin set (dnsserver.Directives = the order in
// which a query passes the plugins).
package main

import (
	"github.com/coredns/coredns/core/dnsserver"
	"github.com/coredns/coredns/coremain"

	_ "github.com/coredns/coredns/plugin/bind"
	_ "github.com/coredns/coredns/plugin/errors"
	_ "github.com/coredns/coredns/plugin/kubernetes"
	_ "github.com/coredns/coredns/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"bind", "ready", "errors", "kubernetes"}
}

func main() { coremain.Run() }
