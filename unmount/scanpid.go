package unmount

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// PIDScan is what one process holds of a target: the targeted re-verification of a single
// pid that a live watcher runs instead of a scan of every process.
type PIDScan struct {
	PID int
	// Exists reports whether /proc/PID was there (it may be a zombie that holds nothing).
	Exists bool
	// Holders are the process and those of its threads with their own fs or fd table that
	// use the target (kinds process and thread), exactly as ScanProcesses reports them.
	Holders []api.Holder
	// Incomplete lists what of this pid could not be inspected.
	Incomplete []api.Incomplete
	Stats      api.ScanStats
}

// PIDScanner re-verifies single processes against a target. It keeps /proc open (which
// never holds the target) so that each Scan costs only the per-pid work. It is safe for
// concurrent use, but scans run one at a time.
type PIDScanner struct {
	mu     sync.Mutex
	s      *procScanner
	ws     *workerState
	closed bool
}

// NewPIDScanner prepares per-pid scans of target under root. Close releases it.
func NewPIDScanner(root hostroot.Root, target *Target, opts ProcessScanOptions) (*PIDScanner, error) {
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = 4
	}
	s, err := newProcScanner(context.Background(), root, target, opts.MaxPaths)
	if err != nil {
		return nil, err
	}
	return &PIDScanner{s: s, ws: newWorkerState()}, nil
}

// Scan inspects one process (pid is a thread-group id) and its threads.
func (p *PIDScanner) Scan(ctx context.Context, pid int) (*PIDScan, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("scan pid %d: %w", pid, err)
	}
	if pid <= 0 {
		return nil, fmt.Errorf("scan pid %d: invalid pid", pid)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil, fmt.Errorf("scan pid %d: scanner closed", pid)
	}
	p.s.ctx = ctx
	defer func() { p.s.ctx = context.Background() }()
	var r workerResult
	p.s.scanPid(pid, p.ws, &r)
	out := &PIDScan{PID: pid, Exists: r.procs > 0, Holders: r.holders, Incomplete: r.incomplete,
		Stats: api.ScanStats{Processes: r.procs, Threads: r.threads, FDs: r.fds}}
	sort.Slice(out.Holders, func(i, j int) bool { return out.Holders[i].TID < out.Holders[j].TID })
	return out, nil
}

// Close releases the scanner's /proc handle. It is idempotent.
func (p *PIDScanner) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return nil
	}
	p.closed = true
	if err := unix.Close(p.s.procFD); err != nil {
		return fmt.Errorf("close /proc handle: %w", err)
	}
	return nil
}

// ScanPID inspects one process of root against target: what it and its threads hold.
// For many pids, a PIDScanner saves re-opening /proc each time.
func ScanPID(ctx context.Context, root hostroot.Root, target *Target, pid int, opts ProcessScanOptions) (*PIDScan, error) {
	ps, err := NewPIDScanner(root, target, opts)
	if err != nil {
		return nil, err
	}
	defer ps.Close()
	return ps.Scan(ctx, pid)
}
