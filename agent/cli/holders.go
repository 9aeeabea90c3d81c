package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/adeagent/adeagent/agent/render"
	"github.com/adeagent/adeagent/unmount"
)

// runHolders is `adeagent holders [--mount PATH] [--json] [--root DIR]`.
func runHolders(args []string, stdout, stderr io.Writer) (int, error) {
	var c Common
	fs := newFlagSet("holders", stderr, &c)
	mount := fs.String("mount", "", "target the filesystem containing `PATH` (default: every filesystem of the OS drive)")
	asJSON := fs.Bool("json", false, "print JSON (schema_version 1)")
	timeout := fs.Duration("timeout", 30*time.Second, "deadline for the whole scan; what is not inspected by then is reported as incomplete")
	workers := fs.Int("workers", 4, "parallel /proc scanners")
	if err := parse(fs, args); err != nil {
		return ExitUsage, err
	}
	root, err := c.Root()
	if err != nil {
		return ExitUsage, usagef("--root: %v", err)
	}
	var target *unmount.Target
	if *mount != "" {
		target, err = unmount.PathTarget(root, *mount)
		if errors.Is(err, unmount.ErrNoSuchPath) {
			return ExitUsage, usagef("--mount %v", err)
		}
	} else {
		target, err = unmount.OSDriveTarget(root)
	}
	if err != nil {
		return ExitUsage, err
	}
	rep, err := unmount.Scan(context.Background(), root, target, unmount.Options{
		Timeout:            *timeout,
		ProcessScanOptions: unmount.ProcessScanOptions{Workers: *workers},
	})
	if err != nil {
		return ExitNotReady, fmt.Errorf("scan: %w", err)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return ExitNotReady, err
		}
	} else {
		render.Holders(stdout, rep, target.Note)
	}
	if len(rep.Holders) > 0 {
		return ExitNotReady, nil
	}
	return ExitOK, nil
}
