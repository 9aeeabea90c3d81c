package probes

import (
	"context"
	"encoding/json"
	"fmt"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// extensionProbe looks at the other VM extensions WALinuxAgent manages:
//
//   - extension.deprecated: the original Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux
//     is installed (and, as a warning, the legacy dual-pass 0.x ADE that needs Entra/AAD
//     credentials; research services_selinux.md §7);
//   - extension.concurrent: another extension operation is in progress, shown by a
//     "transitioning" current status or a handler command still running. ADE's
//     troubleshooting page lists "custom scripts or other extensions running at the same
//     time" among the causes of "failed to unmount" (research ade_extension.md §5).
type extensionProbe struct{}

func (extensionProbe) Name() string { return "extension" }

// extStuckAfter is how old a "transitioning" status may get before it is called stuck.
const extStuckAfter = 2 * time.Hour

func (p extensionProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	dirs, err := listExtHandlerDirs(env.Root)
	if err != nil {
		return nil, err
	}
	var out []api.Finding
	out = append(out, extDeprecated(dirs)...)

	latest := latestHandlerDirs(dirs)
	procs, err := waListProcesses(ctx, env)
	if err != nil {
		return nil, err
	}
	for _, d := range latest {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if d.Name == adeHandler {
			continue // ADE's own run is ade.in-progress
		}
		out = append(out, extConcurrent(env.Root, d, procs, time.Now())...)
	}
	return stampProbe(p.Name(), out), nil
}

// extDeprecated reports the OSTC ADE handler (blocker) and the dual-pass ADE (warning).
func extDeprecated(dirs []extHandlerDir) []api.Finding {
	var ostc, dual []extHandlerDir
	for _, d := range dirs {
		switch {
		case d.Name == adeOSTCHandler:
			ostc = append(ostc, d)
		case d.Name == adeHandler && len(d.Ver) > 0 && d.Ver[0] == 0:
			dual = append(dual, d)
		}
	}
	var out []api.Finding
	if len(ostc) > 0 {
		var paths, vers []string
		var related []api.Related
		for _, d := range ostc {
			paths = append(paths, d.Dir)
			vers = append(vers, d.Version)
			related = append(related, api.Related{Kind: "path", ID: d.Dir})
		}
		out = append(out, api.Finding{
			Key:   "extension.deprecated",
			Title: fmt.Sprintf("Deprecated ADE extension %s %s is installed", adeOSTCHandler, strings.Join(vers, ", ")),
			Summary: fmt.Sprintf("WALinuxAgent has the deprecated %s extension (%s). It is the retired first ADE for Linux; "+
				"ADE today is %s, and both must not manage the same VM's disks.", adeOSTCHandler, strings.Join(paths, ", "), adeHandler),
			Severity: api.SeverityHigh,
			Blocker:  true,
			Remediation: api.Remediation{
				Hint: fmt.Sprintf("Remove the extension from the VM model (not only its directory, or the agent brings it back): "+
					"'az vm extension delete --resource-group <resource-group> --vm-name <vm-name> --name <extension-name>' "+
					"(Remove-AzVMExtension in PowerShell); the extension name is often AzureDiskEncryptionForLinux. "+
					"If it encrypted disks, decrypt or migrate them first. Then enable ADE with %s.", adeHandler),
			},
			Related: related,
		})
	}
	if len(dual) > 0 {
		var vers []string
		var related []api.Related
		for _, d := range dual {
			vers = append(vers, d.Version)
			related = append(related, api.Related{Kind: "path", ID: d.Dir})
		}
		out = append(out, api.Finding{
			Key:   "extension.deprecated",
			Title: fmt.Sprintf("Legacy dual-pass ADE %s is installed", strings.Join(vers, ", ")),
			Summary: fmt.Sprintf("%s version %s is the legacy dual-pass ADE, which uses Microsoft Entra (AAD) credentials. "+
				"Microsoft no longer recommends it and it is not compatible with RHEL newer than 7.8 or with Python 3 as the default.",
				adeHandler, strings.Join(vers, ", ")),
			Severity: api.SeverityMedium,
			Remediation: api.Remediation{
				Hint: "Use the single-pass ADE (version 1.x, no AAD parameters). A VM already encrypted with dual pass can be migrated " +
					"with 'Set-AzVMDiskEncryptionExtension -Migrate' (see Microsoft's 'Migrate from dual-pass to single-pass' guide).",
			},
			Related: related,
		})
	}
	return out
}

// extManifest is the part of HandlerManifest.json naming the handler's commands.
type extManifest struct {
	HandlerManifest map[string]any `json:"handlerManifest"`
}

// extCommands reads a handler's operation commands from its HandlerManifest.json; ok is
// false when the manifest is missing or malformed.
func extCommands(root hostroot.Root, dir string) (map[string]string, bool) {
	data, err := root.ReadFile(path.Join(dir, "HandlerManifest.json"))
	if err != nil {
		return nil, false
	}
	var list []extManifest
	if err := json.Unmarshal(data, &list); err != nil {
		var one extManifest
		if json.Unmarshal(data, &one) != nil {
			return nil, false
		}
		list = []extManifest{one}
	}
	if len(list) == 0 || list[0].HandlerManifest == nil {
		return nil, false
	}
	cmds := map[string]string{}
	for _, op := range []string{"installCommand", "enableCommand", "disableCommand", "uninstallCommand", "updateCommand"} {
		if s, ok := list[0].HandlerManifest[op].(string); ok && strings.TrimSpace(s) != "" {
			cmds[strings.TrimSuffix(op, "Command")] = strings.TrimSpace(s)
		}
	}
	return cmds, len(cmds) > 0
}

// extCommandSignatures are the strings that identify a running handler command: the
// command itself and its tail from each later script token (a shim such as
// "extension_shim.sh -c main/handle.py --enable" runs "python3 main/handle.py --enable").
func extCommandSignatures(cmd string) []string {
	toks := strings.Fields(cmd)
	var sigs []string
	for i, t := range toks {
		if i > 0 && !strings.Contains(t, "/") && !strings.HasSuffix(t, ".py") && !strings.HasSuffix(t, ".sh") {
			continue
		}
		toks[i] = strings.TrimPrefix(t, "./")
		sigs = append(sigs, strings.Join(toks[i:], " "))
	}
	return sigs
}

// extOperationOf returns which handler operation a command line runs, or "".
func extOperationOf(cmdline string, cmds map[string]string) string {
	ops := make([]string, 0, len(cmds))
	for op := range cmds {
		ops = append(ops, op)
	}
	sort.Strings(ops)
	for _, op := range ops {
		for _, sig := range extCommandSignatures(cmds[op]) {
			if strings.Contains(cmdline, sig) {
				return op
			}
		}
	}
	return ""
}

// extConcurrent reports one handler whose status is transitioning or whose commands run.
func extConcurrent(root hostroot.Root, d extHandlerDir, procs []waProc, now time.Time) []api.Finding {
	var reasons []string
	var cmds [][]string
	related := []api.Related{{Kind: "path", ID: d.Dir}}
	blocker := false

	st, err := readLatestStatus(root, d.Dir)
	switch {
	case err != nil:
		reasons = append(reasons, fmt.Sprintf("its status could not be read (%v)", err))
	case st != nil && st.Status == "transitioning":
		blocker = true
		r := fmt.Sprintf("its current status %s says \"transitioning\"", st.File)
		if st.Operation != "" {
			r += fmt.Sprintf(" (operation %s)", st.Operation)
		}
		if st.Message != "" {
			r += fmt.Sprintf(" with message %q", st.Message)
		}
		if ts, err := time.Parse(time.RFC3339, st.Timestamp); err == nil {
			age := now.Sub(ts)
			r += fmt.Sprintf(", written %s (%s ago)", st.Timestamp, extHumanAge(age))
			if age > extStuckAfter {
				r += "; that is long for an operation, so it may be stuck"
			}
		}
		reasons = append(reasons, r)
		cmds = append(cmds, []string{"cat", st.File})
	}

	handlerCmds, haveManifest := extCommands(root, d.Dir)
	var opPIDs, svcPIDs []string
	for _, pr := range procs {
		if !extProcessOf(pr, d.Dir) {
			continue
		}
		pid := strconv.Itoa(pr.PID)
		related = append(related, api.Related{Kind: "pid", ID: pid})
		op := extOperationOf(pr.Cmdline, handlerCmds)
		switch {
		case op != "":
			blocker = true
			opPIDs = append(opPIDs, pid)
			reasons = append(reasons, fmt.Sprintf("pid %s runs its %s command (%s)", pid, op, pr.Cmdline))
		case !haveManifest:
			blocker = true
			opPIDs = append(opPIDs, pid)
			reasons = append(reasons, fmt.Sprintf("pid %s runs from its directory (%s); its HandlerManifest.json is unreadable, so it may be an operation or the extension's own service", pid, pr.Cmdline))
		default:
			svcPIDs = append(svcPIDs, pid)
			reasons = append(reasons, fmt.Sprintf("pid %s runs from its directory but is none of its handler commands (%s), so it looks like the extension's own long-running service", pid, pr.Cmdline))
		}
	}
	if len(reasons) == 0 {
		return nil
	}
	if pids := append(append([]string(nil), opPIDs...), svcPIDs...); len(pids) > 0 {
		cmds = append(cmds, []string{"ps", "-o", "pid,etime,args", "-p", strings.Join(pids, ",")})
	}

	f := api.Finding{
		Key:     "extension.concurrent",
		Summary: fmt.Sprintf("Extension %s %s (%s): %s.", d.Name, d.Version, d.Dir, strings.Join(reasons, "; ")),
		Related: related,
	}
	switch {
	case blocker:
		f.Title = fmt.Sprintf("Extension %s has an operation in progress", d.Name)
		f.Severity, f.Blocker = api.SeverityHigh, true
		f.Summary += " ADE must not run while another extension operation is in progress: the agent runs them one at a time and ADE's OS encryption kills every process on the OS drive."
		f.Remediation.Hint = fmt.Sprintf("Wait until %s reports success or error (its status file stops saying transitioning and its command exits), then start ADE. "+
			"If it is stuck, look at /var/log/azure/%s/ and /var/log/waagent.log, and remove or fix the extension from Azure before encrypting.", d.Name, d.Name)
	case len(svcPIDs) > 0:
		f.Title = fmt.Sprintf("Extension %s has a running service", d.Name)
		f.Severity = api.SeverityInfo
		f.Summary += " This is not an operation in progress; ADE's OS encryption will kill it with everything else on the OS drive (see os-drive.holders)."
		f.Remediation.Hint = "Nothing to wait for. If the service must not be killed, stop it through the extension (or its unit) before encrypting."
	default:
		f.Title = fmt.Sprintf("Status of extension %s is unreadable", d.Name)
		f.Severity = api.SeverityLow
		f.Summary += " The agent may be rewriting it; if it stays unreadable, whether the extension is busy is unknown."
		f.Remediation.Hint = "Run 'adeagent check' again in a minute; if the file stays malformed, look at /var/log/waagent.log."
	}
	f.Remediation.Commands = cmds
	return []api.Finding{f}
}

// extProcessOf reports whether a process belongs to a handler directory: its working
// directory or one of its arguments is inside it (the agent starts handler commands with
// the handler directory as working directory).
func extProcessOf(pr waProc, dir string) bool {
	if pr.Cwd != "" && underDir(strings.TrimSuffix(pr.Cwd, " (deleted)"), dir) {
		return true
	}
	for _, a := range pr.Argv {
		if strings.HasPrefix(a, dir+"/") || a == dir {
			return true
		}
		// "sh -c /var/lib/waagent/X/enable.sh --flag" keeps the whole command in one argument.
		for f := range strings.FieldsSeq(a) {
			if strings.HasPrefix(f, dir+"/") {
				return true
			}
		}
	}
	return false
}

// extHumanAge renders a duration the way people read ages: 45s, 12m, 5h, 3d.
func extHumanAge(d time.Duration) string {
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh", int(d.Hours()))
	}
	return fmt.Sprintf("%dd", int(d.Hours()/24))
}
