package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/agent/selinux"
	"github.com/adeagent/adeagent/agent/sysd"
)

// ErrRestoreInProgress is returned by Prepare while a restore of the journal is under
// way or unfinished: finish the restore first.
var ErrRestoreInProgress = errors.New("a restore is in progress or unfinished; run restore first")

// prepareKinds is the order prepare runs the kinds of steps in (DESIGN.md §5). The
// Docker container record comes first, before the reactivators: docker.service has
// Requires=docker.socket, so stopping the socket stops dockerd (and its containers)
// too, and the record of what ran would come too late.
var prepareKinds = []string{KindDockerContainers, KindStopReactivator, KindPreStop, KindStopUnit, KindMask, KindSELinuxRuntime, KindSELinuxConfig}

// Prepare makes the VM ready: journal (the whole plan with every before-state) → record
// Docker's containers → reactivators → pre-stop → stop units (verify inactive and cgroup
// empty) → runtime mask → rescan holders → SELinux → ready|blocked.
// When a prepare is already journaled it resumes it: steps not yet done are run again,
// units it recorded keep their recorded before-state, and units that became active
// since are added. The error is for a call that could not run (journal unreadable or
// unwritable, systemd unreachable); what could not be made ready is in the findings.
func (e *Engine) Prepare(ctx context.Context, who Who) (*api.QuiesceResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	unlock, err := e.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := e.now()
	j, err := e.store.load()
	if err != nil {
		return nil, err
	}
	if j != nil && j.Restore != nil && j.Restore.Done == nil {
		return nil, ErrRestoreInProgress
	}
	if j != nil && !j.Owed() {
		j = nil // the last operation is restored: start afresh
	}
	p, err := e.computePlan(ctx, j)
	if err != nil {
		return nil, err
	}
	if j == nil {
		j = &Journal{SchemaVersion: JournalSchema, ID: fmt.Sprintf("q-%d", e.now().UnixNano()), BootID: e.bootID(),
			Created: e.now().UTC(), Who: who, Path: e.o.Path, PathReason: e.o.PathReason, Steps: []*Step{}}
		if p.seErr == nil {
			j.SELinux = &SELinuxBefore{Mount: p.se.Mount, Enforce: p.se.Enforce, Config: p.se.Config}
		}
		e.log.Info("prepare: recording the plan in the journal", zap.String("who", who.String()),
			zap.String("journal", e.store.path()), zap.String("path", e.o.Path), zap.String("op", j.ID))
	} else {
		e.log.Info("prepare: resuming the journaled prepare", zap.String("who", who.String()), zap.String("op", j.ID))
	}
	e.extend(ctx, j, p)
	// Journal intent: the whole plan, with every before-state, before any change.
	if err := e.save(j); err != nil {
		return nil, err
	}
	res := &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "prepare", Path: j.Path, Journal: e.store.path(),
		Steps: []api.QuiesceStep{}, Findings: []api.Finding{}}
	for _, kind := range prepareKinds {
		if kind == KindMask {
			// Verify every stop before masking (inactive, cgroup empty).
			e.verifyStops(ctx, j, res)
		}
		for _, s := range j.Steps {
			if s.Kind != kind {
				continue
			}
			if s.Done == nil {
				if err := e.runStep(ctx, j, s, who, res); err != nil {
					return nil, err
				}
			}
			res.Steps = append(res.Steps, resultStep(s, s.Result))
		}
		if kind == KindMask {
			e.rescan(ctx, res)
		}
	}
	res.Outcome = api.OutcomeReady
	for _, f := range res.Findings {
		if f.Blocker {
			res.Outcome = api.OutcomeBlocked
		}
	}
	j.Prepared = &Prepared{At: e.now().UTC(), Who: who, Outcome: res.Outcome}
	if err := e.save(j); err != nil {
		return nil, err
	}
	e.log.Info("prepare finished", zap.String("who", who.String()), zap.String("outcome", res.Outcome),
		zap.Int("findings", len(res.Findings)))
	e.finish(j, res, start)
	return res, nil
}

func (e *Engine) finish(j *Journal, res *api.QuiesceResult, start time.Time) {
	sortFindings(res.Findings)
	res.Quiesced = quiesced(j)
	if se, err := e.o.SELinux.State(); err == nil {
		res.SELinux = &api.SELinuxState{Mode: selinux.ModeName(se.Enforce)}
		if j.SELinux != nil && j.SELinux.Enforce != se.Enforce {
			res.SELinux.Previous = selinux.ModeName(j.SELinux.Enforce)
		}
	}
	res.GeneratedAt = e.now().UTC().Truncate(time.Second)
	res.DurationMS = float64(e.now().Sub(start).Microseconds()) / 1000
}

