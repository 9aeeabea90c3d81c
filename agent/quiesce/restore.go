package quiesce

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/selinux"
	"github.com/adeagent/adeagent/agent/sysd"
	"github.com/adeagent/adeagent/unmount"
)

// Restore undoes what the journal says prepare did (or may have done): unmask, start the
// units that were running (after their data mounts are there), start the recorded
// containers, start the reactivators, and put SELinux back last. A step already undone is
// not redone; undoing a change that never happened is harmless (starting a running unit,
// unmasking an unmasked one). With nothing owed it does nothing (outcome "nothing").
// A corrupt journal is moved aside (never deleted) and reported: restore cannot know what
// to undo, so the outcome is "failed" with a finding naming the file.
func (e *Engine) Restore(ctx context.Context, who Who) (*api.QuiesceResult, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	unlock, err := e.lock(ctx)
	if err != nil {
		return nil, err
	}
	defer unlock()
	start := e.now()
	res := &api.QuiesceResult{SchemaVersion: api.SchemaVersion, Action: "restore", Journal: e.store.path(),
		Steps: []api.QuiesceStep{}, Findings: []api.Finding{}, Quiesced: []api.QuiescedUnit{}}
	j, err := e.store.load()
	if errors.Is(err, ErrCorrupt) {
		aside, qerr := e.store.quarantine(e.now())
		if qerr != nil {
			return nil, errors.Join(err, qerr)
		}
		e.log.Error("restore: the quiesce journal is corrupt; moved aside", zap.String("who", who.String()),
			zap.String("file", aside), zap.Error(err))
		res.Outcome = api.OutcomeFailed
		res.Findings = append(res.Findings, finding("quiesce.journal-corrupt", "The quiesce journal is corrupt",
			fmt.Sprintf("%v. It was moved to %s; adeagent cannot tell what prepare changed.", err, aside),
			"Read "+aside+" and start by hand what it lists as stopped (systemctl unmask --runtime, systemctl start), then setenforce to its recorded SELinux mode.",
			true, api.Related{Kind: "path", ID: aside}))
		e.finishRestore(res, start)
		return res, nil
	}
	if err != nil {
		return nil, err
	}
	if !j.Owed() {
		res.Outcome = api.OutcomeNothing
		if j != nil {
			res.Path = j.Path
		}
		e.finishRestore(res, start)
		return res, nil
	}
	res.Path = j.Path
	e.gaveUp = map[string]bool{}
	boot := e.bootID()
	rebooted := j.BootID != "" && boot != "" && boot != j.BootID
	if j.Restore == nil {
		j.Restore = &Restore{Who: who, BootID: boot, Started: e.now().UTC()}
	}
	e.log.Info("restore: undoing the journaled prepare", zap.String("who", who.String()), zap.String("op", j.ID),
		zap.Bool("rebooted", rebooted))
	if err := e.save(j); err != nil {
		return nil, err
	}
	log := e.log.With(zap.String("who", who.String()), zap.String("op", j.ID))
	ok := true
	// Once prepare changed anything, every unit it recorded as running may have been
	// stopped — by its own step or as a side effect of another (stopping docker.socket
	// stops docker.service through Requires=; stopping a service stops its PartOf=
	// socket). Their before-states were journaled before the first change, so they are
	// all candidates; starting one that runs already is a no-op.
	begun := false
	for _, s := range j.Steps {
		begun = begun || s.Intent != nil
	}
	run := func(s *Step, do func() (string, error)) error {
		unitStep := s.Kind == KindStopUnit || s.Kind == KindStopReactivator
		if s.Intent == nil && !(unitStep && begun) {
			return nil // never started: nothing to undo
		}
		if undone(s) {
			res.Steps = append(res.Steps, resultStep(s, s.Undo.Result))
			return nil
		}
		if s.Undo == nil {
			s.Undo = &Undo{}
		}
		s.Undo.Intent, s.Undo.Result = e.stamp(), ""
		if err := e.save(j); err != nil {
			return err
		}
		msg, derr := do()
		var je journalError
		if errors.As(derr, &je) {
			return derr
		}
		if derr != nil {
			ok = false
			s.Undo.Result = "failed: " + derr.Error()
			log.Warn("restore step failed", zap.String("kind", s.Kind), zap.String("target", s.Target), zap.Error(derr))
		} else {
			if msg == "" {
				msg = "done"
			}
			s.Undo.Done, s.Undo.Result = e.stamp(), msg
		}
		res.Steps = append(res.Steps, resultStep(s, s.Undo.Result))
		return e.save(j)
	}
	steps := func(kind string, reverse bool) []*Step {
		var out []*Step
		for _, s := range j.Steps {
			if s.Kind == kind {
				out = append(out, s)
			}
		}
		if reverse {
			for a, b := 0, len(out)-1; a < b; a, b = a+1, b-1 {
				out[a], out[b] = out[b], out[a]
			}
		}
		return out
	}
	// 1. Unmask (runtime masks are gone after a reboot; unmasking again is a no-op).
	for _, s := range steps(KindMask, true) {
		if err := run(s, func() (string, error) {
			log.Info("restore: unmasking units", zap.Strings("units", s.Before.Units))
			cctx, cancel := context.WithTimeout(ctx, e.o.JobTimeout)
			defer cancel()
			if err := e.removeGuards(s.Before.Units); err != nil {
				return "", err
			}
			if err := e.o.Systemd.UnmaskRuntime(cctx, s.Before.Units); err != nil {
				return "", err
			}
			if rebooted {
				return "done (runtime masks were already gone with the reboot)", nil
			}
			return "", nil
		}); err != nil {
			return nil, err
		}
	}
	// 2. Units, in reverse stop order (runtimes before the databases and apps on them).
	for _, s := range steps(KindStopUnit, true) {
		if err := run(s, func() (string, error) { return e.startUnit(ctx, s, log, res) }); err != nil {
			return nil, err
		}
	}
	// 3. Containers that were running.
	for _, s := range steps(KindDockerContainers, true) {
		if err := run(s, func() (string, error) { return e.dockerRestore(ctx, s, log, res) }); err != nil {
			return nil, err
		}
	}
	// Pre-stop steps have nothing to undo (the restart undoes a drain).
	for _, s := range steps(KindPreStop, true) {
		if err := run(s, func() (string, error) { return "nothing to undo", nil }); err != nil {
			return nil, err
		}
	}
	// 4. Reactivators.
	for _, s := range steps(KindStopReactivator, true) {
		if err := run(s, func() (string, error) { return e.startUnit(ctx, s, log, res) }); err != nil {
			return nil, err
		}
	}
	// 5. SELinux last: the boot mode, then the runtime mode.
	for _, s := range steps(KindSELinuxConfig, true) {
		if err := run(s, func() (string, error) {
			if s.Before.Config == "" {
				return "nothing recorded", nil
			}
			log.Info("restore: setting SELINUX= back in /etc/selinux/config", zap.String("value", s.Before.Config))
			_, err := e.o.SELinux.SetConfigMode(s.Before.Config)
			if err != nil {
				res.Findings = append(res.Findings, finding("quiesce.selinux-config", "SELinux's boot mode could not be set back",
					err.Error(), "Set SELINUX="+s.Before.Config+" in /etc/selinux/config by hand.", true))
			}
			return "", err
		}); err != nil {
			return nil, err
		}
	}
	for _, s := range steps(KindSELinuxRuntime, true) {
		if err := run(s, func() (string, error) {
			if s.Before.Enforce == nil || *s.Before.Enforce == selinux.Disabled {
				return "nothing recorded", nil
			}
			log.Info("restore: setting SELinux's runtime mode back", zap.String("mode", selinux.ModeName(*s.Before.Enforce)))
			err := e.o.SELinux.SetEnforce(*s.Before.Enforce)
			if errors.Is(err, selinux.ErrNotMounted) {
				return "skipped: SELinux is disabled now", nil
			}
			if err != nil {
				res.Findings = append(res.Findings, finding("quiesce.selinux", "SELinux could not be set back to "+selinux.ModeName(*s.Before.Enforce),
					err.Error(), fmt.Sprintf("Run setenforce %d.", *s.Before.Enforce), true))
			}
			return "", err
		}); err != nil {
			return nil, err
		}
	}
	if ok {
		j.Restore.Done = e.stamp()
		res.Outcome = api.OutcomeRestored
	} else {
		res.Outcome = api.OutcomeFailed
	}
	if err := e.save(j); err != nil {
		return nil, err
	}
	log.Info("restore finished", zap.String("outcome", res.Outcome))
	res.Quiesced = quiesced(j)
	e.finishRestore(res, start)
	return res, nil
}

