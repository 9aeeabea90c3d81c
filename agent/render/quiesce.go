package render

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/adeagent/adeagent/agent/api"
)

// Plan prints what `adeagentctl prepare --dry-run` would do, in the order prepare does it.
func Plan(w io.Writer, p *api.QuiescePlan, colour bool) {
	pt := painter(colour)
	head := "Plan for prepare"
	if p.Resume {
		head += " (continues the prepare already journaled)"
	}
	fmt.Fprintln(w, pt.paint(ANSIBold, head)+" — nothing has been changed")
	writeWrapped(w, "  Path:    ", "           ", p.Path+": "+p.PathReason)
	fmt.Fprintln(w)

	n := 0
	step := func(title string) {
		n++
		fmt.Fprintf(w, "%s %s\n", pt.paint(ANSIBold, fmt.Sprintf("%d.", n)), title)
	}
	if len(p.Reactivators) > 0 {
		step("Stop what would start the services again")
		units(w, p.Reactivators)
	}
	if len(p.PreStop) > 0 {
		step("Pre-stop steps")
		for _, s := range p.PreStop {
			what := s.Hint
			switch {
			case len(s.Argv) > 0:
				what = ShellJoin(s.Argv) + " — " + s.Hint
			case s.Action != "":
				what = s.Action + " — " + s.Hint
			}
			if !s.Run {
				what += " (advice only; adeagent does not run it)"
			}
			writeWrapped(w, "     "+s.Family+": ", "       ", what)
		}
	}
	if len(p.Units) > 0 {
		step("Stop, check the cgroup is empty, and runtime-mask, in this order")
		units(w, p.Units)
	} else {
		step("No service to stop")
	}
	step("Rescan what holds the OS drive")
	step("SELinux: " + describePlannedSELinux(p.SELinux))
	if len(p.NotStopping) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, pt.paint(ANSIBold, "Left running"))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  UNIT\tREASON\tDETAIL")
		for _, s := range p.NotStopping {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", s.Unit, s.Reason, dash(s.Detail))
		}
		tw.Flush()
	}
}

func units(w io.Writer, us []api.PlannedUnit) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "     UNIT\tFAMILY\tSTATE\tSTOP TIMEOUT")
	for _, u := range us {
		state := u.ActiveState
		if u.SubState != "" {
			state += " (" + u.SubState + ")"
		}
		if u.Journaled {
			state += ", journaled"
		}
		fmt.Fprintf(tw, "     %s\t%s\t%s\t%s\n", u.Unit, dash(u.Family), dash(state), formatSeconds(u.StopTimeoutS))
	}
	tw.Flush()
}

func describePlannedSELinux(s api.PlannedSELinux) string {
	var parts []string
	if s.Runtime == "set-permissive" {
		parts = append(parts, s.Mode+" → permissive now")
	} else {
		parts = append(parts, "left "+dash(s.Mode))
	}
	if s.ConfigFile == "set-permissive" {
		parts = append(parts, "SELINUX="+dash(s.Config)+" → permissive in /etc/selinux/config")
	}
	out := strings.Join(parts, "; ")
	if s.Reason != "" {
		out += " (" + s.Reason + ")"
	}
	return out
}

func formatSeconds(s float64) string {
	if s <= 0 {
		return "-"
	}
	if s >= 60 && int(s)%60 == 0 {
		return fmt.Sprintf("%dm", int(s)/60)
	}
	return fmt.Sprintf("%gs", s)
}

// QuiesceResult prints the outcome of prepare or restore: the verdict, the blockers with
// their fixes, and every step with its result.
func QuiesceResult(w io.Writer, r *api.QuiesceResult, colour bool) {
	pt := painter(colour)
	verdict := strings.ToUpper(r.Outcome)
	style := ANSIBold + ANSIGreen
	switch r.Outcome {
	case api.OutcomeBlocked, api.OutcomeFailed:
		style = ANSIBold + ANSIRed
	}
	line := fmt.Sprintf("%s: %s", r.Action, pt.paint(style, verdict))
	switch r.Outcome {
	case api.OutcomeReady:
		line += " — services quiesced; nothing left on the OS drive that adeagent can see"
	case api.OutcomeBlocked:
		line += " — something is left; see below. Nothing was killed."
	case api.OutcomeRestored:
		line += " — everything prepare changed is back"
	case api.OutcomeFailed:
		line += " — some steps could not be undone; the journal still owes them"
	case api.OutcomeNothing:
		line += " — prepare had changed nothing"
	}
	fmt.Fprintln(w, line)
	if r.Path != "" {
		fmt.Fprintf(w, "  Path:     %s\n", r.Path)
	}
	fmt.Fprintf(w, "  Took:     %s\n", formatMS(r.DurationMS))
	if r.Journal != "" {
		fmt.Fprintf(w, "  Journal:  %s\n", r.Journal)
	}
	if r.SELinux != nil {
		fmt.Fprintf(w, "  SELinux:  %s\n", describeSELinux(r.SELinux))
	}
	if len(r.Steps) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, pt.paint(ANSIBold, "Steps"))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  KIND\tTARGET\tBEFORE\tRESULT")
		for _, s := range r.Steps {
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\n", s.Kind, s.Target, dash(s.Before), dash(s.Result))
		}
		tw.Flush()
	}
	if len(r.Findings) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, pt.paint(ANSIBold, "Findings"))
		for i, f := range r.Findings {
			mark := "  "
			if f.Blocker {
				mark = pt.paint(ANSIBold+ANSIRed, "✗ ")
			}
			fmt.Fprintf(w, "%s%d. %s  %s\n", mark, i+1, pt.paint(ANSIBold, f.Title), pt.paint(ANSIDim, "["+f.Key+"]"))
			writeWrapped(w, "    ", "    ", f.Summary)
			writeFix(w, pt, f.Remediation)
		}
	}
}

func describeSELinux(s *api.SELinuxState) string {
	if s.Previous != "" && s.Previous != s.Mode {
		return s.Mode + " (was " + s.Previous + " before prepare)"
	}
	return s.Mode
}
