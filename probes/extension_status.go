package probes

// Helpers shared by the waagent, extension, ade and encryption probes: the layout of
// WALinuxAgent's library directory, extension status files and process listing.
//
// Layout (WALinuxAgent; research ade_extension.md §3, §4):
//
//	/var/lib/waagent/WALinuxAgent-<ver>/            an auto-updated agent (HandlerManifest.json, error.json)
//	/var/lib/waagent/<Publisher>.<Type>-<ver>/      one extension handler
//	    HandlerManifest.json                        its commands (install/enable/…)
//	    config/N.settings                           settings the agent handed it
//	    status/N.status                             its status; the highest N is current
//	    mrseq                                       last processed sequence number

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

const (
	waagentLibDir = "/var/lib/waagent"
	// adeHandler is the current ADE extension (single pass 1.x; dual pass 0.1.x).
	adeHandler = "Microsoft.Azure.Security.AzureDiskEncryptionForLinux"
	// adeOSTCHandler is the deprecated original ADE extension.
	adeOSTCHandler = "Microsoft.OSTCExtensions.AzureDiskEncryptionForLinux"
	// adeConfigDir is ADE's own state directory (research §4).
	adeConfigDir = "/var/lib/azure_disk_encryption_config"
	// adeLogFile is ADE's extension log (research §3).
	adeLogFile = "/var/log/azure/" + adeHandler + "/extension.log"
)

// extHandlerDir is one extension handler directory under /var/lib/waagent.
type extHandlerDir struct {
	Name    string    // Publisher.Type, e.g. Microsoft.Azure.Security.AzureDiskEncryptionForLinux
	Version string    // as spelled in the directory name
	Ver     waVersion // parsed, nil if the version does not parse
	Dir     string    // host path
}

// listExtHandlerDirs lists the extension handler directories under /var/lib/waagent,
// sorted by name and version. A missing /var/lib/waagent is no error (no handlers).
func listExtHandlerDirs(root hostroot.Root) ([]extHandlerDir, error) {
	entries, err := os.ReadDir(root.Path(waagentLibDir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", waagentLibDir, err)
	}
	var out []extHandlerDir
	for _, e := range entries {
		if !isDirEntryDir(root, waagentLibDir, e) {
			continue
		}
		name, version, ok := splitHandlerDirName(e.Name())
		if !ok {
			continue
		}
		v, _ := parseWAVersion(version)
		out = append(out, extHandlerDir{Name: name, Version: version, Ver: v, Dir: path.Join(waagentLibDir, e.Name())})
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Name != out[j].Name {
			return out[i].Name < out[j].Name
		}
		return out[i].Ver.compare(out[j].Ver) < 0
	})
	return out, nil
}

// isDirEntryDir reports whether a directory entry is a directory (following a symlink
// within the root).
func isDirEntryDir(root hostroot.Root, dir string, e fs.DirEntry) bool {
	if e.IsDir() {
		return true
	}
	if e.Type()&fs.ModeSymlink == 0 {
		return false
	}
	fi, err := os.Stat(root.Path(path.Join(dir, e.Name())))
	return err == nil && fi.IsDir()
}

// splitHandlerDirName splits "Publisher.Type-1.2.3" into name and version. The agent's
// own WALinuxAgent-* directories and anything without a dotted name are not handlers.
func splitHandlerDirName(s string) (name, version string, ok bool) {
	i := strings.LastIndexByte(s, '-')
	if i <= 0 || i == len(s)-1 {
		return "", "", false
	}
	name, version = s[:i], s[i+1:]
	if strings.HasPrefix(name, "WALinuxAgent") || !strings.Contains(name, ".") {
		return "", "", false
	}
	if _, ok := parseWAVersion(version); !ok {
		return "", "", false
	}
	return name, version, true
}

// latestHandlerDirs keeps the highest version of each handler: the agent removes old
// versions after an update, and a leftover one says nothing about what runs now.
func latestHandlerDirs(dirs []extHandlerDir) []extHandlerDir {
	var out []extHandlerDir
	for _, d := range dirs {
		if n := len(out); n > 0 && out[n-1].Name == d.Name {
			out[n-1] = d // sorted ascending: the later one is newer
			continue
		}
		out = append(out, d)
	}
	return out
}

// extStatus is the current status file of a handler.
type extStatus struct {
	File      string // host path of the N.status read
	Seq       int
	Version   string
	Timestamp string
	Name      string
	Operation string
	Status    string // transitioning|success|error|warning
	Code      string
	Message   string
	Sub       []extSubStatus
}

type extSubStatus struct {
	Name, Operation, Status, Code, Message string
}

// statusFileJSON is one element of the array WALinuxAgent's handlers write.
type statusFileJSON struct {
	Version      string `json:"version"`
	TimestampUTC string `json:"timestampUTC"`
	Status       struct {
		Name             string          `json:"name"`
		Operation        string          `json:"operation"`
		Status           string          `json:"status"`
		Code             json.RawMessage `json:"code"`
		FormattedMessage struct {
			Message string `json:"message"`
		} `json:"formattedMessage"`
		Substatus []struct {
			Name             string          `json:"name"`
			Operation        string          `json:"operation"`
			Status           string          `json:"status"`
			Code             json.RawMessage `json:"code"`
			FormattedMessage struct {
				Message string `json:"message"`
			} `json:"formattedMessage"`
		} `json:"substatus"`
	} `json:"status"`
}

