// Package render prints adeagent's human reports: the readiness report of `adeagent
// check` and `adeagentctl report`, and the holders table of `adeagent holders` and
// `adeagentctl holders`. The JSON forms are the api types themselves.
package render

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// ANSI styles, used only when the output is a terminal.
const (
	ANSIReset  = "\x1b[0m"
	ANSIBold   = "\x1b[1m"
	ANSIDim    = "\x1b[2m"
	ANSIRed    = "\x1b[31m"
	ANSIGreen  = "\x1b[32m"
	ANSIYellow = "\x1b[33m"
	ANSICyan   = "\x1b[36m"
)

// wrapWidth is where report text wraps.
const wrapWidth = 100

type painter bool

func (p painter) paint(style, s string) string {
	if !p || s == "" {
		return s
	}
	return style + s + ANSIReset
}

// Report prints the human readiness report, in the spirit of leapp's pre-upgrade
// report: the verdict first, then the blockers numbered with their fix, then the other
// findings by severity, then the counts.
func Report(w io.Writer, rep *api.Report, colour bool) {
	p := painter(colour)
	var blockers, others []api.Finding
	for _, f := range rep.Findings {
		if f.Blocker {
			blockers = append(blockers, f)
		} else {
			others = append(others, f)
		}
	}

	if len(blockers) == 0 {
		fmt.Fprintln(w, p.paint(ANSIBold+ANSIGreen, "READY")+": nothing blocks Azure Disk Encryption of the OS drive")
	} else {
		fmt.Fprintln(w, p.paint(ANSIBold+ANSIRed, "NOT READY")+": "+plural(len(blockers), "blocker", "blockers")+" to fix before enabling Azure Disk Encryption")
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "  Host:    %s\n", rep.Hostname)
	if a := rep.ADE; a != nil {
		fmt.Fprintf(w, "  System:  %s; ADE: %s\n", a.Distro, DescribeADE(a))
	}

	if len(blockers) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, p.paint(ANSIBold+ANSIRed, "Blockers"))
		for i, f := range blockers {
			num := fmt.Sprintf("%2d.", i+1)
			fmt.Fprintf(w, "%s %s  %s\n", p.paint(ANSIBold+ANSIRed, num), p.paint(ANSIBold, f.Title), p.paint(ANSIDim, "["+f.Key+"]"))
			writeWrapped(w, "    ", "    ", f.Summary)
			writeFix(w, p, f.Remediation)
		}
	}

	for _, sev := range []api.Severity{api.SeverityHigh, api.SeverityMedium, api.SeverityLow, api.SeverityInfo} {
		var group []api.Finding
		for _, f := range others {
			if f.Severity == sev {
				group = append(group, f)
			}
		}
		if len(group) == 0 {
			continue
		}
		fmt.Fprintln(w)
		style := ANSIBold + ANSIYellow
		if sev == api.SeverityLow || sev == api.SeverityInfo {
			style = ANSIBold + ANSICyan
		}
		fmt.Fprintln(w, p.paint(style, severityHeading(sev)))
		for _, f := range group {
			fmt.Fprintf(w, "  - %s  %s\n", p.paint(ANSIBold, f.Title), p.paint(ANSIDim, "["+f.Key+"]"))
			writeWrapped(w, "    ", "    ", f.Summary)
			if sev != api.SeverityInfo {
				writeFix(w, p, f.Remediation)
			}
		}
	}

	counts := map[api.Severity]int{}
	for _, f := range others {
		counts[f.Severity]++
	}
	run, failed, disabled := 0, 0, 0
	var failedNames []string
	for _, pr := range rep.Probes {
		switch pr.Status {
		case api.ProbeDisabled:
			disabled++
			continue
		case api.ProbeError, api.ProbeTimeout, api.ProbePanic:
			failed++
			failedNames = append(failedNames, pr.Name+": "+pr.Status)
		}
		run++
	}
	fmt.Fprintln(w)
	fmt.Fprintf(w, "Summary: %s; other findings: %d high, %d medium, %d low, %d info\n",
		plural(len(blockers), "blocker", "blockers"),
		counts[api.SeverityHigh], counts[api.SeverityMedium], counts[api.SeverityLow], counts[api.SeverityInfo])
	probesLine := fmt.Sprintf("         %d probes run, %d failed", run, failed)
	if len(failedNames) > 0 {
		probesLine += " (" + strings.Join(failedNames, ", ") + ")"
	}
	if disabled > 0 {
		probesLine += fmt.Sprintf(", %d disabled", disabled)
	}
	probesLine += fmt.Sprintf(", %s total", formatMS(rep.DurationMS))
	fmt.Fprintln(w, probesLine)
}