func resultStep(s *Step, result string) api.QuiesceStep {
	before := s.Before.ActiveState
	if s.Before.SubState != "" {
		before += " (" + s.Before.SubState + ")"
	}
	if s.Before.UnitFileState != "" {
		before += ", " + s.Before.UnitFileState
	}
	switch s.Kind {
	case KindSELinuxRuntime:
		if s.Before.Enforce != nil {
			before = selinux.ModeName(*s.Before.Enforce)
		}
	case KindSELinuxConfig:
		before = "SELINUX=" + s.Before.Config
	case KindDockerContainers:
		before = strconv.Itoa(len(s.Before.Containers)) + " running containers"
	}
	return api.QuiesceStep{Kind: s.Kind, Target: s.Target, Family: s.Family, Before: before, Result: result}
}

// extend appends steps for what the plan has and the journal lacks.
func (e *Engine) extend(ctx context.Context, j *Journal, p *plan) {
	have := map[string]bool{}
	for _, s := range j.Steps {
		have[s.Kind+" "+s.Target] = true
	}
	add := func(s *Step) {
		if have[s.Kind+" "+s.Target] {
			return
		}
		have[s.Kind+" "+s.Target] = true
		s.N = len(j.Steps) + 1
		j.Steps = append(j.Steps, s)
	}
	unitStep := func(kind string, u unitPlan) *Step {
		s := &Step{Kind: kind, Target: u.name, Family: u.family,
			Before: Before{ActiveState: u.state.ActiveState, SubState: u.state.SubState}}
		if info, err := e.o.Systemd.Unit(ctx, u.name); err == nil {
			s.Before.UnitFileState = info.UnitFileState
			s.Before.RequiresMountsFor = info.RequiresMountsFor
			s.Before.ControlGroup = info.ControlGroup
		}
		if u.fam != nil {
			s.Before.Timeout = u.fam.StopDeadline().String()
		}
		return s
	}
	var masks []string
	for _, u := range p.reactivators {
		if !u.journaled {
			add(unitStep(KindStopReactivator, u))
			masks = append(masks, u.name)
		}
	}
	for _, sp := range p.prestop {
		switch {
		case sp.step.Action == catalog.ActionDockerContainers:
			if e.o.Docker != nil && e.o.Docker.Present() {
				add(&Step{Kind: KindDockerContainers, Target: "docker", Family: sp.family, Before: Before{Timeout: sp.step.Deadline().String()}})
			}
		case len(sp.step.Argv) > 0:
			add(&Step{Kind: KindPreStop, Target: strings.Join(sp.step.Argv, " "), Family: sp.family,
				Before: Before{Argv: sp.step.Argv, Timeout: sp.step.Deadline().String()}})
		}
	}
	for _, u := range p.units {
		if !u.journaled {
			add(unitStep(KindStopUnit, u))
			masks = append(masks, u.name)
		}
	}
	if len(masks) > 0 {
		add(&Step{Kind: KindMask, Target: strings.Join(masks, " "), Before: Before{Units: masks}})
	}
	if p.seRuntime {
		v := p.se.Enforce
		add(&Step{Kind: KindSELinuxRuntime, Target: "enforce", Before: Before{Enforce: &v}})
	}
	if p.seConfig {
		add(&Step{Kind: KindSELinuxConfig, Target: selinux.ConfigPath, Before: Before{Config: p.se.Config}})
	}
}

