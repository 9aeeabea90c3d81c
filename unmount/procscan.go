package unmount

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"

	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/agent/api"
	"github.com/adeagent/adeagent/unmount/hostroot"
)

// The process scan is the hot path: one statx per open file descriptor of every task on
// the machine. It therefore talks to the kernel directly: one O_PATH handle per pid,
// getdents64 into a reused buffer, and statx on the names in place (no allocation per fd).
// statx runs with AT_STATX_DONT_SYNC|AT_NO_AUTOMOUNT so that a dead NFS server or an
// automount point cannot stall it; matching is by device number, never by path, so
// deleted files, bind mounts and other mount namespaces are all caught.

const (
	statxFlags = unix.AT_STATX_DONT_SYNC | unix.AT_NO_AUTOMOUNT
	statxMask  = unix.STATX_TYPE | unix.STATX_INO
)

var (
	nameCwd   = []byte("cwd\x00")
	nameRoot  = []byte("root\x00")
	nameExe   = []byte("exe\x00")
	nameTask  = []byte("task\x00")
	nameMntNS = []byte("ns/mnt\x00")
)

// devSet is the set of target device numbers; it holds a handful of entries, so a slice
// beats a map on the per-fd path.
type devSet []uint64

func devKey(major, minor uint32) uint64 { return uint64(major)<<32 | uint64(minor) }

func newDevSet(devs []Dev) devSet {
	s := make(devSet, 0, len(devs))
	for _, d := range devs {
		s = append(s, devKey(d.Major, d.Minor))
	}
	return s
}

func (s devSet) has(k uint64) bool {
	for _, v := range s {
		if v == k {
			return true
		}
	}
	return false
}

func statxAt(dirfd int, name *byte, stx *unix.Statx_t) error {
	_, _, e := unix.Syscall6(unix.SYS_STATX, uintptr(dirfd), uintptr(unsafe.Pointer(name)),
		statxFlags, statxMask, uintptr(unsafe.Pointer(stx)), 0)
	if e != 0 {
		return e
	}
	return nil
}

// gone reports errors that mean the process or fd went away during the scan.
func gone(err error) bool {
	return errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ESRCH)
}

// ProcessScanOptions tune the process scan.
type ProcessScanOptions struct {
	Workers  int // parallel workers; default 4 (the scan is kernel-bound and scales with cores)
	MaxPaths int // paths recorded per holder; the fd count is always exact; default 4
	// OnProcess, when set, is called for every user-space process the scan inspects
	// (kernel threads and zombies, whose command line is empty, are left out), from the
	// scan's workers and so concurrently: a caller that also needs the process list gets
	// it from the scan's own walk of /proc instead of walking it again.
	OnProcess func(ProcInfo)
	// FDSource is where open files come from: FDSourceBPF (the kernel's task_file iterator;
	// an error when it cannot be used), FDSourceProc (statx through /proc/PID/fd), or ""
	// for the iterator when it can be used on the host and there are at least
	// bpfMinProcesses processes, /proc otherwise.
	FDSource string
}

// ProcInfo is what the process scan read of one user-space process for OnProcess.
type ProcInfo struct {
	PID     int
	Comm    string // comm without its newline
	Cmdline []byte // the raw command line: arguments each ended by a NUL (never empty)
	Exe     string // the exe link's target ("" when unreadable)
	Cwd     string // the cwd link's target ("" when unreadable)
}

// ProcessScan is the result of scanning every task.
type ProcessScan struct {
	Holders    []api.Holder
	Incomplete []api.Incomplete
	Stats      api.ScanStats
	// MountNS maps each mount-namespace inode to one pid in it, for the namespace check.
	MountNS map[uint64]int
	SelfNS  uint64
}

type procScanner struct {
	ctx      context.Context
	table    []Mount
	root     hostroot.Root
	procFD   int
	target   devSet
	mountOf  map[uint64]string
	anonDev  uint64
	kcmpOK   atomic.Bool
	maxPaths int
	// fdIdx, when set, has every task's open files of interest (the BPF fast path), and
	// the fd directories are not read.
	fdIdx *fdIndex
	// onProcess is ProcessScanOptions.OnProcess (nil: not wanted).
	onProcess func(ProcInfo)
}

