// Command edgebridge bridges the edge node's MQTT broker to central Kafka
// through a durable on-disk buffer. See README.md; `edgebridge help` lists
// the commands and exit codes.
package main

import (
	"os"

	"github.com/edgebridge/edgebridge/internal/daemon"
)

// Stamped by the Makefile: -X main.version=... -X main.revision=...
var (
	version  string
	revision string
)

func main() {
	os.Exit(daemon.Main(os.Args[1:], os.Stdout, os.Stderr, daemon.Build{Version: version, Revision: revision}))
}