// runStep writes the intent, makes the change, and writes the result. Only a journal
// write (or the test crash hook) returns an error.
func (e *Engine) runStep(ctx context.Context, j *Journal, s *Step, who Who, res *api.QuiesceResult) error {
	s.Intent, s.Result = e.stamp(), ""
	if err := e.save(j); err != nil {
		return err
	}
	log := e.log.With(zap.String("who", who.String()), zap.String("op", j.ID), zap.String("kind", s.Kind), zap.String("target", s.Target))
	var err error
	switch s.Kind {
	case KindStopReactivator, KindStopUnit:
		log.Info("prepare: stopping unit", zap.String("before", s.Before.ActiveState), zap.String("deadline", s.Before.Timeout))
		err = e.stopUnit(ctx, s, res)
	case KindDockerContainers:
		log.Info("prepare: recording running Docker containers")
		err = e.dockerRecord(ctx, j, s, log, res)
	case KindPreStop:
		log.Info("prepare: running pre-stop step", zap.Strings("argv", s.Before.Argv))
		err = e.prestop(ctx, s, res)
	case KindMask:
		log.Info("prepare: masking units until reboot (runtime)", zap.Strings("units", s.Before.Units))
		cctx, cancel := context.WithTimeout(ctx, e.o.JobTimeout)
		var guarded []string
		guarded, err = e.writeGuards(cctx, s.Before.Units)
		if len(guarded) > 0 {
			log.Info("prepare: unit files in /etc: a runtime mask does not reach them; adding a runtime drop-in that keeps them from starting",
				zap.Strings("units", guarded))
		}
		if err == nil {
			err = e.o.Systemd.MaskRuntime(cctx, s.Before.Units)
		}
		cancel()
		if err != nil {
			res.Findings = append(res.Findings, finding("quiesce.mask-failed", "Stopped units could not be masked",
				err.Error()+". Nothing else will keep them stopped if something starts them during the encryption.",
				"Mask them by hand: systemctl mask --runtime "+s.Target+".", false))
		}
	case KindSELinuxRuntime:
		log.Info("prepare: switching SELinux to permissive (runtime)")
		err = e.o.SELinux.SetEnforce(selinux.Permissive)
		if err != nil {
			res.Findings = append(res.Findings, finding("selinux.enforcing", "SELinux could not be switched to permissive",
				err.Error(), "Run setenforce 0 and check the audit log for a denial of setenforce.", true))
		}
	case KindSELinuxConfig:
		log.Info("prepare: setting SELINUX=permissive in /etc/selinux/config", zap.String("before", s.Before.Config))
		_, err = e.o.SELinux.SetConfigMode("permissive")
		if err != nil {
			res.Findings = append(res.Findings, finding("quiesce.selinux-config", "SELinux's boot mode could not be set to permissive",
				err.Error(), "Set SELINUX=permissive in /etc/selinux/config by hand before ADE reboots.", true))
		}
	}
	var je journalError
	if errors.As(err, &je) {
		return err
	}
	if err != nil {
		s.Result = "failed: " + err.Error()
		log.Warn("prepare step failed", zap.Error(err))
	} else {
		s.Done, s.Result = e.stamp(), "done"
	}
	return e.save(j)
}

