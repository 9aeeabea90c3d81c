package watch

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// The netlink process connector (linux/connector.h, linux/cn_proc.h).
const (
	cnIdxProc = 1 // CN_IDX_PROC
	cnValProc = 1 // CN_VAL_PROC

	procCnMcastListen = 1 // PROC_CN_MCAST_LISTEN
	procCnMcastIgnore = 2 // PROC_CN_MCAST_IGNORE

	procEventNone = 0x00000000
	procEventFork = 0x00000001
	procEventExec = 0x00000002
	procEventExit = 0x80000000

	nlmsgHdrLen = 16 // struct nlmsghdr
	cnMsgLen    = 20 // struct cn_msg without data
	procEvHdr   = 16 // what, cpu, timestamp_ns of struct proc_event
)

// procEvent is one decoded proc connector message.
type procEvent struct {
	What uint32
	// Fork: the parent and the child. Exec, exit: the process (Child* unused).
	PID, TGID           uint32
	ChildPID, ChildTGID uint32
	// None (an acknowledgement): Ack is the request's ack + 1, Err its errno.
	Ack, Err uint32
}

// decodeCnProc walks the netlink messages in buf (one recv(2) of the connector socket)
// and calls fn for each proc connector event. Messages of other connectors are ignored;
// an overrun message or a truncated buffer is an error (events may have been lost).
func decodeCnProc(buf []byte, fn func(procEvent)) error {
	ne := binary.NativeEndian
	for len(buf) >= nlmsgHdrLen {
		msgLen := int(ne.Uint32(buf[0:4]))
		typ := ne.Uint16(buf[4:6])
		if msgLen < nlmsgHdrLen || msgLen > len(buf) {
			return fmt.Errorf("proc connector: bad netlink message length %d (%d bytes left)", msgLen, len(buf))
		}
		msg := buf[nlmsgHdrLen:msgLen]
		// Messages are padded to 4 bytes.
		next := (msgLen + unix.NLMSG_ALIGNTO - 1) &^ (unix.NLMSG_ALIGNTO - 1)
		if next > len(buf) {
			next = len(buf)
		}
		buf = buf[next:]
		switch typ {
		case unix.NLMSG_NOOP:
			continue
		case unix.NLMSG_OVERRUN:
			return errors.New("proc connector: netlink overrun")
		case unix.NLMSG_ERROR:
			if len(msg) >= 4 {
				if e := int32(ne.Uint32(msg[0:4])); e != 0 {
					return fmt.Errorf("proc connector: %w", syscall.Errno(-e))
				}
			}
			continue
		}
		if len(msg) < cnMsgLen {
			return fmt.Errorf("proc connector: short connector message (%d bytes)", len(msg))
		}
		idx, val := ne.Uint32(msg[0:4]), ne.Uint32(msg[4:8])
		ack := ne.Uint32(msg[12:16])
		dataLen := int(ne.Uint16(msg[16:18]))
		if idx != cnIdxProc || val != cnValProc {
			continue
		}
		data := msg[cnMsgLen:]
		if dataLen > len(data) || dataLen < procEvHdr {
			return fmt.Errorf("proc connector: bad event length %d (%d bytes)", dataLen, len(data))
		}
		data = data[:dataLen]
		ev := procEvent{What: ne.Uint32(data[0:4])}
		u := data[procEvHdr:]
		u32 := func(i int) uint32 {
			if 4*i+4 > len(u) {
				return 0
			}
			return ne.Uint32(u[4*i:])
		}
		switch ev.What {
		case procEventNone:
			ev.Err, ev.Ack = u32(0), ack
		case procEventFork:
			ev.PID, ev.TGID, ev.ChildPID, ev.ChildTGID = u32(0), u32(1), u32(2), u32(3)
		default: // exec, exit and the rest start with process_pid, process_tgid
			ev.PID, ev.TGID = u32(0), u32(1)
		}
		fn(ev)
	}
	return nil
}

// cnMessage is a request to the proc connector: nlmsghdr + cn_msg + the mcast op.
func cnMessage(op uint32, seq uint32) []byte {
	ne := binary.NativeEndian
	const n = nlmsgHdrLen + cnMsgLen + 4
	b := make([]byte, n)
	ne.PutUint32(b[0:], n)
	ne.PutUint16(b[4:], unix.NLMSG_DONE)
	ne.PutUint32(b[8:], seq)
	ne.PutUint32(b[12:], uint32(os.Getpid()))
	c := b[nlmsgHdrLen:]
	ne.PutUint32(c[0:], cnIdxProc)
	ne.PutUint32(c[4:], cnValProc)
	ne.PutUint32(c[8:], seq)
	ne.PutUint32(c[12:], seq) // ack: the kernel answers with ack+1
	ne.PutUint16(c[16:], 4)
	ne.PutUint32(c[cnMsgLen:], op)
	return b
}

