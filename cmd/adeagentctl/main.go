// Command adeagentctl asks a running adeagent daemon about this VM's readiness.
package main

import (
	"os"

	"github.com/adeagent/adeagent/agent/ctl"
)

func main() {
	os.Exit(ctl.Main(os.Args[1:]))
}
