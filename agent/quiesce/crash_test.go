package quiesce

import (
	"context"
	"errors"
	"testing"

	"github.com/adeagent/adeagent/agent/api"
)

// errKilled stands for kill -9: the engine stops on the spot, with the journal as written.
var errKilled = errors.New("killed")

// crashAt makes the engine die right after its n-th journal write (every intent and
// every result is a write, so each n is one crash point).
func crashAt(e *Engine, n int) *int {
	writes := 0
	e.crash = func() error {
		writes++
		if writes == n {
			return errKilled
		}
		return nil
	}
	return &writes
}

// TestCrashDuringPrepare kills prepare after each journal write, then a fresh engine's
// restore must bring everything back, starting nothing that was not running and nothing
// twice.
func TestCrashDuringPrepare(t *testing.T) {
	for n := 1; ; n++ {
		w := standard(t)
		w.docker.live = true
		e := w.engine(nil)
		writes := crashAt(e, n)
		_, err := e.Prepare(context.Background(), who)
		if err == nil {
			if n < 10 {
				t.Fatalf("prepare finished at crash point %d after only %d writes", n, *writes)
			}
			t.Logf("prepare has %d crash points", n-1)
			break
		}
		if !errors.Is(err, errKilled) {
			t.Fatalf("crash %d: %v", n, err)
		}
		fresh := w.engine(nil)
		if owed, err := fresh.Owed(); err != nil || !owed {
			t.Fatalf("crash %d: owed=%v err=%v", n, owed, err)
		}
		res, err := fresh.Restore(context.Background(), Who{Origin: OriginBoot})
		if err != nil || res.Outcome != api.OutcomeRestored {
			t.Fatalf("crash %d: restore %v %+v", n, err, res)
		}
		w.restoredLikeBefore()
		for name, u := range w.units {
			if u.starts > 1 {
				t.Errorf("crash %d: %s started %d times", n, name, u.starts)
			}
		}
		if t.Failed() {
			t.Fatalf("crash point %d", n)
		}
	}
}

// TestCrashDuringPrepareThenPrepareAgain: the daemon restarts and prepares again (ADE's
// marker is still there); the recorded before-states survive, so restore still starts
// what ran before the first prepare.
func TestCrashDuringPrepareThenPrepareAgain(t *testing.T) {
	for n := 1; n < 40; n++ {
		w := standard(t)
		e := w.engine(nil)
		crashAt(e, n)
		if _, err := e.Prepare(context.Background(), who); err == nil {
			break
		}
		res, err := w.engine(nil).Prepare(context.Background(), Who{Origin: OriginADEAuto})
		if err != nil || res.Outcome != api.OutcomeReady {
			t.Fatalf("crash %d: second prepare %v %+v", n, err, res)
		}
		for name, u := range w.units {
			if w.initial[name] == "active" && !u.masked && name != "ssh.service" && name != "rsyslog.service" {
				t.Errorf("crash %d: %s not masked after the resumed prepare", n, name)
			}
		}
		if _, err := w.engine(nil).Restore(context.Background(), who); err != nil {
			t.Fatal(err)
		}
		w.restoredLikeBefore()
		if t.Failed() {
			t.Fatalf("crash point %d", n)
		}
	}
}

// TestCrashDuringRestore kills restore after each journal write; the next restore
// finishes the job without redoing what was done.
func TestCrashDuringRestore(t *testing.T) {
	for n := 1; ; n++ {
		w := standard(t)
		if _, err := w.engine(nil).Prepare(context.Background(), who); err != nil {
			t.Fatal(err)
		}
		e := w.engine(nil)
		crashAt(e, n)
		_, err := e.Restore(context.Background(), who)
		if err == nil {
			t.Logf("restore has %d crash points", n-1)
			break
		}
		if !errors.Is(err, errKilled) {
			t.Fatalf("crash %d: %v", n, err)
		}
		// Killed after the last write (restore marked done): nothing is owed any more.
		res, err := w.engine(nil).Restore(context.Background(), Who{Origin: OriginBoot})
		if err != nil || (res.Outcome != api.OutcomeRestored && res.Outcome != api.OutcomeNothing) {
			t.Fatalf("crash %d: restore %v %+v", n, err, res)
		}
		w.restoredLikeBefore()
		for name, u := range w.units {
			if u.starts > 1 {
				t.Errorf("crash %d: %s started %d times", n, name, u.starts)
			}
		}
		if t.Failed() {
			t.Fatalf("crash point %d", n)
		}
	}
}

// TestRestoreAfterReboot: a new boot id; runtime masks and the runtime SELinux mode are
// gone; restore still finishes.
func TestRestoreAfterReboot(t *testing.T) {
	w := standard(t)
	if _, err := w.engine(nil).Prepare(context.Background(), who); err != nil {
		t.Fatal(err)
	}
	// The reboot: runtime masks vanish, SELinux boots from the config (enforcing), the
	// enabled units start again at boot.
	w.file("proc/sys/kernel/random/boot_id", "boot-2\n")
	w.file("sys/fs/selinux/enforce", "1")
	for _, u := range w.units {
		u.masked = false
	}
	w.units["docker.service"].active = "active"
	w.docker.daemonStarted()
	res, err := w.engine(nil).Restore(context.Background(), Who{Origin: OriginBoot})
	if err != nil || res.Outcome != api.OutcomeRestored {
		t.Fatalf("restore %v %+v", err, res)
	}
	if w.units["docker.service"].starts != 0 {
		t.Error("docker.service started although it was already running")
	}
	w.restoredLikeBefore()
}
