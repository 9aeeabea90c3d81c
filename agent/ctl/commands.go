package ctl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/render"
)

// DefaultWait is how long `adeagentctl wait` waits without --timeout.
const DefaultWait = 5 * time.Minute

// maxPoll is the longest single long poll (the daemon accepts at most an hour).
const maxPoll = 10 * time.Minute

func (r *runner) status(ctx context.Context, args []string) int {
	fs := r.flags()
	asJSON := fs.Bool("json", false, "print the daemon's JSON (schema_version 1)")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	ctx, cancel := context.WithTimeout(ctx, requestTimeout)
	defer cancel()
	// The human form does not list holders: it asks for the answer without them.
	get := r.client.StatusBrief
	if *asJSON {
		get = r.client.Status // the whole report, as documented
	}
	st, err := get(ctx, false, 0)
	if err != nil {
		return r.fail(ctx, err)
	}
	if *asJSON {
		if _, err := r.env.Stdout.Write(st.Raw); err != nil {
			return r.fail(ctx, fmt.Errorf("write: %w", err))
		}
	} else {
		writeStatus(r.env.Stdout, st.Report)
	}
	return readyCode(st.Report)
}

func (r *runner) report(ctx context.Context, args []string) int {
	fs := r.flags()
	asJSON := fs.Bool("json", false, "print the daemon's JSON (schema_version 1)")
	fresh := fs.Bool("fresh", false, "have the daemon evaluate again now and answer from that (takes about a second)")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	get := r.client.Report
	timeout := requestTimeout
	if *fresh {
		get, timeout = r.client.ReportFresh, requestTimeout+60*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep, raw, err := get(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	if *asJSON {
		if _, err := r.env.Stdout.Write(raw); err != nil {
			return r.fail(ctx, fmt.Errorf("write: %w", err))
		}
	} else {
		render.Report(r.env.Stdout, rep, r.env.Colour)
	}
	return readyCode(rep)
}

func (r *runner) holders(ctx context.Context, args []string) int {
	fs := r.flags()
	asJSON := fs.Bool("json", false, "print the daemon's JSON (schema_version 1)")
	fresh := fs.Bool("fresh", false, "have the daemon scan every process again now (a full evaluation) instead of answering from its live set or last scan")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	get := r.client.Holders
	timeout := requestTimeout + 30*time.Second
	if *fresh {
		get, timeout = r.client.HoldersFresh, requestTimeout+60*time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	hr, raw, err := get(ctx)
	if err != nil {
		return r.fail(ctx, err)
	}
	if *asJSON {
		if _, err := r.env.Stdout.Write(raw); err != nil {
			return r.fail(ctx, fmt.Errorf("write: %w", err))
		}
	} else {
		render.Holders(r.env.Stdout, hr, "")
	}
	if len(hr.Holders) > 0 {
		return ExitNotReady
	}
	return ExitOK
}

// wait long-polls GET /v1/status?wait=ready until the report is ready (exit 0) or the
// timeout passes (exit 1). --timeout 0 checks once. A daemon that cannot be reached yet
// (starting: no socket) is retried until the timeout; still unreachable then: exit 3.
func (r *runner) wait(ctx context.Context, args []string) int {
	fs := r.flags()
	timeout := fs.Duration("timeout", DefaultWait, "give up after `D` (0: check once)")
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	if *timeout < 0 {
		fmt.Fprintf(r.env.Stderr, "adeagentctl wait: --timeout %s: want 0 or more\n", *timeout)
		return ExitUsage
	}
	deadline := time.Now().Add(*timeout)
	var last *api.Report
	var unreachable error // the last dial failure while the daemon may still be starting
	backoff := 100 * time.Millisecond
	for {
		remaining := time.Until(deadline)
		poll := min(remaining, maxPoll)
		var st *api.StatusResult
		var err error
		pctx, cancel := context.WithTimeout(ctx, max(poll, 0)+requestTimeout)
		if poll < time.Millisecond {
			st, err = r.client.StatusBrief(pctx, false, 0)
		} else {
			st, err = r.client.StatusBrief(pctx, true, poll)
		}
		cancel()
		var ae *api.APIError
		unreachable = nil
		switch {
		case err == nil:
			last = st.Report
			if st.Report.Ready {
				fmt.Fprintf(r.env.Stdout, "READY (phase %s)\n", st.Report.Phase)
				return ExitOK
			}
		case errors.As(err, &ae) && ae.Status == 503:
			// The first evaluation has not finished: keep waiting.
		case ctx.Err() != nil:
			fmt.Fprintln(r.env.Stderr, "adeagentctl wait: interrupted")
			return ExitNotReady
		case errors.Is(err, api.ErrDaemonUnreachable):
			// The daemon may be starting (socket not there yet): retry until the deadline.
			unreachable = err
			wait := min(backoff, time.Until(deadline))
			backoff = min(backoff*2, 2*time.Second)
			if wait > 0 {
				t := time.NewTimer(wait)
				select {
				case <-t.C:
				case <-ctx.Done():
					t.Stop()
					fmt.Fprintln(r.env.Stderr, "adeagentctl wait: interrupted")
					return ExitNotReady
				}
			}
		default:
			return r.fail(ctx, err)
		}
		if time.Until(deadline) <= 0 {
			break
		}
	}
	if unreachable != nil {
		return r.fail(ctx, unreachable)
	}
	if last == nil {
		fmt.Fprintf(r.env.Stdout, "NOT READY after %s: the daemon has not finished its first evaluation\n", *timeout)
		return ExitNotReady
	}
	var keys []string
	for _, f := range last.Findings {
		if f.Blocker {
			keys = append(keys, f.Key)
		}
	}
	fmt.Fprintf(r.env.Stdout, "NOT READY after %s (phase %s): %s", *timeout, last.Phase, plural(len(keys), "blocker", "blockers"))
	if len(keys) > 0 {
		fmt.Fprintf(r.env.Stdout, ": %s", strings.Join(keys, ", "))
	}
	fmt.Fprintln(r.env.Stdout)
	return ExitNotReady
}

// events prints each event as one JSON line until interrupted (exit 0) or the daemon
// ends the stream (exit 1).
func (r *runner) events(ctx context.Context, args []string) int {
	fs := r.flags()
	if code, ok := r.parse(fs, args); !ok {
		return code
	}
	enc := json.NewEncoder(r.env.Stdout)
	err := r.client.Events(ctx, func(ev api.Event) error {
		if err := enc.Encode(ev); err != nil {
			return fmt.Errorf("write: %w", err)
		}
		return nil
	})
	if ctx.Err() != nil {
		return ExitOK // interrupted: the normal way to end
	}
	if errors.Is(err, api.ErrStreamEnded) {
		fmt.Fprintln(r.env.Stderr, "adeagentctl events: the daemon ended the stream (it is shutting down)")
		return ExitNotReady
	}
	return r.fail(ctx, err)
}

func readyCode(rep *api.Report) int {
	if rep.Ready {
		return ExitOK
	}
	return ExitNotReady
}

// writeStatus prints the short human status: the verdict, phase, blockers with their
// one-line fix, quiesced units, SELinux and ADE.
func writeStatus(w io.Writer, rep *api.Report) {
	var blockers []api.Finding
	others := map[api.Severity]int{}
	for _, f := range rep.Findings {
		if f.Blocker {
			blockers = append(blockers, f)
		} else {
			others[f.Severity]++
		}
	}
	verdict := "READY"
	if !rep.Ready {
		verdict = "NOT READY"
		if len(blockers) > 0 {
			verdict += " (" + plural(len(blockers), "blocker", "blockers") + ")"
		}
	}
	line := func(k, v string) { fmt.Fprintf(w, "%-10s %s\n", k+":", v) }
	line("Status", verdict)
	line("Phase", rep.Phase)
	line("Host", rep.Hostname)
	if !rep.GeneratedAt.IsZero() {
		line("Checked", rep.GeneratedAt.UTC().Format(time.RFC3339))
	}
	if s := rep.SELinux; s != nil {
		v := s.Mode
		if s.Previous != "" && s.Previous != s.Mode {
			v += " (was " + s.Previous + " before prepare)"
		}
		line("SELinux", v)
	} else {
		line("SELinux", "unknown")
	}
	if a := rep.ADE; a != nil {
		line("ADE", a.Distro+": "+render.DescribeADE(a))
		if a.Progress != "" {
			line("Progress", a.Progress)
		}
	}
	if len(rep.Quiesced) == 0 {
		line("Quiesced", "none")
	} else {
		var units []string
		for _, q := range rep.Quiesced {
			u := q.Unit
			if q.State != "" {
				u += " (" + q.State + ")"
			}
			units = append(units, u)
		}
		line("Quiesced", strings.Join(units, ", "))
	}
	if len(blockers) > 0 {
		fmt.Fprintln(w, "\nBlockers:")
		for i, f := range blockers {
			fmt.Fprintf(w, "%3d. %s  [%s]\n", i+1, f.Title, f.Key)
			if fix := oneLineFix(f.Remediation); fix != "" {
				fmt.Fprintf(w, "     Fix: %s\n", fix)
			}
		}
	}
	if n := others[api.SeverityHigh] + others[api.SeverityMedium] + others[api.SeverityLow] + others[api.SeverityInfo]; n > 0 {
		fmt.Fprintf(w, "\nOther findings: %d high, %d medium, %d low, %d info ('adeagentctl report' for details)\n",
			others[api.SeverityHigh], others[api.SeverityMedium], others[api.SeverityLow], others[api.SeverityInfo])
	}
}

// oneLineFix is the hint's first sentence and the first command.
func oneLineFix(r api.Remediation) string {
	hint := strings.Join(strings.Fields(r.Hint), " ")
	if i := strings.Index(hint, ". "); i >= 0 {
		hint = hint[:i+1]
	}
	if len(r.Commands) == 0 {
		return hint
	}
	cmd := "# " + render.ShellJoin(r.Commands[0])
	if hint == "" {
		return cmd
	}
	return hint + "  " + cmd
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return fmt.Sprintf("%d %s", n, many)
}
