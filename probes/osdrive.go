package probes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/agent/catalog"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// OSDriveScan runs the OS drive's holder scan once and shares it between the probes and
// the report's holders list.
type OSDriveScan struct {
	root hostroot.Root
	opts unmount.Options
	once sync.Once
	rep  *api.HoldersReport
	err  error

	// procs is the process list the scan's walk of /proc collected (OnProcess).
	procMu sync.Mutex
	procs  []Process
}

// osDriveScanTimeout bounds the scan inside the probe; the probe's own timeout is longer,
// so a slow scan still yields its partial result (with the rest marked incomplete) rather
// than a bare probe timeout.
const osDriveScanTimeout = 20 * time.Second

// NewOSDriveScan prepares a scan of the OS drive under root; it runs on first Get.
func NewOSDriveScan(root hostroot.Root, opts unmount.Options) *OSDriveScan {
	if opts.Timeout <= 0 || opts.Timeout > osDriveScanTimeout {
		opts.Timeout = osDriveScanTimeout
	}
	return &OSDriveScan{root: root, opts: opts}
}

// Get runs the scan (once) and returns its report.
func (s *OSDriveScan) Get(ctx context.Context) (*api.HoldersReport, error) {
	s.once.Do(func() {
		target, err := unmount.OSDriveTarget(s.root)
		if err != nil {
			s.err = fmt.Errorf("resolve the OS drive: %w", err)
			return
		}
		opts := s.opts
		opts.OnProcess = s.addProcess
		// The first caller may be a probe with a shorter timeout than the os-drive probe's
		// (one that wants the process list): the scan keeps to its own deadline instead.
		s.rep, s.err = unmount.Scan(context.WithoutCancel(ctx), s.root, target, opts)
	})
	return s.rep, s.err
}

func (s *OSDriveScan) addProcess(pi unmount.ProcInfo) {
	p := Process{PID: pi.PID, Comm: strings.TrimSpace(pi.Comm), Cwd: pi.Cwd,
		Exe:  strings.TrimSuffix(pi.Exe, " (deleted)"),
		Argv: strings.Split(string(bytes.TrimRight(pi.Cmdline, "\x00")), "\x00")}
	s.procMu.Lock()
	s.procs = append(s.procs, p)
	s.procMu.Unlock()
}

// Processes runs the scan (once) and returns the processes its walk of /proc saw, in pid
// order; ok is false when that walk did not cover every process (no procfs under the root,
// the scan's deadline, an error), and the caller then walks /proc itself.
func (s *OSDriveScan) Processes(ctx context.Context) (procs []Process, ok bool) {
	rep, err := s.Get(ctx)
	if err != nil || rep == nil {
		return nil, false
	}
	for _, inc := range rep.Incomplete {
		if inc.PID == 0 && inc.What == "processes" {
			return nil, false
		}
	}
	s.procMu.Lock()
	defer s.procMu.Unlock()
	sort.Slice(s.procs, func(i, j int) bool { return s.procs[i].PID < s.procs[j].PID })
	return s.procs, true
}

// osDriveProbe reports what keeps the OS drive busy (os-drive.holders) and the kernel
// objects that do (os-drive.kernel-holders).
type osDriveProbe struct{}

func (osDriveProbe) Name() string { return "os-drive" }

// Timeout lets the scan (a few hundred ms on a busy VM, bounded by osDriveScanTimeout) finish.
func (osDriveProbe) Timeout() time.Duration { return osDriveScanTimeout + 5*time.Second }

func (osDriveProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	if env.OSDrive == nil {
		return nil, fmt.Errorf("no OS-drive scanner configured")
	}
	rep, err := env.OSDrive.Get(ctx)
	if err != nil {
		return nil, err
	}
	cat, err := catalog.Default()
	if err != nil {
		return nil, fmt.Errorf("service catalog: %w", err)
	}
	var out []api.Finding
	if f, ok := processHoldersFinding(rep, os.Getpid(), cat, env.Distro.Path); ok {
		out = append(out, f)
	}
	if f, ok := kernelHoldersFinding(rep, env.Distro.Path); ok {
		out = append(out, f)
	}
	return out, nil
}

// holderClass says why a process holder matters.
type holderClass int

const (
	classService   holderClass = iota // in a systemd service: ADE restarts it from its RAM copy
	classUnmanaged                    // outside any service: ADE kill -9s it
	classHidden                       // a thread or io_uring hold: ADE's fuser cannot see it
	classContainer                    // a container process: killing it loses its work
)

func classify(h api.Holder) holderClass {
	switch {
	case h.Kind == api.KindThread || (len(h.Uses) == 1 && h.Uses[0] == api.UseIOUring):
		return classHidden
	case h.Container != "":
		return classContainer
	case strings.HasSuffix(h.Unit, ".service"):
		return classService
	}
	return classUnmanaged
}