// bpfMinProcesses is where the BPF fd source starts to pay for itself when it is not asked
// for: loading it (decoding the kernel's BTF, verifying the program) costs 40–60 ms,
// which /proc spends on ~20,000 descriptors; a VM with a few hundred processes scans all
// of its fds through /proc in 5–10 ms.
const bpfMinProcesses = 1000

// ErrNotProcfs: the root's /proc is not a procfs mount (a fixture tree), so processes
// cannot be inspected.
var ErrNotProcfs = errors.New("not a procfs mount")

// newProcScanner opens the root's /proc and prepares the per-pid scan of target. The
// caller closes s.procFD.
func newProcScanner(ctx context.Context, root hostroot.Root, target *Target, maxPaths int) (*procScanner, error) {
	procDir := root.Proc()
	var sfs unix.Statfs_t
	if err := unix.Statfs(procDir, &sfs); err != nil {
		return nil, fmt.Errorf("statfs %s: %w", procDir, err)
	}
	if sfs.Type != unix.PROC_SUPER_MAGIC {
		return nil, fmt.Errorf("%s: %w", procDir, ErrNotProcfs)
	}
	procFD, err := unix.Open(procDir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", procDir, err)
	}
	s := &procScanner{ctx: ctx, table: target.Table, root: root, procFD: procFD,
		target: newDevSet(target.Devs), maxPaths: maxPaths, mountOf: map[uint64]string{}}
	for _, m := range target.Mounts {
		k := devKey(m.Dev.Major, m.Dev.Minor)
		if _, ok := s.mountOf[k]; !ok {
			s.mountOf[k] = m.MountPoint
		}
	}
	s.anonDev = anonInodeDev()
	s.kcmpOK.Store(true)
	return s, nil
}

// ScanProcesses looks at every process and every thread with its own fs or fd table under
// the root's /proc and returns those that use a target device.
func ScanProcesses(ctx context.Context, root hostroot.Root, target *Target, opts ProcessScanOptions) (*ProcessScan, error) {
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if opts.MaxPaths <= 0 {
		opts.MaxPaths = 4
	}
	s, err := newProcScanner(ctx, root, target, opts.MaxPaths)
	if errors.Is(err, ErrNotProcfs) {
		return &ProcessScan{Incomplete: []api.Incomplete{{
			What:   "processes",
			Reason: root.Proc() + " is not a procfs mount; process holders were not scanned",
		}}}, nil
	}
	if err != nil {
		return nil, err
	}
	defer unix.Close(s.procFD)
	s.onProcess = opts.OnProcess

	pids, err := s.listPids()
	if err != nil {
		return nil, err
	}
	// The iterator runs after the pid list is read, so every listed process that still
	// exists has its file table in the index.
	fdSource, fdNote := FDSourceProc, ""
	switch {
	case opts.FDSource == FDSourceProc:
	case opts.FDSource != "" && opts.FDSource != FDSourceBPF:
		return nil, fmt.Errorf("unknown fd source %q (want %s or %s)", opts.FDSource, FDSourceBPF, FDSourceProc)
	case !root.IsHost():
		fdNote = "the BPF iterator sees only the running kernel's tasks; the root is " + root.Dir()
	case opts.FDSource == "" && len(pids) < bpfMinProcesses:
		fdNote = fmt.Sprintf("%d processes: /proc is quicker below %d", len(pids), bpfMinProcesses)
	default:
		idx, err := bpfFDIndex(ctx, s.procFD, target.Devs, s.anonDev)
		if err != nil {
			fdNote = err.Error()
			break
		}
		s.fdIdx, fdSource = idx, FDSourceBPF
	}
	if opts.FDSource == FDSourceBPF && fdSource != FDSourceBPF {
		return nil, fmt.Errorf("%w: %s", errBPFUnusable, fdNote)
	}

	selfNS := uint64(0)
	var stx unix.Statx_t
	if err := statxAt(s.procFD, &[]byte("self/ns/mnt\x00")[0], &stx); err == nil {
		selfNS = stx.Ino
	}

	workers := min(opts.Workers, len(pids))
	results := make([]workerResult, workers)
	var next atomic.Int64
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func(r *workerResult) {
			defer wg.Done()
			ws := newWorkerState()
			for {
				if ctx.Err() != nil {
					return
				}
				i := int(next.Add(1)) - 1
				if i >= len(pids) {
					return
				}
				s.scanPid(pids[i], ws, r)
			}
		}(&results[w])
	}
	wg.Wait()

	out := &ProcessScan{MountNS: map[uint64]int{}, SelfNS: selfNS}
	out.Stats.FDSource, out.Stats.FDSourceNote = fdSource, fdNote
	if s.fdIdx != nil {
		out.Stats.FDs = s.fdIdx.files
	}
	for i := range results {
		r := &results[i]
		out.Holders = append(out.Holders, r.holders...)
		out.Incomplete = append(out.Incomplete, r.incomplete...)
		out.Stats.Processes += r.procs
		out.Stats.Threads += r.threads
		out.Stats.FDs += r.fds
		for ns, pid := range r.mountNS {
			if old, ok := out.MountNS[ns]; !ok || pid < old {
				out.MountNS[ns] = pid
			}
		}
	}
	if done := int(next.Load()); ctx.Err() != nil && done < len(pids) {
		out.Incomplete = append(out.Incomplete, api.Incomplete{
			What:   "processes",
			Reason: fmt.Sprintf("scan deadline reached: %d of %d processes not inspected", len(pids)-min(done, len(pids)), len(pids)),
		})
	}
	sort.Slice(out.Holders, func(i, j int) bool {
		a, b := out.Holders[i], out.Holders[j]
		if a.PID != b.PID {
			return a.PID < b.PID
		}
		return a.TID < b.TID
	})
	sort.Slice(out.Incomplete, func(i, j int) bool { return out.Incomplete[i].PID < out.Incomplete[j].PID })
	return out, nil
}

