package quiesce

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/selinux"
	"github.com/adeagent/adeagent/probes"
)

// FamilyAllow is the family name of units stopped only because quiesce.allow names them.
const FamilyAllow = "allow"

// allowOrder puts allowlisted units without a family first (applications writing to the
// disks, before the databases they use); they are restored last.
const allowOrder = 0

type unitPlan struct {
	name      string
	family    string
	order     int
	fam       *catalog.Family
	state     probes.UnitState
	journaled bool
}

type stepPlan struct {
	family string
	step   catalog.Step
}

type plan struct {
	reactivators []unitPlan
	prestop      []stepPlan
	units        []unitPlan
	skipped      []api.SkippedUnit
	se           selinux.State
	seErr        error
	seRuntime    bool
	seConfig     bool
	seReason     string
}

// families is every catalog family, by stop order then name.
func (e *Engine) families() []catalog.Family {
	fams := slices.Clone(e.o.Catalog.Families)
	sort.SliceStable(fams, func(i, j int) bool {
		if fams[i].Order != fams[j].Order {
			return fams[i].Order < fams[j].Order
		}
		return fams[i].Name < fams[j].Name
	})
	return fams
}

// familyOf is the first family (stop order) whose units match unit.
func (e *Engine) familyOf(unit string) *catalog.Family {
	for _, f := range e.families() {
		if f.MatchUnit(e.o.DistroFamily, unit) {
			return &f
		}
	}
	return nil
}

// selected says whether prepare may stop unit, and if not, why.
func (e *Engine) selected(unit string, fam *catalog.Family) (bool, string, string) {
	if e.o.Catalog.IsNeverStop(unit) {
		return false, "never-stop", "on adeagent's never-stop list (DESIGN.md §5); config cannot change that"
	}
	if matchAny(e.o.Allow, unit) {
		return true, "", ""
	}
	if fam == nil {
		return false, "not-allowed", "neither in the service catalog nor in config quiesce.allow"
	}
	if e.o.Path == PathOnline {
		return false, "online-path", "ADE's online path unmounts nothing; prepare stops only units in config quiesce.allow"
	}
	if !fam.Heavy {
		return false, "not-heavy", "catalog family " + fam.Name + " is stopped only when config quiesce.allow names it"
	}
	return true, "", ""
}