// processHoldersFinding turns the process and thread holders of the OS drive into the
// os-drive.holders finding. PID 1, adeagent itself and units on the never-stop list are
// spared: ADE restarts those from its RAM copy (or re-executes PID 1).
func processHoldersFinding(rep *api.HoldersReport, self int, cat *catalog.Catalog, path ADEPath) (api.Finding, bool) {
	var blocking, services []api.Holder
	units := map[string]bool{}
	for _, h := range rep.Holders {
		if h.Kind != api.KindProcess && h.Kind != api.KindThread {
			continue
		}
		if h.PID == 1 || h.PID == self || (h.Unit != "" && cat.IsNeverStop(h.Unit)) || movedByPivot(h) {
			continue
		}
		if classify(h) == classService {
			services = append(services, h)
			units[h.Unit] = true
			continue
		}
		blocking = append(blocking, h)
	}
	var unknown []api.Incomplete
	for _, in := range rep.Incomplete {
		if in.PID != 1 {
			unknown = append(unknown, in)
		}
	}
	if len(blocking) == 0 && len(unknown) == 0 && len(services) == 0 {
		return api.Finding{}, false
	}
	f := api.Finding{
		Key:      "os-drive.holders",
		Probe:    "os-drive",
		Title:    "Processes hold the OS drive",
		Severity: api.SeverityInfo,
	}
	if len(blocking) == 0 && len(unknown) == 0 {
		f.Summary = fmt.Sprintf("Only systemd services hold the OS drive (%d processes in %d units); ADE restarts running services from its RAM copy. Heavy ones are reported by services.heavy-active.",
			len(services), len(units))
		f.Remediation.Hint = "Nothing to do for these; run 'adeagentctl prepare' to stop the heavy services cleanly before encryption."
		return f, true
	}
	var lines []string
	for i, h := range blocking {
		switch {
		case i < 10:
			lines = append(lines, describeHolder(h))
		case i == 10:
			lines = append(lines, fmt.Sprintf("… and %d more", len(blocking)-10))
		}
		f.Related = append(f.Related, api.Related{Kind: "pid", ID: fmt.Sprint(h.PID)})
		if h.Unit != "" {
			f.Remediation.Commands = appendCommand(f.Remediation.Commands, []string{"systemctl", "stop", h.Unit})
			f.Related = append(f.Related, api.Related{Kind: "unit", ID: h.Unit})
		}
		if rt, id, ok := strings.Cut(h.Container, ":"); ok && rt == "docker" {
			f.Remediation.Commands = appendCommand(f.Remediation.Commands, []string{"docker", "stop", shortID(id)})
		}
	}
	if len(unknown) > 0 {
		lines = append(lines, fmt.Sprintf("%d processes could not be inspected (%s) — not known to be clean", len(unknown), unknown[0].Reason))
	}
	f.Summary = fmt.Sprintf("%d holder(s) of the OS drive would survive ADE's service restarts: %s.", len(blocking), strings.Join(lines, "; "))
	f.Remediation.Hint = "Stop these processes cleanly before encryption (ADE kill -9s what fuser finds and cannot see threads with their own cwd/fd table or io_uring files); run 'adeagent holders' for the full list."
	f.Severity = api.SeverityHigh
	f.Blocker = true
	if path != PathUnmount {
		f.Severity, f.Blocker = api.SeverityLow, false
		f.Summary += " " + notUnmountedNote(path)
	}
	return f, true
}

// movedByPivot reports whether a process holds the OS drive only through a root or working
// directory that is "/" itself. ADE's stripdown pivot_roots, and pivot_root(2) points the
// root and cwd of every task whose root or cwd was the old root at the new one, so such a
// process does not keep the old root busy (measured in the VM acceptance test: a holder
// whose exe and files live on a tmpfs, with root "/", was gone from fuser -vm /oldroot
// after the pivot).
func movedByPivot(h api.Holder) bool {
	if len(h.Uses) == 0 || len(h.Paths) == 0 {
		return false
	}
	for _, u := range h.Uses {
		if u != api.UseRoot && u != api.UseCwd {
			return false
		}
	}
	for _, p := range h.Paths {
		if p != "/" {
			return false
		}
	}
	return true
}

// notUnmountedNote says why holders do not block where ADE does not unmount the OS drive.
func notUnmountedNote(path ADEPath) string {
	if path == PathOnline {
		return "ADE re-encrypts this distribution's OS drive online after a reboot without unmounting it, so they do not block it."
	}
	return "ADE does not encrypt this distribution's OS drive (see distro.unsupported), so they do not block it."
}

