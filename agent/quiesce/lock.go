package quiesce

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"golang.org/x/sys/unix"
)

// LockFile serialises prepare and restore between processes (the daemon and
// `adeagent restore --owed` from the boot unit).
const LockFile = "quiesce.lock"

// ErrBusy is returned when another process holds the lock until ctx ends.
var ErrBusy = errors.New("another adeagent process is running prepare or restore")

// lock takes an exclusive flock on the state dir's lock file, polling until ctx ends.
func (e *Engine) lock(ctx context.Context) (func(), error) {
	if err := os.MkdirAll(e.o.StateDir, 0o700); err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(e.o.StateDir, LockFile), os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("lock: %w", err)
	}
	for {
		err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
		if err == nil {
			return func() { _ = unix.Flock(int(f.Fd()), unix.LOCK_UN); _ = f.Close() }, nil
		}
		if !errors.Is(err, unix.EWOULDBLOCK) {
			_ = f.Close()
			return nil, fmt.Errorf("lock %s: %w", f.Name(), err)
		}
		select {
		case <-ctx.Done():
			_ = f.Close()
			return nil, fmt.Errorf("%w (%s)", ErrBusy, ctx.Err())
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// JournalOwed reports whether the journal in stateDir owes a restore, without an Engine
// (for `adeagent restore --owed` before it connects to systemd). A corrupt journal
// reports true with an error wrapping ErrCorrupt.
func JournalOwed(stateDir string) (bool, error) {
	j, err := store{dir: stateDir}.load()
	if err != nil {
		return true, err
	}
	return j.Owed(), nil
}