type workerResult struct {
	holders    []api.Holder
	incomplete []api.Incomplete
	procs      int
	threads    int
	fds        int
	mountNS    map[uint64]int
}

type workerState struct {
	// incomplete records what could not be inspected of the pid being scanned.
	incomplete func(what string, err error)
	dents      []byte
	maps       []byte
	link       []byte
	stx        unix.Statx_t
	// exeLink and cwdLink are the exe and cwd links of the pid being scanned when the scan
	// read them already (they matched the target), for procInfo.
	exeLink, cwdLink     string
	haveExe, haveCwdLink bool
}

func newWorkerState() *workerState {
	return &workerState{dents: make([]byte, 32<<10), maps: make([]byte, 64<<10), link: make([]byte, 4096)}
}

func (s *procScanner) listPids() ([]int, error) {
	fd, err := unix.Openat(s.procFD, ".", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", s.root.Proc(), err)
	}
	defer unix.Close(fd)
	var pids []int
	buf := make([]byte, 32<<10)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return nil, fmt.Errorf("read %s: %w", s.root.Proc(), err)
		}
		if n <= 0 {
			break
		}
		ForEachDirent(buf[:n], func(name []byte) {
			if pid, ok := atoi(name); ok {
				pids = append(pids, pid)
			}
		})
	}
	return pids, nil
}

// ForEachDirent calls fn with each NUL-terminated name (the slice includes the NUL) in a
// getdents64 buffer, skipping "." and "..".
func ForEachDirent(buf []byte, fn func(name []byte)) {
	for off := 0; off+19 < len(buf); {
		reclen := int(*(*uint16)(unsafe.Pointer(&buf[off+16])))
		if reclen == 0 || off+reclen > len(buf) {
			return
		}
		name := buf[off+19 : off+reclen]
		if end := bytes.IndexByte(name, 0); end >= 0 {
			name = name[:end+1]
		}
		off += reclen
		if name[0] == '.' && (name[1] == 0 || (name[1] == '.' && name[2] == 0)) {
			continue
		}
		fn(name)
	}
}

