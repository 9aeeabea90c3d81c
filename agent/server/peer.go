package server

import (
	"context"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// Peer is the identity of the process at the other end of a connection, read with
// SO_PEERCRED when the connection was accepted (the credentials of the process that
// called connect(2), as the kernel recorded them then).
type Peer struct {
	UID uint32
	GID uint32
	PID int32
	// Err is why the credentials could not be read; a peer with Err != nil may only read.
	Err error
}

func (p Peer) String() string {
	if p.Err != nil {
		return "unknown peer (" + p.Err.Error() + ")"
	}
	return fmt.Sprintf("uid=%d gid=%d pid=%d", p.UID, p.GID, p.PID)
}

type peerKey struct{}

// WithPeer returns ctx carrying p. The server's ConnContext does this for every accepted
// connection; tests use it to make a request look as if it came from p.
func WithPeer(ctx context.Context, p Peer) context.Context {
	return context.WithValue(ctx, peerKey{}, p)
}

// PeerFromContext returns the peer stored by WithPeer. Without one (a request that did
// not come through a Unix socket) it returns a Peer whose Err says so.
func PeerFromContext(ctx context.Context) Peer {
	if p, ok := ctx.Value(peerKey{}).(Peer); ok {
		return p
	}
	return Peer{Err: errNoPeer}
}

var errNoPeer = fmt.Errorf("no peer credentials (not a Unix socket connection)")

// connContext is http.Server.ConnContext: it attaches the peer's credentials to every
// request of the connection.
func connContext(ctx context.Context, c net.Conn) context.Context {
	return WithPeer(ctx, peerOf(c))
}

// peerOf reads SO_PEERCRED of a Unix connection.
func peerOf(c net.Conn) Peer {
	uc, ok := c.(*net.UnixConn)
	if !ok {
		return Peer{Err: fmt.Errorf("not a Unix socket connection (%T)", c)}
	}
	raw, err := uc.SyscallConn()
	if err != nil {
		return Peer{Err: fmt.Errorf("peer credentials: %w", err)}
	}
	var cred *unix.Ucred
	var credErr error
	if err := raw.Control(func(fd uintptr) {
		cred, credErr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return Peer{Err: fmt.Errorf("peer credentials: %w", err)}
	}
	if credErr != nil {
		return Peer{Err: fmt.Errorf("getsockopt SO_PEERCRED: %w", credErr)}
	}
	return Peer{UID: cred.Uid, GID: cred.Gid, PID: cred.Pid}
}