func (e *Engine) finishRestore(res *api.QuiesceResult, start time.Time) {
	sortFindings(res.Findings)
	if se, err := e.o.SELinux.State(); err == nil {
		res.SELinux = &api.SELinuxState{Mode: selinux.ModeName(se.Enforce)}
	}
	res.GeneratedAt = e.now().UTC().Truncate(time.Second)
	res.DurationMS = float64(e.now().Sub(start).Microseconds()) / 1000
}

// startUnit starts a unit prepare stopped, if it was running before.
func (e *Engine) startUnit(ctx context.Context, s *Step, log *zap.Logger, res *api.QuiesceResult) (string, error) {
	if !isActive(s.Before.ActiveState) {
		return "skipped: was " + s.Before.ActiveState + " before prepare", nil
	}
	if cur, err := e.o.Systemd.Unit(ctx, s.Target); err == nil && cur.ActiveState == "active" {
		return "done (already active)", nil
	}
	if err := e.waitMounts(ctx, s, log); err != nil {
		res.Findings = append(res.Findings, finding("quiesce.restore-mount", s.Target+" not started: its data is not mounted",
			err.Error()+". Starting it now would run it on the empty mount point.",
			"Mount the data disk (ADE may still be unlocking it), then run 'adeagentctl restore' again.", true, unitRel(s.Target)))
		return "", err
	}
	log.Info("restore: starting unit", zap.String("unit", s.Target), zap.String("was", s.Before.ActiveState))
	cctx, cancel := context.WithTimeout(ctx, e.o.JobTimeout)
	r, err := e.o.Systemd.StartUnit(cctx, s.Target)
	cancel()
	if err == nil && r != sysd.JobDone {
		err = fmt.Errorf("start job ended %q", r)
	}
	if err == nil {
		// "done" is not "active" (a Condition*= can skip the start): re-read.
		cur, rerr := e.o.Systemd.Unit(ctx, s.Target)
		switch {
		case rerr != nil:
			err = rerr
		case !isActive(cur.ActiveState):
			err = fmt.Errorf("start job done but the unit is %s (%s)", cur.ActiveState, cur.SubState)
		}
	}
	if err != nil {
		res.Findings = append(res.Findings, finding("quiesce.start-failed", s.Target+" did not start",
			err.Error(), "Check 'systemctl status "+s.Target+"', start it, then run 'adeagentctl restore' again to finish.", true, unitRel(s.Target)))
		return "", err
	}
	return "", nil
}

