package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
)

// selinuxProbe checks selinux.enforcing: with SELinux enforcing, the unmount of the old
// root fails (Microsoft's troubleshooting guide; research: services_selinux.md §5).
// ADE's RHEL/CentOS 7 state machine runs `setenforce 0` itself, Ubuntu's does not.
type selinuxProbe struct{}

func (selinuxProbe) Name() string { return "selinux" }

func (selinuxProbe) Run(_ context.Context, env *Env) ([]api.Finding, error) {
	mnt, err := selinuxfsMount(env)
	if err != nil {
		return nil, err
	}
	if mnt == "" {
		return nil, nil // selinuxfs not mounted: SELinux is disabled
	}
	enforce := path.Join(mnt, "enforce")
	b, err := os.ReadFile(env.Root.Path(enforce))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil // selinuxfs mounted without a loaded policy: not enforcing
		}
		return nil, fmt.Errorf("read SELinux mode: %w", err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "0":
		return nil, nil // permissive
	case "1":
	default:
		return nil, fmt.Errorf("SELinux mode in %s: unexpected value %q", enforce, v)
	}

	f := api.Finding{
		Key:     "selinux.enforcing",
		Title:   "SELinux is enforcing",
		Summary: fmt.Sprintf("%s reads 1 (enforcing). Microsoft's troubleshooting guide names an enforcing SELinux as a cause of \"failed to unmount\" during OS encryption; permissive or disabled is ready.", enforce),
		Remediation: api.Remediation{
			Hint:     "Switch SELinux to permissive for the duration of the encryption (runtime only, no relabel needed); 'adeagentctl prepare' does this and sets it back to enforcing afterwards.",
			Commands: [][]string{{"setenforce", "0"}},
		},
		Related: []api.Related{{Kind: "path", ID: enforce}},
	}
	switch env.Distro.Path {
	case PathOnline:
		// Nothing is unmounted on the online path, and ADE's online machine does not
		// touch SELinux: worth knowing, not a blocker.
		f.Severity = api.SeverityLow
		f.Summary = fmt.Sprintf("%s reads 1 (enforcing). %s uses ADE's online re-encryption, which does not unmount the OS drive, so SELinux need not be permissive.", enforce, env.Distro.Name())
		f.Remediation = api.Remediation{Hint: "Nothing to do for ADE's online path. If encryption fails with SELinux denials in the audit log, switch to permissive with 'setenforce 0' and retry."}
	default:
		f.Severity, f.Blocker = api.SeverityHigh, true
	}
	return []api.Finding{f}, nil
}

// selinuxfsMount finds where selinuxfs is mounted (usually /sys/fs/selinux) in the root's
// mount table; "" when it is not mounted.
func selinuxfsMount(env *Env) (string, error) {
	mounts, err := unmount.ReadMountInfo(env.Root)
	if err != nil {
		// No mount table (an odd root): fall back to the conventional place.
		if _, serr := os.Stat(env.Root.Sys("fs", "selinux", "enforce")); serr == nil {
			return "/sys/fs/selinux", nil
		}
		return "", fmt.Errorf("find selinuxfs: %w", err)
	}
	for _, m := range mounts {
		if m.FSType == "selinuxfs" {
			return m.MountPoint, nil
		}
	}
	return "", nil
}
