// Package hostroot is the one place that knows where the host's files live.
//
// Everything adeagent reads from the machine (/proc, /sys, /etc, /var/lib/waagent, /run, …)
// is addressed through a Root, so tests and `--root DIR` can point the whole program at a
// fixture tree. Code elsewhere never spells "/proc/" itself.
package hostroot

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// Root is a host root directory. The zero value is the real host ("/").
type Root struct {
	dir string
}

// Host is the running machine's own root.
var Host = Root{dir: "/"}

// New returns the root at dir. dir must exist and be a directory.
func New(dir string) (Root, error) {
	if dir == "" || dir == "/" {
		return Host, nil
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return Root{}, fmt.Errorf("host root %q: %w", dir, err)
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return Root{}, fmt.Errorf("host root: %w", err)
	}
	if !fi.IsDir() {
		return Root{}, fmt.Errorf("host root %s: not a directory", abs)
	}
	return Root{dir: filepath.Clean(abs)}, nil
}

// Dir is the root directory as given (always absolute).
func (r Root) Dir() string {
	if r.dir == "" {
		return "/"
	}
	return r.dir
}

// IsHost reports whether this root is the running machine itself, so that live-only
// sources (systemd over D-Bus, ioctls on device nodes, the kernel's uname) may be used.
func (r Root) IsHost() bool { return r.Dir() == "/" }

// Path maps an absolute host path to where it lives under this root.
func (r Root) Path(hostPath string) string {
	if r.IsHost() {
		return filepath.Clean("/" + hostPath)
	}
	return filepath.Join(r.dir, hostPath)
}

// HostPath maps a path under this root back to the host path it stands for
// (the inverse of Path). Paths outside the root are returned unchanged.
func (r Root) HostPath(p string) string {
	if r.IsHost() {
		return p
	}
	rel, err := filepath.Rel(r.dir, p)
	if err != nil || rel == ".." || (len(rel) > 2 && rel[:3] == "../") {
		return p
	}
	return filepath.Clean("/" + rel)
}

// Proc is the path of a file under the procfs of this root.
func (r Root) Proc(elem ...string) string {
	return r.Path(filepath.Join(append([]string{"/proc"}, elem...)...))
}

// PID is the path of a file in one process's procfs directory.
func (r Root) PID(pid int, elem ...string) string {
	return r.Proc(append([]string{strconv.Itoa(pid)}, elem...)...)
}

// Sys is the path of a file under the sysfs of this root.
func (r Root) Sys(elem ...string) string {
	return r.Path(filepath.Join(append([]string{"/sys"}, elem...)...))
}

// ReadFile reads a host file through the root.
func (r Root) ReadFile(hostPath string) ([]byte, error) {
	return os.ReadFile(r.Path(hostPath))
}
