package watch

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/adeagent/adeagent/unmount/hostroot"
)

var ne = binary.NativeEndian

// fanRecord is one fanotify event as the kernel lays it out, with extra info bytes.
func fanRecord(mask uint64, fd, pid int32, info int) []byte {
	b := make([]byte, unix.FAN_EVENT_METADATA_LEN+info)
	ne.PutUint32(b[0:], uint32(len(b)))
	b[4] = unix.FANOTIFY_METADATA_VERSION
	ne.PutUint16(b[6:], unix.FAN_EVENT_METADATA_LEN)
	ne.PutUint64(b[8:], mask)
	ne.PutUint32(b[16:], uint32(fd))
	ne.PutUint32(b[20:], uint32(pid))
	for i := unix.FAN_EVENT_METADATA_LEN; i < len(b); i++ {
		b[i] = 0xee // an info record (FAN_REPORT_FID), skipped
	}
	return b
}

func TestDecodeFanotify(t *testing.T) {
	var buf []byte
	buf = append(buf, fanRecord(unix.FAN_OPEN, unix.FAN_NOFD, 1234, 28)...)
	buf = append(buf, fanRecord(unix.FAN_OPEN|unix.FAN_CLOSE_NOWRITE, 7, 99, 0)...)
	buf = append(buf, fanRecord(unix.FAN_Q_OVERFLOW, unix.FAN_NOFD, 0, 0)...)
	var got []fanEvent
	if err := decodeFanotify(buf, func(ev fanEvent) { got = append(got, ev) }); err != nil {
		t.Fatal(err)
	}
	want := []fanEvent{
		{Mask: unix.FAN_OPEN, FD: -1, PID: 1234},
		{Mask: unix.FAN_OPEN | unix.FAN_CLOSE_NOWRITE, FD: 7, PID: 99},
		{Mask: unix.FAN_Q_OVERFLOW, FD: -1, PID: 0},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestDecodeFanotifyBad(t *testing.T) {
	good := fanRecord(unix.FAN_OPEN, 5, 42, 0)
	badVers := fanRecord(unix.FAN_OPEN, 6, 43, 0)
	badVers[4] = 2
	long := fanRecord(unix.FAN_OPEN, 6, 43, 0)
	ne.PutUint32(long[0:], 4096)
	short := fanRecord(unix.FAN_OPEN, 6, 43, 0)
	ne.PutUint32(short[0:], 8)
	for name, tail := range map[string][]byte{
		"version":   badVers,
		"too long":  long,
		"too short": short,
		"truncated": good[:10],
	} {
		var got []fanEvent
		err := decodeFanotify(append(append([]byte{}, good...), tail...), func(ev fanEvent) { got = append(got, ev) })
		if err == nil {
			t.Errorf("%s: no error", name)
		}
		// The events before the bad one are still delivered (their fds must be closed).
		if len(got) != 1 || got[0].FD != 5 || got[0].PID != 42 {
			t.Errorf("%s: events before the bad record = %+v", name, got)
		}
	}
	if err := decodeFanotify(nil, func(fanEvent) { t.Error("event from nothing") }); err != nil {
		t.Error(err)
	}
}

// cnRecord is one netlink message of the proc connector carrying a proc_event whose union
// holds the given words.
func cnRecord(idx, what, ack uint32, words ...uint32) []byte {
	data := make([]byte, procEvHdr+4*len(words))
	ne.PutUint32(data[0:], what)
	ne.PutUint32(data[4:], 1)         // cpu
	ne.PutUint64(data[8:], 123456789) // timestamp
	for i, w := range words {
		ne.PutUint32(data[procEvHdr+4*i:], w)
	}
	n := nlmsgHdrLen + cnMsgLen + len(data)
	b := make([]byte, (n+3)&^3)
	ne.PutUint32(b[0:], uint32(n))
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:], idx)
	ne.PutUint32(c[4:], cnValProc)
	ne.PutUint32(c[12:], ack)
	ne.PutUint16(c[16:], uint16(len(data)))
	copy(c[cnMsgLen:], data)
	return b
}

