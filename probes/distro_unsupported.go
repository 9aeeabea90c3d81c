package probes

import (
	"context"
	"fmt"

	"github.com/adeagent/adeagent/agent/api"
)

// distroProbe checks that ADE supports encrypting this distribution's OS drive
// (distro.unsupported; research: ade_extension.md §2, services_selinux.md §7).
type distroProbe struct{}

func (distroProbe) Name() string { return "distro" }

// encryptionAtHost is the alternative Microsoft recommends where ADE cannot be used
// (ADE itself retires on 15 September 2028).
const encryptionAtHost = "Where ADE cannot encrypt the OS drive, use encryption at host or server-side encryption with customer-managed keys instead (Microsoft's recommendation for new VMs; ADE retires on 15 September 2028)."

func (distroProbe) Run(_ context.Context, env *Env) ([]api.Finding, error) {
	d := env.Distro
	f := api.Finding{
		Key:      "distro.unsupported",
		Severity: api.SeverityHigh,
		Blocker:  true,
		Related:  []api.Related{{Kind: "path", ID: "/etc/os-release"}},
	}
	switch {
	case d.ID == "":
		f.Title = "Distribution not identified"
		f.Summary = "Neither /etc/os-release nor /usr/lib/os-release could be read, so it is unknown whether ADE supports this distribution; ADE itself refuses unknown distributions (\"OS distribution is not supported\", exit 51)."
		f.Remediation.Hint = "Restore /etc/os-release from the distribution's base package (e.g. base-files on Ubuntu, redhat-release on RHEL) and run 'adeagent check' again."
	case d.Support == SupportOS:
		return nil, nil
	case d.Support == SupportDataOnly:
		f.Title = fmt.Sprintf("ADE encrypts only data drives on %s", d.Name())
		f.Summary = fmt.Sprintf("ADE supports %s (os-release ID %q, VERSION_ID %q) for data drives only; enabling encryption with VolumeType OS or All fails.", d.Name(), d.ID, d.VersionID)
		f.Remediation.Hint = "Encrypt data drives only (VolumeType Data), or move the workload to a distribution ADE supports for the OS drive (" + SupportedDistros + "). " + encryptionAtHost
	case d.Support == SupportNone:
		f.Title = fmt.Sprintf("ADE does not support OS encryption on %s", d.Name())
		f.Summary = fmt.Sprintf("%s (VERSION_ID %q) is not in ADE's list of supported versions for OS encryption; ADE stops with \"Distro %s %s is not supported for OS encryption\".", d.Name(), d.VersionID, d.ID, d.VersionID)
		f.Remediation.Hint = fmt.Sprintf("Upgrade or redeploy to a supported release: %s. %s", d.Supported, encryptionAtHost)
	default:
		f.Title = fmt.Sprintf("ADE does not support %s", d.Name())
		like := ""
		if len(d.IDLike) > 0 {
			like = fmt.Sprintf(" (ID_LIKE %q does not count: ADE matches the distribution itself)", d.IDLike)
		}
		f.Summary = fmt.Sprintf("Azure Disk Encryption has no support for os-release ID %q%s; it stops with \"OS distribution is not supported\" before touching any drive.", d.ID, like)
		f.Remediation.Hint = "ADE encrypts the OS drive only on " + SupportedDistros + ". " + encryptionAtHost
	}
	return []api.Finding{f}, nil
}
