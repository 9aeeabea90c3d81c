// Package unmount knows the OS drive's topology and everything that keeps it busy:
// processes and threads (fds, cwd, root, exe, memory maps, io_uring registered files) and
// kernel holders (nested and bind mounts, namespace copies, swap, loop, dm/md, overlays,
// NFS exports).
package unmount

import (
	"context"
	"time"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Options tune a holder scan.
type Options struct {
	ProcessScanOptions
	// Timeout bounds the whole scan; what was not inspected by then is reported as
	// incomplete. Default 30 s.
	Timeout time.Duration
}

// Scan finds every holder of target: processes, threads and kernel holders.
func Scan(ctx context.Context, root hostroot.Root, target *Target, opts Options) (*api.HoldersReport, error) {
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	start := time.Now()
	ps, err := ScanProcesses(ctx, root, target, opts.ProcessScanOptions)
	if err != nil {
		return nil, err
	}
	kh, kinc := KernelHolders(ctx, root, target, ps)
	rep := &api.HoldersReport{
		SchemaVersion: api.SchemaVersion,
		GeneratedAt:   start.UTC(),
		Target:        api.Target{Mounts: target.MountPoints(), Devices: target.DevStrings(), Disks: target.Disks},
		Holders:       append(ps.Holders, kh...),
		Incomplete:    append(ps.Incomplete, kinc...),
		Stats:         ps.Stats,
	}
	if rep.Holders == nil {
		rep.Holders = []api.Holder{}
	}
	if rep.Incomplete == nil {
		rep.Incomplete = []api.Incomplete{}
	}
	rep.Stats.DurationMS = float64(time.Since(start).Microseconds()) / 1000
	return rep, nil
}
