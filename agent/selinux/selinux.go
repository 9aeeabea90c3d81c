// Package selinux reads and switches SELinux's mode: the runtime mode in selinuxfs's
// "enforce" file and the boot mode in /etc/selinux/config (research/services_selinux.md §5).
//
// Everything goes through a hostroot.Root, so tests and `--root DIR` work on fixture trees.
// selinuxfs is found in the root's mount table and, on the running host, confirmed with
// statfs(2) (SELINUX_MAGIC); the check is a field so a fixture tree can say honestly that
// it has no kernel behind it (Magic nil: the mount table is taken as given).
package selinux

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Magic is SELINUX_MAGIC, selinuxfs's f_type in statfs(2).
const Magic = 0xf97cff8c

// ConfigPath is the host path of SELinux's boot configuration.
const ConfigPath = "/etc/selinux/config"

// Runtime modes, as the enforce file and go-selinux spell them.
const (
	Disabled   = -1 // selinuxfs not mounted, or no policy loaded
	Permissive = 0
	Enforcing  = 1
)

// ModeName is "enforcing", "permissive" or "disabled".
func ModeName(mode int) string {
	switch mode {
	case Enforcing:
		return "enforcing"
	case Permissive:
		return "permissive"
	}
	return "disabled"
}

// ErrNotMounted is returned when selinuxfs is not mounted (SELinux disabled).
var ErrNotMounted = errors.New("selinuxfs is not mounted (SELinux disabled)")

// FS is SELinux on one host root.
type FS struct {
	Root hostroot.Root
	// Magic checks that the host path p (mapped through Root) is selinuxfs. nil trusts
	// the mount table (fixture roots: there is no kernel to ask).
	Magic func(p string) error
}

// New returns SELinux on root. On the running host selinuxfs is confirmed with statfs;
// on a fixture root the mount table is taken as given.
func New(root hostroot.Root) *FS {
	f := &FS{Root: root}
	if root.IsHost() {
		f.Magic = StatfsMagic
	}
	return f
}

// StatfsMagic returns nil when p is on a filesystem with SELINUX_MAGIC.
func StatfsMagic(p string) error {
	var st unix.Statfs_t
	if err := unix.Statfs(p, &st); err != nil {
		return fmt.Errorf("statfs %s: %w", p, err)
	}
	if uint32(st.Type) != Magic {
		return fmt.Errorf("%s is not selinuxfs (f_type %#x)", p, uint32(st.Type))
	}
	return nil
}

// Mount returns the host path selinuxfs is mounted on, or "" when it is not mounted.
func (f *FS) Mount() (string, error) {
	mounts, err := unmount.ReadMountInfo(f.Root)
	if err != nil {
		return "", fmt.Errorf("find selinuxfs: %w", err)
	}
	for _, m := range mounts {
		if m.FSType != "selinuxfs" {
			continue
		}
		if f.Magic != nil {
			if err := f.Magic(f.Root.Path(m.MountPoint)); err != nil {
				return "", fmt.Errorf("find selinuxfs: %w", err)
			}
		}
		return m.MountPoint, nil
	}
	return "", nil
}

// Enforce reads the runtime mode: Enforcing, Permissive or Disabled (not mounted, or
// mounted without a loaded policy).
func (f *FS) Enforce() (int, error) {
	mnt, err := f.Mount()
	if err != nil || mnt == "" {
		return Disabled, err
	}
	p := path.Join(mnt, "enforce")
	b, err := os.ReadFile(f.Root.Path(p))
	if errors.Is(err, fs.ErrNotExist) {
		return Disabled, nil
	}
	if err != nil {
		return Disabled, fmt.Errorf("read SELinux mode: %w", err)
	}
	switch v := strings.TrimSpace(string(b)); v {
	case "0":
		return Permissive, nil
	case "1":
		return Enforcing, nil
	default:
		return Disabled, fmt.Errorf("SELinux mode in %s: unexpected value %q", p, v)
	}
}

// SetEnforce writes the runtime mode (Enforcing or Permissive) to selinuxfs's enforce
// file. It never creates the file: with selinuxfs not mounted it returns ErrNotMounted.
func (f *FS) SetEnforce(mode int) error {
	if mode != Enforcing && mode != Permissive {
		return fmt.Errorf("set SELinux mode: invalid mode %d", mode)
	}
	mnt, err := f.Mount()
	if err != nil {
		return err
	}
	if mnt == "" {
		return ErrNotMounted
	}
	p := f.Root.Path(path.Join(mnt, "enforce"))
	// O_WRONLY without O_CREATE: never invent an enforce file.
	fh, err := os.OpenFile(p, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("set SELinux mode %s: %w", ModeName(mode), err)
	}
	_, werr := fmt.Fprintf(fh, "%d", mode)
	cerr := fh.Close()
	if err := errors.Join(werr, cerr); err != nil {
		return fmt.Errorf("set SELinux mode %s: %w", ModeName(mode), err)
	}
	return nil
}

