package agent

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount"
	"github.com/adeagent/adeagent/unmount/watch"
)

// minWatchRescan is the least period of the live holder watch's own full scans. The
// evaluation scans the OS drive at every interval anyway; the watch's scans are its ground
// truth for what its live sources cannot see (chdir, fd passing, …).
const minWatchRescan = 5 * time.Minute

// startHolderWatch starts the live holder watch of the OS drive (unmount/watch: fanotify
// and the proc connector) when the root is the running host, so that Holders and the
// holders events follow changes between evaluations. It returns nil when there is no
// watch; Holders then falls back to the last evaluation's scan. The watch ends with ctx;
// wg waits for it.
func (d *Daemon) startHolderWatch(ctx context.Context, wg *sync.WaitGroup) *watch.Watcher {
	if !d.root.IsHost() {
		return nil
	}
	target, err := unmount.OSDriveTarget(d.root)
	if err != nil {
		d.log.Warn("no live holder watch: cannot resolve the OS drive", zap.Error(err))
		return nil
	}
	log := d.log.Named("watch")
	w := watch.New(d.root, target, watch.Options{
		Interval: max(minWatchRescan, 5*d.opts.Interval),
		// The fd source as configured when the watch starts (a reload does not change it).
		Scan: scanOptions(d.config()),
		Logf: func(format string, args ...any) { log.Info(fmt.Sprintf(format, args...)) },
	})
	wg.Add(2)
	go func() {
		defer wg.Done()
		if err := w.Run(ctx); err != nil {
			log.Error("live holder watch stopped", zap.Error(err))
		}
	}()
	go func() {
		defer wg.Done()
		d.forwardHolderChanges(ctx, w)
	}()
	return w
}

// holdersEventGap is the least time between two holders events: on a busy machine the
// holder set changes many times a second (every short-lived command with its cwd on the
// OS drive), and subscribers want the trend, not every fork.
const holdersEventGap = time.Second

// forwardHolderChanges sends a holders event when the watched holder set changed, at most
// one per holdersEventGap (the set after a quiet gap is always sent). The set is compared,
// not its size: on a busy machine one holder leaving while another arrives keeps the count.
func (d *Daemon) forwardHolderChanges(ctx context.Context, w *watch.Watcher) {
	last, sent := "", false
	for {
		ch := w.Changed()
		rep := w.Holders()
		if key := holderSetKey(rep); rep != nil && (!sent || key != last) {
			last, sent = key, true
			d.mu.Lock()
			ev := api.Event{
				SchemaVersion: api.SchemaVersion,
				Time:          time.Now().UTC(),
				Type:          api.EventHolders,
				Phase:         d.phase,
				Holders:       len(rep.Holders),
				Blockers:      []string{},
			}
			if d.report != nil {
				ev.Ready = d.report.Ready
				ev.Blockers = blockerKeys(d.report)
			}
			d.sendLocked(ev)
			d.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(holdersEventGap):
			}
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-ch:
		}
	}
}

// holderSetKey identifies a holder set by its members' kind, pid, tid and mount.
func holderSetKey(rep *api.HoldersReport) string {
	if rep == nil {
		return ""
	}
	keys := make([]string, 0, len(rep.Holders))
	for _, h := range rep.Holders {
		keys = append(keys, fmt.Sprintf("%s/%d/%d/%s", h.Kind, h.PID, h.TID, h.Mount))
	}
	sort.Strings(keys)
	return strings.Join(keys, ",")
}
