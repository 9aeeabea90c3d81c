package probes

import (
	"slices"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
)

func TestBlockingHolders(t *testing.T) {
	cat, err := catalog.Default()
	if err != nil {
		t.Fatal(err)
	}
	const self = 4242
	rep := &api.HoldersReport{
		Holders: []api.Holder{
			{Kind: api.KindProcess, PID: 1, Comm: "systemd", Uses: []string{api.UseExe}},
			{Kind: api.KindProcess, PID: self, Comm: "adeagent", Unit: "adeagent.service", Uses: []string{api.UseExe}},
			{Kind: api.KindProcess, PID: 10, Comm: "systemd-journal", Unit: "systemd-journald.service", Uses: []string{api.UseFD}},
			{Kind: api.KindProcess, PID: 11, Comm: "cron", Unit: "cron.service", Uses: []string{api.UseExe}},
			{Kind: api.KindProcess, PID: 12, Comm: "sleep", Unit: "session-3.scope", Uses: []string{api.UseCwd}},
			{Kind: api.KindProcess, PID: 13, Comm: "nginx", Unit: "docker-abc.scope", Container: "docker:abc", Uses: []string{api.UseFD}},
			{Kind: api.KindThread, PID: 14, Comm: "worker", Unit: "app.service", Uses: []string{api.UseCwd}},
			{Kind: api.KindMount, Mount: "/data", Detail: "ext4 /dev/vdb"},
			{Kind: api.KindMount, Mount: "/run/user/0", Detail: "tmpfs tmpfs"},
			{Kind: api.KindNamespace, PID: 15, Unit: "systemd-udevd.service", Detail: "private"},
			{Kind: api.KindNamespace, PID: 16, Unit: "session-3.scope", Detail: "unshare"},
			{Kind: api.KindSwap, Paths: []string{"/swapfile"}},
			// Root and cwd at "/" only: pivot_root moves them. A cwd elsewhere stays.
			{Kind: api.KindProcess, PID: 17, Comm: "holder", Unit: "session-4.scope", Uses: []string{api.UseRoot, api.UseCwd}, Paths: []string{"/"}},
			{Kind: api.KindProcess, PID: 18, Comm: "holder", Unit: "session-4.scope", Uses: []string{api.UseRoot, api.UseCwd}, Paths: []string{"/", "/var/tmp"}},
		},
		Incomplete: []api.Incomplete{{PID: 1, What: "fd", Reason: "EACCES"}, {PID: 99, What: "fd", Reason: "EACCES"}},
	}
	got := BlockingHolders(rep, self, cat)
	var ids []int
	var kinds []string
	for _, h := range got.Holders {
		ids = append(ids, h.PID)
		kinds = append(kinds, h.Kind)
	}
	// Kept: the session process (12), the container (13), the thread with its own table
	// (14: fuser cannot see it, ADE's restarts do not clear it), the data mount, the
	// session's namespace (16), the swap file, and a cwd below "/" (18); not a process
	// whose root and cwd are "/" itself (17: pivot_root moves those).
	if want := []int{12, 13, 14, 0, 16, 0, 18}; !slices.Equal(ids, want) {
		t.Errorf("pids kept = %v, want %v (kinds %v)", ids, want, kinds)
	}
	if len(got.Incomplete) != 1 || got.Incomplete[0].PID != 99 {
		t.Errorf("incomplete = %+v, want only pid 99 (PID 1 is spared, the unknown is kept)", got.Incomplete)
	}
	if len(rep.Holders) != 14 {
		t.Errorf("the input was modified: %d holders", len(rep.Holders))
	}
	if BlockingHolders(nil, self, cat) != nil {
		t.Error("nil report: want nil")
	}
}
