package probes

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// servicesProbe reports heavy services that are running (services.heavy-active).
//
// ADE's stripdown (unmount path) copies /var/lib into a tmpfs, restarts every running
// service on that copy and kills with SIGKILL whatever still holds the old root; a database
// it restarts keeps accepting writes that vanish at the reboot (research:
// services_selinux.md §0–§2, ade_extension.md §1.2, DESIGN.md §5). The families come from
// agent/catalog. systemd is asked when Env.Units is set; /proc is always looked at too, for
// catalog processes that run outside the units systemd reported (started by hand, in a
// container), and is the only source when systemd cannot be asked.
type servicesProbe struct {
	// Catalog replaces the embedded catalog (config overrides, tests); nil is the default.
	Catalog *catalog.Catalog
}

func (servicesProbe) Name() string { return "services" }

// svcMaxPIDs bounds the pids named per unit or family (PostgreSQL runs one per connection).
const svcMaxPIDs = 8

// svcRunningStates are systemd ActiveStates in which a unit's processes may run.
var svcRunningStates = map[string]bool{
	"active": true, "activating": true, "deactivating": true, "reloading": true, "refreshing": true,
}

// svcActiveUnit is a running unit of a family.
type svcActiveUnit struct {
	Name, Active, Sub string
	PIDs              []int
}

// svcProcHit is a catalog process.
type svcProcHit struct {
	PID       int
	Comm      string
	Unit      string // systemd unit from its cgroup ("" if none)
	Container bool   // runs inside a container (docker-….scope, /kubepods, …)
}

// svcFamilyHit is everything running of one family.
type svcFamilyHit struct {
	Family       catalog.Family
	Units        []svcActiveUnit
	Reactivators []string
	Others       []svcProcHit // processes outside the units listed (or every one, without systemd)
}

func (p servicesProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	cat := p.Catalog
	if cat == nil {
		var err error
		if cat, err = catalog.Default(); err != nil {
			return nil, err
		}
	}
	distro := catalog.DistroFamily(env.Distro.ID, env.Distro.IDLike)
	heavy := cat.Heavy()
	hits := make([]*svcFamilyHit, len(heavy))
	for i, f := range heavy {
		hits[i] = &svcFamilyHit{Family: f}
	}

	var sources []string
	var sysErr error
	fromSystemd := false
	if env.Units != nil {
		if err := p.askSystemd(ctx, env.Units, cat, distro, hits); err != nil {
			sysErr = err
		} else {
			fromSystemd = true
			sources = append(sources, "systemd")
		}
	}
	procs, procErr := svcScanCatalogProcs(ctx, env, heavy)
	switch {
	case procErr != nil && !fromSystemd:
		if sysErr != nil {
			return nil, fmt.Errorf("heavy services: systemd: %v; /proc: %w", sysErr, procErr)
		}
		return nil, fmt.Errorf("heavy services: no systemd to ask and %w", procErr)
	case procErr == nil:
		sources = append(sources, "/proc")
		svcAttachProcs(hits, procs)
	}

	var active []*svcFamilyHit
	for _, h := range hits {
		if len(h.Units) > 0 || len(h.Others) > 0 {
			active = append(active, h)
		}
	}
	if len(active) == 0 {
		return nil, nil
	}
	if !fromSystemd {
		// Without systemd, the units come from the processes' cgroups and the
		// reactivators from the catalog (stopping an inactive socket is harmless).
		for _, h := range active {
			h.Reactivators = svcExactNames(h.Family.Reactivators)
		}
	}
	source := strings.Join(sources, " and ")
	switch {
	case sysErr != nil:
		source += fmt.Sprintf(" (systemd did not answer: %v)", sysErr)
	case env.Units == nil:
		source += " (systemd not asked: not the running host, or systemd is not PID 1)"
	}
	return []api.Finding{svcServicesFinding(env, active, source)}, nil
}

