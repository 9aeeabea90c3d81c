package unmount

import (
	"context"
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// errStatDeadline: a path walk did not return before the scan's deadline.
var errStatDeadline = errors.New("stat did not return before the scan deadline")

// devOfPath finds the device a host path lives on. On the host it statx()es the path
// without syncing attributes, in its own goroutine so that a path walk stuck on a dead
// network server cannot outlive the scan's deadline; paths on remote filesystems are not
// walked at all but taken from the mount table, as are all paths of a fixture root.
func devOfPath(ctx context.Context, root hostroot.Root, table []Mount, p string) (Dev, error) {
	m, ok := MountFor(table, p)
	if !root.IsHost() || (ok && remoteFS[m.FSType]) {
		if !ok {
			return Dev{}, fmt.Errorf("%s: no mount contains it", p)
		}
		return m.Dev, nil
	}
	type result struct {
		d   Dev
		err error
	}
	ch := make(chan result, 1)
	go func() {
		var stx unix.Statx_t
		if err := unix.Statx(unix.AT_FDCWD, p, statxFlags, statxMask, &stx); err != nil {
			ch <- result{err: fmt.Errorf("stat %s: %w", p, err)}
			return
		}
		ch <- result{d: Dev{stx.Dev_major, stx.Dev_minor}}
	}()
	select {
	case r := <-ch:
		return r.d, r.err
	case <-ctx.Done():
		return Dev{}, fmt.Errorf("%s: %w", p, errStatDeadline)
	}
}