// computePlan finds what prepare would do now. j is the journal of a prepare in
// progress (nil: none); units it already recorded keep their place.
func (e *Engine) computePlan(ctx context.Context, j *Journal) (*plan, error) {
	p := &plan{}
	fams := e.families()
	var patterns []string
	for _, f := range fams {
		patterns = append(patterns, f.UnitPatterns(e.o.DistroFamily)...)
		patterns = append(patterns, f.Reactivators...)
	}
	patterns = append(patterns, e.o.Allow...)
	slices.Sort(patterns)
	patterns = slices.Compact(patterns)
	listed, err := e.o.Systemd.ListUnits(ctx, patterns)
	if err != nil {
		return nil, fmt.Errorf("list units: %w", err)
	}
	journaled := map[string]bool{}
	if j != nil {
		for _, s := range j.Steps {
			if s.Kind == KindStopUnit || s.Kind == KindStopReactivator {
				journaled[s.Target] = true
			}
		}
	}
	byName := map[string]probes.UnitState{}
	for _, u := range listed {
		byName[u.Name] = u
	}
	// Holder attribution: a holder in a unit's cgroup names the unit even when the
	// patterns above missed it (an alias, a template instance).
	var holderUnits []string
	holderDetail := map[string]string{}
	if e.o.Rescan != nil && e.o.Path == PathUnmount {
		rctx, cancel := context.WithTimeout(ctx, e.o.JobTimeout)
		hr, err := e.o.Rescan(rctx)
		cancel()
		if err == nil && hr != nil {
			for _, h := range hr.Holders {
				if h.Unit == "" || !strings.Contains(h.Unit, ".") {
					continue
				}
				if _, seen := holderDetail[h.Unit]; !seen {
					holderUnits = append(holderUnits, h.Unit)
					d := fmt.Sprintf("holds the OS drive (pid %d %s)", h.PID, h.Comm)
					if h.Container != "" {
						d += "; container " + h.Container + ": it stops with its container runtime's family, or by hand"
					}
					holderDetail[h.Unit] = d
				}
			}
		}
	}
	// Journaled units systemd no longer lists (an inactive unit can be unloaded) stay in
	// the plan: the journal keeps their steps.
	for name := range journaled {
		if _, ok := byName[name]; !ok {
			byName[name] = probes.UnitState{Name: name, ActiveState: "inactive", SubState: "dead"}
		}
	}
	for _, name := range holderUnits {
		if _, ok := byName[name]; ok {
			continue
		}
		if info, err := e.o.Systemd.Unit(ctx, name); err == nil {
			byName[name] = probes.UnitState{Name: name, ActiveState: info.ActiveState, SubState: info.SubState}
		}
	}
	names := make([]string, 0, len(byName))
	for n := range byName {
		names = append(names, n)
	}
	sort.Strings(names)

	// Units first, so reactivators and pre-stop steps follow the families in play.
	famInPlay := map[string]bool{}
	skippedSeen := map[string]bool{}
	skip := func(unit, family, reason, detail string) {
		if skippedSeen[unit] {
			return
		}
		skippedSeen[unit] = true
		p.skipped = append(p.skipped, api.SkippedUnit{Unit: unit, Family: family, Reason: reason, Detail: detail})
	}
	isReactivator := func(unit string) *catalog.Family {
		for _, f := range fams {
			if f.MatchReactivator(unit) {
				return &f
			}
		}
		return nil
	}
	for _, name := range names {
		st := byName[name]
		if isReactivator(name) != nil {
			continue
		}
		fam := e.familyOf(name)
		famName := FamilyAllow
		order := allowOrder
		if fam != nil {
			famName, order = fam.Name, fam.Order
		}
		if journaled[name] {
			p.units = append(p.units, unitPlan{name: name, family: famName, order: order, fam: fam, state: st, journaled: true})
			famInPlay[famName] = true
			continue
		}
		if !isActive(st.ActiveState) {
			continue
		}
		ok, reason, detail := e.selected(name, fam)
		if !ok {
			if d := holderDetail[name]; d != "" {
				detail = d + "; " + detail
			}
			fn := ""
			if fam != nil {
				fn = fam.Name
			}
			// Report never-stop units only when they matter: a catalog/allow match or a holder.
			if reason != "never-stop" || fam != nil || matchAny(e.o.Allow, name) || holderDetail[name] != "" {
				skip(name, fn, reason, detail)
			}
			continue
		}
		p.units = append(p.units, unitPlan{name: name, family: famName, order: order, fam: fam, state: st})
		famInPlay[famName] = true
	}
	sort.SliceStable(p.units, func(a, b int) bool {
		if p.units[a].order != p.units[b].order {
			return p.units[a].order < p.units[b].order
		}
		return p.units[a].family < p.units[b].family
	})
	// Reactivators of the families in play (on the unmount path: of every heavy family,
	// since an active docker.socket starts docker.service during the stripdown).
	for _, name := range names {
		fam := isReactivator(name)
		if fam == nil {
			continue
		}
		st := byName[name]
		inPlay := famInPlay[fam.Name] || (e.o.Path == PathUnmount && fam.Heavy) || matchAny(e.o.Allow, name)
		if journaled[name] {
			p.reactivators = append(p.reactivators, unitPlan{name: name, family: fam.Name, order: fam.Order, fam: fam, state: st, journaled: true})
			continue
		}
		if !inPlay || !isActive(st.ActiveState) {
			continue
		}
		if e.o.Catalog.IsNeverStop(name) {
			skip(name, fam.Name, "never-stop", "on adeagent's never-stop list")
			continue
		}
		p.reactivators = append(p.reactivators, unitPlan{name: name, family: fam.Name, order: fam.Order, fam: fam, state: st})
		famInPlay[fam.Name] = true
	}
	sort.SliceStable(p.reactivators, func(a, b int) bool { return p.reactivators[a].order < p.reactivators[b].order })
	// Holders in units nobody may stop.
	for _, name := range holderUnits {
		if skippedSeen[name] || slices.ContainsFunc(p.units, func(u unitPlan) bool { return u.name == name }) {
			continue
		}
		ok, reason, detail := e.selected(name, e.familyOf(name))
		if !ok {
			skip(name, "", reason, holderDetail[name]+"; "+detail)
		}
	}
	// Pre-stop steps of the families in play, in stop order.
	for _, f := range fams {
		if !famInPlay[f.Name] {
			continue
		}
		for _, st := range f.PreStop {
			p.prestop = append(p.prestop, stepPlan{family: f.Name, step: st})
		}
	}
	// SELinux.
	p.se, p.seErr = e.o.SELinux.State()
	if j != nil && j.SELinux != nil {
		// What SELinux was before the first prepare counts, not what it is now.
		p.se.Enforce, p.se.Config = j.SELinux.Enforce, j.SELinux.Config
	}
	switch {
	case p.seErr != nil:
		p.seReason = "SELinux state unreadable: " + p.seErr.Error()
	case p.se.Enforce != selinux.Enforcing:
		p.seReason = "SELinux is " + selinux.ModeName(p.se.Enforce) + ": nothing to change"
	case e.o.Path == PathOnline && !e.o.SELinuxOnline:
		p.seReason = "ADE's online path unmounts nothing; SELinux stays enforcing"
	case e.o.Path == PathOnline:
		p.seRuntime = true
		p.seConfig = p.se.Config == "enforcing"
		p.seReason = "online path with SELinux switching configured: permissive now and, through the reboot, in /etc/selinux/config"
	default:
		p.seRuntime = true
		p.seReason = "an enforcing SELinux makes the unmount of the old root fail; runtime permissive (as ADE's own code does)"
	}
	return p, nil
}

