package adewatch

import (
	"errors"
	"fmt"
	"path"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/probes"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Masks. Directories ADE writes into are watched for entries appearing, changing and
// going; their nearest existing ancestors only for entries appearing. ADE rewrites
// N.status in place (HandlerUtil.do_status_report opens it "w+" and writes: a truncate,
// a write and a close, no temp file and rename), so IN_CLOSE_WRITE is the end of a
// status write; IN_MODIFY is kept for writers that hold the file open.
const (
	maskSelf   = unix.IN_DELETE_SELF | unix.IN_MOVE_SELF | unix.IN_ONLYDIR
	maskParent = unix.IN_CREATE | unix.IN_MOVED_TO | maskSelf
	maskDirs   = maskParent | unix.IN_DELETE | unix.IN_MOVED_FROM
	maskTarget = maskDirs | unix.IN_CLOSE_WRITE | unix.IN_MODIFY
)

// spec says which entries of a watched directory matter.
type spec struct {
	mask     uint32
	any      bool            // every entry
	names    map[string]bool // these entries
	suffixes []string        // entries ending so
	handlers bool            // ADE handler directories (ADEHandlerName-<version>)
}

func (s *spec) relevant(name string) bool {
	if s.any || s.names[name] {
		return true
	}
	for _, suf := range s.suffixes {
		if strings.HasSuffix(name, suf) {
			return true
		}
	}
	return s.handlers && probes.ADEHandlerDirName(name)
}

type specs map[string]*spec // host path → spec

func (ss specs) get(p string) *spec {
	s := ss[p]
	if s == nil {
		s = &spec{names: map[string]bool{}}
		ss[p] = s
	}
	return s
}

// want adds a directory to watch with mask (and its spec), or, when it does not exist
// yet, its nearest existing ancestor watched for the next path component.
func (ss specs) want(dir string, mask uint32, exists func(string) bool, fill func(*spec)) {
	if exists(dir) {
		s := ss.get(dir)
		s.mask |= mask
		fill(s)
		return
	}
	child := dir
	for p := path.Dir(dir); ; p = path.Dir(p) {
		if exists(p) {
			s := ss.get(p)
			s.mask |= maskParent
			s.names[path.Base(child)] = true
			return
		}
		if p == "/" {
			return
		}
		child = p
	}
}

// inotify is a small wrapper over an inotify instance: the watches it holds by host path.
type inotify struct {
	fd    int
	byWD  map[int32]string
	byDir map[string]int32
	masks map[string]uint32
}

func newInotify() (*inotify, error) {
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		return nil, fmt.Errorf("inotify_init1: %w", err)
	}
	return &inotify{fd: fd, byWD: map[int32]string{}, byDir: map[string]int32{}, masks: map[string]uint32{}}, nil
}

// close drops every watch (closing the instance removes them all).
func (in *inotify) close() error {
	if in == nil || in.fd < 0 {
		return nil
	}
	err := unix.Close(in.fd)
	in.fd = -1
	clear(in.byWD)
	clear(in.byDir)
	clear(in.masks)
	if err != nil {
		return fmt.Errorf("close inotify: %w", err)
	}
	return nil
}

// sync makes the watches match want (host paths) and says how many it added or changed.
// Failures to add one watch are returned together; the rest still hold.
func (in *inotify) sync(root hostroot.Root, want specs) (int, error) {
	added := 0
	var errs []error
	for dir, wd := range in.byDir {
		if _, ok := want[dir]; !ok {
			// EINVAL: the kernel already dropped it (IN_IGNORED raced us).
			if _, err := unix.InotifyRmWatch(in.fd, uint32(wd)); err != nil && !errors.Is(err, unix.EINVAL) {
				errs = append(errs, fmt.Errorf("inotify_rm_watch %s: %w", dir, err))
			}
			in.forget(wd)
		}
	}
	for dir, s := range want {
		if _, ok := in.byDir[dir]; ok && in.masks[dir] == s.mask {
			continue
		}
		wd, err := unix.InotifyAddWatch(in.fd, root.Path(dir), s.mask)
		if err != nil {
			if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
				errs = append(errs, fmt.Errorf("inotify_add_watch %s: %w", dir, err))
			}
			continue
		}
		if _, ok := in.byWD[int32(wd)]; !ok {
			// The same directory under two names (a symlink) shares one watch; events
			// are attributed to the first name.
			in.byWD[int32(wd)] = dir
		}
		in.byDir[dir] = int32(wd)
		in.masks[dir] = s.mask
		added++
	}
	return added, errors.Join(errs...)
}

func (in *inotify) forget(wd int32) {
	for dir, w := range in.byDir {
		if w == wd {
			delete(in.byDir, dir)
			delete(in.masks, dir)
		}
	}
	delete(in.byWD, wd)
}

// rawEvent is one decoded inotify event.
type rawEvent struct {
	dir  string // host path of the watched directory ("" for overflow)
	wd   int32
	mask uint32
	name string
}

// read drains the (non-blocking) instance.
func (in *inotify) read(buf []byte) ([]rawEvent, error) {
	var out []rawEvent
	for {
		n, err := unix.Read(in.fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if errors.Is(err, unix.EAGAIN) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("read inotify: %w", err)
		}
		out = append(out, decodeEvents(buf[:n], in.byWD)...)
		if n == 0 {
			return out, nil
		}
	}
}

// decodeEvents decodes a buffer of struct inotify_event records.
func decodeEvents(b []byte, byWD map[int32]string) []rawEvent {
	var out []rawEvent
	for len(b) >= unix.SizeofInotifyEvent {
		raw := (*unix.InotifyEvent)(unsafe.Pointer(&b[0]))
		end := unix.SizeofInotifyEvent + int(raw.Len)
		if end > len(b) {
			break
		}
		name := strings.TrimRight(string(b[unix.SizeofInotifyEvent:end]), "\x00")
		out = append(out, rawEvent{dir: byWD[raw.Wd], wd: raw.Wd, mask: raw.Mask, name: name})
		b = b[end:]
	}
	return out
}
