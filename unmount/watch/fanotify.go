package watch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount"
)

// fanMask is what the watcher asks fanotify for. OPEN and OPEN_EXEC make a process a
// candidate holder. CLOSE is reported for the last close of an open file (for a process
// that exits: with its pid, from exit_files), so a holder that lets go is re-verified
// promptly even without the proc connector; the kernel merges OPEN|CLOSE of one pid on one
// file into one event while it is queued. ONDIR adds opens of directories.
const fanMask = unix.FAN_OPEN | unix.FAN_OPEN_EXEC | unix.FAN_CLOSE | unix.FAN_ONDIR

// fanEvent is one decoded fanotify event.
type fanEvent struct {
	Mask uint64
	FD   int32 // an open file in fd mode (the reader must close it at once); FAN_NOFD otherwise
	PID  int32
}

// decodeFanotify walks the events in buf (what one read(2) of a fanotify group returned)
// and calls fn for each, in order. Info records after the metadata (FAN_REPORT_FID) are
// skipped. It returns an error for a malformed buffer or an unknown metadata version;
// events before the bad one have been passed to fn.
func decodeFanotify(buf []byte, fn func(fanEvent)) error {
	ne := binary.NativeEndian
	for off := 0; off < len(buf); {
		rest := buf[off:]
		if len(rest) < unix.FAN_EVENT_METADATA_LEN {
			return fmt.Errorf("fanotify: short event: %d bytes left", len(rest))
		}
		evLen := int(ne.Uint32(rest[0:4]))
		vers := rest[4]
		metaLen := int(ne.Uint16(rest[6:8]))
		if vers != unix.FANOTIFY_METADATA_VERSION {
			return fmt.Errorf("fanotify: metadata version %d, want %d", vers, unix.FANOTIFY_METADATA_VERSION)
		}
		if evLen < unix.FAN_EVENT_METADATA_LEN || evLen > len(rest) || metaLen < unix.FAN_EVENT_METADATA_LEN || metaLen > evLen {
			return fmt.Errorf("fanotify: bad event length %d (metadata %d, %d bytes left)", evLen, metaLen, len(rest))
		}
		fn(fanEvent{Mask: ne.Uint64(rest[8:16]), FD: int32(ne.Uint32(rest[16:20])), PID: int32(ne.Uint32(rest[20:24]))})
		off += evLen
	}
	return nil
}

// tryFID is turned off by tests to exercise fd mode.
var tryFID = true

// fanGroup is a fanotify group with filesystem marks on the target.
type fanGroup struct {
	f   *os.File
	fid bool // FAN_REPORT_FID: events carry no fd
	// unwatched lists target filesystems that could not be marked, with the reason.
	unwatched []string
}

// openFanotify makes a notification group and marks every mounted target filesystem.
// It prefers FAN_REPORT_FID (no event fds at all) and falls back to fd mode, where every
// event fd is closed as soon as it is read, when the kernel or a filesystem refuses FID.
func openFanotify(target *unmount.Target) (*fanGroup, error) {
	if !tryFID {
		return openFanGroup(target, false)
	}
	g, err := openFanGroup(target, true)
	if err == nil {
		return g, nil
	}
	if !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.ENODEV) && !errors.Is(err, unix.EXDEV) {
		return nil, err
	}
	g, err2 := openFanGroup(target, false)
	if err2 != nil {
		return nil, fmt.Errorf("%w (FAN_REPORT_FID: %v)", err2, err)
	}
	return g, nil
}