func atoi(name []byte) (int, bool) {
	n := 0
	if len(name) < 2 {
		return 0, false
	}
	for _, c := range name[:len(name)-1] {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	return n, true
}

// holderAcc accumulates what one task holds.
type holderAcc struct {
	uses    [6]bool // fd, cwd, root, exe, mmap, io_uring
	paths   []string
	fds     int
	fdPaths int // fd paths looked up so far
	mount   string
}

// maxFDPaths is how many fds of one holder get their path read.
const maxFDPaths = 2

const (
	useFD = iota
	useCwd
	useRoot
	useExe
	useMmap
	useIOUring
)

var useNames = [...]string{api.UseFD, api.UseCwd, api.UseRoot, api.UseExe, api.UseMmap, api.UseIOUring}

func (h *holderAcc) any() bool {
	for _, u := range h.uses {
		if u {
			return true
		}
	}
	return false
}

func (h *holderAcc) toHolder(kind string, pid, tid int) api.Holder {
	out := api.Holder{Kind: kind, PID: pid, TID: tid, Paths: h.paths, FDs: h.fds, Mount: h.mount}
	for i, u := range h.uses {
		if u {
			out.Uses = append(out.Uses, useNames[i])
		}
	}
	return out
}

func (h *holderAcc) addPath(p string, max int) {
	if len(h.paths) >= max {
		return
	}
	for _, q := range h.paths {
		if q == p {
			return
		}
	}
	h.paths = append(h.paths, p)
}

func (s *procScanner) match(stx *unix.Statx_t, h *holderAcc) bool {
	k := devKey(stx.Dev_major, stx.Dev_minor)
	if !s.target.has(k) {
		return false
	}
	if h.mount == "" {
		h.mount = s.mountOf[k]
	}
	return true
}

func (s *procScanner) scanPid(pid int, ws *workerState, r *workerResult) {
	var pidName [24]byte
	name := strconv.AppendInt(pidName[:0], int64(pid), 10)
	name = append(name, 0)
	dirfd, err := unix.Openat(s.procFD, string(name[:len(name)-1]), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		if !gone(err) {
			r.incomplete = append(r.incomplete, api.Incomplete{PID: pid, What: "process", Reason: err.Error()})
		}
		return
	}
	defer unix.Close(dirfd)
	r.procs++

	var h holderAcc
	// Everything about this pid that could not be read goes into one incomplete entry.
	var inc pidIncomplete
	defer inc.flush(pid, r)
	incomplete := inc.add
	ws.incomplete = incomplete
	ws.haveExe, ws.haveCwdLink = false, false
	// exe: absent for kernel threads and zombies.
	exeMissing := false
	if err := statxAt(dirfd, &nameExe[0], &ws.stx); err == nil {
		if s.match(&ws.stx, &h) {
			h.uses[useExe] = true
			ws.exeLink, ws.haveExe = s.readlink(dirfd, "exe", ws), true
			h.addPath(ws.exeLink, s.maxPaths)
		}
	} else if gone(err) {
		exeMissing = true
	} else {
		incomplete("exe", err)
	}
	var cwdRoot holderAcc
	s.scanFS(dirfd, ws, &cwdRoot, incomplete)

	if s.fdIdx != nil {
		s.indexedFDs(pid, pid, dirfd, ws, &h)
	} else if err := s.scanFDs(dirfd, ws, &h, r); err != nil && !gone(err) {
		incomplete("fd", err)
	}
	// A process whose executable is on the target maps it (its text segment): the mmap use
	// is known, and its memory map can only add example paths beyond the few recorded. Not
	// reading it saves the most expensive file of the scan (the kernel formats a line, with
	// a path lookup, per mapping) for nearly every process on a VM's OS drive.
	nmaps, mapsErr := 0, error(nil)
	if h.uses[useExe] {
		h.uses[useMmap] = true
	} else {
		nmaps, mapsErr = s.scanMaps(dirfd, ws, &h)
		if mapsErr != nil && !gone(mapsErr) {
			incomplete("maps", mapsErr)
		}
	}
	// A kernel thread has no exe and no memory map; its cwd and root are the kernel's own
	// init fs, which pivot_root moves along, so they are not holders anyone can act on.
	kthread := exeMissing && nmaps == 0 && mapsErr == nil
	if !kthread {
		h.uses[useCwd] = cwdRoot.uses[useCwd]
		h.uses[useRoot] = cwdRoot.uses[useRoot]
		if h.mount == "" {
			h.mount = cwdRoot.mount
		}
		h.paths = append(cwdRoot.paths, h.paths...)
		if len(h.paths) > s.maxPaths {
			h.paths = h.paths[:s.maxPaths]
		}
	}
	var info *ProcInfo
	if s.onProcess != nil && !kthread {
		info = s.procInfo(pid, dirfd, ws)
	}
	if h.any() {
		r.holders = append(r.holders, h.toHolder(api.KindProcess, pid, 0))
		hp := &r.holders[len(r.holders)-1]
		if info != nil { // comm and cmdline are read already
			hp.Comm, hp.Cmdline = info.Comm, cmdlineText(info.Cmdline)
			attributeUnit(hp, dirfd, ws.maps)
		} else {
			attribute(hp, dirfd, ws.maps) // in the worker: attribution is parallel too
		}
	}

	if err := statxAt(dirfd, &nameMntNS[0], &ws.stx); err == nil {
		if r.mountNS == nil {
			r.mountNS = map[uint64]int{}
		}
		if old, ok := r.mountNS[ws.stx.Ino]; !ok || pid < old {
			r.mountNS[ws.stx.Ino] = pid
		}
	}
	if !kthread {
		s.scanThreads(pid, dirfd, ws, r, incomplete)
	}
}

// procInfo reads what OnProcess reports of a process and reports it, unless its command
// line is empty (a zombie, or a process that exited meanwhile). It returns nil then.
func (s *procScanner) procInfo(pid, dirfd int, ws *workerState) *ProcInfo {
	cmdline := readInto(dirfd, "cmdline", ws.maps)
	if len(cmdline) == 0 {
		return nil
	}
	info := &ProcInfo{PID: pid, Cmdline: bytes.Clone(cmdline)}
	if b := readInto(dirfd, "comm", ws.maps); b != nil {
		info.Comm = string(bytes.TrimRight(b, "\n"))
	}
	if info.Exe = ws.exeLink; !ws.haveExe {
		info.Exe = s.readlink(dirfd, "exe", ws)
	}
	if info.Cwd = ws.cwdLink; !ws.haveCwdLink {
		info.Cwd = s.readlink(dirfd, "cwd", ws)
	}
	s.onProcess(*info)
	return info
}

// pidIncomplete collects what could not be inspected of one process.
type pidIncomplete struct {
	whats  []string
	reason string
}

func (p *pidIncomplete) add(what string, err error) {
	for _, w := range p.whats {
		if w == what {
			return
		}
	}
	if p.reason == "" {
		p.reason = err.Error()
	}
	p.whats = append(p.whats, what)
}

func (p *pidIncomplete) flush(pid int, r *workerResult) {
	if len(p.whats) > 0 {
		r.incomplete = append(r.incomplete, api.Incomplete{PID: pid, What: strings.Join(p.whats, ","), Reason: p.reason})
	}
}

// scanFS checks a task's cwd and root.
func (s *procScanner) scanFS(dirfd int, ws *workerState, h *holderAcc, incomplete func(string, error)) {
	if err := statxAt(dirfd, &nameCwd[0], &ws.stx); err == nil {
		if s.match(&ws.stx, h) {
			h.uses[useCwd] = true
			ws.cwdLink, ws.haveCwdLink = s.readlink(dirfd, "cwd", ws), true
			h.addPath(ws.cwdLink, s.maxPaths)
		}
	} else if !gone(err) {
		incomplete("cwd", err)
	}
	if err := statxAt(dirfd, &nameRoot[0], &ws.stx); err == nil {
		if s.match(&ws.stx, h) {
			h.uses[useRoot] = true
			h.addPath(s.readlink(dirfd, "root", ws), s.maxPaths)
		}
	} else if !gone(err) {
		incomplete("root", err)
	}
}

func (s *procScanner) readlink(dirfd int, name string, ws *workerState) string {
	n, err := unix.Readlinkat(dirfd, name, ws.link)
	if err != nil || n <= 0 {
		return ""
	}
	return string(ws.link[:n])
}

// scanFDs stats every entry of the fd directory of a process or task directory.
func (s *procScanner) scanFDs(dirfd int, ws *workerState, h *holderAcc, r *workerResult) error {
	fdfd, err := unix.Openat(dirfd, "fd", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fdfd)
	var firstErr error
	for {
		n, err := unix.Getdents(fdfd, ws.dents)
		if err != nil {
			return err
		}
		if n <= 0 {
			return firstErr
		}
		// Read until getdents returns 0: a short batch is not the end. filldir64 stops early
		// when a signal is pending, and the Go runtime signals its threads (preemption).
		ForEachDirent(ws.dents[:n], func(name []byte) {
			r.fds++
			if err := statxAt(fdfd, &name[0], &ws.stx); err != nil {
				if !gone(err) && firstErr == nil {
					firstErr = err
				}
				return
			}
			if s.match(&ws.stx, h) {
				s.fdOnTarget(h, ws, fdfd, "", name[:len(name)-1])
				return
			}
			if s.anonDev != 0 && devKey(ws.stx.Dev_major, ws.stx.Dev_minor) == s.anonDev {
				s.checkIOUring(dirfd, string(name[:len(name)-1]), ws, h)
			}
		})
	}
}

// indexedFDs is scanFDs from the BPF index: the files of task tid of process tgid (dirfd
// is the task's or process's /proc directory). Files on a target count directly; files
// whose stat device may differ from their superblock's get the slow path's statx.
func (s *procScanner) indexedFDs(tgid, tid, dirfd int, ws *workerState, h *holderAcc) {
	t := s.fdIdx.forTask(tgid, tid)
	if t == nil {
		return
	}
	if t.targets > 0 && s.target.has(t.dev) {
		if h.mount == "" {
			h.mount = s.mountOf[t.dev]
		}
		for _, fd := range t.first[:t.nfirst] {
			s.fdOnTarget(h, ws, dirfd, "fd/", strconv.AppendInt(nil, int64(fd), 10))
		}
		h.fds += t.targets - t.nfirst // counted, without example paths
	}
	for _, rec := range t.others {
		fdname := strconv.Itoa(int(rec.fd))
		if rec.kind == fdRecAnon {
			if s.anonDev != 0 {
				s.checkIOUring(dirfd, fdname, ws, h)
			}
			continue
		}
		name := append([]byte("fd/"+fdname), 0)
		if err := statxAt(dirfd, &name[0], &ws.stx); err != nil {
			if !gone(err) {
				ws.incomplete("fd", err)
			}
			continue
		}
		if !s.match(&ws.stx, h) {
			continue
		}
		s.fdOnTarget(h, ws, dirfd, "fd/", []byte(fdname))
	}
}

// fdOnTarget counts one fd on the target; its path (dir/prefix+name) is read only while the
// holder has fewer than maxFDPaths examples: a readlink per matched fd would double the
// cost of a busy holder, and a couple of paths are enough next to the exact fd count.
func (s *procScanner) fdOnTarget(h *holderAcc, ws *workerState, dirfd int, prefix string, name []byte) {
	h.uses[useFD] = true
	h.fds++
	if h.fdPaths < maxFDPaths && len(h.paths) < s.maxPaths {
		h.fdPaths++
		h.addPath(s.readlink(dirfd, prefix+string(name), ws), s.maxPaths)
	}
}

// scanMaps reads the task's memory map and matches each mapping's device field.
// It returns the number of mapping lines.
func (s *procScanner) scanMaps(dirfd int, ws *workerState, h *holderAcc) (int, error) {
	fd, err := unix.Openat(dirfd, "maps", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	lines := 0
	var carry int
	for {
		if carry == len(ws.maps) {
			grown := make([]byte, 2*len(ws.maps))
			copy(grown, ws.maps[:carry])
			ws.maps = grown
		}
		n, err := unix.Read(fd, ws.maps[carry:])
		if err != nil {
			return lines, err
		}
		if n == 0 {
			if carry > 0 {
				lines++
				s.mapsLine(ws.maps[:carry], h)
			}
			return lines, nil
		}
		data := ws.maps[:carry+n]
		for {
			nl := bytes.IndexByte(data, '\n')
			if nl < 0 {
				break
			}
			lines++
			s.mapsLine(data[:nl], h)
			data = data[nl+1:]
		}
		carry = copy(ws.maps, data) // seq_file returns about a page per read; a short read is not EOF
	}
}

func (s *procScanner) mapsLine(line []byte, h *holderAcc) {
	m, ok := ParseMapsLine(line)
	if !ok || m.Inode == 0 {
		return
	}
	k := devKey(m.Dev.Major, m.Dev.Minor)
	if !s.target.has(k) {
		return
	}
	if h.mount == "" {
		h.mount = s.mountOf[k]
	}
	h.uses[useMmap] = true
	if len(h.paths) < s.maxPaths && len(m.Path) > 0 {
		h.addPath(string(m.Path), s.maxPaths)
	}
}

// scanThreads looks at the threads of a multi-threaded process whose fs (cwd, root) or fd
// table is not shared with the leader (unshare(CLONE_FS), unshare(CLONE_FILES)): neither
// fuser nor lsof sees those.
func (s *procScanner) scanThreads(pid int, dirfd int, ws *workerState, r *workerResult, incomplete func(string, error)) {
	if err := statxAt(dirfd, &nameTask[0], &ws.stx); err != nil || ws.stx.Nlink <= 3 {
		return // nlink of task/ is 2 + number of threads
	}
	taskfd, err := unix.Openat(dirfd, "task", unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(taskfd)
	var tids []int
	for {
		n, err := unix.Getdents(taskfd, ws.dents)
		if err != nil || n <= 0 {
			break
		}
		ForEachDirent(ws.dents[:n], func(name []byte) {
			if tid, ok := atoi(name); ok && tid != pid {
				tids = append(tids, tid)
			}
		})
	}
	for _, tid := range tids {
		r.threads++
		ownFS, ownFiles := true, true
		if s.kcmpOK.Load() {
			fsr, err1 := kcmp(pid, tid, kcmpFS)
			filesr, err2 := kcmp(pid, tid, kcmpFiles)
			if err1 == nil && err2 == nil {
				ownFS, ownFiles = fsr != 0, filesr != 0
			} else if errors.Is(err1, unix.ENOSYS) {
				s.kcmpOK.Store(false) // kernel without kcmp: look at every thread
			} else if gone(err1) || gone(err2) {
				continue
			}
		}
		if !ownFS && !ownFiles {
			continue
		}
		tdir, err := unix.Openat(taskfd, strconv.Itoa(tid), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			continue
		}
		var h holderAcc
		if ownFS {
			s.scanFS(tdir, ws, &h, func(what string, err error) { incomplete("task "+what, err) })
		}
		if ownFiles && s.fdIdx != nil {
			s.indexedFDs(pid, tid, tdir, ws, &h)
		} else if ownFiles {
			if err := s.scanFDs(tdir, ws, &h, r); err != nil && !gone(err) {
				incomplete("task fd", err)
			}
		}
		unix.Close(tdir)
		if h.any() {
			r.holders = append(r.holders, h.toHolder(api.KindThread, pid, tid))
			attribute(&r.holders[len(r.holders)-1], dirfd, ws.maps)
		}
	}
}

func kcmp(pid1, pid2, typ int) (uintptr, error) {
	r, _, e := unix.Syscall6(unix.SYS_KCMP, uintptr(pid1), uintptr(pid2), uintptr(typ), 0, 0, 0)
	if e != 0 {
		return 0, e
	}
	return r, nil
}

// anonInodeDev is the device of anon_inodefs, where io_uring instances live. It is learnt
// from an eventfd of our own; zero if that fails.
func anonInodeDev() uint64 {
	fd, err := unix.Eventfd(0, unix.EFD_CLOEXEC)
	if err != nil {
		return 0
	}
	defer unix.Close(fd)
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return 0
	}
	d := DevFromStat(st.Dev)
	return devKey(d.Major, d.Minor)
}

// checkIOUring looks at an anon-inode fd; if it is an io_uring instance, its fdinfo lists
// the files registered with it, which stay open after the process closed its own fds.
// Registered files whose filesystem cannot be told (older kernels print only a file name;
// a deleted file has no path to stat) make the process incomplete, never clean.
func (s *procScanner) checkIOUring(dirfd int, fdname string, ws *workerState, h *holderAcc) {
	n, err := unix.Readlinkat(dirfd, "fd/"+fdname, ws.link)
	if err != nil || !bytes.Equal(ws.link[:n], []byte("anon_inode:[io_uring]")) {
		return
	}
	data, err := readAt(dirfd, "fdinfo/"+fdname)
	if err != nil {
		if !gone(err) {
			ws.incomplete("io_uring fdinfo", err)
		}
		return
	}
	ring := ParseIOUring(data)
	unknown := ring.Named
	for _, p := range ring.Paths {
		// The kernel prints the path as seen from the reader's root, so it is resolved here,
		// in our own namespace.
		if _, deleted := ParseLoopBacking(p); deleted {
			unknown++
			continue
		}
		d, err := devOfPath(s.ctx, s.root, s.table, p)
		if err != nil {
			unknown++
			continue
		}
		if k := devKey(d.Major, d.Minor); s.target.has(k) {
			h.uses[useIOUring] = true
			if h.mount == "" {
				h.mount = s.mountOf[k]
			}
			h.addPath(p, s.maxPaths)
		}
	}
	if unknown > 0 {
		ws.incomplete("io_uring", fmt.Errorf("%d registered file(s) of an io_uring instance (fd %s) cannot be located", unknown, fdname))
	}
}

func readAt(dirfd int, name string) ([]byte, error) {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), name)
	defer f.Close()
	var buf bytes.Buffer
	_, err = buf.ReadFrom(f)
	return buf.Bytes(), err
}

