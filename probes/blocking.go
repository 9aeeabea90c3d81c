package probes

import (
	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
)

// BlockingHolders returns the holders in rep that would make ADE's unmount of the OS drive
// fail, by the same rule as the os-drive.holders and os-drive.kernel-holders findings:
// kernel holders other than the virtual trees ADE moves, and processes other than PID 1,
// self (adeagent), never-stop units, processes of service units (ADE restarts running
// services from its RAM copy) and processes whose only hold is a root or cwd of "/" (ADE's
// pivot_root moves those). prepare rescans with it after its stops, so that a VM the
// readiness report calls clear is not called blocked by prepare. Incomplete entries other
// than PID 1 are kept: the unknown is never clean.
func BlockingHolders(rep *api.HoldersReport, self int, cat *catalog.Catalog) *api.HoldersReport {
	if rep == nil {
		return nil
	}
	out := *rep
	out.Holders = []api.Holder{}
	out.Incomplete = []api.Incomplete{}
	for _, h := range rep.Holders {
		switch h.Kind {
		case api.KindProcess, api.KindThread:
			if h.PID == 1 || h.PID == self || (h.Unit != "" && cat != nil && cat.IsNeverStop(h.Unit)) || movedByPivot(h) {
				continue
			}
			if classify(h) == classService {
				continue
			}
		case api.KindMount:
			if isVirtualMount(h) {
				continue
			}
		case api.KindNamespace:
			if classify(h) == classService {
				continue
			}
		}
		out.Holders = append(out.Holders, h)
	}
	for _, in := range rep.Incomplete {
		if in.PID != 1 {
			out.Incomplete = append(out.Incomplete, in)
		}
	}
	return &out
}
