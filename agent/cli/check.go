package cli

import (
	"errors"
	"io"
)

// runCheck is `adeagent check`. Built in issue 3.
func runCheck(args []string, stdout, stderr io.Writer) (int, error) {
	return ExitUsage, errors.New("not implemented yet (issue 3)")
}

// runConfig is `adeagent config`. Built in issue 3.
func runConfig(args []string, stdout, stderr io.Writer) (int, error) {
	return ExitUsage, errors.New("not implemented yet (issue 3)")
}
