// Command adeagentctl asks a running adeagent daemon about this VM's readiness.
package main

import (
	"fmt"
	"os"

	"github.com/adeagent/adeagent/agent/version"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "version" {
		fmt.Printf("adeagentctl %s\n", version.String())
		return
	}
	fmt.Fprintln(os.Stderr, "adeagentctl: talking to the daemon is not implemented yet (issue 4); use 'adeagent check' and 'adeagent holders'")
	os.Exit(2)
}
