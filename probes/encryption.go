package probes

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"sort"
	"strings"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// encryptionProbe compares what the VM really has — dm-crypt mappings in sysfs
// (/sys/block/dm-*/dm/uuid "CRYPT-…", followed through slaves/ from the root filesystem's
// device) — with what ADE has recorded: its last status (substatus "os"/"data"), its
// crypttab lines (key file LinuxPassPhraseFileName, mapping osencrypt) and its legacy
// azure_crypt_mount table (research ade_extension.md §3 "How encrypted is decided", §4).
//
// Microsoft's troubleshooting page warns that when disks are decrypted with low-level
// commands the platform keeps reporting them encrypted and can no longer report status or
// provision the VM; running ADE again on such a VM is not safe.
type encryptionProbe struct{}

func (encryptionProbe) Name() string { return "encryption" }

// dmDev is one device-mapper device in sysfs.
type dmDev struct {
	Kernel string // dm-0
	Name   string // dm/name, e.g. osencrypt
	UUID   string // dm/uuid, e.g. CRYPT-LUKS2-…-osencrypt
	Dev    string // maj:min
	Slaves []string
}

func (d dmDev) crypt() bool { return strings.HasPrefix(d.UUID, "CRYPT-") }

// cryptKind is "LUKS1", "LUKS2", "PLAIN", … from the dm uuid.
func (d dmDev) cryptKind() string {
	rest := strings.TrimPrefix(d.UUID, "CRYPT-")
	kind, _, _ := strings.Cut(rest, "-")
	return kind
}

// readDMDevices lists /sys/block/dm-*. ok is false when the root has no /sys/block (the
// real state is then unknown).
func readDMDevices(root hostroot.Root) (devs map[string]dmDev, ok bool, err error) {
	entries, err := os.ReadDir(root.Sys("block"))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, false, nil
		}
		return nil, false, fmt.Errorf("read %s: %w", root.Sys("block"), err)
	}
	devs = map[string]dmDev{}
	for _, e := range entries {
		if !strings.HasPrefix(e.Name(), "dm-") {
			continue
		}
		d := dmDev{Kernel: e.Name()}
		d.Name = encReadTrim(root.Sys("block", e.Name(), "dm", "name"))
		d.UUID = encReadTrim(root.Sys("block", e.Name(), "dm", "uuid"))
		d.Dev = encReadTrim(root.Sys("block", e.Name(), "dev"))
		if sl, err := os.ReadDir(root.Sys("block", e.Name(), "slaves")); err == nil {
			for _, s := range sl {
				d.Slaves = append(d.Slaves, s.Name())
			}
		}
		devs[d.Kernel] = d
	}
	return devs, true, nil
}