// askSystemd fills hits with the running units and reactivators systemd reports.
func (p servicesProbe) askSystemd(ctx context.Context, units Units, cat *catalog.Catalog, distro string, hits []*svcFamilyHit) error {
	var patterns []string
	seen := map[string]bool{}
	for _, h := range hits {
		for _, pat := range append(h.Family.UnitPatterns(distro), h.Family.Reactivators...) {
			if !seen[pat] {
				seen[pat] = true
				patterns = append(patterns, pat)
			}
		}
	}
	if len(patterns) == 0 {
		return nil
	}
	states, err := units.ListUnits(ctx, patterns)
	if err != nil {
		return err
	}
	for _, u := range states {
		if !svcRunningStates[u.ActiveState] || cat.IsNeverStop(u.Name) {
			continue
		}
		for _, h := range hits {
			f := h.Family
			if f.MatchReactivator(u.Name) {
				h.Reactivators = svcAppendUnique(h.Reactivators, u.Name)
				break
			}
			if f.MatchUnit(distro, u.Name) {
				if f.IsUmbrella(u.Name) && u.SubState == "exited" {
					break // a oneshot wrapper; its instances are listed on their own
				}
				au := svcActiveUnit{Name: u.Name, Active: u.ActiveState, Sub: u.SubState}
				if u.MainPID > 0 {
					au.PIDs = []int{u.MainPID}
				}
				h.Units = append(h.Units, au)
				break
			}
		}
	}
	return nil
}

// svcAttachProcs adds each catalog process to its family: to the unit it runs in when that
// unit is already listed, otherwise as a process of its own.
func svcAttachProcs(hits []*svcFamilyHit, procs map[string][]svcProcHit) {
	for _, h := range hits {
		for _, pr := range procs[h.Family.Name] {
			placed := false
			for i := range h.Units {
				if h.Units[i].Name == pr.Unit {
					if !svcContainsInt(h.Units[i].PIDs, pr.PID) && len(h.Units[i].PIDs) < svcMaxPIDs {
						h.Units[i].PIDs = append(h.Units[i].PIDs, pr.PID)
					}
					placed = true
					break
				}
			}
			if !placed {
				h.Others = append(h.Others, pr)
			}
		}
	}
}

// svcScanCatalogProcs returns the catalog processes by family name, from the evaluation's
// shared process list.
func svcScanCatalogProcs(ctx context.Context, env *Env, families []catalog.Family) (map[string][]svcProcHit, error) {
	procs, err := env.Processes(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string][]svcProcHit{}
	for _, pr := range procs {
		comm, exe := pr.Comm, ""
		if pr.Exe != "" {
			exe = filepath.Base(pr.Exe)
		}
		if comm == "" && exe == "" {
			continue // gone meanwhile
		}
		for _, f := range families {
			if !f.HasProcessMatchers() {
				continue
			}
			if !f.MatchProcess(comm, exe, pr.Argv) {
				continue
			}
			unit, container := svcUnitOfPID(env.Root, pr.PID)
			if comm == "" {
				comm = exe
			}
			out[f.Name] = append(out[f.Name], svcProcHit{PID: pr.PID, Comm: comm, Unit: unit, Container: container})
			break
		}
	}
	for name := range out {
		sort.Slice(out[name], func(i, j int) bool { return out[name][i].PID < out[name][j].PID })
	}
	return out, nil
}

// svcUnitOfPID reads the systemd unit a process runs in from its cgroup (v2 "0::" line, or
// the v1 name=systemd hierarchy), and whether that cgroup is a container's.
func svcUnitOfPID(root hostroot.Root, pid int) (unit string, container bool) {
	data, err := os.ReadFile(root.PID(pid, "cgroup"))
	if err != nil {
		return "", false
	}
	var path string
	for _, line := range strings.Split(string(data), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[0] == "0" && parts[1] == "" {
			path = parts[2]
			break
		}
		if parts[1] == "name=systemd" {
			path = parts[2]
		}
	}
	return svcCgroupUnit(path)
}