// attribute fills comm, cmdline, unit and container of a holder from its process
// directory (dirfd: an open handle on /proc/PID, so a reused pid cannot be misread), with
// one openat and one read per file into buf.
func attribute(h *api.Holder, dirfd int, buf []byte) {
	if b := readInto(dirfd, "comm", buf); b != nil {
		h.Comm = string(bytes.TrimRight(b, "\n"))
	}
	if b := readInto(dirfd, "cmdline", buf); b != nil {
		h.Cmdline = cmdlineText(b)
	}
	attributeUnit(h, dirfd, buf)
}

// attributeUnit fills the unit and container of a holder from its cgroup file.
func attributeUnit(h *api.Holder, dirfd int, buf []byte) {
	if b := readInto(dirfd, "cgroup", buf); b != nil {
		a := ParseCgroup(b)
		h.Unit, h.Container = a.Unit, a.Container
	}
}

// cmdlineText is a raw command line with its NULs as spaces.
func cmdlineText(b []byte) string {
	return string(bytes.TrimRight(bytes.ReplaceAll(b, []byte{0}, []byte{' '}), " "))
}

// readInto reads the file name under dirfd with one openat and one read into buf and
// returns what was read (nil when unreadable or empty).
func readInto(dirfd int, name string, buf []byte) []byte {
	fd, err := unix.Openat(dirfd, name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil
	}
	defer unix.Close(fd)
	n, err := unix.Read(fd, buf)
	if err != nil || n <= 0 {
		return nil
	}
	return buf[:n]
}

// attributePID is attribute for a pid whose directory is not open yet.
func attributePID(root hostroot.Root, h *api.Holder) {
	dirfd, err := unix.Open(root.PID(h.PID), unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return
	}
	defer unix.Close(dirfd)
	attribute(h, dirfd, make([]byte, 16<<10))
}

// kcmp(2) types (linux/kcmp.h).
const (
	kcmpFiles = 2
	kcmpFS    = 3
)