// cnSocket is a proc connector subscription.
type cnSocket struct {
	f  *os.File
	rc syscall.RawConn
}

// ackTimeout bounds the wait for the connector to acknowledge a subscription.
const ackTimeout = 2 * time.Second

// openCnProc subscribes to process events. It waits for the kernel's acknowledgement,
// which carries the subscription's error (EPERM without CAP_NET_ADMIN); events that
// arrive first are passed to q.
func openCnProc(ctx context.Context, q *queue) (*cnSocket, error) {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, unix.NETLINK_CONNECTOR)
	if err != nil {
		return nil, fmt.Errorf("netlink connector socket: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK, Groups: cnIdxProc}); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("bind proc connector: %w", err)
	}
	// A larger buffer makes ENOBUFS (lost events) rarer; FORCE works for root only.
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 4<<20); err != nil {
		_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF, 4<<20)
	}
	f := os.NewFile(uintptr(fd), "proc-connector")
	rc, err := f.SyscallConn()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("proc connector: %w", err)
	}
	s := &cnSocket{f: f, rc: rc}
	seq := uint32(time.Now().UnixNano())
	if err := s.send(procCnMcastListen, seq); err != nil {
		f.Close()
		return nil, fmt.Errorf("subscribe to the proc connector: %w", err)
	}
	if err := s.waitAck(ctx, seq+1, q); err != nil {
		s.close()
		return nil, err
	}
	return s, nil
}

func (s *cnSocket) send(op, seq uint32) error {
	msg := cnMessage(op, seq)
	var serr error
	err := s.rc.Write(func(fd uintptr) bool {
		serr = unix.Sendto(int(fd), msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		return serr != unix.EAGAIN
	})
	if err != nil {
		return err
	}
	return serr
}

func (s *cnSocket) waitAck(ctx context.Context, ack uint32, q *queue) error {
	deadline := time.Now().Add(ackTimeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	if err := s.f.SetReadDeadline(deadline); err != nil {
		return fmt.Errorf("proc connector: %w", err)
	}
	defer s.f.SetReadDeadline(time.Time{})
	stop := context.AfterFunc(ctx, func() { s.f.SetReadDeadline(time.Now()) })
	defer stop()
	buf := make([]byte, 16<<10)
	for {
		n, err := s.read(buf)
		if err != nil {
			if ctx.Err() != nil {
				return fmt.Errorf("proc connector: %w", ctx.Err())
			}
			if errors.Is(err, os.ErrDeadlineExceeded) {
				return errors.New("proc connector: no acknowledgement of the subscription")
			}
			if errors.Is(err, unix.ENOBUFS) {
				q.rescan("proc connector: receive buffer overrun")
				continue
			}
			return fmt.Errorf("proc connector: %w", err)
		}
		var ackErr error
		acked := false
		derr := decodeCnProc(buf[:n], func(ev procEvent) {
			if ev.What == procEventNone {
				if ev.Ack == ack {
					acked = true
					if ev.Err != 0 {
						ackErr = syscall.Errno(ev.Err)
					}
				}
				return
			}
			q.addProc(ev)
		})
		if derr != nil {
			q.rescan(derr.Error())
		}
		if acked {
			if ackErr != nil {
				return fmt.Errorf("proc connector subscription: %w", ackErr)
			}
			return nil
		}
	}
}

func (s *cnSocket) read(buf []byte) (int, error) { return rawRead(s.rc, buf, true) }

// readCnProc reads events until the socket is closed (then it returns nil). ENOBUFS means
// events were lost: q rescans.
func readCnProc(s *cnSocket, q *queue) error {
	buf := make([]byte, 64<<10)
	wait := true
	for {
		n, err := rawRead(s.rc, buf, wait)
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
			case errors.Is(err, unix.ENOBUFS):
				q.rescan("proc connector: receive buffer overrun")
				continue
			}
			return fmt.Errorf("proc connector read: %w", err)
		}
		wait = false
		if derr := decodeCnProc(buf[:n], q.addProc); derr != nil {
			q.rescan(derr.Error())
		}
	}
}

// close unsubscribes (so the kernel stops producing events when nobody listens) and
// closes the socket, which ends readCnProc.
func (s *cnSocket) close() error {
	_ = s.send(procCnMcastIgnore, uint32(time.Now().UnixNano()))
	if err := s.f.Close(); err != nil {
		return fmt.Errorf("close proc connector: %w", err)
	}
	return nil
}
