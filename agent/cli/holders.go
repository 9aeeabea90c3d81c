package cli

import (
	"errors"
	"io"
)

func runHolders(args []string, stdout, stderr io.Writer) (int, error) {
	return ExitUsage, errors.New("not implemented yet")
}
