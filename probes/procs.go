package probes

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

// Process is what the probes need of one user-space process.
type Process struct {
	PID  int
	Comm string   // first line of comm ("" when unreadable)
	Exe  string   // the exe link's target, " (deleted)" removed ("" when unreadable)
	Argv []string // the command line, split at NULs (never empty)
	Cwd  string   // the cwd link's target ("" when unreadable)
}

// ProcessList is the list of processes shared between the probes of one evaluation
// (services, ade, encryption, extension and waagent each walked /proc; on a VM with ~1000
// processes each walk cost about a quarter of the holder scan).
type ProcessList struct {
	root  hostroot.Root
	scan  *OSDriveScan
	once  sync.Once
	procs []Process
	err   error
}

// NewProcessList prepares the process list of root; it is made on first Get. With scan,
// the list is what the OS-drive holder scan's walk of /proc saw (the scan runs then if it
// has not yet), so an evaluation walks /proc once; without it, or when that walk was not
// complete, /proc is walked here.
func NewProcessList(root hostroot.Root, scan *OSDriveScan) *ProcessList {
	return &ProcessList{root: root, scan: scan}
}

// Get makes the list (once) and returns every process with a non-empty command line.
// Kernel threads and zombies (empty command line) and processes that vanish meanwhile are
// left out. The error wraps the one of listing /proc (fs.ErrNotExist for a root without
// it).
func (l *ProcessList) Get(ctx context.Context) ([]Process, error) {
	l.once.Do(func() {
		if l.scan != nil {
			if procs, ok := l.scan.Processes(ctx); ok {
				l.procs = procs
				return
			}
		}
		l.procs, l.err = listProcesses(ctx, l.root)
	})
	return l.procs, l.err
}

// Processes returns the shared process list of env, or walks /proc now when env has none
// (probe tests build Env literals).
func (e *Env) Processes(ctx context.Context) ([]Process, error) {
	if e.Procs != nil {
		return e.Procs.Get(ctx)
	}
	return listProcesses(ctx, e.Root)
}

func listProcesses(ctx context.Context, root hostroot.Root) ([]Process, error) {
	entries, err := os.ReadDir(root.Proc())
	if err != nil {
		return nil, fmt.Errorf("list processes: %w", err)
	}
	out := make([]Process, 0, len(entries))
	buf := make([]byte, 0, 4096)
	for i, e := range entries {
		if i%256 == 0 && ctx.Err() != nil {
			return nil, fmt.Errorf("list processes: %w", ctx.Err())
		}
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 0 {
			continue
		}
		// Zombies and kernel threads have an empty command line and hold nothing.
		buf = readSmall(root.PID(pid, "cmdline"), buf[:0])
		raw := bytes.TrimRight(buf, "\x00")
		if len(raw) == 0 {
			continue
		}
		p := Process{PID: pid, Argv: strings.Split(string(raw), "\x00")}
		buf = readSmall(root.PID(pid, "comm"), buf[:0])
		line, _, _ := bytes.Cut(buf, []byte("\n"))
		p.Comm = strings.TrimSpace(string(line))
		if target, err := os.Readlink(root.PID(pid, "exe")); err == nil {
			p.Exe = strings.TrimSuffix(target, " (deleted)")
		}
		p.Cwd, _ = os.Readlink(root.PID(pid, "cwd"))
		out = append(out, p)
	}
	return out, nil
}

// readSmall appends the whole of a small file to buf (buf unchanged when unreadable).
func readSmall(path string, buf []byte) []byte {
	f, err := os.Open(path)
	if err != nil {
		return buf
	}
	defer f.Close()
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, 0)[:len(buf)]
		}
		n, err := f.Read(buf[len(buf):cap(buf)])
		buf = buf[:len(buf)+n]
		if err != nil || n == 0 {
			return buf
		}
	}
}