func describeHolder(h api.Holder) string {
	who := fmt.Sprintf("%s (pid %d", h.Comm, h.PID)
	if h.TID != 0 {
		who += fmt.Sprintf(", thread %d", h.TID)
	}
	who += ")"
	switch classify(h) {
	case classHidden:
		who += " holds it in a way fuser cannot see"
	case classContainer:
		who += " in container " + h.Container
	default:
		if h.Unit != "" {
			who += " in " + h.Unit
		} else {
			who += " outside any systemd unit"
		}
	}
	return who + " via " + strings.Join(h.Uses, ",")
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

func appendCommand(cmds [][]string, cmd []string) [][]string {
	for _, c := range cmds {
		if strings.Join(c, "\x00") == strings.Join(cmd, "\x00") {
			return cmds
		}
	}
	return append(cmds, cmd)
}

// virtualFS are filesystems mounted inside / that ADE moves (/dev, /proc, /sys, /run) or
// that live under those; they are not data the unmount has to worry about.
var virtualFS = map[string]bool{
	"proc": true, "sysfs": true, "devtmpfs": true, "devpts": true, "cgroup": true, "cgroup2": true,
	"securityfs": true, "pstore": true, "bpf": true, "debugfs": true, "tracefs": true, "mqueue": true,
	"hugetlbfs": true, "configfs": true, "fusectl": true, "binfmt_misc": true, "autofs": true,
	"efivarfs": true, "rpc_pipefs": true, "selinuxfs": true, "nsfs": true, "ramfs": true,
}

// virtualTrees are where ADE's stripdown moves or ignores mounts.
var virtualTrees = []string{"/dev", "/proc", "/sys", "/run"}

// kernelHoldersFinding turns kernel holders into os-drive.kernel-holders.
func kernelHoldersFinding(rep *api.HoldersReport, path ADEPath) (api.Finding, bool) {
	var lines []string
	f := api.Finding{Key: "os-drive.kernel-holders", Probe: "os-drive", Title: "Kernel objects keep the OS drive busy"}
	for _, h := range rep.Holders {
		switch h.Kind {
		case api.KindProcess, api.KindThread:
			continue
		case api.KindMount:
			if isVirtualMount(h) {
				continue
			}
			f.Remediation.Commands = appendCommand(f.Remediation.Commands, []string{"umount", h.Mount})
			f.Related = append(f.Related, api.Related{Kind: "mount", ID: h.Mount})
		case api.KindSwap:
			f.Remediation.Commands = appendCommand(f.Remediation.Commands, []string{"swapoff", h.Paths[0]})
			f.Related = append(f.Related, api.Related{Kind: "path", ID: h.Paths[0]})
		case api.KindLoop, api.KindDM:
			f.Related = append(f.Related, api.Related{Kind: "device", ID: firstPath(h)})
		case api.KindNamespace:
			// A service's private namespace (PrivateTmp=, ProtectSystem=, …) goes away when
			// ADE restarts the service from its RAM copy; only other namespaces outlive that.
			if classify(h) == classService {
				continue
			}
			f.Related = append(f.Related, api.Related{Kind: "pid", ID: fmt.Sprint(h.PID)})
		case api.KindOverlay:
			f.Related = append(f.Related, api.Related{Kind: "mount", ID: h.Mount})
		case api.KindNFSExport:
			f.Remediation.Commands = appendCommand(f.Remediation.Commands, []string{"exportfs", "-u", "*:" + firstPath(h)})
			f.Related = append(f.Related, api.Related{Kind: "path", ID: firstPath(h)})
		}
		if len(lines) < 10 {
			lines = append(lines, fmt.Sprintf("%s: %s", h.Kind, h.Detail))
		}
	}
	if len(lines) == 0 {
		return f, false
	}
	f.Summary = strings.Join(lines, "; ") + "."
	f.Remediation.Hint = "Unmount, swapoff, detach or unexport these before encryption; no process scan (fuser, lsof, ADE's own) sees them, and 'umount /oldroot' fails while they exist."
	f.Severity, f.Blocker = api.SeverityHigh, true
	if path != PathUnmount {
		f.Severity, f.Blocker = api.SeverityLow, false
		f.Summary += " " + notUnmountedNote(path)
	}
	sort.SliceStable(f.Related, func(i, j int) bool { return f.Related[i].Kind < f.Related[j].Kind })
	return f, true
}

func isVirtualMount(h api.Holder) bool {
	fstype, _, _ := strings.Cut(h.Detail, " ")
	if virtualFS[fstype] {
		return true
	}
	for _, t := range virtualTrees {
		if h.Mount == t || strings.HasPrefix(h.Mount, t+"/") {
			return true
		}
	}
	return false
}

func firstPath(h api.Holder) string {
	if len(h.Paths) > 0 {
		return h.Paths[0]
	}
	return ""
}
