package watch

import (
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readPace is how long a reader waits after a read that did not fill its buffer, so that
// under load events are read (and, in fanotify, merged by the kernel) in batches instead
// of one wake-up per event. It adds at most that much latency.
const readPace = 2 * time.Millisecond

func pace() { time.Sleep(readPace) }

// rawRead reads once from a non-blocking fd. With wait it waits in the runtime poller
// until data arrive (or the file is closed: os.ErrClosed); without, it returns EAGAIN
// when there is nothing to read. A netlink socket returns one datagram per read, so the
// readers drain without waiting before they pace.
func rawRead(rc syscall.RawConn, buf []byte, wait bool) (int, error) {
	var n int
	var rerr error
	err := rc.Read(func(fd uintptr) bool {
		n, rerr = unix.Read(int(fd), buf)
		return !wait || rerr != unix.EAGAIN
	})
	if err != nil {
		return 0, err
	}
	return n, rerr
}

type evKind uint8

const (
	evFile evKind = iota // fanotify: the process opened (or last-closed) a file on the target
	evFork               // proc connector: a new process (pid) forked from parent
	evExec               // proc connector: the process exec'd
	evExit               // proc connector: a task of the process (tid) exited
)

// event is what a live source tells the watcher's loop. pid is always a thread-group id.
type event struct {
	kind   evKind
	pid    int
	parent int // evFork: the parent's thread-group id
	tid    int // evExit: the task that exited
}

// maxQueue bounds the events waiting for the loop; beyond it they are dropped for a full
// rescan, which supersedes them.
const maxQueue = 1 << 16

// queue carries events from the readers to the watcher's loop without ever blocking a
// reader: a mutex-protected slice and a one-slot wake-up channel.
type queue struct {
	mu     sync.Mutex
	events []event
	reason string // non-empty: a full rescan is wanted, and why
	wake   chan struct{}
	count  atomic.Uint64 // events added, for Stats
}

func newQueue() *queue { return &queue{wake: make(chan struct{}, 1)} }

func (q *queue) poke() {
	select {
	case q.wake <- struct{}{}:
	default:
	}
}

func (q *queue) add(ev event) {
	q.count.Add(1)
	q.mu.Lock()
	if len(q.events) >= maxQueue {
		q.events = q.events[:0]
		if q.reason == "" {
			q.reason = "event queue overflow"
		}
	} else {
		q.events = append(q.events, ev)
	}
	q.mu.Unlock()
	q.poke()
}

// addProc turns a proc connector event into a queue event. Threads being created are
// ignored (they share their process's files; the process is what gets verified).
func (q *queue) addProc(ev procEvent) {
	switch ev.What {
	case procEventFork:
		if ev.ChildPID != ev.ChildTGID || ev.ChildTGID == 0 {
			return
		}
		q.add(event{kind: evFork, pid: int(ev.ChildTGID), parent: int(ev.TGID)})
	case procEventExec:
		if ev.TGID != 0 {
			q.add(event{kind: evExec, pid: int(ev.TGID)})
		}
	case procEventExit:
		if ev.TGID != 0 {
			q.add(event{kind: evExit, pid: int(ev.TGID), tid: int(ev.PID)})
		}
	}
}

// rescan asks the loop for a full scan (events were lost).
func (q *queue) rescan(reason string) {
	q.mu.Lock()
	if q.reason == "" {
		q.reason = reason
	}
	q.mu.Unlock()
	q.poke()
}

// take returns and clears the pending events and rescan reason; buf is reused.
func (q *queue) take(buf []event) ([]event, string) {
	q.mu.Lock()
	defer q.mu.Unlock()
	evs := append(buf[:0], q.events...)
	q.events = q.events[:0]
	reason := q.reason
	q.reason = ""
	return evs, reason
}