// Plan is prepare's dry run: what it would stop, in which order, what it leaves and
// why, and what it does with SELinux. It changes nothing.
func (e *Engine) Plan(ctx context.Context) (*api.QuiescePlan, error) {
	j, err := e.store.load()
	if err != nil {
		return nil, err
	}
	if j != nil && !j.Owed() {
		j = nil // a finished operation: a new prepare starts afresh
	}
	p, err := e.computePlan(ctx, j)
	if err != nil {
		return nil, err
	}
	out := &api.QuiescePlan{
		SchemaVersion: api.SchemaVersion, GeneratedAt: e.now().UTC().Truncate(1e9),
		Path: e.o.Path, PathReason: e.o.PathReason, Resume: j != nil,
		Reactivators: []api.PlannedUnit{}, PreStop: []api.PlannedStep{}, Units: []api.PlannedUnit{},
		NotStopping: p.skipped,
	}
	if out.NotStopping == nil {
		out.NotStopping = []api.SkippedUnit{}
	}
	conv := func(u unitPlan) api.PlannedUnit {
		d := catalog.DefaultStopTimeout
		if u.fam != nil {
			d = u.fam.StopDeadline()
		}
		return api.PlannedUnit{Unit: u.name, Family: u.family, ActiveState: u.state.ActiveState, SubState: u.state.SubState,
			StopTimeoutS: d.Seconds(), Journaled: u.journaled}
	}
	for _, u := range p.reactivators {
		out.Reactivators = append(out.Reactivators, conv(u))
	}
	for _, u := range p.units {
		out.Units = append(out.Units, conv(u))
	}
	for _, s := range p.prestop {
		out.PreStop = append(out.PreStop, api.PlannedStep{Family: s.family, Hint: s.step.Hint, Argv: s.step.Argv,
			Action: s.step.Action, Run: len(s.step.Argv) > 0 || s.step.Action != ""})
	}
	out.SELinux = api.PlannedSELinux{Mode: selinux.ModeName(p.se.Enforce), Config: p.se.Config,
		Runtime: "none", ConfigFile: "none", Reason: p.seReason}
	if p.seRuntime {
		out.SELinux.Runtime = "set-permissive"
	}
	if p.seConfig {
		out.SELinux.ConfigFile = "set-permissive"
	}
	return out, nil
}