func encReadTrim(file string) string {
	b, err := os.ReadFile(file)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// cryptUnder finds the dm-crypt device that start (a dm kernel name) sits on, following
// slaves; "" when none.
func cryptUnder(devs map[string]dmDev, start string) string {
	seen := map[string]bool{}
	queue := []string{start}
	for len(queue) > 0 {
		k := queue[0]
		queue = queue[1:]
		if seen[k] {
			continue
		}
		seen[k] = true
		d, ok := devs[k]
		if !ok {
			continue
		}
		if d.crypt() {
			return k
		}
		queue = append(queue, d.Slaves...)
	}
	return ""
}

// dmForMount finds the dm device a mount is on: by device number, then by source name.
func dmForMount(devs map[string]dmDev, m unmount.Mount) (string, bool) {
	for k, d := range devs {
		if d.Dev != "" && d.Dev == m.Dev.String() {
			return k, true
		}
	}
	src := m.Source
	if name, ok := strings.CutPrefix(src, "/dev/mapper/"); ok {
		for k, d := range devs {
			if d.Name == name {
				return k, true
			}
		}
	}
	if k, ok := strings.CutPrefix(src, "/dev/"); ok && strings.HasPrefix(k, "dm-") {
		if _, ok := devs[k]; ok {
			return k, true
		}
	}
	return "", false
}

// adeCryptItem is a volume ADE recorded as encrypted.
type adeCryptItem struct {
	Mapper, Device, From string
}

// adeCryptItems reads ADE's crypttab lines and its legacy azure_crypt_mount table.
func adeCryptItems(root hostroot.Root) (items []adeCryptItem, unreadable []string) {
	if data, err := root.ReadFile("/etc/crypttab"); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || strings.HasPrefix(f[0], "#") {
				continue
			}
			key := ""
			if len(f) > 2 {
				key = f[2]
			}
			if f[0] == "osencrypt" || strings.Contains(key, "LinuxPassPhraseFileName") || strings.Contains(key, adeConfigDir) {
				items = append(items, adeCryptItem{Mapper: unmount.Unescape(f[0]), Device: f[1], From: "/etc/crypttab"})
			}
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		unreadable = append(unreadable, fmt.Sprintf("/etc/crypttab (%v)", err))
	}
	table := path.Join(adeConfigDir, "azure_crypt_mount")
	if data, err := root.ReadFile(table); err == nil {
		for line := range strings.SplitSeq(string(data), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 || strings.HasPrefix(f[0], "#") {
				continue
			}
			items = append(items, adeCryptItem{Mapper: f[0], Device: f[1], From: table})
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		unreadable = append(unreadable, fmt.Sprintf("%s (%v)", table, err))
	}
	return items, unreadable
}

func (p encryptionProbe) Run(ctx context.Context, env *Env) ([]api.Finding, error) {
	root := env.Root
	ade, err := inspectADE(ctx, env)
	if err != nil {
		return nil, err
	}
	if ade.active() {
		// ADE is between states; ade.in-progress reports it and nothing is settled.
		return nil, nil
	}
	items, unreadable := adeCryptItems(root)
	devs, haveSys, err := readDMDevices(root)
	if err != nil {
		return nil, err
	}
	if !haveSys {
		return nil, nil // the real state is unknown; nothing to compare
	}

	// The real state of /.
	var rootMount *unmount.Mount
	if mounts, err := unmount.ReadMountInfo(root); err == nil {
		if m, ok := unmount.MountFor(mounts, "/"); ok && m.MountPoint == "/" {
			rootMount = &m
		}
	}
	rootCrypt, rootDM := "", ""
	if rootMount != nil {
		if k, ok := dmForMount(devs, *rootMount); ok {
			rootDM = k
			rootCrypt = cryptUnder(devs, k)
		}
	}
	osencryptOpen := ""
	var cryptNames []string
	for k, d := range devs {
		if d.crypt() {
			cryptNames = append(cryptNames, fmt.Sprintf("%s (%s, %s)", d.Name, k, d.cryptKind()))
			if d.Name == "osencrypt" {
				osencryptOpen = k
			}
		}
	}
	sort.Strings(cryptNames)

	// What ADE recorded.
	var osItem *adeCryptItem
	var dataItems []adeCryptItem
	for i, it := range items {
		switch it.Mapper {
		case "osencrypt":
			if osItem == nil {
				osItem = &items[i]
			}
		case "resourceencrypt":
		default:
			dataItems = append(dataItems, it)
		}
	}
	statusFile := ""
	if ade.Status != nil {
		statusFile = ade.Status.File
	}
	var recordedOS []string // why ADE thinks the OS volume is encrypted
	if ade.OSState == "Encrypted" {
		recordedOS = append(recordedOS, fmt.Sprintf("ADE's last status (%s) says the OS volume is Encrypted", statusFile))
	}
	if osItem != nil {
		recordedOS = append(recordedOS, fmt.Sprintf("%s maps osencrypt onto %s", osItem.From, osItem.Device))
	}
	adeTrace := ade.Handler != nil || ade.ConfigDir || len(items) > 0

	related := func(extra ...api.Related) []api.Related {
		r := []api.Related{}
		if rootMount != nil {
			r = append(r, api.Related{Kind: "mount", ID: "/"})
			r = append(r, api.Related{Kind: "device", ID: rootMount.Source})
		}
		if statusFile != "" {
			r = append(r, api.Related{Kind: "path", ID: statusFile})
		}
		return append(r, extra...)
	}
	lsblk := []string{"lsblk", "-o", "NAME,TYPE,FSTYPE,SIZE,MOUNTPOINT"}
	rootDesc := ""
	if rootMount != nil {
		rootDesc = fmt.Sprintf("/ is mounted from %s (device %s, %s)", rootMount.Source, rootMount.Dev, rootMount.FSType)
		if rootDM != "" {
			rootDesc += fmt.Sprintf(", %s (%s)", rootDM, devs[rootDM].Name)
		}
	}
	var out []api.Finding
	mismatch := func(title, summary, hint string, sev api.Severity, blocker bool, cmds [][]string, rel []api.Related) {
		if len(unreadable) > 0 {
			summary += " Unreadable: " + strings.Join(unreadable, "; ") + "."
		}
		out = append(out, api.Finding{
			Key: "encryption.state-mismatch", Title: title, Summary: summary, Severity: sev, Blocker: blocker,
			Remediation: api.Remediation{Hint: hint, Commands: cmds}, Related: rel,
		})
	}

	if rootMount != nil {
		switch {
		case len(recordedOS) > 0 && rootCrypt == "":
			s := fmt.Sprintf("ADE records the OS volume as encrypted (%s), but %s, which is not on any dm-crypt device.",
				strings.Join(recordedOS, "; "), rootDesc)
			if osencryptOpen != "" {
				s += fmt.Sprintf(" The mapping osencrypt is open (%s) but / is not on it: the VM was not rebooted into the encrypted root.", osencryptOpen)
			}
			mismatch("ADE says the OS disk is encrypted, but / is not on dm-crypt", s,
				"Do not run ADE again on this VM. If the OS disk was decrypted or replaced with low-level commands, ADE's and the platform's "+
					"settings no longer match the disk and Microsoft does not support disabling OS encryption: restore the VM from the backup or snapshot "+
					"taken before encryption (or rebuild it) and encrypt that. If osencrypt is open and a reboot is pending, reboot first and check again.",
				api.SeverityHigh, true, [][]string{lsblk, {"findmnt", "/"}}, related())
		case rootCrypt != "" && ade.OSState == "NotEncrypted":
			d := devs[rootCrypt]
			mismatch("/ is on dm-crypt, but ADE says the OS volume is not encrypted",
				fmt.Sprintf("%s, which sits on the dm-crypt mapping %s (%s, uuid %s), but ADE's last status (%s) says the OS volume is NotEncrypted.",
					rootDesc, d.Name, rootCrypt, d.UUID, statusFile),
				"The OS volume was encrypted outside ADE, or ADE's status is stale. Do not start ADE's OS encryption on top of it: "+
					"find out who set up "+d.Name+" (cryptsetup status "+d.Name+"); if it is ADE's, run ADE's QueryEncryptionStatus or re-apply "+
					"the same ADE settings so it re-reads the disk.",
				api.SeverityHigh, true, [][]string{{"cryptsetup", "status", d.Name}, lsblk}, related(api.Related{Kind: "device", ID: "/dev/mapper/" + d.Name}))
		case rootCrypt != "" && !adeTrace:
			d := devs[rootCrypt]
			mismatch("/ is on dm-crypt that ADE did not set up",
				fmt.Sprintf("%s, which sits on the dm-crypt mapping %s (%s, %s), but there is no trace of ADE on this VM "+
					"(no ADE extension under %s, no %s, no ADE line in /etc/crypttab).",
					rootDesc, d.Name, rootCrypt, d.cryptKind(), waagentLibDir, adeConfigDir),
				"The OS disk is already encrypted by something other than ADE; ADE cannot encrypt it again and does not support such images. "+
					"Keep the existing encryption (and do not enable ADE for the OS volume), or rebuild the VM from an unencrypted image.",
				api.SeverityHigh, true, [][]string{{"cryptsetup", "status", d.Name}, lsblk}, related(api.Related{Kind: "device", ID: "/dev/mapper/" + d.Name}))
		case rootCrypt == "" && ade.OSState == "VMRestartPending" && osencryptOpen == "":
			mismatch("ADE waits for a reboot, but there is no osencrypt mapping",
				fmt.Sprintf("ADE's last status (%s) says the OS volume is VMRestartPending, but %s and no osencrypt mapping is open. "+
					"The status is probably left over from an interrupted run.", statusFile, rootDesc),
				"Read ADE's log ("+adeLogFile+") to see how the last run ended; restore from the pre-encryption snapshot if the OS disk was left half-done.",
				api.SeverityMedium, false, [][]string{lsblk, {"tail", "-n", "50", adeLogFile}}, related())
		}
	}

	// Data volumes ADE recorded but that are not open.
	open := map[string]bool{}
	for _, d := range devs {
		if d.crypt() {
			open[d.Name] = true
		}
	}
	var missing []string
	var rel []api.Related
	var cmds [][]string
	for _, it := range dataItems {
		if open[it.Mapper] {
			continue
		}
		missing = append(missing, fmt.Sprintf("%s on %s (from %s)", it.Mapper, it.Device, it.From))
		rel = append(rel, api.Related{Kind: "device", ID: it.Device})
		cmds = append(cmds, []string{"cryptsetup", "status", it.Mapper})
	}
	if len(missing) > 0 {
		mismatch(fmt.Sprintf("%d data volume(s) ADE encrypted are not unlocked", len(missing)),
			fmt.Sprintf("ADE records these encrypted data volumes, but no dm-crypt mapping of that name is open: %s. Open dm-crypt mappings: %s.",
				strings.Join(missing, "; "), encListOrNone(cryptNames)),
			"After a boot ADE's volumes unlock with the key on the BEK volume (mounted at /mnt/azure_bek_disk), which can take more than a minute. "+
				"If they stay locked, check that the BEK VOLUME disk is attached and mounted and that the disks are present (lsblk); "+
				"a volume decrypted or detached outside ADE leaves ADE's records stale.",
			api.SeverityMedium, false, append(cmds, lsblk), rel)
	} else if ade.DataState == "Encrypted" && len(dataItems) == 0 {
		var dataOpen []string
		for _, d := range devs {
			if d.crypt() && d.Name != "osencrypt" && d.Name != "resourceencrypt" {
				dataOpen = append(dataOpen, d.Name)
			}
		}
		if len(dataOpen) == 0 {
			mismatch("ADE says data volumes are encrypted, but none is open",
				fmt.Sprintf("ADE's last status (%s) says the data volumes are Encrypted, but no dm-crypt mapping other than osencrypt/resourceencrypt is open "+
					"and neither /etc/crypttab nor %s/azure_crypt_mount lists any. Open dm-crypt mappings: %s.", statusFile, adeConfigDir, encListOrNone(cryptNames)),
				"If data disks were decrypted or detached outside ADE, align ADE with 'az vm encryption disable --volume-type DATA' "+
					"(Disable-AzVMDiskEncryption) instead of low-level commands; otherwise check lsblk and the BEK volume.",
				api.SeverityMedium, false, [][]string{lsblk}, related())
		}
	}
	return stampProbe(p.Name(), out), nil
}

func encListOrNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}
