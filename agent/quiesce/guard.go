package quiesce

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// A runtime mask (/run/systemd/system/UNIT → /dev/null) cannot shadow a unit file in
// /etc/systemd/system, which ranks above /run in systemd's search path: measured in the
// VM test bed (systemd 252), such a unit stays startable after `mask --runtime`
// (research/services_selinux.md §3 pitfall 8 expected as much). For those units prepare
// adds a runtime drop-in whose start condition never holds, so a start request is
// skipped instead of starting the service on the RAM copy during ADE's stripdown. Drop-ins
// in /run apply whatever directory the unit file is in, and vanish at reboot like the mask.

// guardDropIn is the drop-in's file name under /run/systemd/system/UNIT.d/.
const guardDropIn = "zz-adeagent-quiesce.conf"

// guardCondition names a path that never exists; systemctl status shows it as the unmet
// condition, which tells an operator why the unit does not start.
const guardCondition = "/run/adeagent/quiesced-until-adeagentctl-restore"

const guardText = "# Written by adeagent prepare: a runtime mask cannot shadow a unit file in /etc, so this\n" +
	"# condition keeps the unit from starting until 'adeagentctl restore' (or the next boot).\n" +
	"[Unit]\nConditionPathExists=" + guardCondition + "\n"

// guardPath is the drop-in's host path for unit.
func (e *Engine) guardPath(unit string) string {
	return e.o.Root.Path(filepath.Join("/run/systemd/system", unit+".d", guardDropIn))
}

// needsGuard reports whether unit's file is in /etc, where a runtime mask does not reach.
func (e *Engine) needsGuard(ctx context.Context, unit string) bool {
	u, err := e.o.Systemd.Unit(ctx, unit)
	if err != nil {
		return false
	}
	return strings.HasPrefix(u.FragmentPath, "/etc/")
}

// writeGuards writes the drop-in for every unit in units whose file is in /etc; the
// caller reloads systemd (MaskRuntime does). It returns the units guarded.
func (e *Engine) writeGuards(ctx context.Context, units []string) ([]string, error) {
	var guarded []string
	for _, u := range units {
		if !e.needsGuard(ctx, u) {
			continue
		}
		p := e.guardPath(u)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return guarded, fmt.Errorf("runtime drop-in for %s: %w", u, err)
		}
		if err := os.WriteFile(p, []byte(guardText), 0o644); err != nil {
			return guarded, fmt.Errorf("runtime drop-in for %s: %w", u, err)
		}
		guarded = append(guarded, u)
	}
	return guarded, nil
}

// removeGuards removes the drop-ins of units (a missing one is fine: not written, or gone
// with a reboot); the caller reloads systemd (UnmaskRuntime does).
func (e *Engine) removeGuards(units []string) error {
	var errs []error
	for _, u := range units {
		p := e.guardPath(u)
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("remove the runtime drop-in of %s: %w", u, err))
			continue
		}
		// The directory goes too when the drop-in was its only file.
		_ = os.Remove(filepath.Dir(p))
	}
	return errors.Join(errs...)
}
