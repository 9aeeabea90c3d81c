package agent

import (
	"bufio"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/version"
)

// metricsSnapshot is what WriteMetrics renders, copied under the daemon's lock.
type metricsSnapshot struct {
	report      *api.Report // nil before the first evaluation
	holders     int         // OS-drive holders of the last scan; -1 when unknown
	phase       string
	evaluations uint64
	lastEval    time.Time
}

var allPhases = []string{
	api.PhaseObserving, api.PhasePreparing, api.PhaseReady, api.PhaseBlocked,
	api.PhaseEncrypt, api.PhaseRestoring, api.PhaseRestored,
}

var allSeverities = []api.Severity{api.SeverityInfo, api.SeverityLow, api.SeverityMedium, api.SeverityHigh}

// writeMetrics writes s in the Prometheus text exposition format (version 0.0.4).
func writeMetrics(w io.Writer, s metricsSnapshot) error {
	b := bufio.NewWriter(w)
	family := func(name, typ, help string) {
		fmt.Fprintf(b, "# HELP %s %s\n# TYPE %s %s\n", name, escapeHelp(help), name, typ)
	}
	sample := func(name string, v float64, labels ...string) {
		b.WriteString(name)
		if len(labels) > 0 {
			b.WriteByte('{')
			for i := 0; i+1 < len(labels); i += 2 {
				if i > 0 {
					b.WriteByte(',')
				}
				b.WriteString(labels[i])
				b.WriteString(`="`)
				b.WriteString(escapeLabel(labels[i+1]))
				b.WriteByte('"')
			}
			b.WriteByte('}')
		}
		b.WriteByte(' ')
		b.WriteString(strconv.FormatFloat(v, 'g', -1, 64))
		b.WriteByte('\n')
	}
	bool01 := func(v bool) float64 {
		if v {
			return 1
		}
		return 0
	}

	family("adeagent_build_info", "gauge", "adeagent's version; always 1.")
	sample("adeagent_build_info", 1, "version", version.Version)

	family("adeagent_phase", "gauge", "1 for the daemon's current phase, 0 for the others.")
	for _, p := range allPhases {
		sample("adeagent_phase", bool01(p == s.phase), "phase", p)
	}

	family("adeagent_evaluations_total", "counter", "Readiness evaluations finished since the daemon started.")
	sample("adeagent_evaluations_total", float64(s.evaluations))

	if s.report != nil {
		r := s.report
		family("adeagent_ready", "gauge", "1 when no finding blocks ADE, else 0.")
		sample("adeagent_ready", bool01(r.Ready))

		family("adeagent_last_evaluation_timestamp_seconds", "gauge", "Unix time the last evaluation finished.")
		sample("adeagent_last_evaluation_timestamp_seconds", float64(s.lastEval.UnixMilli())/1000)

		blockers := map[string]int{}
		severities := map[api.Severity]int{}
		for _, f := range r.Findings {
			if f.Blocker {
				blockers[f.Key]++
			}
			severities[f.Severity]++
		}
		family("adeagent_blockers", "gauge", "Blocking findings of the last evaluation, by finding key.")
		keys := make([]string, 0, len(blockers))
		for k := range blockers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			sample("adeagent_blockers", float64(blockers[k]), "key", k)
		}

		family("adeagent_findings", "gauge", "Findings of the last evaluation, by severity.")
		for _, sev := range allSeverities {
			sample("adeagent_findings", float64(severities[sev]), "severity", string(sev))
		}

		if s.holders >= 0 {
			family("adeagent_holders", "gauge", "Holders of the OS drive found by the last scan.")
			sample("adeagent_holders", float64(s.holders))
		}

		family("adeagent_probe_duration_seconds", "gauge", "Wall time of each probe in the last evaluation.")
		for _, p := range r.Probes {
			if p.Status != api.ProbeDisabled {
				sample("adeagent_probe_duration_seconds", p.DurationMS/1000, "probe", p.Name)
			}
		}
		family("adeagent_probe_success", "gauge", "1 when the probe ran to completion in the last evaluation, 0 when it failed, timed out or panicked.")
		for _, p := range r.Probes {
			if p.Status != api.ProbeDisabled {
				sample("adeagent_probe_success", bool01(p.Status == api.ProbeOK), "probe", p.Name)
			}
		}
	}
	if err := b.Flush(); err != nil {
		return fmt.Errorf("write metrics: %w", err)
	}
	return nil
}

// escapeLabel escapes a label value: backslash, double quote and line feed.
func escapeLabel(s string) string {
	if !strings.ContainsAny(s, "\\\"\n") {
		return s
	}
	return strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(s)
}

// escapeHelp escapes HELP text: backslash and line feed.
func escapeHelp(s string) string {
	return strings.NewReplacer(`\`, `\\`, "\n", `\n`).Replace(s)
}