func TestDecodeCnProc(t *testing.T) {
	var buf []byte
	buf = append(buf, cnRecord(cnIdxProc, procEventFork, 0, 100, 100, 200, 200)...)
	buf = append(buf, cnRecord(cnIdxProc, procEventExec, 0, 200, 200)...)
	buf = append(buf, cnRecord(2, procEventExec, 0, 300, 300)...) // another connector: ignored
	buf = append(buf, cnRecord(cnIdxProc, procEventExit, 0, 201, 200, 0, 17, 100, 100)...)
	buf = append(buf, cnRecord(cnIdxProc, procEventNone, 8, 1)...) // ack with EPERM
	noop := make([]byte, nlmsgHdrLen)
	ne.PutUint32(noop, nlmsgHdrLen)
	ne.PutUint16(noop[4:], unix.NLMSG_NOOP)
	buf = append(buf, noop...)
	var got []procEvent
	if err := decodeCnProc(buf, func(ev procEvent) { got = append(got, ev) }); err != nil {
		t.Fatal(err)
	}
	want := []procEvent{
		{What: procEventFork, PID: 100, TGID: 100, ChildPID: 200, ChildTGID: 200},
		{What: procEventExec, PID: 200, TGID: 200},
		{What: procEventExit, PID: 201, TGID: 200},
		{What: procEventNone, Ack: 8, Err: 1},
	}
	if len(got) != len(want) {
		t.Fatalf("got %+v", got)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestDecodeCnProcBad(t *testing.T) {
	fork := cnRecord(cnIdxProc, procEventFork, 0, 1, 1, 2, 2)
	overrun := make([]byte, nlmsgHdrLen)
	ne.PutUint32(overrun, nlmsgHdrLen)
	ne.PutUint16(overrun[4:], unix.NLMSG_OVERRUN)
	nlerr := make([]byte, nlmsgHdrLen+4)
	ne.PutUint32(nlerr, uint32(len(nlerr)))
	ne.PutUint16(nlerr[4:], unix.NLMSG_ERROR)
	e := -int32(unix.ENOBUFS)
	ne.PutUint32(nlerr[nlmsgHdrLen:], uint32(e))
	longMsg := append([]byte{}, fork...)
	ne.PutUint32(longMsg, 4096)
	shortData := append([]byte{}, fork...)
	ne.PutUint16(shortData[nlmsgHdrLen+16:], 4096)
	for name, c := range map[string]struct {
		b    []byte
		want string
	}{
		"overrun":   {overrun, "overrun"},
		"error":     {nlerr, "no buffer space"},
		"long":      {longMsg, "bad netlink message length"},
		"event len": {shortData, "bad event length"},
		"short cn":  {fork[:nlmsgHdrLen+8], "bad netlink message length"},
	} {
		err := decodeCnProc(c.b, func(procEvent) {})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", name, err, c.want)
		}
	}
}

func TestCnMessage(t *testing.T) {
	b := cnMessage(procCnMcastListen, 41)
	if len(b) != nlmsgHdrLen+cnMsgLen+4 || int(ne.Uint32(b)) != len(b) || ne.Uint16(b[4:]) != unix.NLMSG_DONE {
		t.Fatalf("header: % x", b)
	}
	c := b[nlmsgHdrLen:]
	if ne.Uint32(c) != cnIdxProc || ne.Uint32(c[4:]) != cnValProc || ne.Uint32(c[8:]) != 41 || ne.Uint32(c[12:]) != 41 ||
		ne.Uint16(c[16:]) != 4 || ne.Uint32(c[cnMsgLen:]) != procCnMcastListen {
		t.Fatalf("cn_msg: % x", c)
	}
}

func TestQueue(t *testing.T) {
	q := newQueue()
	q.addProc(procEvent{What: procEventFork, PID: 10, TGID: 10, ChildPID: 11, ChildTGID: 11})
	q.addProc(procEvent{What: procEventFork, PID: 10, TGID: 10, ChildPID: 12, ChildTGID: 10}) // a thread
	q.addProc(procEvent{What: procEventExec, PID: 11, TGID: 11})
	q.addProc(procEvent{What: procEventExit, PID: 13, TGID: 11})
	q.addProc(procEvent{What: 0x200, PID: 11, TGID: 11}) // comm: ignored
	q.add(event{kind: evFile, pid: 5})
	select {
	case <-q.wake:
	default:
		t.Fatal("no wake-up")
	}
	evs, reason := q.take(nil)
	want := []event{{kind: evFork, pid: 11, parent: 10}, {kind: evExec, pid: 11}, {kind: evExit, pid: 11, tid: 13}, {kind: evFile, pid: 5}}
	if reason != "" || len(evs) != len(want) {
		t.Fatalf("take = %+v %q", evs, reason)
	}
	for i := range want {
		if evs[i] != want[i] {
			t.Errorf("event %d = %+v, want %+v", i, evs[i], want[i])
		}
	}
	for i := range maxQueue + 1 {
		q.add(event{kind: evFile, pid: i + 1})
	}
	q.rescan("later reason")
	evs, reason = q.take(evs)
	if reason != "event queue overflow" || len(evs) != 0 {
		t.Errorf("after overflow: %d events, reason %q", len(evs), reason)
	}
	if evs, reason = q.take(evs); len(evs) != 0 || reason != "" {
		t.Errorf("second take: %d events, reason %q", len(evs), reason)
	}
}

func TestSourcesMode(t *testing.T) {
	w := New(hostroot.Host, nil, Options{})
	for _, c := range []struct {
		fan, cn, want string
	}{
		{"", "", "fanotify+proc-connector"},
		{"", "disabled", "fanotify; proc-connector unavailable: disabled"},
		{"fanotify_mark /: operation not permitted", "", "proc-connector; fanotify unavailable: fanotify_mark /: operation not permitted"},
		{"x", "y", "periodic: fanotify unavailable: x; proc-connector unavailable: y"},
	} {
		s := &sources{w: w, fanErr: c.fan, cnErr: c.cn}
		if got := s.mode(); got != c.want {
			t.Errorf("mode(%q, %q) = %q, want %q", c.fan, c.cn, got, c.want)
		}
	}
	// A reader that fails turns its source off and asks for a rescan.
	s := &sources{w: w}
	s.failed("fanotify", errors.New("fanotify: metadata version 2, want 3"))
	if got, want := w.Mode(), "proc-connector; fanotify unavailable: failed: fanotify: metadata version 2, want 3"; got != want {
		t.Errorf("mode after failure = %q, want %q", got, want)
	}
	if _, reason := w.q.take(nil); reason != "fanotify stopped" {
		t.Errorf("rescan reason %q", reason)
	}
	// Once stopped, a late failure changes nothing.
	s.stop()
	s.failed("proc connector", errors.New("late"))
	if strings.Contains(w.Mode(), "late") {
		t.Errorf("mode changed after stop: %q", w.Mode())
	}
	if w.Run(context.Background()) == nil {
		t.Error("Run with a nil target succeeded")
	}
}