// rawCode renders a status code that handlers write as a number or a string.
func rawCode(r json.RawMessage) string {
	s := strings.TrimSpace(string(r))
	if s == "" || s == "null" {
		return ""
	}
	var str string
	if json.Unmarshal(r, &str) == nil {
		return str
	}
	return s
}

// latestStatusFile returns the host path and sequence number of the highest N.status in
// dir/status, or "" when there is none.
func latestStatusFile(root hostroot.Root, dir string) (string, int, error) {
	sdir := path.Join(dir, "status")
	entries, err := os.ReadDir(root.Path(sdir))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return "", 0, nil
		}
		return "", 0, fmt.Errorf("read %s: %w", sdir, err)
	}
	best, bestSeq := "", -1
	for _, e := range entries {
		num, ok := strings.CutSuffix(e.Name(), ".status")
		if !ok || e.IsDir() {
			continue
		}
		n, err := strconv.Atoi(num)
		if err != nil || n < 0 {
			continue
		}
		if n > bestSeq {
			best, bestSeq = path.Join(sdir, e.Name()), n
		}
	}
	return best, bestSeq, nil
}

// readLatestStatus reads a handler's current status. It returns nil and no error when the
// handler has written no status yet; a malformed file is an error naming the file.
func readLatestStatus(root hostroot.Root, dir string) (*extStatus, error) {
	file, seq, err := latestStatusFile(root, dir)
	if err != nil || file == "" {
		return nil, err
	}
	data, err := root.ReadFile(file)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("read %s: %w", file, err)
	}
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		// Handlers truncate and rewrite; an empty file is "no status yet".
		return &extStatus{File: file, Seq: seq}, nil
	}
	var arr []statusFileJSON
	if data[0] == '{' {
		var one statusFileJSON
		if err := json.Unmarshal(data, &one); err != nil {
			return nil, fmt.Errorf("parse %s: %w", file, err)
		}
		arr = []statusFileJSON{one}
	} else if err := json.Unmarshal(data, &arr); err != nil {
		return nil, fmt.Errorf("parse %s: %w", file, err)
	}
	st := &extStatus{File: file, Seq: seq}
	if len(arr) == 0 {
		return st, nil
	}
	a := arr[0]
	st.Version, st.Timestamp = a.Version, a.TimestampUTC
	st.Name, st.Operation, st.Status = a.Status.Name, a.Status.Operation, strings.ToLower(a.Status.Status)
	st.Code, st.Message = rawCode(a.Status.Code), a.Status.FormattedMessage.Message
	for _, s := range a.Status.Substatus {
		st.Sub = append(st.Sub, extSubStatus{Name: s.Name, Operation: s.Operation,
			Status: strings.ToLower(s.Status), Code: rawCode(s.Code), Message: s.FormattedMessage.Message})
	}
	return st, nil
}

// waProc is what the waagent-family probes need of a process.
type waProc struct {
	PID     int
	Argv    []string
	Cmdline string // argv joined by spaces
	Cwd     string // readlink of cwd, "" if unreadable
}

// waListProcesses returns every process's command line and cwd from the evaluation's
// shared process list. Kernel threads (empty cmdline) are skipped; processes that vanish
// or cannot be read are skipped, as these probes only look for positive evidence. A root
// without procfs has no processes.
func waListProcesses(ctx context.Context, env *Env) ([]waProc, error) {
	procs, err := env.Processes(ctx)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, err
	}
	out := make([]waProc, 0, len(procs))
	for _, p := range procs {
		out = append(out, waProc{PID: p.PID, Argv: p.Argv, Cmdline: strings.Join(p.Argv, " "), Cwd: p.Cwd})
	}
	return out, nil
}

// underDir reports whether p is dir or below it (both clean absolute paths).
func underDir(p, dir string) bool {
	p = filepath.Clean(p)
	return p == dir || strings.HasPrefix(p, dir+"/")
}

// readADEINI parses the ConfigParser files ADE writes: "[section]" and "key = value" or
// "key: value" lines. Keys are returned as "section.key" with the key lower-cased, as
// ConfigParser does.
func readADEINI(data []byte) map[string]string {
	out := map[string]string{}
	section := ""
	for line := range strings.SplitSeq(string(data), "\n") {
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		if line[0] == '[' && strings.HasSuffix(line, "]") {
			section = strings.TrimSpace(line[1 : len(line)-1])
			continue
		}
		i := strings.IndexAny(line, "=:")
		if i <= 0 {
			continue
		}
		k := strings.ToLower(strings.TrimSpace(line[:i]))
		out[section+"."+k] = strings.TrimSpace(line[i+1:])
	}
	return out
}
