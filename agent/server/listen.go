package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

// Modes of the socket and its directory (DESIGN.md §7).
const (
	SocketDirMode = 0o750
	SocketMode    = 0o660
)

// ErrAlreadyRunning is returned by Listen when another daemon answers on the socket.
var ErrAlreadyRunning = errors.New("another adeagent answers on the socket")

// Listen opens the API socket at path. It creates the directory (mode 0750) when it is
// missing, removes a stale socket file only after a dial to it failed (it refuses to
// start when another daemon answers, and never removes something that is not a socket),
// and makes the socket mode 0660. When group names an existing group, the socket (and a
// directory Listen created, or a root:root one such as systemd's RuntimeDirectory=) get
// that group; a missing group is not an error, the socket
// then stays root-only. Closing the listener removes the socket file.
func Listen(path, group string) (net.Listener, error) {
	gid := -1
	if group != "" {
		if g, err := user.LookupGroup(group); err == nil {
			if n, err := strconv.Atoi(g.Gid); err == nil {
				gid = n
			}
		}
	}
	dir := filepath.Dir(path)
	if fi, err := os.Stat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.MkdirAll(dir, SocketDirMode); err != nil {
			return nil, fmt.Errorf("create the socket directory: %w", err)
		}
		// MkdirAll's mode went through the umask.
		if err := os.Chmod(dir, SocketDirMode); err != nil {
			return nil, fmt.Errorf("socket directory: %w", err)
		}
		if gid >= 0 {
			if err := os.Chown(dir, -1, gid); err != nil {
				return nil, fmt.Errorf("socket directory: %w", err)
			}
		}
	} else if err != nil {
		return nil, fmt.Errorf("socket directory: %w", err)
	} else if st, ok := fi.Sys().(*syscall.Stat_t); ok && gid >= 0 && st.Uid == 0 && st.Gid == 0 {
		// systemd's RuntimeDirectory= makes the directory root:root; members of the
		// group must be able to reach the socket in it. A directory owned by anyone
		// else, or already given a group, is left as it is.
		if err := os.Chown(dir, -1, gid); err != nil {
			return nil, fmt.Errorf("socket directory: %w", err)
		}
	}

	if fi, err := os.Lstat(path); err == nil {
		if fi.Mode().Type() != os.ModeSocket {
			return nil, fmt.Errorf("%s exists and is not a socket (%s); not removing it", path, fi.Mode().Type())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		c, err := (&net.Dialer{}).DialContext(ctx, "unix", path)
		cancel()
		if err == nil {
			c.Close()
			return nil, fmt.Errorf("%s: %w", path, ErrAlreadyRunning)
		}
		if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("remove the stale socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("socket: %w", err)
	}

	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	if err := os.Chmod(path, SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("socket mode: %w", err)
	}
	if gid >= 0 {
		if err := os.Chown(path, -1, gid); err != nil {
			ln.Close()
			return nil, fmt.Errorf("socket group: %w", err)
		}
	}
	return ln, nil
}