func openFanGroup(target *unmount.Target, fid bool) (*fanGroup, error) {
	flags := uint(unix.FAN_CLASS_NOTIF | unix.FAN_CLOEXEC | unix.FAN_NONBLOCK)
	if fid {
		flags |= unix.FAN_REPORT_FID
	}
	fd, err := unix.FanotifyInit(flags, unix.O_RDONLY|unix.O_LARGEFILE|unix.O_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("fanotify_init: %w", err)
	}
	g := &fanGroup{fid: fid}
	ok := false
	defer func() {
		if !ok {
			unix.Close(fd)
		}
	}()
	marked := 0
	mask := uint64(fanMask)
	for _, dev := range target.Devs {
		var candidates []string
		for _, m := range target.Table {
			if m.Dev == dev {
				candidates = append(candidates, m.MountPoint)
			}
		}
		if len(candidates) == 0 {
			continue // not mounted: nothing can open files on it
		}
		var lastErr error
		done := false
		for _, mp := range candidates {
			err := markFS(fd, dev, mp, mask)
			if errors.Is(err, unix.EINVAL) && mask&unix.FAN_OPEN_EXEC != 0 {
				// Kernels before 5.0 know no FAN_OPEN_EXEC; an exec still opens the binary.
				mask &^= unix.FAN_OPEN_EXEC
				err = markFS(fd, dev, mp, mask)
			}
			if err == nil {
				done = true
				break
			}
			if fid && (errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.ENODEV) || errors.Is(err, unix.EXDEV)) {
				return nil, err // this filesystem cannot report file ids: use fd mode
			}
			if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EACCES) {
				return nil, err
			}
			lastErr = err
		}
		if !done {
			g.unwatched = append(g.unwatched, fmt.Sprintf("%s: %v", dev, lastErr))
			continue
		}
		marked++
	}
	if marked == 0 {
		if len(g.unwatched) > 0 {
			return nil, fmt.Errorf("no target filesystem could be marked: %v", g.unwatched)
		}
		return nil, errors.New("no target filesystem is mounted")
	}
	g.f = os.NewFile(uintptr(fd), "fanotify")
	if g.f == nil {
		return nil, errors.New("fanotify: invalid fd")
	}
	ok = true
	return g, nil
}

// markFS puts a filesystem mark on the filesystem mounted at mp, after checking through an
// O_PATH handle (which pins nothing once closed) that mp still shows device dev: a path
// that was mounted over must not mark the wrong filesystem.
func markFS(group int, dev unmount.Dev, mp string, mask uint64) error {
	dfd, err := unix.Open(mp, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", mp, err)
	}
	defer unix.Close(dfd)
	var stx unix.Statx_t
	if err := unix.Statx(dfd, "", unix.AT_EMPTY_PATH|unix.AT_STATX_DONT_SYNC, unix.STATX_INO, &stx); err != nil {
		return fmt.Errorf("statx %s: %w", mp, err)
	}
	if got := (unmount.Dev{Major: stx.Dev_major, Minor: stx.Dev_minor}); got != dev {
		return fmt.Errorf("%s shows device %s, not %s (mounted over?)", mp, got, dev)
	}
	// fanotify_mark needs a real fd for a NULL path; "." relative to the O_PATH handle
	// resolves the same directory.
	if err := unix.FanotifyMark(group, unix.FAN_MARK_ADD|unix.FAN_MARK_FILESYSTEM, mask, dfd, "."); err != nil {
		return fmt.Errorf("fanotify_mark %s: %w", mp, err)
	}
	return nil
}

// readFanotify reads events until the group is closed, closing every event fd at once and
// passing pids (and overflows) to q. It returns nil when the group was closed.
func readFanotify(g *fanGroup, q *queue) error {
	rc, err := g.f.SyscallConn()
	if err != nil {
		return fmt.Errorf("fanotify: %w", err)
	}
	buf := make([]byte, 64<<10)
	wait := true
	for {
		n, err := rawRead(rc, buf, wait)
		if err != nil {
			switch {
			case errors.Is(err, os.ErrClosed):
				return nil
			case err == unix.EINTR:
				continue
			case err == unix.EAGAIN:
				pace() // drained: let the next events gather
				wait = true
				continue
			}
			return fmt.Errorf("fanotify read: %w", err)
		}
		wait = false
		derr := decodeFanotify(buf[:n], func(ev fanEvent) {
			if ev.FD >= 0 {
				unix.Close(int(ev.FD)) // fd mode: the event fd would hold the target
			}
			if ev.Mask&unix.FAN_Q_OVERFLOW != 0 {
				q.rescan("fanotify queue overflow")
				return
			}
			if ev.PID > 0 {
				q.add(event{kind: evFile, pid: int(ev.PID)})
			}
		})
		if derr != nil {
			// Event fds after the bad record cannot be found; say so loudly and rescan.
			q.rescan(derr.Error())
			return derr
		}
	}
}