// waitMounts waits, bounded by MountWait, until the fstab mount points that hold the
// unit's data (catalog data paths, RequiresMountsFor=) are mounted. Paths whose
// filesystem is the root's, or that fstab does not list, need no wait.
func (e *Engine) waitMounts(ctx context.Context, s *Step, log *zap.Logger) error {
	paths := append([]string(nil), s.Before.RequiresMountsFor...)
	if fam, ok := e.o.Catalog.Family(s.Family); ok {
		paths = append(paths, fam.Data...)
	}
	need := e.fstabMountsFor(paths)
	if len(need) == 0 {
		return nil
	}
	// A mount already waited for in vain in this restore is not waited for again, so
	// several units on one missing disk cost one MountWait, not one each.
	for _, mp := range e.notMounted(need) {
		if e.gaveUp[mp] {
			return fmt.Errorf("%s not mounted (waited %s for it earlier in this restore)", mp, e.o.MountWait)
		}
	}
	deadline := time.Now().Add(e.o.MountWait)
	for {
		missing := e.notMounted(need)
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			for _, mp := range missing {
				e.gaveUp[mp] = true
			}
			return fmt.Errorf("%s not mounted after %s", strings.Join(missing, ", "), e.o.MountWait)
		}
		log.Info("restore: waiting for data mounts", zap.String("unit", s.Target), zap.Strings("mounts", missing))
		select {
		case <-ctx.Done():
			return fmt.Errorf("waiting for %s: %w", strings.Join(missing, ", "), ctx.Err())
		case <-time.After(e.poll):
		}
	}
}