func (e *Engine) stopUnit(ctx context.Context, s *Step, res *api.QuiesceResult) error {
	d := catalog.DefaultStopTimeout
	if t, err := time.ParseDuration(s.Before.Timeout); err == nil && t > 0 {
		d = t
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	r, err := e.o.Systemd.StopUnit(cctx, s.Target)
	cancel()
	if err == nil && r != sysd.JobDone {
		err = fmt.Errorf("stop job ended %q", r)
	}
	if err != nil {
		extra := ""
		if errors.Is(err, context.DeadlineExceeded) {
			extra = " The stop job may still be queued in systemd ('systemctl list-jobs'; 'systemctl cancel' drops it)."
		}
		res.Findings = append(res.Findings, finding("quiesce.stop-failed", s.Target+" did not stop",
			fmt.Sprintf("Stopping %s (family %s, deadline %s) failed: %v. adeagent never kills a process; the unit may still hold the OS drive.%s", s.Target, s.Family, d, err, extra),
			"Find out why with 'systemctl status "+s.Target+"' and 'journalctl -u "+s.Target+"', stop it cleanly, then run 'adeagentctl prepare' again.",
			true, unitRel(s.Target)))
		return err
	}
	return nil
}

// verifyStops re-reads every stopped unit: it must be inactive and its cgroup empty.
func (e *Engine) verifyStops(ctx context.Context, j *Journal, res *api.QuiesceResult) {
	for _, s := range j.Steps {
		if (s.Kind != KindStopUnit && s.Kind != KindStopReactivator) || s.Done == nil || undone(s) {
			continue
		}
		info, err := e.o.Systemd.Unit(ctx, s.Target)
		if err != nil {
			res.Findings = append(res.Findings, finding("quiesce.stop-failed", s.Target+": state unknown after the stop",
				err.Error(), "Check 'systemctl status "+s.Target+"'.", true, unitRel(s.Target)))
			continue
		}
		if isActive(info.ActiveState) || info.ActiveState == "deactivating" {
			res.Findings = append(res.Findings, finding("quiesce.stop-failed", s.Target+" is "+info.ActiveState+" after its stop job",
				fmt.Sprintf("The stop job of %s reported done, but the unit is %s (%s) now: something started it again.", s.Target, info.ActiveState, info.SubState),
				"Find what starts it (systemctl list-dependencies --reverse "+s.Target+"), stop that too, or add it to quiesce.allow.", true, unitRel(s.Target)))
			continue
		}
		if !strings.HasSuffix(s.Target, ".service") && !strings.HasSuffix(s.Target, ".scope") {
			continue
		}
		// systemd may drop ControlGroup once the unit is inactive; the cgroup it ran in
		// (journaled before the stop) is where leftovers stay.
		cg := info.ControlGroup
		if cg == "" {
			cg = s.Before.ControlGroup
		}
		if cg == "" {
			cg = "/system.slice/" + s.Target
		}
		pids, err := e.cgroupProcs(cg)
		if err != nil {
			res.Findings = append(res.Findings, finding("quiesce.cgroup-not-empty", s.Target+": its cgroup could not be read",
				err.Error(), "Check 'systemd-cgls -u "+s.Target+"'.", true, unitRel(s.Target)))
			continue
		}
		if len(pids) == 0 {
			continue
		}
		rel := []api.Related{unitRel(s.Target)}
		var names []string
		for _, pid := range pids {
			rel = append(rel, api.Related{Kind: "pid", ID: strconv.Itoa(pid)})
			comm, _ := os.ReadFile(e.o.Root.PID(pid, "comm"))
			names = append(names, fmt.Sprintf("%d %s", pid, strings.TrimSpace(string(comm))))
		}
		res.Findings = append(res.Findings, finding("quiesce.cgroup-not-empty", s.Target+" is inactive but processes are left in its cgroup",
			fmt.Sprintf("%s stopped, but %d process(es) remain in %s (KillMode=process or children that outlive the stop): %s. adeagent does not kill them.", s.Target, len(pids), cg, strings.Join(names, ", ")),
			"Stop them with the vendor's procedure (e.g. k3s-killall.sh, docker stop for live-restore containers) or 'systemctl kill "+s.Target+"' if you accept that, then prepare again.",
			true, rel...))
	}
}

// cgroupProcs lists the pids in cg and its descendants (cgroup v2, hybrid, or v1's
// name=systemd hierarchy). A cgroup that is gone is empty.
func (e *Engine) cgroupProcs(cg string) ([]int, error) {
	var base string
	for _, b := range []string{"/sys/fs/cgroup", "/sys/fs/cgroup/unified", "/sys/fs/cgroup/systemd"} {
		if _, err := os.Stat(e.o.Root.Path(filepath.Join(b, "cgroup.procs"))); err == nil {
			base = b
			break
		}
	}
	if base == "" {
		return nil, errors.New("no cgroup hierarchy with cgroup.procs under /sys/fs/cgroup")
	}
	dir := e.o.Root.Path(filepath.Join(base, cg))
	var pids []int
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		if d.IsDir() || d.Name() != "cgroup.procs" {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			if os.IsNotExist(err) {
				return nil
			}
			return err
		}
		for _, f := range strings.Fields(string(b)) {
			if n, err := strconv.Atoi(f); err == nil {
				pids = append(pids, n)
			}
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("read cgroup %s: %w", cg, err)
	}
	sort.Ints(pids)
	return pids, nil
}

func (e *Engine) dockerRecord(ctx context.Context, j *Journal, s *Step, log *zap.Logger, res *api.QuiesceResult) error {
	d := catalog.DefaultStepTimeout
	if t, err := time.ParseDuration(s.Before.Timeout); err == nil && t > 0 {
		d = t
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if s.Before.Containers == nil {
		cs, err := e.o.Docker.Running(cctx)
		if err != nil {
			res.Findings = append(res.Findings, finding("quiesce.docker", "Docker's running containers could not be recorded",
				err.Error()+". Restore cannot start them again by itself.", "Note the running containers (docker ps) before going on.", false, unitRel("docker.service")))
			return err
		}
		live, _ := e.o.Docker.LiveRestore(cctx)
		s.Before.Containers, s.Before.LiveRestore = cs, live
		if s.Before.Containers == nil {
			s.Before.Containers = []Container{}
		}
		// The record is the before-state: journal it before stopping anything.
		if err := e.save(j); err != nil {
			return err
		}
	}
	if !s.Before.LiveRestore {
		return nil
	}
	// With live-restore, containers outlive docker.service and keep the drive busy:
	// stop them through Docker's own clean stop.
	var errs []error
	for _, c := range s.Before.Containers {
		if !c.Running {
			continue
		}
		log.Info("prepare: stopping container (dockerd has live-restore on)", zap.String("container", c.ID), zap.String("name", c.Name))
		if err := e.o.Docker.Stop(cctx, c.ID, 10*time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		res.Findings = append(res.Findings, finding("quiesce.docker", "Containers could not be stopped",
			err.Error()+". With live-restore on they outlive docker.service and hold the OS drive.", "Stop them with 'docker stop', then prepare again.", true, unitRel("docker.service")))
		return err
	}
	return nil
}

func (e *Engine) prestop(ctx context.Context, s *Step, res *api.QuiesceResult) error {
	if e.o.Exec == nil {
		res.Findings = append(res.Findings, finding("quiesce.prestop", "Pre-stop step not run: "+s.Target,
			"This adeagent has no way to run commands on this root.", "Run '"+s.Target+"' by hand before encrypting.", false))
		return errors.New("no executor")
	}
	d := catalog.DefaultStepTimeout
	if t, err := time.ParseDuration(s.Before.Timeout); err == nil && t > 0 {
		d = t
	}
	cctx, cancel := context.WithTimeout(ctx, d)
	out, err := e.o.Exec.Run(cctx, s.Before.Argv)
	cancel()
	if err != nil {
		msg := strings.TrimSpace(string(out))
		if len(msg) > 300 {
			msg = msg[len(msg)-300:]
		}
		res.Findings = append(res.Findings, finding("quiesce.prestop", "Pre-stop step failed: "+s.Target,
			fmt.Sprintf("'%s' (family %s) failed: %v %s. The unit is stopped anyway; its shutdown may take longer.", s.Target, s.Family, err, msg),
			"Run '"+s.Target+"' by hand and check its output.", false))
		return err
	}
	return nil
}

// rescan asks for the OS drive's holders after the stops (unmount path only: on the
// online path nothing is unmounted).
func (e *Engine) rescan(ctx context.Context, res *api.QuiesceResult) {
	if e.o.Rescan == nil || e.o.Path != PathUnmount {
		return
	}
	rctx, cancel := context.WithTimeout(ctx, e.o.JobTimeout)
	hr, err := e.o.Rescan(rctx)
	cancel()
	if err != nil {
		res.Findings = append(res.Findings, finding("os-drive.holders", "The OS drive's holders could not be scanned",
			err.Error(), "Run 'adeagent holders' to see what holds the OS drive.", true))
		return
	}
	if hr == nil {
		return
	}
	var procs, kernel []string
	var prel, krel []api.Related
	for _, h := range hr.Holders {
		switch h.Kind {
		case api.KindProcess, api.KindThread:
			who := fmt.Sprintf("pid %d %s", h.PID, h.Comm)
			if h.Unit != "" {
				who += " (" + h.Unit + ")"
			}
			if h.Container != "" {
				who += " (container " + h.Container + ")"
			}
			if len(h.Paths) > 0 {
				who += " " + h.Paths[0]
			}
			procs = append(procs, who)
			prel = append(prel, api.Related{Kind: "pid", ID: strconv.Itoa(h.PID)})
			if h.Unit != "" {
				prel = append(prel, unitRel(h.Unit))
			}
		default:
			kernel = append(kernel, h.Kind+" "+h.Detail)
			if h.Mount != "" {
				krel = append(krel, api.Related{Kind: "mount", ID: h.Mount})
			}
		}
	}
	if len(procs) > 0 {
		res.Findings = append(res.Findings, finding("os-drive.holders", "Processes still hold the OS drive after the stops",
			fmt.Sprintf("%d process(es) still hold the OS drive: %s. They are outside the catalog and quiesce.allow, or outlived their unit's stop; adeagent never kills them (ADE would kill -9 them).", len(procs), strings.Join(procs, "; ")),
			"Stop them cleanly (or add their unit to quiesce.allow), then run 'adeagentctl prepare' again.", true, prel...))
	}
	if len(kernel) > 0 {
		res.Findings = append(res.Findings, finding("os-drive.kernel-holders", "The kernel still holds the OS drive",
			strings.Join(kernel, "; "), "See 'adeagent holders' for each holder's remedy.", true, krel...))
	}
	if len(hr.Incomplete) > 0 {
		f := finding("os-drive.holders", "Parts of the holder scan were incomplete",
			fmt.Sprintf("%d item(s) could not be inspected; they are not counted as clean.", len(hr.Incomplete)),
			"Run 'adeagent holders' as root for details.", false)
		f.Severity = api.SeverityLow
		res.Findings = append(res.Findings, f)
	}
}
