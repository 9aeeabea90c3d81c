package agent

import (
	"context"
	"errors"
	"os"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// mountPollTimeout bounds each wait for a mount-table change, so the watcher notices
// shutdown.
const mountPollTimeout = 5000 // ms

// watchMounts signals (coalesced, buffer 1) whenever the host's mount table changes: the
// kernel raises POLLPRI on /proc/1/mountinfo (PID 1's namespace, the host's) at every
// mount and unmount in it, so ADE's
// stripdown (a tmpfs root and /oldroot) is seen at once rather than at the next
// evaluation, without polling the table. On a fixture root (a regular file) it never fires
// and the main loop's checks at each evaluation remain.
func watchMounts(ctx context.Context, root hostroot.Root, log *zap.Logger) <-chan struct{} {
	ch := make(chan struct{}, 1)
	f, err := os.Open(root.Proc("1", "mountinfo"))
	if err != nil {
		log.Debug("mount table watch unavailable", zap.Error(err))
		return ch
	}
	go func() {
		defer f.Close()
		fds := []unix.PollFd{{Fd: int32(f.Fd()), Events: unix.POLLPRI}}
		for ctx.Err() == nil {
			fds[0].Revents = 0
			n, err := unix.Poll(fds, mountPollTimeout)
			if errors.Is(err, unix.EINTR) || n == 0 {
				continue
			}
			if err != nil {
				log.Debug("mount table watch stopped", zap.Error(err))
				return
			}
			if fds[0].Revents&(unix.POLLPRI|unix.POLLERR) == 0 {
				continue
			}
			// The kernel re-arms at each poll (it remembers the event count it last reported).
			select {
			case ch <- struct{}{}:
			default:
			}
		}
	}()
	return ch
}