// ConfigMode returns the value of SELINUX= in /etc/selinux/config ("enforcing",
// "permissive", "disabled"), or "" when the file or the line is missing.
func (f *FS) ConfigMode() (string, error) {
	b, err := f.Root.ReadFile(ConfigPath)
	if errors.Is(err, fs.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read %s: %w", ConfigPath, err)
	}
	v, _ := findMode(b)
	return v, nil
}

// findMode returns the SELINUX= value and the byte range of the value in b (the last
// assignment wins, as the shell-like parsers of libselinux see it); start < 0 when absent.
func findMode(b []byte) (string, [2]int) {
	val, rng := "", [2]int{-1, -1}
	off := 0
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		content := bytes.TrimRight(line, "\r\n")
		trim := bytes.TrimLeft(content, " \t")
		lead := len(content) - len(trim)
		if bytes.HasPrefix(trim, []byte("SELINUX=")) {
			start := off + lead + len("SELINUX=")
			raw := trim[len("SELINUX="):]
			// The value ends at whitespace or a comment.
			end := len(raw)
			if i := bytes.IndexAny(raw, " \t#"); i >= 0 {
				end = i
			}
			v := strings.Trim(string(raw[:end]), `"'`)
			val, rng = strings.ToLower(v), [2]int{start, start + end}
		}
		off += len(line)
	}
	return val, rng
}

// SetConfigMode rewrites the SELINUX= line of /etc/selinux/config to value ("enforcing",
// "permissive" or "disabled"). Only that value changes; every other byte is kept. The
// file is replaced atomically (temp file, fsync, rename, fsync of the directory) with its
// mode and owner. It returns whether the file changed. A missing file or line is an
// error: adeagent does not invent SELinux configuration.
func (f *FS) SetConfigMode(value string) (bool, error) {
	switch value {
	case "enforcing", "permissive", "disabled":
	default:
		return false, fmt.Errorf("set %s: invalid SELINUX value %q", ConfigPath, value)
	}
	p := f.Root.Path(ConfigPath)
	b, err := os.ReadFile(p)
	if err != nil {
		return false, fmt.Errorf("set %s: %w", ConfigPath, err)
	}
	cur, rng := findMode(b)
	if rng[0] < 0 {
		return false, fmt.Errorf("set %s: no SELINUX= line", ConfigPath)
	}
	if cur == value && string(b[rng[0]:rng[1]]) == value {
		return false, nil
	}
	out := make([]byte, 0, len(b)+len(value))
	out = append(out, b[:rng[0]]...)
	out = append(out, value...)
	out = append(out, b[rng[1]:]...)
	if err := WriteFileAtomic(p, out); err != nil {
		return false, fmt.Errorf("set %s: %w", ConfigPath, err)
	}
	return true, nil
}

// WriteFileAtomic replaces the file at p with data: temp file in the same directory,
// fsync, rename over p, fsync of the directory. An existing file's mode and owner are
// kept; a new file gets 0600.
func WriteFileAtomic(p string, data []byte) error {
	dir := filepath.Dir(p)
	mode := os.FileMode(0o600)
	uid, gid := -1, -1
	if fi, err := os.Stat(p); err == nil {
		mode = fi.Mode().Perm()
		if st, ok := fi.Sys().(*syscall.Stat_t); ok {
			uid, gid = int(st.Uid), int(st.Gid)
		}
	}
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(p)+".tmp-*")
	if err != nil {
		return err
	}
	name := tmp.Name()
	ok := false
	defer func() {
		if !ok {
			_ = tmp.Close()
			_ = os.Remove(name)
		}
	}()
	if _, err := tmp.Write(data); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if uid >= 0 && (uid != os.Geteuid() || gid != os.Getegid()) {
		if err := tmp.Chown(uid, gid); err != nil {
			return err
		}
	}
	if err := tmp.Sync(); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	if err := os.Rename(name, p); err != nil {
		return err
	}
	ok = true
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	serr := d.Sync()
	cerr := d.Close()
	return errors.Join(serr, cerr)
}

// State is SELinux's runtime and boot mode.
type State struct {
	Mount   string // selinuxfs mount point; "" when not mounted
	Enforce int    // Enforcing, Permissive or Disabled
	Config  string // SELINUX= of /etc/selinux/config; "" when missing
}

// State reads both modes.
func (f *FS) State() (State, error) {
	mnt, err := f.Mount()
	if err != nil {
		return State{Enforce: Disabled}, err
	}
	s := State{Mount: mnt, Enforce: Disabled}
	if mnt != "" {
		if s.Enforce, err = f.Enforce(); err != nil {
			return s, err
		}
	}
	if s.Config, err = f.ConfigMode(); err != nil {
		return s, err
	}
	return s, nil
}
