// Package version carries the build's version, stamped by the linker:
//
//	go build -ldflags "-X github.com/adeagent/adeagent/agent/version.Version=1.2.3 -X …Commit=abc"
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"
)

// Set by -ldflags -X at build time.
var (
	Version = "0.0.0-dev"
	Commit  = ""
)

// String is the one-line version report: version, commit and Go version.
func String() string {
	commit := Commit
	if commit == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					commit = s.Value[:12]
				}
			}
		}
	}
	if commit == "" {
		commit = "unknown"
	}
	return fmt.Sprintf("%s (commit %s, %s)", Version, commit, runtime.Version())
}
