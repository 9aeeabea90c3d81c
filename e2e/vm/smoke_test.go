package vm

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"
)

// TestSmoke boots one guest and checks the bed itself: commands, exit codes, stdin, env,
// timeouts, pushing and fetching files, the agent's own executable being off the OS
// drive, a data disk, and a reboot with the channel surviving it.
func TestSmoke(t *testing.T) {
	t.Parallel() // VM tests run two at a time (go test -parallel = GOMAXPROCS): the CI budget
	Require(t)
	m := Boot(t, Options{DataDisks: []DataDisk{{Serial: "data", SizeMB: 256, Ext4Label: "data"}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	r := m.MustRun(t, "systemd-analyze; systemd-analyze blame | head -n 8")
	t.Logf("guest boot:\n%s", r.Stdout)

	t.Run("exit-code-and-output", func(t *testing.T) {
		r, err := m.Run(ctx, "echo out; echo err >&2; exit 7")
		if err != nil {
			t.Fatal(err)
		}
		if r.ExitCode != 7 || r.Stdout != "out\n" || r.Stderr != "err\n" {
			t.Fatalf("got %s", r)
		}
	})
	t.Run("stdin-env", func(t *testing.T) {
		r, err := m.Exec(ctx, Cmd{Argv: []string{"sh", "-c", "cat; echo $FOO; id -u"}, Stdin: []byte("in\n"), Env: []string{"FOO=bar"}})
		if err != nil || r.Stdout != "in\nbar\n0\n" {
			t.Fatalf("got %v %s", err, r)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		r, err := m.Exec(ctx, Cmd{Argv: []string{"sleep", "60"}, Timeout: 2 * time.Second})
		if err != nil || !r.TimedOut {
			t.Fatalf("got %v %s", err, r)
		}
	})
	t.Run("push-fetch", func(t *testing.T) {
		data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
		if err := m.Push(ctx, "/root/x/blob", data, 0o600); err != nil {
			t.Fatal(err)
		}
		r := m.MustRun(t, "stat -c %a:%s /root/x/blob")
		if strings.TrimSpace(r.Stdout) != "600:1048576" {
			t.Fatalf("pushed file: %s", r.Stdout)
		}
		got, err := m.Fetch(ctx, "/root/x/blob")
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("fetch: %v, %d bytes", err, len(got))
		}
	})
	t.Run("agent-off-os-drive", func(t *testing.T) {
		r := m.MustRun(t, `pid=$(systemctl show -P MainPID adeagent-e2e-guest); readlink /proc/$pid/exe /proc/$pid/cwd; grep -c ' /dev/vda$\| 254:0 ' /proc/$pid/maps || true`)
		if r.Stdout != "/memfd:adeagent-e2e-guest (deleted)\n/\n0\n" {
			t.Fatalf("guest agent: %s", r.Stdout)
		}
	})
	t.Run("data-disk", func(t *testing.T) {
		m.MustRun(t, "mkdir -p /data && mount /dev/disk/by-id/virtio-data /data && touch /data/x && umount /data")
	})
	t.Run("reboot", func(t *testing.T) {
		before := m.MustRun(t, "cat /proc/sys/kernel/random/boot_id").Stdout
		if err := m.Reboot(ctx); err != nil {
			t.Fatal(err)
		}
		after := m.MustRun(t, "cat /proc/sys/kernel/random/boot_id; test -f /root/x/blob").Stdout
		if before == after {
			t.Fatalf("same boot id %s after the reboot", after)
		}
	})
	m.Shutdown()
}