// DescribeADE says what ADE does with this distribution, in words.
func DescribeADE(a *api.ADEState) string {
	var support string
	switch a.Support {
	case "os":
		support = "OS drive supported"
	case "data-only":
		support = "data drives only"
	case "none":
		support = "this version not supported"
	default:
		support = "distribution not supported"
	}
	switch a.Path {
	case "unmount":
		return support + ", unmount path"
	case "online":
		return support + ", online path"
	}
	return support
}

func severityHeading(s api.Severity) string {
	switch s {
	case api.SeverityHigh:
		return "High"
	case api.SeverityMedium:
		return "Medium"
	case api.SeverityLow:
		return "Low"
	}
	return "Info"
}

// writeFix prints the remediation: the hint, then the first command (and how many more).
func writeFix(w io.Writer, p painter, r api.Remediation) {
	if r.Hint != "" {
		writeWrapped(w, "    "+p.paint(ANSIBold, "Fix:")+" ", "         ", r.Hint)
	}
	if len(r.Commands) > 0 {
		more := ""
		if n := len(r.Commands) - 1; n > 0 {
			more = p.paint(ANSIDim, fmt.Sprintf("   (then %s)", shellJoinAll(r.Commands[1:])))
		}
		fmt.Fprintf(w, "         %s%s\n", p.paint(ANSIBold, "# "+ShellJoin(r.Commands[0])), more)
	}
}

// writeWrapped prints text wrapped at wrapWidth, the first line after first, the others
// after rest.
func writeWrapped(w io.Writer, first, rest, text string) {
	words := strings.Fields(text)
	if len(words) == 0 {
		return
	}
	prefix := first
	width := wrapWidth - visibleLen(first)
	line := ""
	for _, word := range words {
		if line != "" && len(line)+1+len(word) > width {
			fmt.Fprintln(w, prefix+line)
			prefix, width, line = rest, wrapWidth-len(rest), ""
		}
		if line == "" {
			line = word
		} else {
			line += " " + word
		}
	}
	fmt.Fprintln(w, prefix+line)
}

// visibleLen is the printed width of s, without ANSI escapes.
func visibleLen(s string) int {
	n, esc := 0, false
	for _, r := range s {
		switch {
		case r == '\x1b':
			esc = true
		case esc && r == 'm':
			esc = false
		case !esc:
			n++
		}
	}
	return n
}

// ShellJoin quotes argv for a POSIX shell where needed.
func ShellJoin(argv []string) string {
	q := make([]string, len(argv))
	for i, a := range argv {
		q[i] = ShellQuote(a)
	}
	return strings.Join(q, " ")
}

func shellJoinAll(cmds [][]string) string {
	s := make([]string, len(cmds))
	for i, c := range cmds {
		s[i] = ShellJoin(c)
	}
	return strings.Join(s, "; ")
}

// ShellQuote quotes one word for a POSIX shell where needed.
func ShellQuote(s string) string {
	if s == "" {
		return "''"
	}
	safe := true
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=@%+,", r)) {
			safe = false
			break
		}
	}
	if safe {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}

func formatMS(ms float64) string {
	d := time.Duration(ms * float64(time.Millisecond))
	if d < time.Second {
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return fmt.Sprintf("%.2fs", d.Seconds())
}