// fstabMountsFor maps paths to the longest fstab mount point (other than /) containing
// each; noauto, swap and none entries never count.
func (e *Engine) fstabMountsFor(paths []string) []string {
	b, err := e.o.Root.ReadFile("/etc/fstab")
	if err != nil || len(paths) == 0 {
		return nil
	}
	var mps []string
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 3 || strings.HasPrefix(f[0], "#") {
			continue
		}
		mp := strings.ReplaceAll(f[1], `\040`, " ")
		if mp == "/" || !strings.HasPrefix(mp, "/") || f[2] == "swap" {
			continue
		}
		if len(f) >= 4 && hasOpt(f[3], "noauto") {
			continue
		}
		mps = append(mps, filepath.Clean(mp))
	}
	seen := map[string]bool{}
	var out []string
	for _, p := range paths {
		p = filepath.Clean(p)
		best := ""
		for _, mp := range mps {
			if (p == mp || strings.HasPrefix(p, mp+"/")) && len(mp) > len(best) {
				best = mp
			}
		}
		if best != "" && !seen[best] {
			seen[best] = true
			out = append(out, best)
		}
	}
	return out
}

func hasOpt(opts, name string) bool {
	for _, o := range strings.Split(opts, ",") {
		if o == name {
			return true
		}
	}
	return false
}

func (e *Engine) notMounted(mps []string) []string {
	mounts, err := unmount.ReadMountInfo(e.o.Root)
	if err != nil {
		return mps
	}
	have := map[string]bool{}
	for _, m := range mounts {
		have[m.MountPoint] = true
	}
	var out []string
	for _, mp := range mps {
		if !have[mp] {
			out = append(out, mp)
		}
	}
	return out
}

// dockerRestore starts the containers that were running before prepare and are not
// running now (docker.service was started in the step before).
func (e *Engine) dockerRestore(ctx context.Context, s *Step, log *zap.Logger, res *api.QuiesceResult) (string, error) {
	if s.Before.Containers == nil {
		return "nothing recorded", nil
	}
	if e.o.Docker == nil || !e.o.Docker.Present() {
		err := errors.New("docker's API socket is not there")
		res.Findings = append(res.Findings, finding("quiesce.docker", "Recorded containers not started", err.Error(),
			"Start docker.service, then run 'adeagentctl restore' again.", true, unitRel("docker.service")))
		return "", err
	}
	cctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	var errs []error
	started := 0
	for _, c := range s.Before.Containers {
		if !c.Running {
			continue
		}
		if up, err := e.o.Docker.IsRunning(cctx, c.ID); err == nil && up {
			continue // its restart policy brought it back
		}
		log.Info("restore: starting container", zap.String("container", c.ID), zap.String("name", c.Name), zap.String("restart_policy", c.RestartPolicy))
		if err := e.o.Docker.Start(cctx, c.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		started++
	}
	if err := errors.Join(errs...); err != nil {
		res.Findings = append(res.Findings, finding("quiesce.docker", "Recorded containers could not be started", err.Error(),
			"Start them with 'docker start', then run 'adeagentctl restore' again.", true, unitRel("docker.service")))
		return "", err
	}
	return fmt.Sprintf("done (%d started)", started), nil
}
