package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/adeagent/adeagent/agent/api"
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
		writeHoldersTable(stdout, rep, target.Note)
	}
	if len(rep.Holders) > 0 {
		return ExitNotReady, nil
	}
	return ExitOK, nil
}

// writeHoldersTable prints the human form: one row per holder, then what was incomplete.
func writeHoldersTable(w io.Writer, rep *api.HoldersReport, note string) {
	fmt.Fprintf(w, "Target: %s (devices %s)\n", strings.Join(rep.Target.Mounts, ", "), strings.Join(rep.Target.Devices, ", "))
	if note != "" {
		fmt.Fprintf(w, "Note: %s\n", note)
	}
	if len(rep.Holders) == 0 {
		fmt.Fprintln(w, "Nothing holds it.")
	} else {
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "KIND\tPID\tCOMM\tUNIT\tUSES\tPATH")
		for _, h := range rep.Holders {
			pid := ""
			if h.PID != 0 {
				pid = strconv.Itoa(h.PID)
				if h.TID != 0 {
					pid += "/" + strconv.Itoa(h.TID)
				}
			}
			uses := strings.Join(h.Uses, ",")
			if h.FDs > 1 {
				uses += fmt.Sprintf(" (%d fds)", h.FDs)
			}
			path := ""
			if len(h.Paths) > 0 {
				path = h.Paths[0]
				if len(h.Paths) > 1 {
					path += fmt.Sprintf(" (+%d)", len(h.Paths)-1)
				}
			}
			if h.Kind != api.KindProcess && h.Kind != api.KindThread && h.Detail != "" {
				uses = h.Detail
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", h.Kind, pid, dash(h.Comm), dash(h.Unit), dash(uses), dash(path))
		}
		tw.Flush()
		fmt.Fprintf(w, "%d holder(s).\n", len(rep.Holders))
	}
	if len(rep.Incomplete) > 0 {
		fmt.Fprintf(w, "\nINCOMPLETE: %d item(s) could not be inspected; they are not known to be clean:\n", len(rep.Incomplete))
		for i, in := range rep.Incomplete {
			if i == 20 {
				fmt.Fprintf(w, "  … %d more (see --json)\n", len(rep.Incomplete)-20)
				break
			}
			if in.PID != 0 {
				fmt.Fprintf(w, "  pid %d %s: %s\n", in.PID, in.What, in.Reason)
			} else {
				fmt.Fprintf(w, "  %s: %s\n", in.What, in.Reason)
			}
		}
	}
	fmt.Fprintf(w, "Scanned %d processes, %d threads, %d fds in %.1f ms.\n",
		rep.Stats.Processes, rep.Stats.Threads, rep.Stats.FDs, rep.Stats.DurationMS)
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
