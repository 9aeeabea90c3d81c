package probes

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/adeagent/adeagent/agent/api"
)

// Defaults of RunOptions.
const (
	DefaultParallelism  = 4
	DefaultProbeTimeout = 5 * time.Second
)

// TimeoutProbe is implemented by probes that need more (or less) time than the runner's
// default, e.g. one that walks large directory trees.
type TimeoutProbe interface {
	Timeout() time.Duration
}

// RunOptions tune Run. The zero value runs every probe, four at a time, five seconds each.
type RunOptions struct {
	// Parallelism is how many probes run at once (default 4).
	Parallelism int
	// Timeout bounds each probe unless it implements TimeoutProbe (default 5 s).
	Timeout time.Duration
	// Enabled says whether a probe runs; nil runs all. A disabled probe is recorded with
	// status "disabled" and has no findings.
	Enabled func(name string) bool
	// Now is the clock (tests); nil is time.Now.
	Now func() time.Time
}

// Result is the outcome of one run of the probes.
type Result struct {
	// Findings are sorted: blockers first, then severity high→info, then key.
	Findings []api.Finding
	// Probes records every probe in the order given, with status and duration.
	Probes []api.ProbeRun
	// Started is when the run began; Duration is its wall time.
	Started  time.Time
	Duration time.Duration
}

// Ready reports whether no finding blocks.
func (r *Result) Ready() bool {
	for _, f := range r.Findings {
		if f.Blocker {
			return false
		}
	}
	return true
}

// Failed counts the probes that did not run to completion (error, timeout or panic).
func (r *Result) Failed() int {
	n := 0
	for _, p := range r.Probes {
		switch p.Status {
		case api.ProbeError, api.ProbeTimeout, api.ProbePanic:
			n++
		}
	}
	return n
}

// Run runs probes against env with bounded parallelism and returns every finding.
//
// One probe cannot take the run down: a panic, a timeout or a returned error becomes a
// blocking finding "<probe>.error" (the prerequisite it checks is unknown, and the unknown
// is never treated as clean), and the other probes carry on. A probe that ignores its
// context past the timeout is abandoned: its goroutine finishes in the background and its
// result is dropped.
func Run(ctx context.Context, env *Env, probes []Probe, opts RunOptions) Result {
	if opts.Parallelism <= 0 {
		opts.Parallelism = DefaultParallelism
	}
	if opts.Timeout <= 0 {
		opts.Timeout = DefaultProbeTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	res := Result{Started: now(), Probes: make([]api.ProbeRun, len(probes))}
	found := make([][]api.Finding, len(probes))

	work := make(chan int)
	var wg sync.WaitGroup
	workers := min(opts.Parallelism, len(probes))
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range work {
				res.Probes[i], found[i] = runOne(ctx, env, probes[i], opts, now)
			}
		}()
	}
	for i, p := range probes {
		if opts.Enabled != nil && !opts.Enabled(p.Name()) {
			res.Probes[i] = api.ProbeRun{Name: p.Name(), Status: api.ProbeDisabled}
			continue
		}
		work <- i
	}
	close(work)
	wg.Wait()

	for _, f := range found {
		res.Findings = append(res.Findings, f...)
	}
	SortFindings(res.Findings)
	res.Duration = now().Sub(res.Started)
	return res
}

// outcome is what a probe's goroutine hands back.
type outcome struct {
	findings []api.Finding
	err      error
	panicked bool
	panicMsg string
}

