// Command adeagent is the ADE readiness daemon and its one-shot subcommands.
package main

import (
	"os"

	"github.com/adeagent/adeagent/agent/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:], os.Stdout, os.Stderr))
}
