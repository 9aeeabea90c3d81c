package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// oldrootProbe checks oldroot.exists: ADE's stripdown requires that /oldroot does not
// exist (`! [ -e /oldroot ]`) and pivots the old root there; a /oldroot mount point makes
// ADE believe it already runs in the stripped-down OS (research: ade_extension.md §1.2).
type oldrootProbe struct{}

func (oldrootProbe) Name() string { return "oldroot" }

func (oldrootProbe) Run(_ context.Context, env *Env) ([]api.Finding, error) {
	const p = "/oldroot"
	fi, err := os.Lstat(env.Root.Path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("look for %s: %w", p, err)
	}
	f := api.Finding{
		Key:      "oldroot.exists",
		Severity: api.SeverityHigh,
		Blocker:  true,
		Related:  []api.Related{{Kind: "path", ID: p}},
	}
	mounted := false
	if mounts, err := unmount.ReadMountInfo(env.Root); err == nil {
		for _, m := range mounts {
			if m.MountPoint == p {
				mounted = true
			}
		}
	}
	switch {
	case mounted:
		f.Title = "/oldroot is a mount point: ADE's stripdown is under way"
		f.Summary = "Something is mounted on /oldroot, which is where ADE's stripdown pivots the old root; ADE is encrypting the OS drive right now, or an interrupted run left the system half stripped down."
		f.Remediation.Hint = "Do not start another encryption. Follow ADE's progress in 'az vm encryption show' or /var/log/azure/Microsoft.Azure.Security.AzureDiskEncryptionForLinux/extension.log; if no ADE run is active, reboot to leave the stripped-down state."
	case fi.IsDir():
		empty := false
		if ents, err := os.ReadDir(env.Root.Path(p)); err == nil && len(ents) == 0 {
			empty = true
		}
		f.Title = "/oldroot exists"
		if empty {
			f.Summary = "The empty directory /oldroot exists, probably left by an earlier ADE run. ADE's stripdown refuses to start when /oldroot exists, so OS encryption would fail."
			f.Remediation = api.Remediation{Hint: "Remove the empty directory.", Commands: [][]string{{"rmdir", p}}}
		} else {
			f.Summary = "The directory /oldroot exists and is not empty. ADE's stripdown refuses to start when /oldroot exists, so OS encryption would fail."
			f.Remediation = api.Remediation{Hint: "Check what /oldroot holds (it may be left from an interrupted ADE run), then move it out of the way.", Commands: [][]string{{"ls", "-la", p}, {"mv", p, "/oldroot.bak"}}}
		}
	default:
		f.Title = "/oldroot exists"
		f.Summary = fmt.Sprintf("/oldroot exists (%s). ADE's stripdown refuses to start when /oldroot exists, so OS encryption would fail.", fileKind(fi.Mode()))
		f.Remediation = api.Remediation{Hint: "Move it out of the way.", Commands: [][]string{{"mv", p, "/oldroot.bak"}}}
	}
	return []api.Finding{f}, nil
}

func fileKind(m fs.FileMode) string {
	switch {
	case m&fs.ModeSymlink != 0:
		return "a symbolic link"
	case m.IsRegular():
		return "a regular file"
	}
	return "a special file"
}
