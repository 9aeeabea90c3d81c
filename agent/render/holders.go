package render

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/adeagent/adeagent/agent/api"
)

// Holders prints the human form of a holders report: one row per holder, then what was incomplete.
func Holders(w io.Writer, rep *api.HoldersReport, note string) {
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
	fmt.Fprintf(w, "Scanned %d processes, %d threads, %d fds in %.1f ms%s.\n",
		rep.Stats.Processes, rep.Stats.Threads, rep.Stats.FDs, rep.Stats.DurationMS, fdSourceText(rep.Stats))
}

// fdSourceText says where the scan's open files came from, for the summary line.
func fdSourceText(st api.ScanStats) string {
	switch st.FDSource {
	case "bpf":
		return " (open files from the kernel's BPF task_file iterator)"
	case "proc":
		if st.FDSourceNote != "" {
			return " (open files from /proc: " + st.FDSourceNote + ")"
		}
		return " (open files from /proc)"
	}
	return ""
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