func runOne(ctx context.Context, env *Env, p Probe, opts RunOptions, now func() time.Time) (api.ProbeRun, []api.Finding) {
	name := p.Name()
	timeout := opts.Timeout
	if tp, ok := p.(TimeoutProbe); ok && tp.Timeout() > 0 {
		timeout = tp.Timeout()
	}
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	start := now()
	done := make(chan outcome, 1) // buffered: an abandoned probe never blocks on send
	go func() {
		defer func() {
			if r := recover(); r != nil {
				done <- outcome{panicked: true, panicMsg: panicText(r)}
			}
		}()
		f, err := p.Run(pctx, env)
		done <- outcome{findings: f, err: err}
	}()

	var o outcome
	timedOut := false
	select {
	case o = <-done:
		if o.err != nil && errors.Is(o.err, context.DeadlineExceeded) && pctx.Err() != nil && ctx.Err() == nil {
			timedOut = true
		}
	case <-pctx.Done():
		timedOut = ctx.Err() == nil
		if !timedOut {
			o.err = fmt.Errorf("run cancelled: %w", ctx.Err())
		}
	}
	run := api.ProbeRun{Name: name, Status: api.ProbeOK, DurationMS: ms(now().Sub(start))}

	findings := o.findings
	for i := range findings {
		if findings[i].Probe == "" {
			findings[i].Probe = name
		}
		if findings[i].Severity.Rank() < 0 {
			findings[i].Severity = api.SeverityHigh
		}
	}
	switch {
	case o.panicked:
		run.Status, run.Error = api.ProbePanic, o.panicMsg
		findings = append(findings, errorFinding(name,
			fmt.Sprintf("Probe %s crashed", name),
			fmt.Sprintf("The %s probe panicked: %s. What it checks is unknown, so this blocks readiness.", name, o.panicMsg),
			"This is a bug in adeagent: please report it with this output. Disable the probe with probes."+name+".enabled: false in the configuration only if you have checked its prerequisite by hand."))
	case timedOut:
		run.Status, run.Error = api.ProbeTimeout, fmt.Sprintf("did not finish within %s", timeout)
		findings = append(findings, errorFinding(name,
			fmt.Sprintf("Probe %s did not finish", name),
			fmt.Sprintf("The %s probe did not finish within %s. What it checks is unknown, so this blocks readiness.", name, timeout),
			"Run 'adeagent check' again; if it keeps timing out the machine may be overloaded or a filesystem may hang (check 'dmesg' for hung tasks), and please report it."))
	case o.err != nil:
		run.Status, run.Error = api.ProbeError, o.err.Error()
		findings = append(findings, errorFinding(name,
			fmt.Sprintf("Probe %s could not decide", name),
			fmt.Sprintf("The %s probe failed: %v. What it checks is unknown, so this blocks readiness.", name, o.err),
			"Fix the cause named above and run 'adeagent check' again; if it looks like a bug in adeagent, please report it with this output."))
	}
	return run, findings
}

func errorFinding(probe, title, summary, hint string) api.Finding {
	return api.Finding{
		Key:         probe + ".error",
		Probe:       probe,
		Title:       title,
		Summary:     summary,
		Severity:    api.SeverityHigh,
		Blocker:     true,
		Remediation: api.Remediation{Hint: hint},
	}
}

// panicText renders a recovered panic value with the code location that panicked.
func panicText(r any) string {
	msg := fmt.Sprint(r)
	pcs := make([]uintptr, 32)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	sawPanic := false
	for {
		f, more := frames.Next()
		if f.Function == "runtime.gopanic" {
			sawPanic = true
		} else if sawPanic && !strings.HasPrefix(f.Function, "runtime.") {
			file := f.File
			if i := strings.LastIndex(file, "/"); i >= 0 {
				if j := strings.LastIndex(file[:i], "/"); j >= 0 {
					file = file[j+1:]
				}
			}
			return fmt.Sprintf("%s (at %s:%d)", msg, file, f.Line)
		}
		if !more {
			return msg
		}
	}
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// SortFindings orders findings as every report shows them: blockers first, then severity
// high→info, then key; ties keep a stable order by title and summary.
func SortFindings(fs []api.Finding) {
	sort.SliceStable(fs, func(i, j int) bool {
		a, b := &fs[i], &fs[j]
		if a.Blocker != b.Blocker {
			return a.Blocker
		}
		if ra, rb := a.Severity.Rank(), b.Severity.Rank(); ra != rb {
			return ra > rb
		}
		if a.Key != b.Key {
			return a.Key < b.Key
		}
		if a.Title != b.Title {
			return a.Title < b.Title
		}
		return a.Summary < b.Summary
	})
}