// svcCgroupUnit picks the innermost .service or .scope of a cgroup path.
func svcCgroupUnit(path string) (unit string, container bool) {
	elems := strings.Split(path, "/")
	for i := len(elems) - 1; i >= 0; i-- {
		e := elems[i]
		if strings.HasSuffix(e, ".service") || strings.HasSuffix(e, ".scope") {
			unit = e
			break
		}
	}
	for _, marker := range []string{"/docker/", "/docker-", "/kubepods", "/libpod-", "/crio-", "/cri-containerd-", "/lxc/", "/lxc.payload"} {
		if strings.Contains(path+"/", marker) {
			container = true
			break
		}
	}
	return unit, container
}

// svcServicesFinding builds the one services.heavy-active finding for what runs.
func svcServicesFinding(env *Env, active []*svcFamilyHit, source string) api.Finding {
	f := api.Finding{Key: "services.heavy-active", Probe: "services"}
	var titles, lines, notes []string
	var stopCmds [][]string
	relSeen := map[string]bool{}
	rel := func(kind, id string) {
		if !relSeen[kind+":"+id] {
			relSeen[kind+":"+id] = true
			f.Related = append(f.Related, api.Related{Kind: kind, ID: id})
		}
	}
	for _, h := range active {
		fam := h.Family
		titles = append(titles, fam.Title)
		var parts []string
		var stop []string
		for _, r := range h.Reactivators {
			stop = append(stop, r)
			rel("unit", r)
		}
		for _, u := range h.Units {
			parts = append(parts, fmt.Sprintf("%s (%s/%s%s)", u.Name, u.Active, u.Sub, svcPidList(u.PIDs)))
			stop = append(stop, u.Name)
			rel("unit", u.Name)
			for _, pid := range u.PIDs {
				rel("pid", strconv.Itoa(pid))
			}
		}
		// Processes outside the listed units, grouped by the unit they run in.
		byUnit := map[string][]svcProcHit{}
		var order []string
		for _, pr := range h.Others {
			if _, ok := byUnit[pr.Unit]; !ok {
				order = append(order, pr.Unit)
			}
			byUnit[pr.Unit] = append(byUnit[pr.Unit], pr)
		}
		for _, unit := range order {
			prs := byUnit[unit]
			var pids []int
			for _, pr := range prs {
				if len(pids) < svcMaxPIDs {
					pids = append(pids, pr.PID)
					rel("pid", strconv.Itoa(pr.PID))
				}
			}
			what := fmt.Sprintf("%s%s", prs[0].Comm, svcPidList(pids))
			switch {
			case prs[0].Container:
				parts = append(parts, fmt.Sprintf("%s in container %s (stopping its container runtime stops it)", what, unit))
			case strings.HasSuffix(unit, ".service"):
				parts = append(parts, fmt.Sprintf("%s in %s", what, unit))
				stop = append(stop, unit)
				rel("unit", unit)
			case unit != "":
				parts = append(parts, fmt.Sprintf("%s in %s, not a service (started by hand?): stop it where it was started", what, unit))
			default:
				parts = append(parts, fmt.Sprintf("%s, unit unknown: stop it where it was started", what))
			}
		}
		lines = append(lines, fmt.Sprintf("%s: %s", fam.Title, strings.Join(parts, ", ")))
		for _, d := range fam.Data {
			if _, err := os.Stat(env.Root.Path(d)); err == nil {
				rel("path", d)
			}
		}
		for _, st := range fam.PreStop {
			if len(st.Argv) > 0 && len(stop) > 0 {
				stopCmds = append(stopCmds, append([]string(nil), st.Argv...))
			}
			if st.Hint != "" {
				notes = append(notes, fam.Title+": "+st.Hint)
			}
		}
		if fam.Notes != "" {
			notes = append(notes, fam.Title+": "+fam.Notes)
		}
		if len(stop) > 0 {
			stopCmds = append(stopCmds, append([]string{"systemctl", "stop"}, svcUniqueStrings(stop)...))
		}
	}
	f.Title = "Heavy services are running: " + strings.Join(titles, ", ")
	running := strings.Join(lines, "; ")
	var manual []string
	for _, c := range stopCmds {
		manual = append(manual, strings.Join(c, " "))
	}
	byHand := ""
	if len(manual) > 0 {
		byHand = " By hand, in this order: " + strings.Join(manual, "; ") + "."
	}
	noteText := ""
	if len(notes) > 0 {
		noteText = " " + strings.Join(notes, ". ") + "."
	}
	switch env.Distro.Path {
	case PathOnline:
		f.Severity, f.Blocker = api.SeverityMedium, false
		f.Summary = fmt.Sprintf("Running (source: %s): %s. On %s ADE re-encrypts the OS drive online after a reboot and unmounts nothing, so these do not block it; Microsoft still asks to stop and disable services writing to the data drives being encrypted, and ADE unmounts each data drive it encrypts.", source, running, svcDistroLabel(env.Distro))
		f.Remediation.Hint = "Before encrypting data drives, stop the services that write to them, and list them in adeagent's configuration so that prepare stops and restore restarts them." + byHand + noteText
		f.Remediation.Commands = stopCmds
	case PathNone:
		f.Severity, f.Blocker = api.SeverityLow, false
		f.Summary = fmt.Sprintf("Running (source: %s): %s. ADE cannot encrypt this distribution's OS drive; when encrypting data drives, stop the services writing to them first.", source, running)
		f.Remediation.Hint = "Stop the services that write to the data drives being encrypted." + byHand + noteText
		f.Remediation.Commands = stopCmds
	default:
		f.Severity, f.Blocker = api.SeverityHigh, true
		if len(stopCmds) == 0 {
			// Nothing systemd could stop: prepare never kills unmanaged processes.
			f.Summary = fmt.Sprintf("Running (source: %s): %s. ADE's stripdown kills with SIGKILL whatever still holds the old root, and these run outside any systemd service adeagent could stop.", source, running)
			f.Remediation.Hint = "Shut these down cleanly where they were started (their own stop command, or the session or container that runs them); 'adeagentctl prepare' never kills processes it does not manage." + noteText
			break
		}
		f.Summary = fmt.Sprintf("Running (source: %s): %s. ADE's stripdown copies /var/lib into RAM and restarts every running service there, so their writes vanish at the reboot, and it kills with SIGKILL whatever still holds the old root; Microsoft names SAP, MongoDB, Cassandra and Docker as causes of \"failed to unmount\".", source, running)
		f.Remediation.Hint = "Run 'adeagentctl prepare': it stops these through systemd (reactivators first), keeps them stopped through ADE's stripdown and starts them again on 'adeagentctl restore'." + byHand + noteText
		f.Remediation.Commands = append([][]string{{"adeagentctl", "prepare"}}, stopCmds...)
	}
	return f
}

func svcDistroLabel(d Distro) string {
	if d.PrettyName != "" {
		return d.PrettyName
	}
	if d.ID != "" {
		return strings.TrimSpace(d.ID + " " + d.VersionID)
	}
	return "this distribution"
}

func svcPidList(pids []int) string {
	if len(pids) == 0 {
		return ""
	}
	s := make([]string, len(pids))
	for i, p := range pids {
		s[i] = strconv.Itoa(p)
	}
	if len(pids) == 1 {
		return ", pid " + s[0]
	}
	return ", pids " + strings.Join(s, " ")
}

// svcExactNames drops globs from a list of unit names.
func svcExactNames(names []string) []string {
	var out []string
	for _, n := range names {
		if !strings.ContainsAny(n, "*?[") {
			out = append(out, n)
		}
	}
	return out
}

func svcAppendUnique(list []string, s string) []string {
	for _, x := range list {
		if x == s {
			return list
		}
	}
	return append(list, s)
}

func svcUniqueStrings(list []string) []string {
	var out []string
	for _, s := range list {
		out = svcAppendUnique(out, s)
	}
	return out
}

func svcContainsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
