package probes

// ADEPath is how ADE encrypts the OS drive on a distribution (research: ade_extension.md §1).
type ADEPath string

const (
	// PathUnmount: ADE strips the system down, pivots to a tmpfs root and unmounts the old
	// root (Ubuntu 16.04–22.04, RHEL/CentOS 7).
	PathUnmount ADEPath = "unmount"
	// PathOnline: ADE re-encrypts the root online after a reboot (RHEL 8.1+/9, Ubuntu 24.04,
	// Mariner/Azure Linux); nothing is unmounted.
	PathOnline ADEPath = "online"
	// PathNone: ADE cannot encrypt this distribution's OS drive (data-only or unknown).
	PathNone ADEPath = "none"
)

// Support is what ADE supports on a distribution.
type Support string

const (
	SupportOS       Support = "os"        // OS and data drives
	SupportDataOnly Support = "data-only" // data drives only
	SupportUnknown  Support = "unknown"   // not in ADE's table
)

// Distro is this machine's distribution as /etc/os-release describes it, and what ADE
// does with it.
type Distro struct {
	ID         string   // os-release ID, e.g. "ubuntu", "rhel"
	IDLike     []string // os-release ID_LIKE
	VersionID  string   // os-release VERSION_ID, e.g. "22.04"
	PrettyName string   // os-release PRETTY_NAME
	Support    Support
	Path       ADEPath
}
